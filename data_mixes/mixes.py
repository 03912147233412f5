"""Mix definitions: YAML files naming sources, filters and how much of each to take.

A mix (``data_mixes/<name>.yaml``) is a list of components, optionally after the components of the mixes it
``include``s. Sources are declared once in ``data_mixes/sources.yaml`` (paths relative to the user's data root)
and may be overridden or extended by a mix's own ``sources:``. Loading collects *every* problem of a mix, each
named by its path and file:line, before anything is read.
"""

from __future__ import annotations

import copy
import importlib.resources
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from spinegpt.config_io import ConfigError, ConfigIssue, error_message, line_of, read_yaml, validation_issues
from spinegpt.data_mixes import sources as source_readers
from spinegpt.data_mixes.records import CATEGORIES, SPINE_CATEGORY, SPLITS, SUBSPECIALTIES, Split
from spinegpt.eval_hooks import registry

SOURCES_FILE = "sources.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class MixError(ConfigError):
    """Every problem of one mix definition, each with its path (and file:line where the key is in a file)."""

    kind = "the mix definition"

    def heading(self) -> str:
        return f"data mix {self.source!r}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Filters(_Strict):
    """Which records of a source a component takes; each key lists accepted values (unset: any)."""

    split: list[Split] | None = None
    """``general``, ``non_spine``, ``spine``."""
    category: list[str] | None = None
    """SpineMed orthopedic classes (``Spine Surgery``, ...)."""
    subspecialty: list[str] | None = None
    """The 14 spine subspecialties."""
    task: list[Literal["mcq", "open_qa", "consultation", "report", "reasoning", "vqa"]] | None = None
    """``mcq``, ``open_qa``, ``consultation``, ``report``, ``reasoning``, ``vqa``."""
    language: list[Literal["en", "zh"]] | None = None
    """``en``, ``zh``."""

    @field_validator("split", "category", "subspecialty", "task", "language", mode="before")
    @classmethod
    def _scalar_as_list(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("category", "subspecialty")
    @classmethod
    def _known_values(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        known = CATEGORIES if info.field_name == "category" else SUBSPECIALTIES
        unknown = [v for v in value or [] if v not in known]
        if unknown:
            raise ValueError(f"unknown {info.field_name} {unknown}; one of: {', '.join(known)}")
        return value

    def accepts(self, split: str, category: str | None, subspecialty: str | None, task: str, language: str) -> bool:
        return (
            (self.split is None or split in self.split)
            and (self.category is None or category in self.category)
            and (self.subspecialty is None or subspecialty in self.subspecialty)
            and (self.task is None or task in self.task)
            and (self.language is None or language in self.language)
        )


class Component(_Strict):
    """One part of a mix: records of one source that pass its filters, all of them or a sample."""

    name: str | None = None
    """Unique within the (flattened) mix; default: the source name. ``set`` overrides address it by this name."""
    source: str
    """A source of ``sources.yaml`` or of the mix's own ``sources:``."""
    filters: Filters = Field(default_factory=Filters)
    """Which records qualify."""
    count: int | None = Field(default=None, gt=0)
    """Take exactly this many qualifying records (uniformly, seeded)."""
    fraction: float | None = Field(default=None, gt=0, le=1)
    """Take this fraction of the qualifying records."""
    weight: float | None = Field(default=None, gt=0, le=1)
    """Take ``weight x total`` records (the mix's ``total``); the weights of a mix sum to 1."""
    replace: bool = False
    """Sample with replacement (a record may repeat); without it a count above what qualifies is an error."""
    optional: bool = False
    """The source's file may be absent (data a user makes, such as the chains ``spinegpt data distill`` writes): the
    component then contributes nothing and the build manifest says so. Unset, a missing file is an error."""

    @model_validator(mode="after")
    def _one_amount(self) -> Component:
        given = [k for k in ("count", "fraction", "weight") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one of count, fraction, weight (got {', '.join(given)})")
        if self.name is None:
            self.name = self.source
        return self

    @property
    def label(self) -> str:
        assert self.name is not None
        return self.name


class SourceSpec(_Strict):
    """Where one upstream dataset lives under the data root, and how to read it."""

    reader: str
    """``medical_o1``, ``medical_r1_distill``, ``medthoughts``, ``pubmedvision`` or ``spinemed``."""
    path: str
    """The data file (JSON array, JSONL or parquet), relative to the data root or absolute."""
    hub: str | None = None
    """Hub dataset id; fetched into the data root when ``path`` is missing and the hub is reachable."""
    image_root: str | None = None
    """Folder relative image paths start from (relative to the data root); default: the file's folder."""
    datasets_root: str | None = None
    """Folder holding the public imaging datasets SpineMed pointers name (relative to the data root)."""
    language: Literal["en", "zh"] | None = None
    """Force the language tag; unset detects it per record."""
    reasoning_style: Literal["thinking_sections", "think_tags", "answer_only"] = "thinking_sections"
    """How chains of thought are laid out in the answer."""
    volume_slices: int = Field(default=25, gt=0)
    """Slices sampled evenly through a 3-D volume pointer."""
    conversations: str | None = None
    """PubMedVision: the field holding each item's conversation (the Chinese file has two; default conversations)."""

    @field_validator("reader")
    @classmethod
    def _known_reader(cls, value: str) -> str:
        known = source_readers.READERS
        if value not in known:
            raise ValueError(f"unknown reader {value!r}; one of: {', '.join(known)}")
        return value


DECONTAMINATE = ("spinebench", "vqa_rad", "path_vqa", "slake", "pmc_vqa", "mmmu", "medqa")
"""What a mix is decontaminated against unless it says otherwise: SpineBench and the general medical benchmarks of
``sources.yaml`` (the latter only where their files are under the data root)."""


class HeldOutBenchmark(_Strict):
    """A test set whose questions must never appear in training data."""

    kind: str = "spinebench"
    """A registered benchmark kind (``eval_hooks/registry.py``)."""
    path: str
    """The benchmark's file or download folder, relative to the data root or absolute."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Your own file in the benchmark's shape: which column holds each field (as ``columns:`` of an ``eval:``
    benchmark)."""
    required: bool = True
    """A missing file stops the build (true), or is recorded in the build manifest as ``not found: not checked``
    and logged (false: the general medical benchmarks, which not every user downloads)."""

    @field_validator("kind")
    @classmethod
    def _registered(cls, value: str) -> str:
        registry.get(value)
        return value

    @model_validator(mode="after")
    def _known_columns(self) -> HeldOutBenchmark:
        unknown = sorted(set(self.columns) - set(registry.get(self.kind).columns))
        if unknown:
            raise ValueError(f"columns: {self.kind} has no field(s) {', '.join(unknown)}")
        return self


class Mix(_Strict):
    """A data mix (``data_mixes/<name>.yaml``); the README's "Data mixes" section shows the keys in use."""

    name: str
    description: str = ""
    include: list[str] = Field(default_factory=list)
    """Mixes whose components come first, in order (``stage1_foundation`` = ``general`` + ``non_spine``)."""
    components: list[Component] = Field(default_factory=list)
    total: int | None = Field(default=None, gt=0)
    """Records the weighted components share (needed when any component has a ``weight``)."""
    seed: int | None = None
    """Sampling seed; unset takes the curriculum's seed (or ``--seed``)."""
    on_error: Literal["error", "skip"] = "error"
    """A bad upstream item stops the build with every problem listed (``error``), or is skipped and counted."""
    dedupe: bool = True
    """Drop exact duplicates across components (the first occurrence stays)."""
    decontaminate: list[str] = Field(default_factory=lambda: list(DECONTAMINATE))
    """Benchmarks whose questions are removed from training data (names of ``benchmarks``). An empty list must be
    said explicitly."""
    shard_rows: int = Field(default=100_000, gt=0)
    """Rows per output shard."""
    sources: dict[str, SourceSpec] = Field(default_factory=dict)
    benchmarks: dict[str, HeldOutBenchmark] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"not a valid name: {value!r}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Mix:
        problems = []
        names = [c.label for c in self.components]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"component names must be unique (set `name:`); repeated: {', '.join(repeated)}")
        weights = [c.weight for c in self.components if c.weight is not None]
        if weights and abs(sum(weights) - 1.0) > 1e-6:
            problems.append(f"component weights sum to {sum(weights):g}, not 1")
        if weights and self.total is None:
            problems.append("weighted components need the mix's `total`")
        for i, c in enumerate(self.components):
            if c.source not in self.sources:
                problems.append(
                    f"components[{i}].source: unknown source {c.source!r}; known: {', '.join(self.sources)}"
                )
        for b in self.decontaminate:
            if b not in self.benchmarks:
                problems.append(f"decontaminate: unknown benchmark {b!r}; known: {', '.join(self.benchmarks)}")
        if not self.components:
            problems.append("no components (and nothing included)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True)
class LoadedMix:
    mix: Mix
    files: list[Path]
    """The mix file and the files it included, in order."""

    def spec_json(self) -> dict[str, Any]:
        return self.mix.model_dump(mode="json")


def mixes_dir() -> Path:
    return Path(str(importlib.resources.files("spinegpt.data_mixes")))


def find(name: str, search: Sequence[Path] = ()) -> Path:
    """A mix by name (``data_mixes/<name>.yaml`` or a folder in ``search``) or by path."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        if candidate.is_file():
            return candidate.resolve()
        raise FileNotFoundError(f"no such mix file: {candidate}")
    for folder in (*search, mixes_dir()):
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path.resolve()
    known = sorted(p.stem for p in mixes_dir().glob("*.yaml") if p.name != SOURCES_FILE)
    raise FileNotFoundError(f"no data mix {name!r}; shipped mixes: {', '.join(known)}")


def _mix_error(path: Path, issues: list[ConfigIssue]) -> MixError:
    return MixError(path.stem, issues)


def _read(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    return read_yaml(path, _mix_error)


def shipped_sources() -> dict[str, SourceSpec]:
    """The sources of ``sources.yaml``, validated."""
    return {name: SourceSpec.model_validate(spec) for name, spec in _default_sources()[0].items()}


def _default_sources() -> tuple[dict[str, Any], dict[str, Any]]:
    doc, _ = _read(mixes_dir() / SOURCES_FILE)
    return doc.get("sources", {}), doc.get("benchmarks", {})


def _apply_set(doc: dict[str, Any], settings: Mapping[str, Any], name: str) -> list[ConfigIssue]:
    """``{"pubmedvision.count": 4}``: component ``pubmedvision``'s ``count`` becomes 4 (``mix.key`` for the mix)."""
    issues = []
    components = {c.get("name", c.get("source")): c for c in doc.get("components", []) if isinstance(c, dict)}
    for key, value in settings.items():
        target, _, field = key.rpartition(".")
        if not field:
            issues.append(ConfigIssue(f"set.{key}", "must read component.key (or mix.key)"))
        elif target == "mix":
            doc[field] = value
        elif target in components:
            component = components[target]
            if field in ("count", "fraction", "weight"):  # a new amount replaces the old one, whichever it was
                for amount in ("count", "fraction", "weight"):
                    component.pop(amount, None)
            if value is not None:
                component[field] = value
        else:
            issues.append(ConfigIssue(f"set.{key}", f"no component {target!r} in mix {name!r}; has {list(components)}"))
    return issues


def load(name: str, settings: Mapping[str, Any] | None = None, search: Sequence[Path] = ()) -> LoadedMix:
    """Load a mix with its includes flattened, shipped sources merged in, and ``settings`` applied; validate."""
    path = find(name, search)
    doc, files, issues = _flatten(path, search, ())
    origins = doc.pop("_origins")
    issues += _apply_set(doc, settings or {}, doc.get("name", path.stem))
    default_sources, default_benchmarks = _default_sources()
    doc["sources"] = {**default_sources, **doc.get("sources", {})}
    doc["benchmarks"] = {**default_benchmarks, **doc.get("benchmarks", {})}
    doc.pop("include", None)
    raw = _cross_issues(doc, path, origins)
    issues += raw

    def locate(loc: list[str | int]) -> tuple[Path | None, int | None]:
        file, local = path, loc
        if len(loc) > 1 and loc[0] == "components" and isinstance(loc[1], int) and loc[1] < len(origins):
            file, index = origins[loc[1]]  # the component came from an included mix: point into that file
            local = ["components", index, *loc[2:]]
        return file, line_of(_read(file)[1], local)[0]

    try:
        mix = Mix.model_validate(doc)
    except ValidationError as exc:
        for issue, error in zip(validation_issues(exc, locate), exc.errors(), strict=True):
            if raw and (not issue.path or "at most one of count" in error_message(error)):
                continue  # rules across fields, already reported from the raw document
            issues.append(issue)
        raise MixError(doc.get("name", path.stem), issues) from None
    if issues:
        raise MixError(mix.name, issues)
    return LoadedMix(mix, files)


def _cross_issues(doc: dict[str, Any], path: Path, origins: list[tuple[Path, int]]) -> list[ConfigIssue]:
    """The rules across fields, checked on the raw document so they are reported together with field errors
    (pydantic skips a model's own cross-checks once one of its fields failed)."""
    issues = []
    components = [c for c in doc.get("components") or [] if isinstance(c, dict)]
    sources = doc.get("sources") or {}
    for i, c in enumerate(components):
        file, local = origins[i] if i < len(origins) else (path, i)
        amounts = [k for k in ("count", "fraction", "weight") if k in c]
        if len(amounts) > 1:
            line = line_of(_read(file)[1], ["components", local])[0]
            issues.append(
                ConfigIssue(
                    f"components[{i}]",
                    f"set at most one of count, fraction, weight (got {', '.join(amounts)})",
                    file,
                    line,
                )
            )
        if c.get("source") not in sources:
            line = line_of(_read(file)[1], ["components", local, "source"])[0]
            known = ", ".join(sources)
            issues.append(
                ConfigIssue(
                    f"components[{i}].source", f"unknown source {c.get('source')!r}; known: {known}", file, line
                )
            )
    weights = [c["weight"] for c in components if isinstance(c.get("weight"), int | float)]
    if weights and abs(sum(weights) - 1.0) > 1e-6:
        issues.append(ConfigIssue("components", f"weights sum to {sum(weights):g}, not 1", path))
    if weights and doc.get("total") is None:
        issues.append(ConfigIssue("total", "weighted components need the mix's `total`", path))
    for name in doc.get("decontaminate") or []:
        if name not in (doc.get("benchmarks") or {}):
            issues.append(ConfigIssue("decontaminate", f"unknown benchmark {name!r}", path))
    return issues


def _flatten(
    path: Path, search: Sequence[Path], seen: tuple[Path, ...]
) -> tuple[dict[str, Any], list[Path], list[ConfigIssue]]:
    if path in seen:
        chain = " -> ".join(p.stem for p in (*seen, path))
        raise MixError(path.stem, [ConfigIssue("include", f"circular include: {chain}", path)])
    doc, node = _read(path)
    issues: list[ConfigIssue] = []
    components: list[Any] = []
    origins: list[tuple[Path, int]] = []
    sources: dict[str, Any] = {}
    benchmarks: dict[str, Any] = {}
    files = [path]
    for i, name in enumerate(doc.get("include") or []):
        try:
            child_path = find(str(name), (path.parent, *search))
        except FileNotFoundError as exc:
            issues.append(ConfigIssue(f"include[{i}]", str(exc), path, line_of(node, ["include", i])[0]))
            continue
        child, child_files, child_issues = _flatten(child_path, search, (*seen, path))
        issues += child_issues
        files += child_files
        components += copy.deepcopy(child.get("components", []))
        origins += child["_origins"]
        sources.update(child.get("sources", {}))
        benchmarks.update(child.get("benchmarks", {}))
    doc = dict(doc)
    own = list(doc.get("components") or [])
    doc["components"] = components + own
    doc["_origins"] = origins + [(path, i) for i in range(len(own))]
    doc["sources"] = {**sources, **(doc.get("sources") or {})}
    doc["benchmarks"] = {**benchmarks, **(doc.get("benchmarks") or {})}
    return doc, files, issues


def component_splits(mix: Mix, c: Component) -> set[str]:
    """The splits a component can yield, read from its source's reader and its filters."""
    possible: set[str] = set(source_readers.get(mix.sources[c.source].reader).splits)
    if c.filters.split is not None:
        possible &= set(c.filters.split)
    if c.filters.category is not None and possible <= {"non_spine", "spine"}:
        # The orthopedic category decides the split: "Spine Surgery" is spine, the other six non-spine.
        possible &= {"spine" if cat == SPINE_CATEGORY else "non_spine" for cat in c.filters.category}
    return possible


def splits_of(loaded: LoadedMix, restriction: Sequence[str] | None = None) -> list[str]:
    """The splits a mix trains on (after an optional restriction), in canonical order, read from its definition."""
    found: set[str] = set()
    for c in loaded.mix.components:
        found |= component_splits(loaded.mix, c)
    if restriction is not None:
        found &= set(restriction)
    return [s for s in SPLITS if s in found]
