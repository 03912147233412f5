#!/usr/bin/env bash
# Run a curriculum on this node under torchrun; the same command on every node of a multi-node job.
#
#   launch/torchrun.sh [--dry-run] CURRICULUM.yaml [spinegpt run arguments and key=value overrides...]
#
# Environment (all optional on a single node):
#   GPUS_PER_NODE   processes on this node (default: the GPUs nvidia-smi lists, else 1)
#   NNODES          nodes in the job (default 1)
#   NODE_RANK       this node's rank, 0..NNODES-1 (default 0). Node 0 owns the run folder (data, manifest, stage
#                   markers, verification, evaluation); the others start their ranks when node 0's marker says so.
#   MASTER_ADDR     node 0's address (default 127.0.0.1)   MASTER_PORT  rendezvous port (default 29500)
#   SPINEGPT_RUN_TOKEN  identifies this launch on every node (default: the SLURM job id, or none)
#   SPINEGPT        the spinegpt command (default: spinegpt on PATH, else .venv/bin/spinegpt)
#   SPINEGPT_COMMAND  run (default), or sweep: the argument is then a sweep file (`spinegpt sweep --launcher slurm`
#                   submits each row this way)
# The run folder (--output-dir) must be on a filesystem every node sees.
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
if [[ $# -lt 1 ]]; then
  sed -n '2,18p' "$0" >&2
  exit 2
fi
curriculum=$1; shift

source "$(dirname "$0")/common.sh"
spinegpt=$(spinegpt_bin)
use_spinegpt_env
if [[ -z "${GPUS_PER_NODE:-}" ]]; then
  GPUS_PER_NODE=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
  [[ "$GPUS_PER_NODE" -ge 1 ]] || GPUS_PER_NODE=1
fi
export NNODES=${NNODES:-1} NODE_RANK=${NODE_RANK:-0} MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=${MASTER_PORT:-29500}
if [[ -z "${SPINEGPT_RUN_TOKEN:-}" && -n "${SLURM_JOB_ID:-}" ]]; then
  export SPINEGPT_RUN_TOKEN="slurm-${SLURM_JOB_ID}-${SLURM_RESTART_COUNT:-0}"
fi

subcommand=${SPINEGPT_COMMAND:-run}
case "$subcommand" in run | sweep) ;; *) echo "SPINEGPT_COMMAND must be run or sweep, not $subcommand" >&2; exit 2 ;; esac
run=("$spinegpt" "$subcommand" "$curriculum" --nproc "$GPUS_PER_NODE" "$@")
if [[ $dry_run == 1 ]]; then
  # Exactly what this node would execute, then the engine command of each stage on this node.
  echo "# node $NODE_RANK of $NNODES"
  echo "NNODES=$NNODES NODE_RANK=$NODE_RANK MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT ${run[*]}"
  [[ $subcommand == run ]] || exit 0
  plan_args "$@"
  "$spinegpt" plan "$curriculum" --nproc "$GPUS_PER_NODE" "${PLAN_ARGS[@]}" --commands | sed 's/^/#   /'
  exit 0
fi
exec "${run[@]}"
