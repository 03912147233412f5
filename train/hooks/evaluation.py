"""The evaluation after a stage: the stage's benchmarks on its final weights, in a process of its own (a crash or an
out-of-memory there cannot take the finished stage with it). A failure is recorded and reported; the stage stays
done, and a later ``--resume`` runs an evaluation that is missing."""

from __future__ import annotations

import logging

from spinegpt.eval_hooks import launch as eval_launch
from spinegpt.train import environment, regression
from spinegpt.train.hooks import StageHooks
from spinegpt.train.hooks.manifest import ManifestHook
from spinegpt.train.manifest import EvalRecord, StageRecord, now
from spinegpt.train.plan import Plan, StagePlan
from spinegpt.train.stage import Engine

logger = logging.getLogger(__name__)
EVAL_LOG = "eval.log"


class EvaluationHook(StageHooks):
    def __init__(self, plan: Plan, engine: Engine, manifest: ManifestHook):
        self.plan = plan
        self.engine = engine
        self.manifest = manifest
        """Where the evaluation's record is written as it changes."""

    def stage_done(self, stage: StagePlan, record: StageRecord) -> None:
        if stage.eval is None or (stage.eval_dir / eval_launch.SUMMARY).is_file():
            return  # nothing to evaluate, or evaluated already
        logger.info(f"{stage.label} evaluating on {', '.join(b.label for b in stage.eval.benchmarks)}")
        record.eval = EvalRecord(status="running", dir=str(stage.eval_dir), started_at=now())
        self.manifest.record_changed(stage, record)
        try:
            summary = eval_launch.run(
                str(stage.final),
                stage.eval,
                stage.eval_dir,
                environment.process_env(self.plan.curriculum),
                stage.dir / EVAL_LOG,
                python=stage.command[0],
                engine=self.engine,
            )
        except eval_launch.EvalFailed as exc:
            record.eval.set(status="failed", ended_at=now(), error=str(exc))
            logger.warning(
                f"{stage.label} evaluation FAILED (the trained stage is kept as done); log: {stage.dir / EVAL_LOG}"
            )
        else:
            record.eval.set(status="done", ended_at=now(), benchmarks=summary["benchmarks"])
            logger.info(f"{stage.label} evaluation written to {stage.eval_dir}")
            for check in regression.record(self.manifest.run, record):
                logger.warning(f"{stage.label} regression budget: {check.describe()} (flagged; the stage is kept)")
        self.manifest.record_changed(stage, record)
