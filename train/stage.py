"""One stage, top to bottom: prepare its data, launch the engine, verify what it wrote, mark it done.

A stage is *done* only when its ``DONE.json`` exists. That file is written last, atomically, after the engine
exited cleanly at its final step, the final weights were checked against the model the stage started from, and
their hash was recorded. Anything short of that (a crash, a kill, a failed check) leaves the stage not done, and
``--resume`` continues it from its last complete engine checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from spinegpt import model_ref, proc
from spinegpt.data_mixes import audit as data_audit
from spinegpt.data_mixes.prepare import PreparedData
from spinegpt.errors import os_error_message
from spinegpt.files import write_json_atomic
from spinegpt.log import echo
from spinegpt.proc import LineHandler, StopCheck
from spinegpt.train import environment, swift_adapter, weights
from spinegpt.train.errors import RunError, StageFailed
from spinegpt.train.hooks import StageHooks
from spinegpt.train.manifest import StageRecord, now
from spinegpt.train.plan import FINAL, Plan, StagePlan

logger = logging.getLogger(__name__)

DONE = "DONE.json"
ENGINE_LOG = "engine.log"


@dataclass(frozen=True)
class StageResult:
    name: str
    status: str  # "done" | "skipped"
    final: Path


class Engine(Protocol):
    """Runs one process group to its end (``spinegpt.proc.run``; tests pass a stand-in)."""

    def __call__(
        self,
        command: list[str],
        env: dict[str, str],
        log_path: Path,
        on_line: LineHandler = ...,
        cwd: Path | None = ...,
        stop: StopCheck | None = ...,
    ) -> int: ...


def is_done(stage_dir: Path) -> bool:
    return (stage_dir / DONE).is_file() and (stage_dir / FINAL).exists()


def engine_console(label: str, on_step: Callable[[swift_adapter.StepRecord], None] | None = None) -> LineHandler:
    """What of the engine's output reaches the console: one line per logged step (and our own children's lines)."""

    def on_line(line: str) -> None:
        step = swift_adapter.console_step(line)
        if step is None:
            if line.startswith("[spinegpt"):
                echo(line)
            return
        logger.info(step.summary(label))
        if on_step is not None:
            on_step(step)

    return on_line


@dataclass
class StageRun:
    """One stage of a run, trained to its verified final weights; the run around it hears of every step of the way
    through ``hooks`` (manifest, progress, tracking, the multi-node leader)."""

    plan: Plan
    stage: StagePlan
    record: StageRecord
    hooks: StageHooks
    engine: Engine = proc.run
    resume: bool = False
    previous: StageRecord | None = None
    """The record of the stage this one starts from (None for the first)."""

    def _changed(self) -> None:
        self.hooks.record_changed(self.stage, self.record)

    def run(self) -> Path:
        """Train the stage to its verified final weights; returns the final checkpoint. Whatever stops it (bad data,
        an engine failure, Ctrl-C) leaves its record saying so, never "running"."""
        try:
            return self._run()
        except BaseException as exc:
            if self.record.status == "running":
                self.record.set(status="failed" if isinstance(exc, Exception) else "interrupted", error=str(exc))
                try:
                    self._changed()
                except OSError as again:  # the full disk that stopped the stage: the run's end says so and retries
                    logger.error(f"{self.stage.label} could not record its failure: {os_error_message(again)}")
            raise

    def _run(self) -> Path:
        stage, record, label = self.stage, self.record, self.stage.label
        start_model = self._start_model()
        record.set(status="running", started_at=record.started_at or now())
        self._changed()

        logger.info(f"{label} preparing data")
        prepared = self._prepare()
        record.started_from_sha256 = self._source_hash(start_model)

        command, resumed_from = self._command()
        record.set(command=command, resumed_from=str(resumed_from) if resumed_from else None)
        self._changed()
        if resumed_from is not None and swift_adapter.is_last_step(resumed_from):
            # Killed after the final checkpoint was written but before DONE.json: that checkpoint is the finished
            # stage. Training on from it would run past max_steps, and the engine's rotation would delete it.
            logger.info(f"{label} {resumed_from.name} is the stage's last step: verifying it, not training on")
            return self._finish(start_model)
        how = f"resuming from {resumed_from.name}" if resumed_from else f"from {start_model}"
        logger.info(f"{label} training {how}; {prepared.rows} rows; log {stage.dir / ENGINE_LOG}")
        if stage.deepspeed_changes and stage.deepspeed is not None:
            write_json_atomic(stage.deepspeed, stage.deepspeed_config)  # before the other nodes are told to start
        self.hooks.engine_starting(stage, command)
        curriculum = self.plan.curriculum
        env = environment.process_env(
            curriculum, self.plan.launch, stage.deepspeed_config, self.hooks.environment(stage, prepared)
        )
        if self.plan.launch.launcher == "deepspeed":
            environment.write_deepspeed_env(stage.dir, curriculum, env)
        started, started_at = time.monotonic(), time.time()
        # The stage folder is the engine's working directory: every path it gets is absolute, and anything it
        # drops in its working directory (wandb's config-defaults.yaml is read from there) stays with the stage.
        code = self.engine(
            command,
            env,
            stage.dir / ENGINE_LOG,
            engine_console(label, lambda step: self.hooks.step(stage, step)),
            stage.dir,
            lambda: self.hooks.stop_reason(stage),
        )
        record.engine_seconds = round((record.engine_seconds or 0) + time.monotonic() - started, 1)
        if code != 0:
            why = self.hooks.stop_reason(stage) or f"engine exited with code {code}"
            if full := self._disk_full(started_at):
                why = f"{why}: {full}"
            record.set(status="failed", error=why)
            self._changed()
            raise StageFailed(f"{label} {why}; full log: {stage.dir / ENGINE_LOG}")
        return self._finish(start_model)

    def _disk_full(self, since: float) -> str | None:
        """When the engine failed because the disk filled up (its log says so, or almost nothing is left), what
        happened, the incomplete checkpoints it left removed: they can never be resumed from, and the run needs
        their space to record the failure."""
        folder = self.stage.dir
        usage = shutil.disk_usage(folder)
        said = _log_says(folder / ENGINE_LOG, ("No space left on device", "Disk quota exceeded"))
        if not said and usage.free > usage.total // 100:
            return None
        removed = swift_adapter.remove_incomplete(self.stage.engine_dir, since)
        for entry in removed:
            logger.warning(f"{self.stage.label} removed the incomplete checkpoint {entry}")
        free = shutil.disk_usage(folder).free
        cut = f"; incomplete checkpoint(s) removed: {', '.join(r.split(':')[0] for r in removed)}" if removed else ""
        return (
            f"the disk holding {folder} is full ({free / 2**30:.1f} GiB free now{cut}); free space (or lower "
            "save_total_limit), then continue with --resume"
        )

    def _start_model(self) -> str:
        if self.stage.index == 0:
            return model_ref.materialise(self.plan.curriculum.model)
        if not is_done(self.plan.stages[self.stage.index - 1].dir):
            raise RunError(f"{self.stage.label} the previous stage is not done")
        return self.stage.model

    def _prepare(self) -> PreparedData:
        """The stage's rows, checked, counted exactly, and the over-length policy applied."""
        curriculum, stage = self.plan.curriculum, self.stage
        counter = data_audit.counter_for(model_ref.materialise(curriculum.model), {**stage.env, **os.environ})
        prepared, lengths = self.plan.data.prepare_stage(
            stage.stage.data, stage.dataset.parent, counter, stage.stage.max_length, stage.stage.over_length
        )
        if lengths["over_max_length"]:
            what = "dropped" if lengths["dropped"] else "truncated by the engine"
            logger.info(
                f"{stage.label} {lengths['over_max_length']} record(s) over max_length {stage.stage.max_length}: {what}"
            )
        if self.record.data and self.record.data["sha256"] != prepared.sha256:
            raise RunError(
                f"{stage.label} cannot resume: the stage's data changed since the run started "
                f"({self.record.data['sha256'][:12]} -> {prepared.sha256[:12]})"
            )
        self.record.data = {**prepared.to_json(), "lengths": lengths}
        return prepared

    def _source_hash(self, start_model: str) -> str | None:
        if self.previous is not None:
            return self.previous.weights_sha256
        return weights.weights_sha256(Path(start_model)) if Path(start_model).is_dir() else None

    def _command(self) -> tuple[list[str], Path | None]:
        stage = self.stage
        checkpoint = swift_adapter.resumable_checkpoint(stage.engine_dir) if self.resume else None
        if checkpoint is None and stage.engine_dir.exists() and any(stage.engine_dir.iterdir()):
            # Leftovers of an attempt that never reached a checkpoint: keep them for inspection, out of the way.
            aside = stage.engine_dir.with_name(f"engine.abandoned-{int(time.time())}")
            stage.engine_dir.rename(aside)
            logger.info(f"moved the incomplete engine output of an earlier attempt to {aside}")
        if checkpoint is None:
            return stage.command, None
        return self.plan.command(stage, resume_from=checkpoint), checkpoint

    def _finish(self, start_model: str) -> Path:
        stage, record = self.stage, self.record
        label = f"stage {stage.stage.name!r}"
        checkpoint = swift_adapter.resumable_checkpoint(stage.engine_dir)
        if checkpoint is None:
            raise StageFailed(f"{label}: the engine exited cleanly but left no checkpoint in {stage.engine_dir}")
        state = swift_adapter.trainer_state(checkpoint)
        step, max_steps = state.get("global_step"), state.get("max_steps")
        if step != max_steps:
            raise StageFailed(f"{label}: the last checkpoint {checkpoint.name} is at step {step} of {max_steps}")
        final = self._merge_lora(checkpoint, start_model) if stage.stage.tuner_type == "lora" else checkpoint
        try:
            weights.verify(final, start_model)
        except weights.WeightsError as exc:
            record.set(status="failed", error=str(exc))
            self._changed()
            raise StageFailed(f"{label}: final weights did not verify: {exc}") from exc

        losses = swift_adapter.losses(swift_adapter.read_steps(stage.engine_dir))
        record.set(
            final_checkpoint=str(final),
            final=str(stage.final),
            weights_sha256=weights.weights_sha256(final),
            global_step=step,
            losses=losses,
            final_loss=losses[-1][1] if losses else None,
        )
        # The `final` link, then DONE.json, each replaced atomically: a stage is done exactly when DONE.json exists.
        link_tmp = stage.dir / f".{FINAL}.tmp"
        link_tmp.unlink(missing_ok=True)
        link_tmp.symlink_to(final.relative_to(stage.dir))
        os.replace(link_tmp, stage.final)
        record.set(status="done", ended_at=now())
        done = record.model_dump(
            mode="json",
            include={
                "name",
                "final",
                "final_checkpoint",
                "weights_sha256",
                "started_from_sha256",
                "model",
                "global_step",
                "final_loss",
                "ended_at",
                "config_sha256",  # what it was trained with: a run whose manifest is lost is checked against it
            },
        )
        write_json_atomic(stage.dir / DONE, done)
        self._changed()
        logger.info(f"{stage.label} done: final weights {final} (sha256 {str(record.weights_sha256)[:12]})")
        return final

    def _merge_lora(self, checkpoint: Path, start_model: str) -> Path:
        command, merged = swift_adapter.merge_lora_command(
            curriculum=self.plan.curriculum,
            model=start_model,
            adapter_checkpoint=checkpoint,
            python=self.stage.command[0],
        )
        label = self.stage.label
        logger.info(f"{label} merging LoRA adapters of {checkpoint.name} into full weights")
        env = environment.process_env(self.plan.curriculum)
        code = self.engine(command, env, self.stage.dir / ENGINE_LOG, engine_console(label))
        if code != 0:
            raise StageFailed(
                f"{label} merging the LoRA adapters failed (code {code}); log: {self.stage.dir / ENGINE_LOG}"
            )
        return merged


def _log_says(log: Path, phrases: tuple[str, ...], tail: int = 1 << 16) -> bool:
    """Whether the last ``tail`` bytes of a log mention any of ``phrases``."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - tail))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return False
    return any(phrase in text for phrase in phrases)
