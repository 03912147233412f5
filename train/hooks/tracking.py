"""Experiment tracking: every stage of one run is a wandb run in one *group* (the run id), with the stage name as
*job type*, so the stages of a curriculum sit together in the wandb UI; each stage's wandb config carries the
resolved curriculum, the stage's data hashes and the package versions (``config-defaults.yaml`` in the stage
folder). Offline mode (``WANDB_MODE=offline``) works with no network; ``wandb sync <stage>/wandb/offline-run-*``
uploads later. Credentials are read by wandb from its own environment (``WANDB_API_KEY``); this code never reads or
writes them. Tensorboard needs nothing here: the engine writes event files under ``<stage>/engine/runs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from spinegpt.data_mixes.prepare import PreparedData
from spinegpt.train.curriculum import Curriculum
from spinegpt.train.hooks import StageHooks
from spinegpt.train.manifest import RunManifest
from spinegpt.train.plan import StagePlan

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


class TrackingHook(StageHooks):
    def __init__(self, curriculum: Curriculum):
        self.curriculum = curriculum
        self.run: RunManifest | None = None

    def run_started(self, run: RunManifest) -> None:
        self.run = run

    def environment(self, stage: StagePlan, data: PreparedData) -> dict[str, str]:
        if "wandb" not in self.curriculum.report_to or self.run is None:
            return {}
        attempt = self.run.attempts[-1]
        config = {
            "spinegpt": {
                "run_id": self.run.run_id,
                "stage": stage.stage.name,
                "stage_index": stage.index,
                "curriculum": self.run.curriculum,
                "data": {"sha256": data.sha256, "rows": data.rows, "inputs": [vars(i) for i in data.inputs]},
                "packages": attempt.packages,
                "git": attempt.git,
            }
        }
        return wandb_env(
            project=self.curriculum.wandb_project,
            group=self.run.run_id,
            stage=stage.stage.name,
            stage_dir=stage.dir,
            config=config,
        )
