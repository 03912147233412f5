"""Run a curriculum: its stages in order (``stage.py`` runs one), the run manifest kept current, and after each
stage its evaluation. Node 0 leads; on several torchrun nodes the others follow it (``multinode.py``)."""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from spinegpt import proc
from spinegpt.errors import UserError, os_error_message
from spinegpt.files import FolderBusy, FolderLock, folder_problem
from spinegpt.train import cost, cost_plan, manifest, swift_adapter
from spinegpt.train.audit import audit_curriculum
from spinegpt.train.environment import PIXEL_ENV
from spinegpt.train.errors import RunError
from spinegpt.train.hooks import Hooks, StageHooks
from spinegpt.train.hooks.evaluation import EvaluationHook
from spinegpt.train.hooks.leader import LeaderHook
from spinegpt.train.hooks.manifest import ManifestHook
from spinegpt.train.hooks.progress import ProgressHook
from spinegpt.train.hooks.tracking import TrackingHook
from spinegpt.train.manifest import Attempt, RunManifest, StageRecord, now
from spinegpt.train.multinode import Follower
from spinegpt.train.plan import Plan, StagePlan
from spinegpt.train.stage import DONE, Engine, StageResult, StageRun, is_done

logger = logging.getLogger(__name__)

__all__ = ["RunError", "Runner", "StageResult"]


# Curriculum keys that decide a stage's trained weights besides the stage's own block (the data is compared by hash).
WEIGHTS_KEYS = ("model", "model_type", "template", "seed", "torch_dtype", "attn_impl")


def weights_config(plan: Plan, stage: StagePlan) -> dict[str, Any]:
    """Everything that decides what a stage trains into its weights; a resume must see all of it unchanged
    (evaluation settings may change between attempts)."""
    curriculum = plan.curriculum
    env = {**stage.env, **os.environ}
    return {
        "stage": stage.stage.model_dump(mode="json", exclude={"eval"}),
        "curriculum": {key: getattr(curriculum, key) for key in WEIGHTS_KEYS},
        "starts_from": stage.starts_from,
        # The engine resizes images by these: another value is other visual tokens, so other gradients.
        "pixels": {key: env.get(key) for key in PIXEL_ENV},
    }


def stage_record(plan: Plan, stage: StagePlan) -> StageRecord:
    """A stage's record before it starts: what it will run."""
    config = stage.stage.model_dump(mode="json")
    return StageRecord(
        name=stage.stage.name,
        index=stage.index,
        dir=str(stage.dir),
        status="pending",
        config=config,
        config_sha256=manifest.stable_hash(weights_config(plan, stage)),
        model=stage.model,
        starts_from=stage.starts_from,
        deepspeed=str(stage.deepspeed) if stage.deepspeed else None,
        zero_stage=stage.zero_stage,
        engine_args=stage.engine_args,
        command=stage.command,
    )


