"""Build a mix: engine JSONL shards plus a provenance ``manifest.json``, reproducibly and in bounded memory.

Each source is parsed once, streaming: every item is validated, and each record that qualifies for a component
(filters, benchmark decontamination) is spooled to disk as its engine row, keyed by its index in the source. The
seeded sample is then drawn as *indices*, and the drawn rows are copied from the spool without being parsed again.
Memory holds one record plus a few integers per qualifying record, so the full 456k-item SpineMed-450k builds in
a small fraction of the memory of one copy of it.

Output order is component order (first component first), then source order; the engine shuffles at training
time with the curriculum's seed. Same inputs and seed give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import sys
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spinegpt.data_mixes import mixes, readers, sources
from spinegpt.data_mixes.mixes import Component, Filters, LoadedMix, Mix, SourceSpec
from spinegpt.data_mixes.prepare import check_row
from spinegpt.data_mixes.records import Bad, Record, normalise_question
from spinegpt.eval_hooks import registry
from spinegpt.eval_hooks.benchmark import BenchmarkError

from spinegpt.errors import UserError
from spinegpt.files import first_of, sha256_file

FORMAT = 2  # 2: image paths absolute but not symlink-resolved; items addressed by index in the source
MANIFEST = "manifest.json"
MAX_REPORTED = 20


class BuildError(UserError, ValueError):
    """A mix that cannot be built; the message lists every problem (file:line for bad items)."""


class BuildProgress:
    """One console line every couple of seconds: which pass, which source, how far, how fast."""

    def __init__(self, label: str, every_s: float = 2.0, stream: Any = None):
        self.label, self.every_s, self.stream = label, every_s, stream or sys.stderr
        self.last = time.monotonic()

    def tick(self, what: str, done: int, started: float) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = done / max(now - started, 1e-9)
            print(f"[spinegpt data] {self.label} {what}: {done:,} items ({rate:,.0f}/s)", file=self.stream, flush=True)

    def say(self, message: str) -> None:
        print(f"[spinegpt data] {self.label} {message}", file=self.stream, flush=True)


# -- sources ------------------------------------------------------------------------------------------------------


def under(root: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else root / path


def source_file(name: str, spec: SourceSpec, data_root: Path) -> Path:
    """The source's data file, fetched from the hub into the data root when it is missing and a hub id is set."""
    path = under(data_root, spec.path)
    if path.is_file():
        return path
    if spec.hub and os.environ.get("HF_HUB_OFFLINE") != "1":
        try:
            from huggingface_hub import hf_hub_download

            relative = Path(spec.path)
            hf_hub_download(repo_id=spec.hub, repo_type="dataset", filename=relative.name, local_dir=path.parent)
            if path.is_file():
                return path
        except Exception as exc:
            raise BuildError(
                f"source {name!r}: {path} not found, and fetching {spec.hub} from the hub failed ({exc})"
            ) from None
    hint = f" (hub id {spec.hub}: download it there)" if spec.hub else ""
    raise BuildError(f"source {name!r}: {path} not found under the data root {data_root}{hint}")


def read_options(spec: SourceSpec, data_root: Path) -> readers.ReadOptions:
    return readers.ReadOptions(
        image_root=under(data_root, spec.image_root) if spec.image_root else None,
        data_root=under(data_root, spec.datasets_root) if spec.datasets_root else data_root,
        language=spec.language,
        reasoning_style=spec.reasoning_style,
        volume_slices=spec.volume_slices,
        dataset=spec.hub,
        conversations=spec.conversations,
    )


_ROOT = Path("/")


def check_record(record: Record) -> str | None:
    """What the engine would choke on (roles, alternation, empty answers, ``<image>`` tags vs images); the reader
    has already resolved and checked the image files."""
    problems, _ = check_row(record.to_row(), _ROOT, check_files=False)
    return "; ".join(problems) or None


def _valid_records(
    name: str,
    path: Path,
    spec: SourceSpec,
    options: readers.ReadOptions,
    bad: Callable[[Bad], None],
    progress: BuildProgress,
) -> Iterator[Record]:
    """Each valid record of the source (or of its part ``options.byte_range``); bad items go to ``bad``."""
    started = time.monotonic()
    for seen, item in enumerate(sources.read(spec.reader, path, options), 1):
        progress.tick(f"reading {name}", seen, started)
        if isinstance(item, Bad):
            bad(item)
            continue
        problem = check_record(item)
        if problem:
            bad(Bad(f"{item.provenance.get('file')}:{item.provenance.get('line')}", "bad conversation", problem))
            continue
        yield item


