"""Resolve a curriculum into exactly what will run, stage by stage, with no side effects.

``spinegpt plan`` prints this; ``spinegpt run`` executes it. Both call :func:`build`, so the printed command is
the command that runs (the only value not knowable in advance, a resumed stage's checkpoint, is added at run time).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinegpt import model_ref
from spinegpt.data_mixes.records import SPLITS
from spinegpt.data_mixes.rows import DataError
from spinegpt.data_mixes.stage_data import CurriculumData
from spinegpt.eval_hooks.config import EvalConfig, EvalJob, ModelLoading
from spinegpt.train import curriculum, deepspeed_configs, environment, swift_adapter
from spinegpt.train.curriculum import Curriculum, LoadedCurriculum, Stage
from spinegpt.train.topology import Launch

STAGES_DIR = "stages"
BASELINE_DIR = "baseline"
"""Inside a run folder: the base model's evaluation (``baseline/eval/``) and its log."""
FINAL = "final"
"""Inside a stage folder: a link to the checkpoint holding the stage's verified final weights."""
DEEPSPEED = "deepspeed.json"
"""Inside a stage folder: the DeepSpeed config the engine reads, where it differs from the one the stage names."""


@dataclass(frozen=True)
class StagePlan:
    index: int
    stage: Stage
    dir: Path
    model: str
    """What the stage starts from: the base model, or the previous stage's ``final`` folder."""
    starts_from: str
    """``base`` or ``stage:<name>``."""
    data: list[dict[str, str]]
    dataset: Path
    """The prepared JSONL the engine reads (written by the run)."""
    deepspeed: Path | None
    """The DeepSpeed config file the engine reads: the one the stage names, or, where the stage's other settings
    need a change (``deepspeed_changes``), ``<stage>/deepspeed.json`` written by the run before the engine starts."""
    zero_stage: int | None
    engine_args: list[str]
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    eval: EvalJob | None = None
    """Benchmarks run on the stage's final weights once it is done."""
    splits: list[str] | None = None
    """The data splits the stage trains on (``general``, ``non_spine``, ``spine``); None for plain JSONL data."""
    total: int = 1
    """Stages in the plan (for the label)."""
    deepspeed_config: dict[str, Any] | None = None
    """The content of ``deepspeed``."""
    deepspeed_source: Path | None = None
    """The config the stage names (``configs/deepspeed/<name>.json`` or its own path)."""
    deepspeed_changes: list[str] = field(default_factory=list)
    """What ``deepspeed_config`` changes from the named config, and why."""

    @property
    def label(self) -> str:
        """How the console names the stage: ``[2/3 specialise]``."""
        return f"[{self.index + 1}/{self.total} {self.stage.name}]"

    @property
    def engine_dir(self) -> Path:
        return self.dir / "engine"

    @property
    def final(self) -> Path:
        return self.dir / FINAL

    @property
    def eval_dir(self) -> Path:
        return self.dir / "eval"

    def to_json(self) -> dict[str, Any]:
        stage = self.stage
        return {
            "index": self.index,
            "name": stage.name,
            "dir": str(self.dir),
            "model": self.model,
            "starts_from": self.starts_from,
            "data": self.data,
            "splits": self.splits,
            "learning_rate": stage.learning_rate,
            "max_length": stage.max_length,
            "num_train_epochs": stage.num_train_epochs,
            "max_steps": stage.max_steps,
            "deepspeed": str(self.deepspeed) if self.deepspeed else None,
            "deepspeed_source": str(self.deepspeed_source) if self.deepspeed_source else None,
            "deepspeed_changes": self.deepspeed_changes,
            "deepspeed_config": self.deepspeed_config,
            "zero_stage": self.zero_stage,
            "tuner_type": stage.tuner_type,
            "per_device_train_batch_size": stage.per_device_train_batch_size,
            "gradient_accumulation_steps": stage.gradient_accumulation_steps,
            "command": self.command,
            "command_line": shlex.join(self.command),
            "eval": [b.label for b in self.eval.benchmarks] if self.eval else [],
        }


@dataclass(frozen=True)
class SkippedStage:
    """A stage of the curriculum that the curriculum's ``splits`` leave without data."""

    name: str
    reason: str


