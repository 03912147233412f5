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
from pathlib import Path
from typing import Any

import yaml
from spinegpt.train.manifest import now
from spinegpt.train.swift_adapter import StepRecord

from spinegpt.files import write_json_atomic

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


class RunProgress:
    """Writes ``progress.json`` atomically each time the engine logs a step."""

    def __init__(self, run_dir: Path, n_stages: int):
        self.path = run_dir / PROGRESS
        self.n_stages = n_stages

    def update(self, **state: Any) -> None:
        state.setdefault("n_stages", self.n_stages)
        state["updated_at"] = now()
        state["pid"] = os.getpid()
        write_json_atomic(self.path, state)

    def step(self, stage: str, index: int, record: StepRecord) -> None:
        self.update(
            status="training",
            stage=stage,
            stage_index=index,
            step=record.step,
            max_steps=record.max_steps,
            loss=record.loss,
            learning_rate=record.learning_rate,
            elapsed_s=record.elapsed_s,
            remaining_s=record.remaining_s,
        )


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / PROGRESS
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
