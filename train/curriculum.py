"""The curriculum schema: what a YAML file under ``curricula/`` may say, checked before anything runs.

A curriculum is an ordered list of stages trained one after another, each starting from the previous stage's
final weights. Keys that ms-swift also has keep ms-swift's names (``learning_rate``, ``max_length``,
``deepspeed``, ``tuner_type``, ``freeze_vit`` ...); anything else ms-swift accepts goes in a stage's
``engine_args`` and is passed through untouched.

Loading collects *every* error of a file into one :class:`CurriculumError`, each naming its path and, where the
key is in the file, its line (``curricula/x.yaml:14: stages[1].learning_rate: must be > 0``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from spinegpt.config_io import (
    ConfigError,
    Node,
    apply_overrides,
    line_of,
    resolve_extends,
    validation_issues,
)
from spinegpt.data_mixes.records import Split
from spinegpt.eval_hooks.config import EvalConfig
from spinegpt.train import deepspeed_configs

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


ReportTo = Literal["none", "tensorboard", "wandb"]


def _default_report_to() -> list[ReportTo]:
    return ["tensorboard"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Strict):
    """One input of a stage. Exactly one of ``jsonl``, ``mix`` or ``smoke`` is set."""

    jsonl: str | None = None
    """An ms-swift JSONL file (``messages`` + optional ``images``); relative paths are taken from the
    curriculum file's folder, image paths inside it from the JSONL's folder."""
    mix: str | None = None
    """A named data mix defined in ``data_mixes/<name>.yaml`` (general, non-spine, spine and the stage mixes)."""
    smoke: str | None = None
    """A bundled synthetic smoke set (``stage1``, ``stage2``, ``stage3``), written offline by code."""
    splits: list[Split] | None = None
    """Mix only: train on these splits of the mix and nothing else (the Table 7 ablations); unset: all."""
    set: dict[str, Any] = Field(default_factory=dict)
    """Mix only: ``component.key: value`` changes to the mix (``pubmedvision.count: 1000`` for a small run)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSource:
        given = [k for k in ("jsonl", "mix", "smoke") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of jsonl, mix, smoke (got {', '.join(given) or 'none'})")
        if self.mix is None and (self.splits is not None or self.set):
            raise ValueError("splits / set apply to a mix only")
        return self

    @field_validator("jsonl")
    @classmethod
    def _jsonl_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is not None and base is not None:
            path = Path(base, value)
            if not path.is_file():
                raise ValueError(f"no such file: {path}")
        return value

    @field_validator("mix", "smoke")
    @classmethod
    def _name_ok(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"not a valid name: {value!r}")
        return value

    @property
    def kind(self) -> str:
        return next(k for k in ("jsonl", "mix", "smoke") if getattr(self, k) is not None)

    @property
    def ref(self) -> str:
        value = getattr(self, self.kind)
        assert value is not None
        return value

    def label(self) -> str:
        restricted = f"[{','.join(self.splits)}]" if self.splits else ""
        return f"{self.kind}:{self.ref}{restricted}"


class Stage(_Strict):
    """One training stage: one epoch (or ``max_steps``) of one engine run on one data set."""

    name: str
    """Short identifier, unique in the curriculum; also the stage's folder name in the run directory."""
    data: list[DataSource] = Field(min_length=1)
    """The stage's training data; several sources are concatenated in order."""
    learning_rate: float = Field(gt=0)
    """Peak learning rate (paper: 1e-5, 1e-5, 1e-6)."""
    max_length: int = Field(gt=0)
    """Maximum tokens per sample, image tokens included (paper: 16,384, 16,384, 49,152)."""
    over_length: Literal["error", "drop", "truncate"] = "drop"
    """A record longer than ``max_length`` (exact count, images included): ``error`` stops the stage naming every
    such record, ``drop`` removes it before training and counts it in the run manifest, ``truncate`` keeps it cut
    at ``max_length`` (the engine's right truncation; can cut an image's tokens, so best for text-only data)."""
    num_train_epochs: float = Field(default=1.0, gt=0)
    """Epochs over the stage's data (paper: 1). Ignored when ``max_steps`` is set."""
    max_steps: int | None = Field(default=None, gt=0)
    """Stop after this many optimizer steps instead of after ``num_train_epochs``."""
    deepspeed: str | None = None
    """A config name from ``configs/deepspeed/`` (``zero2``, ``zero3``, ``zero3_offload``) or a JSON path;
    unset means plain DDP."""
    tuner_type: Literal["full", "lora"] = "full"
    """Full fine-tuning (the paper) or LoRA."""
    freeze_vit: bool = True
    """Keep the vision tower frozen (ms-swift's default)."""
    freeze_aligner: bool = True
    """Keep the vision-language merger frozen (ms-swift's default)."""
    freeze_llm: bool = False
    """Keep the language model frozen."""
    lora_rank: int = Field(default=8, gt=0)
    """LoRA rank; only with ``tuner_type: lora``."""
    lora_alpha: float = Field(default=32.0, gt=0)
    """LoRA alpha; only with ``tuner_type: lora``."""
    per_device_train_batch_size: int = Field(default=1, gt=0)
    """Micro-batch per GPU."""
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    """Micro-batches per optimizer step; global batch = micro-batch x accumulation x world size."""
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    """Fraction of the stage's steps spent warming the learning rate up from 0."""
    lr_scheduler_type: str = "cosine"
    """Learning-rate schedule within the stage (any transformers scheduler name)."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: the memory of long sequences for ~30% more compute."""
    attn_impl: Literal["auto", "flash_attn", "sdpa", "eager"] | None = None
    """Attention kernel for this stage; unset takes the curriculum's."""
    use_liger_kernel: bool = False
    """Fused Liger kernels (RMSNorm, SwiGLU, RoPE and a chunked linear+cross-entropy that never materialises the
    vocabulary-sized logits: tens of GB at 49k tokens). Needs the ``gpu`` extra."""
    padding_free: bool = False
    """Concatenate a micro-batch's samples instead of padding them (needs flash attention)."""
    packing: bool = False
    """Pack samples into ``max_length`` sequences ahead of training (needs flash attention; implies padding-free)."""
    sequence_parallel_size: int = Field(default=1, gt=0)
    """Split each sequence over this many GPUs (Ulysses): activations per GPU shrink by the same factor."""
    save_steps: int = Field(default=500, gt=0)
    """Checkpoint every this many steps (a final checkpoint is always written); resume starts from the last."""
    save_total_limit: int | None = Field(default=2, gt=0)
    """Keep at most this many checkpoints of the stage (the final one is never removed)."""
    logging_steps: int = Field(default=5, gt=0)
    """Log loss and learning rate every this many steps."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Any further ms-swift ``sft`` argument, passed through as ``--key value``."""
    eval: EvalConfig | Literal[False] | None = None
    """Evaluation after this stage: unset takes the curriculum's ``eval``, ``false`` skips it."""

    @field_validator("name")
    @classmethod
    def _stage_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must start with a letter or digit and contain only letters, digits, '_', '.', '-'")
        return value

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_resolves(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            # Read it now: a broken JSON file would otherwise pass validation and fail `run` with a traceback.
            deepspeed_configs.load(deepspeed_configs.resolve(value, base_dir=(info.context or {}).get("base_dir")))
        return value

    @field_validator("engine_args")
    @classmethod
    def _engine_args_free(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Which engine arguments exist, and which spinegpt sets itself, is the adapter's knowledge: the loader that
        # knows the engine (``plan.load``) passes its check in; a bare schema check takes the keys as they are.
        check: EngineArgsCheck | None = (info.context or {}).get("check_engine_args")
        return check(value, STAGE_KEYS) if check is not None else value

    @field_validator("eval")
    @classmethod
    def _no_stage_baseline(cls, value: EvalConfig | Literal[False] | None) -> EvalConfig | Literal[False] | None:
        if isinstance(value, EvalConfig) and value.baseline:
            raise ValueError("baseline evaluates the starting model once per run: set it in the curriculum's eval")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Stage:
        if (self.packing or self.padding_free) and self.attn_impl not in (None, "flash_attn", "auto"):
            raise ValueError(f"packing / padding_free need attn_impl: flash_attn, not {self.attn_impl}")
        if self.tuner_type != "lora" and (
            "lora_rank" in self.model_fields_set or "lora_alpha" in self.model_fields_set
        ):
            raise ValueError("lora_rank / lora_alpha are only used with tuner_type: lora")
        if self.freeze_vit and self.freeze_aligner and self.freeze_llm and self.tuner_type == "full":
            raise ValueError("freeze_vit, freeze_aligner and freeze_llm are all true: nothing would train")
        return self


STAGE_KEYS = frozenset(Stage.model_fields) - {"name", "data", "engine_args", "eval", "attn_impl"}
"""Stage keys that are engine settings too: ``engine_args`` may not set them a second time."""
EngineArgsCheck = Callable[[dict[str, Any], frozenset[str]], dict[str, Any]]
"""``(engine_args, STAGE_KEYS) -> engine_args`` as the engine reads them; raises ValueError naming every problem."""


def _env_value(value: Any) -> str:
    # A number or a YAML boolean is what a user means by "1003520" or "false"; a list, a mapping or an empty value
    # stringified into an environment variable is never what was meant.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    shown = "nothing (write '' for an empty value)" if value is None else f"a {type(value).__name__}"
    raise ValueError(f"must be a string, a number or true/false, not {shown}")


EnvValue = Annotated[str, BeforeValidator(_env_value)]


class Curriculum(_Strict):
    """A whole curriculum: a base model and the stages trained from it in order."""

    name: str
    """Run name; the default output folder and the experiment-tracking group."""
    model: str
    """Base model of the first stage: a hub id (``Qwen/Qwen2.5-VL-7B-Instruct``), a local path, or
    ``builtin:tiny-qwen2_5_vl`` (the offline tiny model, built on first use)."""
    model_type: str = "qwen2_5_vl"
    """ms-swift model type; named explicitly because more than one type matches a Qwen2.5-VL config."""
    template: str = "qwen2_5_vl"
    """ms-swift chat template."""
    output_dir: str | None = None
    """Where the run writes; relative paths are taken from the current directory. Default ``outputs/<name>``."""
    seed: int = 42
    """Seed for data order and initialisation of everything the engine seeds."""
    torch_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Training precision (the paper: bf16 on A100). CPU runs use float32."""
    attn_impl: Literal["auto", "flash_attn", "sdpa", "eager"] = "auto"
    """Attention kernel; ``flash_attn`` needs the ``gpu`` extra, ``sdpa`` runs anywhere; ``auto``: flash-attn where
    it imports, else sdpa (the plan says which, the run manifest records it)."""
    hub: Literal["huggingface", "modelscope"] = "huggingface"
    """Where a model given by hub id comes from, for the engine (ms-swift's ``USE_HF``), the data audit's tokenizer,
    the memory planner, evaluation and export alike."""
    report_to: list[ReportTo] = Field(default_factory=_default_report_to)
    """Experiment trackers every stage logs to (``wandb``, ``tensorboard``, both, or ``none``)."""
    wandb_project: str = "spinegpt"
    """wandb project; each run is one wandb group, each stage one job type in it."""
    data_root: str | None = None
    """Root of your copies of the upstream datasets that data mixes read (layout: ``data_mixes/sources.yaml``);
    relative paths are taken from the curriculum file's folder. Unset: ``$SPINEGPT_DATA_ROOT``.
    ``builtin:smoke`` is a tiny offline root in the upstream schemas, written by code."""
    splits: list[Split] | None = None
    """Train only on these data splits, in every stage: the Table 7 ablations (``curricula/ablations/``). Each mix
    entry keeps the splits it shares with this list; a stage left without data is skipped, and the next stage
    starts from the last one that ran. ``[]`` trains nothing (the untrained base row). Unset: every split."""
    env: dict[str, EnvValue] = Field(default_factory=dict)
    """Environment variables set for every engine process (e.g. ``MAX_PIXELS``, NCCL settings)."""
    eval: EvalConfig | None = None
    """Benchmarks run on every stage's final weights (a stage may override or switch off with its own ``eval``)."""
    stages: list[Stage] = Field(min_length=1)
    """The stages, in training order."""

    @field_validator("model")
    @classmethod
    def _model_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a hub id, a local path or builtin:tiny-qwen2_5_vl")
        return value

    @model_validator(mode="after")
    def _packing_needs_flash_attention(self) -> Curriculum:
        for i, stage in enumerate(self.stages):
            if (stage.packing or stage.padding_free) and (stage.attn_impl or self.attn_impl) not in (
                "flash_attn",
                "auto",
            ):
                raise ValueError(f"stages[{i}] ({stage.name}): packing / padding_free need attn_impl: flash_attn")
        return self

    @model_validator(mode="after")
    def _splits_need_mixes(self) -> Curriculum:
        if self.splits is None:
            return self
        fixed = [
            f"stages[{i}].data[{j}] ({source.label()})"
            for i, stage in enumerate(self.stages)
            for j, source in enumerate(stage.data)
            if source.mix is None
        ]
        if fixed:
            raise ValueError(f"splits restrict data mixes only; these sources have no splits: {', '.join(fixed)}")
        return self

    @model_validator(mode="after")
    def _unique_stage_names(self) -> Curriculum:
        seen: set[str] = set()
        dupes = sorted({s.name for s in self.stages if s.name in seen or seen.add(s.name)})  # type: ignore[func-returns-value]
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(dupes)}")
        return self

    def eval_for(self, stage: Stage) -> EvalConfig | None:
        """The evaluation that follows ``stage``: its own, none if it says ``false``, else the curriculum's."""
        if stage.eval is False:
            return None
        return stage.eval or self.eval

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage named {name!r}; stages: {', '.join(s.name for s in self.stages)}")


# --------------------------------------------------------------------------------------------------------------
# Loading: YAML (+ extends + overrides) -> validated Curriculum, with every error reported at once.

KEYED_LISTS = {"stages": "name"}
"""Stages merge through ``extends`` by name, and overrides may name them: ``stages.sft.max_steps=3``."""


class CurriculumError(ConfigError):
    """Every problem found in one curriculum, each with its path (and line, where the key is in the file)."""

    kind = "curriculum"


@dataclass(frozen=True)
class LoadedCurriculum:
    curriculum: Curriculum
    source: Path
    """The YAML file the curriculum was loaded from."""
    raw: dict[str, Any]
    """The merged document after ``extends`` and overrides, before validation (kept for the run manifest)."""

    @property
    def base_dir(self) -> Path:
        return self.source.parent


def _local_loc(doc: Mapping[str, Any], node: Node, loc: list[str | int]) -> list[str | int]:
    """Translate a path in the merged document to one file of an ``extends`` chain: stages merge by name, so the
    merged ``stages[i]`` may be another index, or absent, in that file."""
    if len(loc) < 2 or loc[0] != "stages" or not isinstance(loc[1], int) or not isinstance(node, yaml.MappingNode):
        return loc
    stages = doc.get("stages")
    if not isinstance(stages, list) or loc[1] >= len(stages) or not isinstance(stages[loc[1]], dict):
        return loc
    name = stages[loc[1]].get("name")
    for key, value in node.value:
        if key.value == "stages" and isinstance(value, yaml.SequenceNode):
            for j, item in enumerate(value.value):
                if isinstance(item, yaml.MappingNode) and any(
                    k.value == "name" and getattr(v, "value", None) == name for k, v in item.value
                ):
                    return ["stages", j, *loc[2:]]
            return ["stages", len(value.value)]  # not in this file: only its `stages:` line matches
    return loc


def load(
    path: str | Path,
    overrides: Sequence[str] = (),
    base: str | Path | None = None,
    check_engine_args: EngineArgsCheck | None = None,
) -> LoadedCurriculum:
    """Read, merge, override and validate a curriculum; raises :class:`CurriculumError` listing every problem.

    ``base``: merge the file onto this curriculum instead of the one it ``extends`` -- the same differences at
    another scale (a sweep runs Table 7's rows, which extend the full curriculum, on the smoke one).
    ``check_engine_args``: the engine's check of each stage's ``engine_args`` (``plan.load`` passes the adapter's;
    commands load through it)."""
    source = Path(path)
    doc, nodes = resolve_extends(source, KEYED_LISTS, CurriculumError, base=Path(base) if base is not None else None)
    applied, issues = apply_overrides(doc, overrides, KEYED_LISTS)
    overridden = {o.loc: o.text for o in applied}

    def override_of(loc: Sequence[str | int]) -> str | None:
        return next((overridden[tuple(loc[:d])] for d in range(len(loc), 0, -1) if tuple(loc[:d]) in overridden), None)

    def locate(loc: list[str | int]) -> tuple[Path | None, int | None]:
        if override_of(loc) is not None:
            return None, None  # set on the command line: no line of any file holds the value
        # The file that holds the whole path wins (an inherited value's line is in the parent); else the first
        # file holding part of it (a missing key: the line of its enclosing block).
        found = [(f, *line_of(n, _local_loc(doc, n, loc))) for f, n in nodes]
        complete: list[tuple[Path, int | None]] = [(f, ln) for f, ln, whole in found if whole and ln is not None]
        partial: list[tuple[Path, int | None]] = [(f, ln) for f, ln, _ in found if ln is not None]
        file, line = (complete or partial or [(source, None)])[0]
        return file, line

    try:
        context = {"base_dir": source.resolve().parent, "check_engine_args": check_engine_args}
        curriculum = Curriculum.model_validate(doc, context=context)
    except ValidationError as exc:
        issues += validation_issues(exc, locate)
    if issues:
        raise CurriculumError(source, issues)
    return LoadedCurriculum(curriculum=curriculum, source=source.resolve(), raw=doc)


def iter_curricula(root: Path) -> Iterator[Path]:
    """Every curriculum YAML under ``root``, recursively, in a stable order (sweep files are not curricula)."""
    yield from sorted(p for p in root.rglob("*.y*ml") if p.suffix in {".yaml", ".yml"} and p.stem != "sweep")