@dataclass
class _Part:
    """What reading one source (or one part of it) found: counts per component, the eligible indices, the spool."""

    spool: Path
    valid: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    """Items the source itself leaves unusable, by reason: counted, never an error."""
    problems: list[str] = field(default_factory=list)
    counts: list[Counter[str]] = field(default_factory=list)
    eligible: list[array[int]] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    """SpineMed item id -> its line, to find an id repeated in another part of the file."""


def _read_part(
    name: str,
    spec: SourceSpec,
    data_root: Path,
    byte_range: tuple[int, int] | None,
    selectors: list[tuple[set[str] | None, Filters]],
    leaked_questions: set[str],
    spool: Path,
    label: str,
) -> _Part:
    """Validate, filter and decontaminate the items of one source (part); spool each qualifying row, keyed by the
    item's index in the source. Runs in a worker process when a big JSONL source is read in parts."""
    path = source_file(name, spec, data_root)
    options = replace(read_options(spec, data_root), byte_range=byte_range)
    part = _Part(spool, counts=[Counter() for _ in selectors], eligible=[array("I") for _ in selectors])

    def on_bad(item: Bad) -> None:
        if item.skip:
            part.skipped[item.reason] += 1
            return
        part.bad[item.reason] += 1
        if len(part.problems) < MAX_REPORTED:
            part.problems.append(str(item))

    with spool.open("w", encoding="utf-8") as out:
        for record in _valid_records(name, path, spec, options, on_bad, BuildProgress(label)):
            part.valid += 1
            if spec.reader == "spinemed" and byte_range is not None:
                part.ids[record.id] = int(record.provenance.get("line", 0))
            accepting = []
            for k, (allowed, filters) in enumerate(selectors):
                if (allowed is None or record.split in allowed) and filters.accepts(
                    record.split, record.category, record.subspecialty, record.task, record.language
                ):
                    accepting.append(k)
                else:
                    part.counts[k]["filtered out"] += 1
            if not accepting:
                continue  # never normalised nor serialised: most components filter out most of SpineMed
            if leaked_questions and record.question() in leaked_questions:
                for k in accepting:
                    part.counts[k]["benchmark leak"] += 1
                continue
            for k in accepting:
                part.eligible[k].append(record.index)
            row = json.dumps(record.to_row(), ensure_ascii=False, sort_keys=True)
            out.write(f"{record.index}\t{record.split}\t{row}\n")
    return part


PARALLEL_MIN_BYTES = 64 << 20
"""JSONL sources at least this big are read in parallel parts (SpineMed-450k is ~700 MB)."""


def _read_source(
    name: str,
    spec: SourceSpec,
    data_root: Path,
    states: list[_ComponentState],
    leaked: set[str],
    folder: Path,
    label: str,
    workers: int,
    min_bytes: int,
) -> list[_Part]:
    selectors = [(state.allowed_splits, state.component.filters) for state in states]
    path = source_file(name, spec, data_root)
    ranges: list[tuple[int, int] | None] = [None]
    if workers > 1 and path.stat().st_size >= min_bytes and readers._is_jsonl(path):
        ranges = list(readers.byte_ranges(path, workers))
    labels = [f"{label} [part {k + 1}/{len(ranges)}]" if len(ranges) > 1 else label for k in range(len(ranges))]
    jobs = [
        (name, spec, data_root, r, selectors, leaked, folder / f"{name}.{k:03d}.tsv", labels[k])
        for k, r in enumerate(ranges)
    ]
    if len(jobs) == 1:
        return [_read_part(*jobs[0])]
    # spawn, not fork: the caller (the runner) may hold threads, and a forked copy of a lock can deadlock.
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_read_part, *zip(*jobs, strict=True)))
    _no_repeated_ids(path, parts)
    return parts


def _no_repeated_ids(path: Path, parts: list[_Part]) -> None:
    """Each part's reader refuses an id it saw before; an id repeated in two parts is only visible here."""
    seen: dict[str, int] = {}
    repeats = []
    for part in parts:
        for item_id, line in part.ids.items():
            if item_id in seen:
                repeats.append(
                    f"{path}:{line}: duplicate id {item_id!r} is also the id of the item at {path}:{seen[item_id]}"
                )
            else:
                seen[item_id] = line
        part.ids.clear()
    if repeats:
        raise BuildError(f"{len(repeats)} repeated item id(s):\n{first_of(repeats)}")