class Runner:
    """Executes a :class:`Plan`, keeping the run manifest current; what happens around each stage is its hooks'."""

    def __init__(
        self,
        plan: Plan,
        resume: bool = False,
        overrides: tuple[str, ...] = (),
        until: str | None = None,
        engine: Engine = proc.run,
    ):
        names = [s.stage.name for s in plan.stages]
        if until is not None and until not in names:
            raise RunError(f"--until {until!r}: no such stage; stages: {', '.join(names)}")
        self.until = until
        self.plan = plan
        self.resume = resume
        self.overrides = overrides
        self.engine = engine
        self.manifest_path = plan.output_dir / manifest.FILE
        self.data: RunManifest | None = None
        self.lock = FolderLock(plan.output_dir)
        self.hooks = self._hooks(time.time())

    def _hooks(self, opened_at: float) -> StageHooks:
        saved = ManifestHook(self.manifest_path)
        hooks: list[StageHooks] = [saved, ProgressHook(self.plan.output_dir, len(self.plan.stages))]
        hooks.append(TrackingHook(self.plan.curriculum))
        if self.plan.launch.multi_node_torchrun:
            hooks.append(LeaderHook(self.plan, opened_at))
        hooks.append(EvaluationHook(self.plan, self.engine, saved))
        return Hooks(hooks)

    # -- the manifest ---------------------------------------------------------------------------------------------

    @property
    def run_manifest(self) -> RunManifest:
        assert self.data is not None, "the run is not open"
        return self.data

    def _save(self) -> None:
        self.run_manifest.write(self.manifest_path)

    def _fresh_manifest(self) -> RunManifest:
        loaded = self.plan.loaded
        return RunManifest(
            format=manifest.FORMAT,
            name=self.plan.name,
            run_id=f"{self.plan.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            curriculum_file=str(loaded.source),
            overrides=list(self.overrides),
            curriculum=loaded.curriculum.model_dump(mode="json"),
            output_dir=str(self.plan.output_dir),
            launch=vars(self.plan.launch),
            world_size=self.plan.world_size,
            created_at=now(),
            status="running",
            attempts=[],
            stages=[stage_record(self.plan, s) for s in self.plan.stages],
        )

    def _lock(self) -> None:
        """One run per output folder: a second ``spinegpt run`` (or ``--resume``) into it while the first still
        trains would train into the same engine folder and lose manifest updates."""
        try:
            self.lock.acquire({"host": platform.node(), "pid": os.getpid(), "since": now()})
        except FolderBusy as exc:
            raise RunError(
                f"{exc}: one run per output folder. Wait for it to finish, or stop it (kill {exc.holder.get('pid')} "
                f"on {exc.holder.get('host')}), then --resume"
            ) from None

    def _open(self) -> None:
        if problem := folder_problem(self.plan.output_dir):
            raise RunError(f"--output-dir {self.plan.output_dir}: {problem}; nothing was written")
        self.plan.output_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        exists = self.manifest_path.is_file()
        if exists and not self.resume:
            raise RunError(
                f"{self.plan.output_dir} already holds a run ({manifest.FILE}); pass --resume to continue it, "
                "or choose another --output-dir"
            )
        done = [s for s in self.plan.stages if is_done(s.dir)]
        if not exists and done and not self.resume:
            raise RunError(
                f"{self.plan.output_dir} holds done stages ({', '.join(s.stage.name for s in done)}) but no "
                f"{manifest.FILE} (deleted?): pass --resume to go on with them (each is checked against what it was "
                "trained with), or choose another --output-dir"
            )
        if not exists:
            self.data = self._adopted(done)
        else:
            try:
                self.data = RunManifest.read(self.manifest_path)
            except manifest.ManifestError as exc:
                aside = self.manifest_path.with_name(f"{manifest.FILE}.unreadable-{int(time.time())}")
                self.manifest_path.rename(aside)
                logger.warning(f"{exc}; kept as {aside.name}, the run goes on from its stages' own records")
                self.data = self._adopted(done)
            else:
                self._check_resumable(self.data)
        self.data.status = "running"
        self.data.attempts = [
            *self.data.attempts,
            Attempt(started_at=now(), resume=self.resume, **manifest.environment()),
        ]
        self._save()

    def _adopted(self, done: list[StagePlan]) -> RunManifest:
        """A fresh manifest that takes over the stages found done (their DONE.json) when the manifest itself is
        lost: only a stage trained with what the curriculum now asks (DONE.json records its config hash)."""
        data = self._fresh_manifest()
        for stage in done:
            record = data.stages[stage.index]
            try:
                found = json.loads((stage.dir / DONE).read_text())
            except (OSError, ValueError):
                found = {}
            if found.get("config_sha256") != record.config_sha256:
                raise RunError(
                    f"cannot resume: stage {stage.stage.name!r} is done, but not with the settings the curriculum now "
                    f"gives it (or its {DONE} does not say which): start a new run (another --output-dir)"
                )
            record.set(**{k: v for k, v in found.items() if k in StageRecord.model_fields}, status="done")
            logger.info(f"{stage.label} done (found its {DONE} with the same settings)")
        return data

    def _check_resumable(self, data: RunManifest) -> None:
        """A resumed run must be the same run: same stages, and no started stage reconfigured."""
        names_then = [s.name for s in data.stages]
        names_now = [s.stage.name for s in self.plan.stages]
        if names_then != names_now:
            raise RunError(f"cannot resume: the run had stages {names_then}, the curriculum now has {names_now}")
        if data.world_size != self.plan.world_size:
            # Only a stage with checkpoints holds rank-partitioned state; one that never saved (it failed before
            # its first checkpoint) or is done can go on with another number of processes.
            saved = [
                s.stage.name
                for s in self.plan.stages
                if not is_done(s.dir) and swift_adapter.resumable_checkpoint(s.engine_dir) is not None
            ]
            if saved:
                raise RunError(
                    f"cannot resume: the run used {data.world_size} process(es), this launch has "
                    f"{self.plan.world_size}, and stage(s) {saved} hold ZeRO checkpoints partitioned per rank: resume "
                    f"with --nproc {data.world_size // data.launch.get('nnodes', 1)} (or start a new run)"
                )
            logger.warning(
                f"the run began with {data.world_size} process(es); the stages still to train use "
                f"{self.plan.world_size} (their global batch changes with it)"
            )
            data.world_size, data.launch = self.plan.world_size, vars(self.plan.launch)
        for i, (record, stage) in enumerate(zip(data.stages, self.plan.stages, strict=True)):
            fresh = stage_record(self.plan, stage)
            if record.status == "pending":
                data.stages[i] = fresh  # not started yet: free to take the current configuration
            elif record.config_sha256 != fresh.config_sha256:
                raise RunError(
                    f"cannot resume: stage {stage.stage.name!r} was started with another configuration (its settings, "
                    f"or the curriculum's {', '.join(WEIGHTS_KEYS)}, or {'/'.join(PIXEL_ENV)}); start a new run "
                    "(another --output-dir) to change it"
                )

    # -- the stage loop -------------------------------------------------------------------------------------------

    def run(self) -> list[StageResult]:
        if not self.plan.launch.leads:
            return Follower(self.plan, self.engine, self.until).run()
        if not self.plan.stages:
            logger.info(
                f"nothing to train: splits {self.plan.curriculum.splits} leave every stage without data "
                "(the base model as it is; `spinegpt sweep` or `spinegpt eval` evaluates it)"
            )
        try:
            self._open()
            return self._run_stages()
        finally:
            self.lock.release()

    def _run_stages(self) -> list[StageResult]:
        data = self.run_manifest
        results = []
        try:
            self.hooks.run_started(data)  # in here: a base-model evaluation stopped is recorded too
            self._build_mixes()
            self._predict_cost()
            for stage in self.plan.stages:
                results.append(self._run_stage(stage))
                if stage.stage.name == self.until:
                    break
        except BaseException as exc:
            data.status = "failed" if isinstance(exc, Exception) else "interrupted"
            data.attempts[-1].set(ended_at=now(), status=data.status, error=str(exc))
            # Recording the end must not hide why it ended: a full disk that stopped the run may refuse these too.
            recorded = _anyway(self._save, f"the failure in {self.manifest_path}")
            _anyway(functools.partial(self.hooks.run_ended, data.status, exc), "the run's end in its trackers")
            if isinstance(exc, OSError):
                said = f"{manifest.FILE} says {data.status}" if recorded else f"{manifest.FILE} could not record it"
                raise RunError(
                    f"{os_error_message(exc)}. The run's own files could not be written, so it stopped ({said}); "
                    "fix that, then continue with --resume"
                ) from exc
            raise
        # "partial": stopped on purpose by --until; --resume continues with the next stage.
        data.status = "done" if len(results) == len(self.plan.stages) else "partial"
        data.attempts[-1].set(ended_at=now(), status=data.status)
        self._save()
        self.hooks.run_ended(data.status, None)
        logger.info(f"run {self.plan.name} done: {len(results)} stage(s) in {self.plan.output_dir}")
        return results

    def _build_mixes(self) -> None:
        """The data mixes of the stages still to train, built together before the first (shared sources read
        once); each stage then finds its mix in the cache when it prepares its data."""
        names = [s.stage.name for s in self.plan.stages]
        last = names.index(self.until) + 1 if self.until in names else len(names)
        pending = [s for s in self.plan.stages[:last] if not is_done(s.dir)]
        self.plan.data.build([source for s in pending for source in s.stage.data])

    def _predict_cost(self) -> None:
        """What the run will cost (``spinegpt plan --cost``), into the manifest once, when the run first starts: the
        prediction stands beside what each stage took. A prediction never stops a run: anything wrong with the
        data is reported again, and fails its stage, when that stage prepares it."""
        data = self.run_manifest
        if data.cost is not None or not self.plan.stages:
            return
        found = cost_plan.local_gpu()
        try:
            audits = audit_curriculum(self.plan, self.plan.world_size)
            data.cost = cost_plan.curriculum_cost(
                self.plan,
                audits,
                gpu=found or cost.GPUS[cost.DEFAULT_GPU],
                gpu_source="detected" if found else "default",
            )
        except (UserError, ValueError, OSError) as exc:
            logger.warning(f"no cost prediction for this run: {exc}")
            return
        data.cost.created_at = now()
        self._save()
        logger.info(
            f"predicted cost on {data.cost.assumptions.gpus} x {data.cost.assumptions.gpu}: "
            f"{data.cost.gpu_hours:,.1f} GPU-hours, {data.cost.wall_hours:,.1f} h wall (run_manifest.json: cost)"
        )

    def _run_stage(self, stage: StagePlan) -> StageResult:
        data = self.run_manifest
        record = data.stages[stage.index]
        if is_done(stage.dir):
            logger.info(f"{stage.label} already done, skipping ({stage.final})")
            self.hooks.stage_done(stage, record)  # an evaluation it missed runs now
            return StageResult(stage.stage.name, "skipped", stage.final)
        self.hooks.stage_started(stage, record)
        StageRun(
            plan=self.plan,
            stage=stage,
            record=record,
            hooks=self.hooks,
            engine=self.engine,
            resume=self.resume,
            previous=data.stages[stage.index - 1] if stage.index > 0 else None,
        ).run()
        self.hooks.stage_done(stage, record)
        return StageResult(stage.stage.name, "done", stage.final)


def _anyway(action: Callable[[], None], what: str) -> bool:
    """Run ``action``; an OSError (the disk that failed the run refusing this write too) is logged, not raised."""
    try:
        action()
    except OSError as exc:
        logger.error(f"could not record {what}: {os_error_message(exc)}")
        return False
    return True
