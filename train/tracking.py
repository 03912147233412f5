"""Experiment tracking and live progress for a run.

wandb: every stage of one run is a wandb run in one *group* (the run id), with the stage name as *job type*, so
the stages of a curriculum sit together in the wandb UI; each stage's wandb config carries the resolved curriculum,
the stage's data hashes and the package versions (``config-defaults.yaml`` in the stage folder). Offline mode
(``WANDB_MODE=offline``) works with no network; ``wandb sync <stage>/wandb/offline-run-*`` uploads later.
Credentials are read by wandb from its own environment (``WANDB_API_KEY``); this code never reads or writes them.

tensorboard: the engine writes event files under ``<stage>/engine/runs``.

Progress: ``progress.json`` in the run folder says which stage runs, its step of total, the loss and the time left;
a second terminal (``spinegpt report RUN``) or the owner of a crashed run reads it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from spinegpt.train import manifest

PROGRESS = "progress.json"
WANDB_CONFIG = "config-defaults.yaml"


def wandb_env(*, project: str, group: str, stage: str, stage_dir: Path, config: dict[str, Any]) -> dict[str, str]:
    """Environment for the engine processes of one stage, which run with ``stage_dir`` as working directory.

    The stage's wandb config goes into ``config-defaults.yaml`` there, which ``wandb.init`` reads from its working
    directory: the documented ``WANDB_CONFIG_PATHS`` variable is rejected by wandb 0.31's settings validation
    (a string where it wants a list), so it cannot be used with the pinned stack.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    defaults = {key: {"value": value} for key, value in config.items()}
    (stage_dir / WANDB_CONFIG).write_text(yaml.safe_dump(defaults, sort_keys=False, allow_unicode=True))
    return {
        "WANDB_PROJECT": project,
        "WANDB_RUN_GROUP": group,
        "WANDB_JOB_TYPE": stage,
        "WANDB_DIR": str(stage_dir),
    }


def _seconds(text: Any) -> float | None:
    """The engine's '1h 2m 3s' / '45s' durations in seconds."""
    if not isinstance(text, str):
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text)
    if not parts:
        return None
    scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(float(n) * scale[u] for n, u in parts)


class Progress:
    """Writes ``progress.json`` atomically each time the engine logs a step."""

    def __init__(self, run_dir: Path, n_stages: int):
        self.path = run_dir / PROGRESS
        self.n_stages = n_stages

    def update(self, **state: Any) -> None:
        state.setdefault("n_stages", self.n_stages)
        state["updated_at"] = manifest.now()
        state["pid"] = os.getpid()
        manifest.write_json_atomic(self.path, state)

    def step(self, stage: str, index: int, record: dict[str, Any]) -> None:
        step, _, total = str(record.get("global_step/max_steps", "")).partition("/")
        self.update(
            status="training",
            stage=stage,
            stage_index=index,
            step=int(step) if step.isdigit() else None,
            max_steps=int(total) if total.isdigit() else None,
            loss=record.get("loss"),
            learning_rate=record.get("learning_rate"),
            elapsed_s=_seconds(record.get("elapsed_time")),
            remaining_s=_seconds(record.get("remaining_time")),
        )


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / PROGRESS
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
