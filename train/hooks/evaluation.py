"""The evaluation after a stage: the stage's benchmarks on its final weights, in a process of its own (a crash or an
out-of-memory there cannot take the finished stage with it). A failure is recorded and reported; the stage stays
done, and a later ``--resume`` runs an evaluation that is missing.

With ``eval.baseline`` the run's starting model is evaluated too, when the run starts (before stage 1): the row 0
every stage is compared with, taken from the cache where the same model was evaluated the same way before
(``train/baseline.py``). Its failure is recorded like a stage evaluation's and never stops the training."""

from __future__ import annotations

import logging

from spinegpt.errors import UserError
from spinegpt.eval_hooks import launch as eval_launch
from spinegpt.train import baseline, environment, regression
from spinegpt.train.hooks import StageHooks
from spinegpt.train.hooks.manifest import ManifestHook
from spinegpt.train.manifest import BaselineRecord, EvalRecord, RunManifest, StageRecord, now
from spinegpt.train.plan import BASELINE_DIR, Plan, StagePlan
from spinegpt.train.stage import Engine

logger = logging.getLogger(__name__)
EVAL_LOG = "eval.log"


class EvaluationHook(StageHooks):
    def __init__(self, plan: Plan, engine: Engine, manifest: ManifestHook):
        self.plan = plan
        self.engine = engine
        self.manifest = manifest
        """Where the evaluation's record is written as it changes."""

    def run_started(self, run: RunManifest) -> None:
        job = self.plan.baseline
        out = self.plan.baseline_dir
        if job is None or ((out / eval_launch.SUMMARY).is_file() and run.baseline and run.baseline.status == "done"):
            return  # not asked for, or done by an earlier attempt of this run
        curriculum = self.plan.curriculum
        run.baseline = BaselineRecord(status="running", dir=str(out), started_at=now(), model=curriculum.model)
        self.manifest.save()
        log = self.plan.output_dir / BASELINE_DIR / EVAL_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        python = self.plan.stages[0].command[0] if self.plan.stages else None
        try:
            done = baseline.evaluate(curriculum, job, out, log, python=python, engine=self.engine)
        except (UserError, OSError) as exc:
            run.baseline.set(status="failed", ended_at=now(), error=str(exc))
            logger.warning(f"base model evaluation FAILED (training goes on); log: {log}")
        except BaseException as exc:  # Ctrl-C or SIGTERM: stop, and say so; --resume evaluates again
            run.baseline.set(status="interrupted", ended_at=now(), error=str(exc) or type(exc).__name__)
            self.manifest.save()
            raise
        else:
            run.baseline.set(
                status="done",
                ended_at=now(),
                benchmarks=done.summary["benchmarks"],
                cache_key=done.key,
                cached=done.cached,
            )
            logger.info(f"base model evaluation in {out}" + (" (from the cache)" if done.cached else ""))
        self.manifest.save()

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
        except BaseException as exc:  # Ctrl-C or SIGTERM: the run stops here, and says so; --resume evaluates again
            record.eval.set(status="interrupted", ended_at=now(), error=str(exc) or type(exc).__name__)
            self.manifest.record_changed(stage, record)
            raise
        else:
            record.eval.set(status="done", ended_at=now(), benchmarks=summary["benchmarks"])
            logger.info(f"{stage.label} evaluation written to {stage.eval_dir}")
            for check in regression.record(self.manifest.run, record):
                logger.warning(f"{stage.label} regression budget: {check.describe()} (flagged; the stage is kept)")
        self.manifest.record_changed(stage, record)