@dataclass(frozen=True)
class Plan:
    loaded: LoadedCurriculum
    output_dir: Path
    launch: Launch
    stages: list[StagePlan]
    data: CurriculumData
    """The one owner of the stages' data for this command (each mix definition read once)."""
    skipped: list[SkippedStage] = field(default_factory=list)
    baseline: EvalJob | None = None
    """The base model's evaluation before stage 1 (``eval.baseline``), with the curriculum's ``eval`` settings."""

    @property
    def baseline_dir(self) -> Path:
        return self.output_dir / BASELINE_DIR / "eval"

    @property
    def curriculum(self) -> Curriculum:
        return self.loaded.curriculum

    def command(self, stage: StagePlan, resume_from: Path | None = None) -> list[str]:
        """The stage's engine command; ``resume_from``: continue from that checkpoint (known at run time only)."""
        if resume_from is None:
            return stage.command
        args = engine_arguments(
            self.loaded, stage.stage, stage.model, stage.dir, stage.deepspeed, self.launch, resume_from
        )
        return swift_adapter.command(args, self.launch, stage.command[0])

    @property
    def name(self) -> str:
        return self.loaded.curriculum.name

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "curriculum": str(self.loaded.source),
            "output_dir": str(self.output_dir),
            "base_model": self.loaded.curriculum.model,
            "world_size": self.world_size,
            "nproc_per_node": self.launch.nproc_per_node,
            "nnodes": self.launch.nnodes,
            "node_rank": self.launch.node_rank,
            "launcher": self.launch.launcher,
            "splits": self.loaded.curriculum.splits,
            "stages": [{**s.to_json(), "global_batch": global_batch(s.stage, self.world_size)} for s in self.stages],
            "skipped": [vars(s) for s in self.skipped],
            "baseline": [b.label for b in self.baseline.benchmarks] if self.baseline else [],
        }

    def render(self) -> str:
        curriculum = self.loaded.curriculum
        lines = [
            f"curriculum {self.name}  ({self.loaded.source})",
            f"  base model : {curriculum.model}",
            f"  output dir : {self.output_dir}",
            f"  processes  : {self.launch.nproc_per_node} per node x {self.launch.nnodes} node(s)",
        ]
        if self.baseline:
            names = ", ".join(b.label for b in self.baseline.benchmarks)
            lines.append(f"  baseline   : the base model on {names} before stage 1 (cached), in {self.baseline_dir}")
        for plan in self.stages:
            stage = plan.stage
            steps = f"max_steps {stage.max_steps}" if stage.max_steps else f"{stage.num_train_epochs:g} epoch(s)"
            source = plan.deepspeed_source
            ds = f"{source.name} (ZeRO-{plan.zero_stage})" if source else "none (DDP)"
            batch = global_batch(stage, self.world_size)
            lines += [
                "",
                f"stage {plan.index + 1}/{len(self.stages)}: {stage.name}",
                f"  starts from : {plan.model}  [{plan.starts_from}]",
                "  data        : " + ", ".join(f"{d['source']} -> {d['path']}" for d in plan.data),
                "  splits      : " + (", ".join(plan.splits) if plan.splits is not None else "n/a (plain JSONL)"),
                f"  training    : {stage.tuner_type}, lr {stage.learning_rate:g}, max_length {stage.max_length}, "
                f"{steps}",
                f"  global batch: {batch} = {stage.per_device_train_batch_size} per process x "
                f"{stage.gradient_accumulation_steps} accumulation x {self.world_size // stage.sequence_parallel_size}"
                " data-parallel processes (it changes with --nproc and --nodes)",
                f"  deepspeed   : {ds}" + (f"  [{source}]" if source else ""),
                *(f"                changed: {change}" for change in plan.deepspeed_changes),
                "  attention   : {} ({})".format(*swift_adapter.attention(stage.attn_impl or curriculum.attn_impl)),
                f"  data loading: {swift_adapter.data_workers(plan.engine_args)}",
                f"  output      : {plan.dir}",
                f"  command     : {shlex.join(plan.command)}",
            ]
            if plan.eval:
                judge = (
                    f"judge {plan.eval.eval.judge.model}" if plan.eval.eval.judge else "no judge: reports not scored"
                )
                names = ", ".join(f"{b.label} ({b.path})" for b in plan.eval.benchmarks)
                lines.append(f"  eval after  : {names}; {judge}")
        if curriculum.splits is not None:
            lines += [
                "",
                f"splits {curriculum.splits}: "
                + (f"{len(self.stages)} stage(s) train" if self.stages else "nothing trains (the base model as it is)"),
            ]
        for skipped in self.skipped:
            lines.append(f"  skipped stage {skipped.name}: {skipped.reason}")
        return "\n".join(lines)


def load(path: str | Path, overrides: Sequence[str] = (), base: str | Path | None = None) -> LoadedCurriculum:
    """A curriculum as every command loads it: the schema (``curriculum.load``) and the engine's own check of each
    stage's ``engine_args`` (the adapter knows the engine's arguments), every problem in one report."""
    return curriculum.load(path, overrides, base, check_engine_args=swift_adapter.check_engine_args)


def default_output_dir(loaded: LoadedCurriculum) -> Path:
    configured = loaded.curriculum.output_dir
    return Path(configured or Path("outputs") / loaded.curriculum.name).resolve()


def stage_dir(output_dir: Path, index: int, stage: Stage) -> Path:
    return output_dir / STAGES_DIR / f"{index + 1:02d}-{stage.name}"


