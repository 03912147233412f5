"""The evaluation protocol: everything that decided a result's numbers, recorded in every result file.

Scores nobody can reproduce are the complaint users file most against medical-VLM evaluations (other prompts, other
generation settings, another scorer or judge, another subset). Every ``<benchmark>.json`` therefore carries an
:class:`EvalProtocol`, and whatever puts two results side by side (``spinegpt compare``, the run report, the sweep
table) first asks :meth:`EvalProtocol.differences` and refuses, naming the field, when they were not made the same
way.

Locked (must match for a comparison): the benchmark (file sha256, the items evaluated, their ids), the prompt
template and every rendered prompt, the generation settings, how answers were read (rule version, the LLM extractor)
and who judged the reports (judge model, rubric). Recorded but not locked: the statistics settings (the estimates do
not depend on them), the package versions, the answer rules' source hash and where things were (paths, the judge's
URL): a comparison lists those differences as notes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import inspect
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spinegpt.eval_hooks import answers, extractor, registry, rubric, stats
from spinegpt.eval_hooks.benchmark import PROMPT_TEMPLATE, Item, content_sha256, prompt_for, resolve
from spinegpt.eval_hooks.config import BenchmarkConfig, JudgeConfig, StatisticsConfig
from spinegpt.files import stable_hash

FORMAT = 1
LOCKED = ("format", "benchmark", "prompt", "generation", "answers", "judge")
"""The sections two results must share to be compared."""
PACKAGES = ("spinegpt", "torch", "transformers", "ms-swift", "vllm", "qwen-vl-utils", "numpy", "openai")
"""Package versions recorded in a result's provenance."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BenchmarkSpec(_Spec):
    """Which items were evaluated."""

    kind: str
    sha256: str
    """sha256 of the benchmark file (of a download folder: of its files' names and hashes,
    ``benchmark.content_sha256``)."""
    items: int
    """Items evaluated (after ``limit`` and ``mcq_only``)."""
    item_ids_sha256: str
    """sha256 of the evaluated item ids, in order."""
    limit: int | None = None
    mcq_only: bool = False
    columns: dict[str, str] = Field(default_factory=dict)
    """The user's column map (``columns:``): another map reads other cells of the same file."""
    unusable: int = 0
    """Rows of the file the benchmark's own rules cannot score (an MMMU answer withheld as "?"): not generated,
    counted by reason in the result."""


class PromptSpec(_Spec):
    """What the model was asked."""

    template: dict[str, str]
    """The prompt template (``benchmark.PROMPT_TEMPLATE``) as text."""
    template_sha256: str
    prompts_sha256: str
    """sha256 of every rendered prompt, in item order: the template applied to these items."""


class GenerationSpec(_Spec):
    """How the answers were generated. ``max_new_tokens`` names only the budgets this benchmark's items used."""

    engine: str = "ms-swift"
    backend: str
    """The inference engine as resolved (``transformers`` or ``vllm``, never ``auto``)."""
    model_type: str
    template: str
    """The engine's chat template."""
    torch_dtype: str
    attn_impl: str
    decoding: Literal["greedy"] = "greedy"
    temperature: float = 0.0
    seed: int = 0
    max_pixels: str | None = None
    """``MAX_PIXELS`` of the evaluation process (images are resized to at most this area): other values are other
    visual tokens."""
    min_pixels: str | None = None
    batch_size: int
    max_new_tokens: dict[str, int] = Field(default_factory=dict)
    """``mcq`` / ``answer`` / ``report``: the generation budget per kind of item (``generation_spec``)."""


class ExtractorSpec(_Spec):
    model: str
    version: int
    prompt_sha256: str


class AnswersSpec(_Spec):
    """How multiple-choice answers were read."""

    rules_version: int
    extractor: ExtractorSpec | None = None
    """The LLM extractor for answers the rules could not read; None: off."""


class JudgeSpec(_Spec):
    """Who graded the reports, on which rubric (recorded only where the benchmark has reports)."""

    model: str
    rubric_version: int
    rubric_sha256: str
    """sha256 of the judge's system prompt and its grading request with placeholders."""
    temperature: float


