"""The environment of every process a run starts, built in one place from the curriculum and the stage: the
engine's ranks on node 0 and on every other node, a LoRA merge, the evaluation after a stage and a sweep's
evaluation. Each gets the same hub, allocator and offline switches, so what one process reads the others read too.

Order of precedence: the shell's own variables win over the curriculum's ``env`` (as with ms-swift's own ENV
block), which wins over what spinegpt adds for the engine (``swift_adapter.engine_environment``); the run's own
additions (tracking identity, threads for an offloaded optimizer) are set last.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spinegpt.train import deepspeed_configs, swift_adapter
from spinegpt.train.curriculum import Curriculum
from spinegpt.train.topology import Launch

FORWARDED_PREFIXES = (
    "WANDB_",
    "OMP_NUM_THREADS",
    "MAX_PIXELS",
    "MIN_PIXELS",
    "HF_",
    "USE_HF",
    "TORCH_EXTENSIONS_DIR",
    "PYTORCH_CUDA_ALLOC_CONF",
    "NCCL_",
)
"""What DeepSpeed's pdsh runner would not pass on to remote ranks by itself."""
DEEPSPEED_ENV = ".deepspeed_env"
PIXEL_ENV = ("MAX_PIXELS", "MIN_PIXELS")
"""The image size limits the engine reads from the environment: other values are other visual tokens, so another
training (a resume must keep them) and another evaluation (a cached one must have had them)."""


def configured(curriculum: Curriculum) -> dict[str, str]:
    """What the curriculum asks every process's environment to hold (before the shell's own values win)."""
    return {**swift_adapter.engine_environment(curriculum), **curriculum.env}


def process_env(
    curriculum: Curriculum,
    launch: Launch | None = None,
    deepspeed: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full environment of one process started for ``curriculum``: an engine launch of ``launch`` with the
    stage's ``deepspeed`` config (its content), or (``launch`` None) an evaluation. ``extra`` is set last (the
    stage's tracking identity is the run's, never a stale one from the shell)."""
    env = dict(os.environ)
    for key, value in configured(curriculum).items():
        env.setdefault(key, value)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if launch is not None and "OMP_NUM_THREADS" not in env:
        offloads = deepspeed is not None and deepspeed_configs.offloads_optimizer(dict(deepspeed))
        if launch.launcher == "torchrun" and (launch.bind_cores or offloads):
            # torchrun sets OMP_NUM_THREADS=1 per rank, so a CPU-offloaded Adam step would run on one core; torchrun
            # has no core binding either: give each rank its share of the cores (more would oversubscribe them).
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // launch.nproc_per_node))
    env.update(extra or {})
    return env


def write_deepspeed_env(folder: Path, curriculum: Curriculum, env: Mapping[str, str]) -> None:
    """DeepSpeed's pdsh runner forwards only some variable prefixes to remote hosts; it exports the lines of
    ``.deepspeed_env`` in its working directory (the stage folder) on every host."""
    wanted = configured(curriculum)
    forwarded = {k: v for k, v in env.items() if k in wanted or k.startswith(FORWARDED_PREFIXES)}
    (folder / DEEPSPEED_ENV).write_text("".join(f"{k}={v}\n" for k, v in sorted(forwarded.items())))
