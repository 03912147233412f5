"""What happens around a run's stages, one concern per hook (OLMo-core's callbacks): the run manifest kept on disk
(:mod:`.manifest`), live progress (:mod:`.progress`), experiment tracking (:mod:`.tracking`), the multi-node
leader (:mod:`.leader`) and the evaluation after each stage (:mod:`.evaluation`).

The runner calls every hook at each point of a run's life, in this order::

    run_started -> (stage_started -> record_changed* -> environment -> engine_starting -> step* / stop_reason*
                    -> stage_done)* -> run_ended

A stage already done when the run starts gets ``stage_done`` only (an evaluation it missed is run then). A hook
overrides the points it cares about; the others do nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spinegpt.data_mixes.prepare import PreparedData
    from spinegpt.train.manifest import RunManifest, StageRecord
    from spinegpt.train.plan import StagePlan
    from spinegpt.train.swift_adapter import StepRecord


class StageHooks:
    """The lifecycle of a run, as a hook sees it. Every method does nothing unless a hook overrides it."""

    def run_started(self, run: RunManifest) -> None:
        """The run manifest is open (fresh or resumed); stages follow."""

    def stage_started(self, stage: StagePlan, record: StageRecord) -> None:
        """A stage that is not done starts (its data is prepared next)."""

    def record_changed(self, stage: StagePlan, record: StageRecord) -> None:
        """The stage's record changed (status, data, command, final weights): write it down."""

    def environment(self, stage: StagePlan, data: PreparedData) -> dict[str, str]:
        """Variables this hook adds to the engine's environment, given the stage's prepared data."""
        return {}

    def engine_starting(self, stage: StagePlan, command: list[str]) -> None:
        """The stage's engine starts now with ``command`` (a resume's checkpoint included)."""

    def step(self, stage: StagePlan, step: StepRecord) -> None:
        """The engine logged a training step."""

    def stop_reason(self, stage: StagePlan) -> str | None:
        """Why the engine must stop now, if it must (polled while it runs)."""
        return None

    def stage_done(self, stage: StagePlan, record: StageRecord) -> None:
        """The stage is done: trained and verified now, or found done when the run started."""

    def run_ended(self, status: str, error: BaseException | None) -> None:
        """The run stops: ``done``, ``partial`` (``--until``), ``failed`` or ``interrupted``."""


class Hooks(StageHooks):
    """Several hooks as one, called in order."""

    def __init__(self, hooks: Sequence[StageHooks]):
        self.hooks = list(hooks)

    def run_started(self, run: RunManifest) -> None:
        for hook in self.hooks:
            hook.run_started(run)

    def stage_started(self, stage: StagePlan, record: StageRecord) -> None:
        for hook in self.hooks:
            hook.stage_started(stage, record)

    def record_changed(self, stage: StagePlan, record: StageRecord) -> None:
        for hook in self.hooks:
            hook.record_changed(stage, record)

    def environment(self, stage: StagePlan, data: PreparedData) -> dict[str, str]:
        env: dict[str, str] = {}
        for hook in self.hooks:
            env.update(hook.environment(stage, data))
        return env

    def engine_starting(self, stage: StagePlan, command: list[str]) -> None:
        for hook in self.hooks:
            hook.engine_starting(stage, command)

    def step(self, stage: StagePlan, step: StepRecord) -> None:
        for hook in self.hooks:
            hook.step(stage, step)

    def stop_reason(self, stage: StagePlan) -> str | None:
        return next((reason for hook in self.hooks if (reason := hook.stop_reason(stage)) is not None), None)

    def stage_done(self, stage: StagePlan, record: StageRecord) -> None:
        for hook in self.hooks:
            hook.stage_done(stage, record)

    def run_ended(self, status: str, error: BaseException | None) -> None:
        for hook in self.hooks:
            hook.run_ended(status, error)
