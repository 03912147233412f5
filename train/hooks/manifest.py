"""Keeps ``run_manifest.json`` current: rewritten (atomically) after every change of a stage's record, so whatever
stops a run, the manifest on disk says how far each stage got."""

from __future__ import annotations

from pathlib import Path

from spinegpt.train.hooks import StageHooks
from spinegpt.train.manifest import RunManifest, StageRecord
from spinegpt.train.plan import StagePlan


class ManifestHook(StageHooks):
    def __init__(self, path: Path):
        self.path = path
        self.run: RunManifest | None = None

    def run_started(self, run: RunManifest) -> None:
        self.run = run

    def record_changed(self, stage: StagePlan, record: StageRecord) -> None:
        self.save()

    def save(self) -> None:
        """Write the manifest now (a run-level record changed: the base model's evaluation)."""
        assert self.run is not None, "the manifest is written after run_started"
        self.run.write(self.path)