class StatisticsSpec(_Spec):
    stats_version: int
    level: float
    resamples: int
    seed: int
    min_group_n: int


class Provenance(BaseModel):
    """Where and with what a result was made: recorded, never locked (another machine is not another protocol)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    created_at: str
    benchmark_path: str
    judge_url: str | None = None
    packages: dict[str, str | None] = Field(default_factory=dict)
    answers_source_sha256: str | None = None
    """sha256 of ``answers.py``: a change of the rules without a version bump shows up as a note."""
    rescored_from: dict[str, Any] | None = None
    """For a re-scored result: the file it was re-scored from, its sha256 and its protocol's hash."""


class EvalProtocol(_Spec):
    """Everything that decided one result's numbers (see the module docstring for what is locked)."""

    format: int = FORMAT
    benchmark: BenchmarkSpec
    prompt: PromptSpec
    generation: GenerationSpec | None
    """None only for a result re-scored from a file written before protocols were recorded."""
    answers: AnswersSpec
    judge: JudgeSpec | None
    statistics: StatisticsSpec
    provenance: Provenance

    def locked(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=set(LOCKED))

    @property
    def sha256(self) -> str:
        """Hash of the locked sections: equal hashes, comparable results."""
        return stable_hash(self.locked())

    def differences(self, other: EvalProtocol) -> list[str]:
        """``path: ours vs theirs`` for every locked field that differs, benchmark fields first."""
        return _diff(self.locked(), other.locked())

    def notes(self, other: EvalProtocol) -> list[str]:
        """Differences outside the locked sections that a reader should still see (statistics, package versions,
        the answer rules' source)."""
        mine = self.model_dump(mode="json", include={"statistics"})
        theirs = other.model_dump(mode="json", include={"statistics"})
        found = _diff(mine, theirs)
        for key in ("packages", "answers_source_sha256"):
            found += _diff(
                {key: getattr(self.provenance, key)}, {key: getattr(other.provenance, key)}, prefix="provenance."
            )
        return found


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, Mapping) and data:
        for key in data:
            yield from _flatten(data[key], f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), data


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    flat_a, flat_b = dict(_flatten(a, prefix)), dict(_flatten(b, prefix))
    out = []
    for key in [*flat_a, *(k for k in flat_b if k not in flat_a)]:
        if flat_a.get(key) != flat_b.get(key):
            out.append(f"{key}: {_short(flat_a.get(key))} vs {_short(flat_b.get(key))}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a sha256: its first 12 hex digits tell two apart
    return text if len(text) <= 80 else text[:77] + "..."


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- the sections -----------------------------------------------------------------------------------------------


def template_sha256() -> str:
    return stable_hash(PROMPT_TEMPLATE)


def rubric_sha256() -> str:
    """The judge's instructions with placeholders where the report and its task go."""
    return _sha256(rubric.SYSTEM_PROMPT + "\n" + rubric.rubric_prompt("{prompt}", "{answer}", "{reference}"))


def extractor_prompt_sha256() -> str:
    single = extractor.extraction_prompt("{question}", {"A": "{option}"}, "{answer}", multi=False)
    multi = extractor.extraction_prompt("{question}", {"A": "{option}"}, "{answer}", multi=True)
    return _sha256("\n".join((extractor.SYSTEM_PROMPT, single, multi)))


def answers_source_sha256() -> str | None:
    try:
        return _sha256(inspect.getsource(answers))
    except OSError:  # installed without sources (a zipped package): the version alone identifies the rules
        return None


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def code_fingerprint() -> dict[str, Any]:
    """What this code contributes to a protocol before any model runs: a cached evaluation made by other code is
    not reused (``train/baseline.py``)."""
    return {
        "format": FORMAT,
        "template_sha256": template_sha256(),
        "rules_version": answers.RULES_VERSION,
        "rubric_version": rubric.RUBRIC_VERSION,
        "rubric_sha256": rubric_sha256(),
        "extractor_version": extractor.VERSION,
        "extractor_prompt_sha256": extractor_prompt_sha256(),
        "stats_version": stats.STATS_VERSION,
    }


def benchmark_spec(
    bench: BenchmarkConfig, items: Sequence[Item], file_sha256: str | None = None, unusable: int = 0
) -> BenchmarkSpec:
    return BenchmarkSpec(
        kind=bench.kind,
        sha256=file_sha256 or content_sha256(registry.get(bench.kind), resolve(bench.path, Path.cwd())),
        items=len(items),
        item_ids_sha256=_sha256("\n".join(i.id for i in items)),
        limit=bench.limit,
        mcq_only=bench.mcq_only,
        columns=dict(bench.columns),
        unusable=unusable,
    )


def prompt_spec(prompts: Sequence[str]) -> PromptSpec:
    return PromptSpec(
        template=dict(PROMPT_TEMPLATE),
        template_sha256=template_sha256(),
        prompts_sha256=_sha256(json.dumps(list(prompts), ensure_ascii=False)),
    )


def generation_spec(engine: GenerationSpec, bench: BenchmarkConfig, items: Sequence[Item]) -> GenerationSpec:
    """The engine's settings with the budgets this benchmark's items were generated with: ``mcq`` (lettered
    options), ``answer`` (a free-text short answer: VQA, MMMU's open questions; the same budget as ``mcq``),
    ``report``."""
    budgets = {}
    if any(i.is_mcq for i in items):
        budgets["mcq"] = bench.max_new_tokens
    if any(not i.is_mcq and i.task != "report" for i in items):
        budgets["answer"] = bench.max_new_tokens
    if any(i.task == "report" for i in items):
        budgets["report"] = bench.report_max_new_tokens
    return engine.model_copy(update={"max_new_tokens": budgets})


def answers_spec(extractor_model: str | None) -> AnswersSpec:
    spec = None
    if extractor_model is not None:
        spec = ExtractorSpec(model=extractor_model, version=extractor.VERSION, prompt_sha256=extractor_prompt_sha256())
    return AnswersSpec(rules_version=answers.RULES_VERSION, extractor=spec)


def judge_spec(config: JudgeConfig) -> JudgeSpec:
    return JudgeSpec(
        model=config.model,
        rubric_version=rubric.RUBRIC_VERSION,
        rubric_sha256=rubric_sha256(),
        temperature=config.temperature,
    )


def statistics_spec(config: StatisticsConfig) -> StatisticsSpec:
    return StatisticsSpec(
        stats_version=stats.STATS_VERSION,
        level=stats.LEVEL,
        resamples=config.resamples,
        seed=config.seed,
        min_group_n=config.min_group_n,
    )


def provenance(
    benchmark_path: str, judge_url: str | None = None, rescored_from: dict[str, Any] | None = None
) -> Provenance:
    return Provenance(
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        benchmark_path=benchmark_path,
        judge_url=judge_url,
        packages=package_versions(),
        answers_source_sha256=answers_source_sha256(),
        rescored_from=rescored_from,
    )


def build(
    bench: BenchmarkConfig,
    items: Sequence[Item],
    *,
    engine: GenerationSpec | None,
    judge: JudgeConfig | None,
    extractor_model: str | None,
    statistics: StatisticsConfig,
    unusable: int = 0,
) -> EvalProtocol:
    """The protocol of one benchmark's evaluation, as it runs now (``unusable``: rows its rules left out)."""
    has_reports = any(i.task == "report" for i in items)
    return EvalProtocol(
        benchmark=benchmark_spec(bench, items, unusable=unusable),
        prompt=prompt_spec([prompt_for(i) for i in items]),
        generation=generation_spec(engine, bench, items) if engine is not None else None,
        answers=answers_spec(extractor_model),
        judge=judge_spec(judge) if judge is not None and has_reports else None,
        statistics=statistics_spec(statistics),
        provenance=provenance(str(bench.path), judge.base_url if judge is not None and has_reports else None),
    )


def read(data: Any) -> EvalProtocol | None:
    """A result's recorded protocol (None where the result predates protocols); a malformed one raises ValueError."""
    if data is None:
        return None
    try:
        return EvalProtocol.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"unreadable evaluation protocol ({exc.error_count()} problem(s)): {exc}") from None