def global_batch(stage: Stage, world_size: int) -> int:
    """Samples per optimizer step: micro-batch x accumulation x data-parallel ranks (sequence-parallel groups
    share one sample, so they count once)."""
    data_parallel = max(1, world_size // stage.sequence_parallel_size)
    return stage.per_device_train_batch_size * stage.gradient_accumulation_steps * data_parallel


def eval_job(config: EvalConfig, curriculum: Curriculum, root: Path) -> EvalJob:
    """An evaluation of a model trained by ``curriculum`` (its model type, template, precision and attention);
    relative benchmark paths are taken from ``root``."""
    loading = ModelLoading.model_validate(
        {
            "model_type": curriculum.model_type,
            "template": curriculum.template,
            "torch_dtype": curriculum.torch_dtype,
            "attn_impl": swift_adapter.attention(curriculum.attn_impl)[0],
        }
    )
    return EvalJob(eval=config.resolved(root), loading=loading)


def restrict(stage: Stage, splits: Sequence[str] | None, data: CurriculumData) -> tuple[Stage | None, list[str] | None]:
    """``stage`` limited to the curriculum's ``splits`` (None: the stage as it is), and the splits it trains on.

    Each mix entry's own ``splits`` and the curriculum's intersect; an entry left with none is dropped, and a stage
    left with no entry is None (skipped). Splits are read from the mix definitions, so planning reads no data."""
    kept, trained = [], set()
    known = True
    for source in stage.data:
        if source.mix is None:
            kept.append(source)
            known = False
            continue
        restriction = source.splits if splits is None else [s for s in splits if s in (source.splits or splits)]
        try:
            found = data.splits(source, restriction)
        except DataError:
            kept.append(source)  # `describe` reports the broken mix; planning goes on
            known = False
            continue
        if splits is not None and not found:
            continue
        trained.update(found)
        kept.append(source if splits is None else source.model_copy(update={"splits": found}))
    if not kept:
        return None, []
    stage = stage if splits is None else stage.model_copy(update={"data": kept})
    return stage, [s for s in SPLITS if s in trained] if known else None


def cpus_per_process(launch: Launch) -> int:
    """This node's CPUs (those this process may use: a SLURM step's or a container's share) per engine process."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // launch.nproc_per_node)


def engine_arguments(
    loaded: LoadedCurriculum,
    stage: Stage,
    model: str,
    folder: Path,
    deepspeed: Path | None,
    launch: Launch,
    resume_from: Path | None = None,
) -> list[str]:
    return swift_adapter.sft_arguments(
        stage=stage,
        curriculum=loaded.curriculum,
        model=model,
        dataset=str(folder / "data" / "train.jsonl"),
        output_dir=str(folder / "engine"),
        deepspeed=str(deepspeed) if deepspeed else None,
        cpus_per_process=cpus_per_process(launch),
        resume_from_checkpoint=str(resume_from) if resume_from else None,
    )


def build(
    loaded: LoadedCurriculum,
    output_dir: Path | None = None,
    launch: Launch | None = None,
    python: str | None = None,
) -> Plan:
    curriculum = loaded.curriculum
    output_dir = (output_dir or default_output_dir(loaded)).resolve()
    launch = launch or Launch()
    data = CurriculumData(loaded.base_dir, curriculum.data_root, curriculum.seed)
    kept: list[tuple[Stage, list[str] | None]] = []
    skipped: list[SkippedStage] = []
    for configured in curriculum.stages:
        stage, splits = restrict(configured, curriculum.splits, data)
        if stage is None:
            skipped.append(SkippedStage(configured.name, f"its data holds none of the splits {curriculum.splits}"))
        else:
            kept.append((stage, splits))
    model = model_ref.resolve(curriculum.model)
    starts_from = "base"
    stages: list[StagePlan] = []
    for index, (stage, splits) in enumerate(kept):
        folder = stage_dir(output_dir, index, stage)
        source = deepspeed_configs.resolve(stage.deepspeed, loaded.base_dir) if stage.deepspeed else None
        config, changes = (
            (None, [])
            if source is None
            else deepspeed_configs.for_stage(deepspeed_configs.load(source), fused_loss=stage.use_liger_kernel)
        )
        ds_path = folder / DEEPSPEED if changes else source
        engine_args = engine_arguments(loaded, stage, model, folder, ds_path, launch)
        evaluation = curriculum.eval_for(stage)
        stages.append(
            StagePlan(
                index=index,
                stage=stage,
                dir=folder,
                model=model,
                starts_from=starts_from,
                data=data.describe(stage.data),
                dataset=folder / "data" / "train.jsonl",
                deepspeed=ds_path,
                zero_stage=deepspeed_configs.zero_stage(config) if config else None,
                engine_args=engine_args,
                command=swift_adapter.command(engine_args, launch, python),
                env=environment.configured(curriculum),
                eval=eval_job(evaluation, curriculum, loaded.base_dir) if evaluation else None,
                splits=splits,
                total=len(kept),
                deepspeed_config=config,
                deepspeed_source=source,
                deepspeed_changes=changes,
            )
        )
        model, starts_from = str(folder / FINAL), f"stage:{stage.name}"
    baseline = None
    if curriculum.eval is not None and curriculum.eval.baseline:
        baseline = eval_job(curriculum.eval, curriculum, loaded.base_dir)
    return Plan(
        loaded=loaded,
        output_dir=output_dir,
        launch=launch,
        stages=stages,
        data=data,
        skipped=skipped,
        baseline=baseline,
    )