# -- the build ----------------------------------------------------------------------------------------------------


@dataclass
class _ComponentState:
    index: int
    component: Component
    allowed_splits: set[str] | None
    eligible: array[int]  # indices (in the source file) of the items this component may draw
    counts: Counter[str]
    selected: dict[int, int] | None = None  # position -> multiplicity


@dataclass(frozen=True)
class BuildResult:
    dir: Path
    manifest: dict[str, Any]

    @property
    def shards(self) -> list[Path]:
        return [self.dir / s["file"] for s in self.manifest["output"]["shards"]]

    @property
    def rows(self) -> int:
        return int(self.manifest["output"]["rows"])

    @property
    def sha256(self) -> str:
        return str(self.manifest["output"]["sha256"])


def benchmark_questions(mix: Mix, data_root: Path) -> tuple[set[str], list[dict[str, Any]]]:
    questions: set[str] = set()
    described = []
    for name in mix.decontaminate:
        spec = mix.benchmarks[name]
        path = under(data_root, spec.path)
        if not path.is_file():
            raise BuildError(
                f"benchmark {name!r} for decontamination: {path} not found. Training data is checked against it "
                "so test items cannot leak into training; provide it, or set `decontaminate: []` in the mix to "
                "build without the check (recorded in the manifest)"
            )
        try:
            found = registry.get(spec.kind).questions(path)
        except BenchmarkError as exc:
            raise BuildError(f"benchmark {name!r}: {exc}") from None
        questions.update(normalise_question(q) for q in found)
        described.append({"name": name, "path": str(path), "sha256": sha256_file(path), "items": len(found)})
    questions.discard("")
    return questions, described


