"""Evaluation settings, in one shape: what a curriculum's (or a stage's) ``eval:`` says, what ``spinegpt plan``
shows, and what the evaluation process reads back from ``eval/config.json``. Defaults are spelled here only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from spinegpt.eval_hooks import benchmark, registry
from spinegpt.eval_hooks.llm_client import Server


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BenchmarkConfig(_Strict):
    """One benchmark evaluated after a stage."""

    kind: str
    """A registered benchmark (``eval_hooks/registry.py``): ``spinebench`` (SpineMed format: MCQ text/image +
    reports), ``spinebench_mm25`` (the MM'25 SpineBench), or general medicine: ``vqa_rad``, ``path_vqa``,
    ``slake``, ``pmc_vqa``, ``mmmu``, ``medqa``."""
    path: str
    """The benchmark file, or the folder of a download holding its files (PathVQA's shards, MMMU's subjects), or
    ``builtin:<name>`` (a tiny copy the package ships: ``builtin:vqa_rad``, ``builtin:medqa``); relative paths are
    taken from the curriculum file's folder."""
    name: str | None = None
    """Result file name under the stage's ``eval/`` folder (default: ``kind``)."""
    image_root: str | None = None
    """Folder the benchmark's image paths are relative to (default: the file's folder)."""
    limit: int | None = Field(default=None, gt=0)
    """Evaluate only the first N items (quick checks)."""
    max_new_tokens: int = Field(default=1024, gt=0)
    """Generation budget for multiple-choice answers (reasoning included)."""
    report_max_new_tokens: int = Field(default=2048, gt=0)
    """Generation budget for report items."""
    mcq_only: bool = False
    """Leave report items out (an ablation table scores multiple-choice accuracy only)."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Your own file in a benchmark's shape: which of your columns holds each field the reader asks for (``{question:
    Frage, answer: Antwort}``); the fields each kind reads are in its module (``vqa.py``, ``mcq.py``, ``mmmu.py``).
    SpineBench's formats are fixed."""
    max_drop: float | None = Field(default=None, ge=0)
    """Regression budget: the largest drop, in points, of any of this benchmark's headline figures against the
    base model that a stage may show. A stage beyond it is flagged in the run manifest, ``spinegpt report`` and the
    sweep table (flagged, not failed). Unset: no budget."""

    @field_validator("kind")
    @classmethod
    def _registered(cls, value: str) -> str:
        registry.get(value)  # raises with the known kinds
        return value

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        if value.startswith(benchmark.BUILTIN):
            benchmark.builtin(value.removeprefix(benchmark.BUILTIN))  # raises naming what is shipped
        elif base is not None and not benchmark.resolve(value, Path(base)).exists():
            raise ValueError(f"no such file or folder: {Path(base, value)}")
        return value

    @model_validator(mode="after")
    def _known_columns(self) -> BenchmarkConfig:
        accepted = registry.get(self.kind).columns
        unknown = sorted(set(self.columns) - set(accepted))
        if unknown:
            reads = f"it reads {', '.join(accepted)}" if accepted else "its format is fixed"
            raise ValueError(f"columns: {self.kind} has no field(s) {', '.join(unknown)}; {reads}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind

    def resolved(self, root: Path) -> BenchmarkConfig:
        """The same benchmark with absolute paths, relative ones taken from ``root``."""
        return self.model_copy(
            update={
                "path": str(benchmark.resolve(self.path, root)),
                "image_root": str((root / self.image_root).resolve()) if self.image_root else None,
            }
        )


class JudgeConfig(_Strict):
    """An OpenAI-compatible chat-completions server that grades reports."""

    base_url: str
    """API root, e.g. ``http://localhost:8000/v1`` (vLLM / SGLang) or a hosted API."""
    model: str
    """The judge model's name on that server."""
    api_key_env: str = "SPINEGPT_JUDGE_API_KEY"
    """Environment variable holding the key (never put the key itself in a config); unset: no key is sent."""
    concurrency: int = Field(default=4, gt=0)
    """Requests in flight at once."""
    max_attempts: int = Field(default=4, gt=0)
    """Tries per report, the first included, before it is recorded as a failed judgment."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Total seconds one request may take (a server that trickles bytes is cut off here)."""
    backoff_s: float = Field(default=1.0, ge=0)
    """First retry delay; doubles each retry, with jitter."""
    temperature: float = Field(default=0.0, ge=0)
    """Sampling temperature of the judge (0: the same verdict for the same report)."""
    phase_timeout_s: float = Field(default=3600.0, gt=0)
    """Bound on the whole judging of one benchmark: reports not judged by then are recorded as failed judgments."""
    max_consecutive_failures: int = Field(default=3, gt=0)
    """Reports in a row whose judging fails (each after ``max_attempts``) before the judge is given up on: the rest
    are recorded as failed at once, with the reason, instead of each waiting out its attempts."""


class ExtractorConfig(_Strict):
    """An OpenAI-compatible model that reads the multiple-choice answers the rules could not (``eval_hooks/
    extractor.py``): it maps an answer to option letters or to none, never guesses. Unset fields take the judge's."""

    base_url: str | None = None
    """API root; default: the judge's."""
    model: str | None = None
    """Model name on that server; default: the judge's."""
    api_key_env: str | None = None
    """Environment variable holding its key; default: the judge's (``SPINEGPT_JUDGE_API_KEY``)."""
    concurrency: int = Field(default=4, gt=0)
    """Requests in flight at once."""
    max_attempts: int = Field(default=4, gt=0)
    """Tries per answer before it stays unparsed (recorded as an extractor failure)."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Total seconds one request may take."""
    backoff_s: float = Field(default=1.0, ge=0)
    """First retry delay; doubles each retry, with jitter."""
    max_consecutive_failures: int = Field(default=3, gt=0)
    """Answers in a row the extractor fails to read (each after ``max_attempts``) before it is given up on: the
    rest stay unparsed at once, with the reason."""


class StatisticsConfig(_Strict):
    """How intervals and breakdowns are computed (``eval_hooks/stats.py``); recorded in every result's protocol."""

    resamples: int = Field(default=2000, ge=2000)
    """Bootstrap resamples for composite scores and paired differences (at least 2,000: the 2.5 % tails of fewer
    rest on a handful of draws)."""
    seed: int = Field(default=0, ge=0)
    """Seed of the bootstrap's generator: the same seed gives the same intervals."""
    min_group_n: int = Field(default=10, ge=1)
    """Breakdown groups (subspecialty, source, ...) with fewer items are pooled into one ``other`` group."""


class EvalConfig(_Strict):
    """Benchmarks run on a model: a stage's final weights after the stage is done, or any model folder."""

    benchmarks: list[BenchmarkConfig] = Field(min_length=1)
    """What to evaluate."""
    judge: JudgeConfig | None = None
    """Report grader; without one, report items are generated but not scored (and no overall is computed)."""
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    """Engine inference backend: vLLM where installed with a GPU (``auto``), else transformers."""
    batch_size: int = Field(default=8, gt=0)
    """Prompts generated together."""
    extractor: ExtractorConfig | None = None
    """Off by default. Set (``extractor: {}`` uses the judge's server and model) to have a model read the
    multiple-choice answers the rules could not; every item records whether a rule, the model or nothing decided."""
    statistics: StatisticsConfig = Field(default_factory=StatisticsConfig)
    """Bootstrap resamples and seed, and the smallest breakdown group shown on its own."""
    baseline: bool = False
    """Also evaluate the curriculum's starting model once, before stage 1: the run's row 0, against which every
    stage's change is reported. Cached under ``$SPINEGPT_CACHE/baselines`` by model (its weights' hash, or its hub
    revision) and evaluation settings, so a resumed run, another run or a sweep row of the same model reuses it.
    A curriculum-level setting (a stage's own ``eval`` may not set it)."""

    @model_validator(mode="after")
    def _unique_names(self) -> EvalConfig:
        labels = [b.label for b in self.benchmarks]
        if len(set(labels)) != len(labels):
            raise ValueError(f"benchmark names must be unique (set `name`): {labels}")
        if self.extractor and not (self.extractor.base_url and self.extractor.model) and self.judge is None:
            raise ValueError("extractor: give base_url and model, or configure a judge whose server it can use")
        return self

    def extractor_server(self) -> tuple[Server, int] | None:
        """The extractor's server (unset fields from the judge's) and its concurrency; None when it is off."""
        return extractor_server(self.extractor, self.judge)

    def resolved(self, root: Path) -> EvalConfig:
        return self.model_copy(update={"benchmarks": [b.resolved(root) for b in self.benchmarks]})


def extractor_server(x: ExtractorConfig | None, judge: JudgeConfig | None) -> tuple[Server, int] | None:
    """The extractor's server (unset fields from the judge's) and its concurrency; None when it is off."""
    if x is None:
        return None
    if not (x.base_url or judge) or not (x.model or judge):
        raise ValueError("extractor: give base_url and model, or configure a judge whose server it can use")
    server = Server(
        base_url=x.base_url or (judge.base_url if judge else ""),
        model=x.model or (judge.model if judge else ""),
        api_key_env=x.api_key_env or (judge.api_key_env if judge else JudgeConfig.model_fields["api_key_env"].default),
        timeout_s=x.timeout_s,
        max_attempts=x.max_attempts,
        backoff_s=x.backoff_s,
        max_consecutive_failures=x.max_consecutive_failures,
    )
    return server, x.concurrency


class ModelLoading(_Strict):
    """How the evaluated model is loaded for generation (a curriculum's model type, template, precision, attention)."""

    model_type: str = "qwen2_5_vl"
    template: str = "qwen2_5_vl"
    torch_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    attn_impl: Literal["flash_attn", "sdpa", "eager"] = "sdpa"


class EvalJob(_Strict):
    """One evaluation as its process runs it (``eval/config.json``): the settings with absolute paths, and how to
    load the model."""

    eval: EvalConfig
    loading: ModelLoading = Field(default_factory=ModelLoading)

    @property
    def benchmarks(self) -> list[BenchmarkConfig]:
        return self.eval.benchmarks

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> EvalJob:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
