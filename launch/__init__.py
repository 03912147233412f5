"""The launch scripts (``torchrun.sh``, ``deepspeed.sh``, ``slurm.sbatch``), shipped as package data so that an
installed spinegpt (``spinegpt sweep --launcher slurm``) finds them as a checkout does."""