def input_fingerprint(loaded: LoadedMix, data_root: Path, seed: int, splits: Sequence[str] | None) -> dict[str, Any]:
    """Everything the output depends on: the resolved mix, seed, split restriction and each input's sha256."""
    mix = loaded.mix
    kept = set(splits) if splits else None
    used = sorted({c.source for c in mix.components if kept is None or mixes.component_splits(mix, c) & kept})
    inputs = []
    for name in used:
        path = source_file(name, mix.sources[name], data_root)
        inputs.append(
            {"source": name, "reader": mix.sources[name].reader, "path": str(path), "sha256": sha256_file(path)}
        )
    benches = [
        {"name": b, "path": str(p), "sha256": sha256_file(p) if p.is_file() else None}
        for b in mix.decontaminate
        for p in [under(data_root, mix.benchmarks[b].path)]
    ]
    spec = loaded.spec_json()
    spec["sources"] = {k: v for k, v in spec["sources"].items() if k in used}
    spec["benchmarks"] = {k: v for k, v in spec["benchmarks"].items() if k in mix.decontaminate}
    body = {
        "format": FORMAT,
        "mix": spec,
        "seed": seed,
        "splits": sorted(splits) if splits else None,
        "data_root": str(data_root),
        "inputs": inputs,
        "benchmarks": benches,
    }
    body["key"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return body


def build(
    loaded: LoadedMix,
    data_root: Path,
    output: Path,
    *,
    seed: int,
    splits: Sequence[str] | None = None,
    fingerprint: dict[str, Any] | None = None,
    stream: Any = None,
    workers: int | None = None,
    min_parallel_bytes: int = PARALLEL_MIN_BYTES,
) -> BuildResult:
    """Build ``loaded`` into ``output`` (written under a temporary name and renamed when complete). Output bytes do
    not depend on ``workers`` (default :func:`readers.data_workers`)."""
    workers = workers or readers.data_workers()
    mix = loaded.mix
    data_root = data_root.resolve()
    fingerprint = fingerprint or input_fingerprint(loaded, data_root, seed, splits)
    progress = BuildProgress(mix.name, stream=stream)
    started = time.monotonic()
    allowed = set(splits) if splits else None
    states = [_ComponentState(i, c, allowed, array("I"), Counter()) for i, c in enumerate(mix.components)]
    by_source: dict[str, list[_ComponentState]] = defaultdict(list)
    for state in states:
        if allowed is not None and not mixes.component_splits(mix, state.component) & allowed:
            state.selected = {}  # a split restriction leaves it nothing: not read, not sampled, reported as such
            state.counts["outside splits"] = 1
            continue
        by_source[state.component.source].append(state)

    leaked_questions, bench_info = benchmark_questions(mix, data_root)
    source_stats: dict[str, dict[str, Any]] = {}
    problems: list[str] = []

    output = output.resolve()
    partial = output.with_name(f"{output.name}.partial-{os.getpid()}")  # concurrent builders never share one
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "components").mkdir(parents=True)
    spool_dir = partial / "spool"
    spool_dir.mkdir()

    try:
        # Read each source once (a big JSONL source in parallel parts): validate, filter, decontaminate, count;
        # spool the rows that qualify for any component.
        spools: dict[str, list[Path]] = {}
        for name, comps in by_source.items():
            parts = _read_source(
                name,
                mix.sources[name],
                data_root,
                comps,
                leaked_questions,
                spool_dir,
                f"{mix.name}",
                workers,
                min_parallel_bytes,
            )
            bad_reasons: Counter[str] = Counter()
            skipped: Counter[str] = Counter()
            for part in parts:  # in file order: the merged lists are what one reader would have produced
                bad_reasons.update(part.bad)
                skipped.update(part.skipped)
                if mix.on_error == "error":
                    problems.extend(part.problems[: MAX_REPORTED - len(problems)])
                for state, counts, eligible in zip(comps, part.counts, part.eligible, strict=True):
                    state.counts.update(counts)
                    state.eligible.extend(eligible)
            spools[name] = [part.spool for part in parts]
            source_stats[name] = {"valid": sum(p.valid for p in parts), "bad": dict(sorted(bad_reasons.items()))}
            if skipped:
                source_stats[name]["skipped"] = dict(sorted(skipped.items()))
            if bad_reasons and mix.on_error == "error":
                total_bad = sum(bad_reasons.values())
                problems.append(f"source {name!r}: {total_bad} bad item(s) in all; set `on_error: skip` to skip them")
        if problems:
            raise BuildError(f"data mix {mix.name!r}: bad input\n" + "\n".join(f"  {p}" for p in problems))

        # Draw each component's sample (item indices), seeded per component so adding one never reshuffles another.
        for state in states:
            if state.counts.get("outside splits"):
                continue
            state.selected, issue = _draw(state, mix, seed)
            if issue:
                problems.append(issue)
        if problems:
            raise BuildError(f"data mix {mix.name!r}:\n" + "\n".join(f"  {p}" for p in problems))

        # Copy the drawn rows from the spool into each component's file (a source can serve several components).
        for name, comps in by_source.items():
            handles = {
                s.index: (partial / "components" / f"{s.index:03d}.tsv").open("w", encoding="utf-8") for s in comps
            }
            try:
                for entry in _lines(spools[name]):
                    index_text, rest = entry.split("\t", 1)
                    index = int(index_text)
                    for state in comps:
                        assert state.selected is not None
                        times = state.selected.get(index)
                        if times:
                            handles[state.index].write(f"{times}\t{rest}")
            finally:
                for handle in handles.values():
                    handle.close()
        shutil.rmtree(spool_dir)

        output_info = _write_shards(partial, states, mix)
        shutil.rmtree(partial / "components")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # a failed build leaves nothing behind
        raise
    manifest = {
        **{k: fingerprint[k] for k in ("format", "key", "seed", "splits", "data_root", "inputs")},
        "mix": mix.name,
        "files": [str(f) for f in loaded.files],
        "spec": fingerprint["mix"],
        "benchmarks": bench_info,
        "sources": source_stats,
        "components": [_component_report(s) for s in states],
        "output": output_info,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if output.exists() and _key_of(output) != manifest["key"]:
        shutil.rmtree(output)  # an earlier build with other inputs: replaced
    try:
        partial.rename(output)
    except OSError:
        if _key_of(output) != manifest["key"]:
            raise
        shutil.rmtree(partial)  # another process built the same thing first: its bytes are ours
        manifest = json.loads((output / MANIFEST).read_text(encoding="utf-8"))
    progress.say(f"built {output_info['rows']:,} rows in {manifest['build_seconds']}s -> {output}")
    return BuildResult(output, manifest)


def _lines(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            yield from handle


def _key_of(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("key"))
    except (OSError, ValueError):
        return None


def _draw(state: _ComponentState, mix: Mix, seed: int) -> tuple[dict[int, int], str | None]:
    c, n = state.component, len(state.eligible)
    where = f"components[{state.index}] ({c.label})"
    if c.count is not None:
        wanted, key = c.count, "count"
    elif c.fraction is not None:
        wanted, key = round(c.fraction * n), "fraction"
    elif c.weight is not None:
        assert mix.total is not None
        wanted, key = round(c.weight * mix.total), "weight"
    else:
        return {p: 1 for p in state.eligible}, None
    state.counts["requested"] = wanted
    if wanted > n and not c.replace:
        return {}, (
            f"{where}.{key}: {wanted:,} records requested but only {n:,} of source {c.source!r} qualify; "
            "lower it or set `replace: true`"
        )
    if n == 0:
        return {}, None
    rng = random.Random(f"{seed}/{mix.name}/{c.label}")
    if c.replace:
        return dict(Counter(state.eligible[i] for i in rng.choices(range(n), k=wanted))), None
    return {state.eligible[i]: 1 for i in rng.sample(range(n), wanted)}, None


def _write_shards(folder: Path, states: list[_ComponentState], mix: Mix) -> dict[str, Any]:
    seen: set[bytes] = set()
    total = hashlib.sha256()
    shards: list[dict[str, Any]] = []
    rows_in_shard = 0
    out = None
    shard_hash = hashlib.sha256()

    def close() -> None:
        nonlocal out
        if out is not None:
            out.close()
            shards[-1].update(rows=rows_in_shard, sha256=shard_hash.hexdigest())
            out = None

    for state in states:
        if state.counts.get("outside splits"):
            continue
        kept_by_split: Counter[str] = Counter()
        with (folder / "components" / f"{state.index:03d}.tsv").open(encoding="utf-8") as handle:
            for entry in handle:
                times_text, split, line = entry.rstrip("\n").split("\t", 2)
                key = hashlib.blake2b(line.encode(), digest_size=16).digest()
                if mix.dedupe and key in seen:
                    state.counts["duplicate"] += int(times_text)
                    continue
                seen.add(key)
                data = (line + "\n").encode()
                for _ in range(int(times_text)):
                    if out is None or rows_in_shard >= mix.shard_rows:
                        close()
                        name = f"part-{len(shards):05d}.jsonl"
                        shards.append({"file": name})
                        out = (folder / name).open("wb")
                        rows_in_shard, shard_hash = 0, hashlib.sha256()
                    out.write(data)
                    shard_hash.update(data)
                    total.update(data)
                    rows_in_shard += 1
                    kept_by_split[split] += 1
        state.counts["kept"] = sum(kept_by_split.values())
        state.counts.update({f"kept {k}": v for k, v in kept_by_split.items()})
    close()
    rows = sum(s["rows"] for s in shards)
    if rows == 0:
        raise BuildError(f"data mix {mix.name!r}: no records left after filters, decontamination and dedupe")
    return {"rows": rows, "sha256": total.hexdigest(), "shards": shards}


def _component_report(state: _ComponentState) -> dict[str, Any]:
    c, counts = state.component, state.counts
    eligible = len(state.eligible)
    selected = sum((state.selected or {}).values())
    dropped = {
        reason: counts[reason] for reason in ("filtered out", "benchmark leak", "duplicate") if counts.get(reason)
    }
    if selected < eligible:
        dropped["not sampled"] = eligible - selected
    if counts.get("outside splits"):
        return {"name": c.label, "source": c.source, "excluded": "yields none of the splits the build keeps"}
    return {
        "name": c.label,
        "source": c.source,
        "filters": c.filters.model_dump(exclude_none=True),
        "amount": {k: getattr(c, k) for k in ("count", "fraction", "weight") if getattr(c, k) is not None} or "all",
        "replace": c.replace,
        "read": eligible + counts.get("filtered out", 0) + counts.get("benchmark leak", 0),
        "qualifying": eligible,
        "selected": selected,
        "kept": counts.get("kept", 0),
        "kept_by_split": {k[5:]: v for k, v in sorted(counts.items()) if k.startswith("kept ")},
        "dropped": dropped,
    }


def build_cached(
    loaded: LoadedMix,
    data_root: Path,
    cache_root: Path,
    *,
    seed: int,
    splits: Sequence[str] | None = None,
    stream: Any = None,
) -> BuildResult:
    """Reuse an earlier build whose inputs hash the same; otherwise build into the cache."""
    fingerprint = input_fingerprint(loaded, data_root.resolve(), seed, splits)
    target = cache_root / f"{loaded.mix.name}-{fingerprint['key'][:16]}"
    manifest_path = target / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("key") == fingerprint["key"]:
            BuildProgress(loaded.mix.name, stream=stream).say(f"reusing {target} (same inputs, same seed)")
            return BuildResult(target, manifest)
    return build(loaded, data_root, target, seed=seed, splits=splits, fingerprint=fingerprint, stream=stream)
