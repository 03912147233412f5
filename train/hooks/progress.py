"""Live progress of a run: ``progress.json`` in the run folder says which stage runs, its step of total, the loss
and the time left, rewritten at every logged step; a second terminal (``spinegpt report RUN``) or the owner of a
crashed run reads it. (The console line of each step is the stage's own: ``stage.engine_console``.)"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from spinegpt.files import write_json_atomic
from spinegpt.train.hooks import StageHooks
from spinegpt.train.manifest import StageRecord, now
from spinegpt.train.plan import StagePlan
from spinegpt.train.swift_adapter import StepRecord

PROGRESS = "progress.json"


class RunProgress:
    """Writes ``progress.json`` atomically."""

    def __init__(self, run_dir: Path, n_stages: int):
        self.path = run_dir / PROGRESS
        self.n_stages = n_stages

    def update(self, **state: Any) -> None:
        state.setdefault("n_stages", self.n_stages)
        state["updated_at"] = now()
        state["pid"] = os.getpid()
        write_json_atomic(self.path, state)


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / PROGRESS
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


class ProgressHook(StageHooks):
    def __init__(self, run_dir: Path, n_stages: int):
        self.file = RunProgress(run_dir, n_stages)
        self.last_stage: str | None = None

    def stage_started(self, stage: StagePlan, record: StageRecord) -> None:
        self.file.update(status="starting", stage=stage.stage.name, stage_index=stage.index)

    def step(self, stage: StagePlan, step: StepRecord) -> None:
        self.file.update(
            status="training",
            stage=stage.stage.name,
            stage_index=stage.index,
            step=step.step,
            max_steps=step.max_steps,
            loss=step.loss,
            learning_rate=step.learning_rate,
            elapsed_s=step.elapsed_s,
            remaining_s=step.remaining_s,
        )

    def stage_done(self, stage: StagePlan, record: StageRecord) -> None:
        self.last_stage = stage.stage.name

    def run_ended(self, status: str, error: BaseException | None) -> None:
        if error is not None:
            self.file.update(status=status, error=str(error))
        else:
            self.file.update(status=status, stage=self.last_stage)
