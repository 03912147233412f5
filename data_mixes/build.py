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

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spinegpt import stopping
from spinegpt.data_mixes import mixes, readers, sources
from spinegpt.data_mixes.mixes import Component, Filters, LoadedMix, Mix, SourceSpec
from spinegpt.data_mixes.records import Bad, Record, normalise_question
from spinegpt.data_mixes.rows import check_row
from spinegpt.errors import UserError
from spinegpt.eval_hooks import benchmark, registry
from spinegpt.eval_hooks.benchmark import BenchmarkError
from spinegpt.files import FolderBusy, FolderLock, first_of, folder_problem, sha256_file
from spinegpt.progress import Progress

logger = logging.getLogger(__name__)

FORMAT = 2  # 2: image paths absolute but not symlink-resolved; items addressed by index in the source
MANIFEST = "manifest.json"
MAX_REPORTED = 20


class BuildError(UserError, ValueError):
    """A mix that cannot be built; the message lists every problem (file:line for bad items)."""


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
    progress: Progress,
) -> Iterator[Record]:
    """Each valid record of the source (or of its part ``options.byte_range``); bad items go to ``bad``."""
    for item in sources.read(spec.reader, path, options):
        progress.advance()
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
    selectors: list[tuple[set[str] | None, Filters, int]],
    leaked_questions: list[set[str]],
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
        progress = Progress(f"{label} reading {name}", None, every_s=2.0, log=logger)
        for record in _valid_records(name, path, spec, options, on_bad, progress):
            part.valid += 1
            if spec.reader == "spinemed" and byte_range is not None:
                part.ids[record.id] = int(record.provenance.get("line", 0))
            accepting = []
            for k, (allowed, filters, _) in enumerate(selectors):
                if (allowed is None or record.split in allowed) and filters.accepts(
                    record.split, record.category, record.subspecialty, record.task, record.language
                ):
                    accepting.append(k)
                else:
                    part.counts[k]["filtered out"] += 1
            if not accepting:
                continue  # never normalised nor serialised: most components filter out most of SpineMed
            question = record.question() if any(leaked_questions[selectors[k][2]] for k in accepting) else None
            kept = 0
            for k in accepting:
                if question is not None and question in leaked_questions[selectors[k][2]]:
                    part.counts[k]["benchmark leak"] += 1
                else:
                    part.eligible[k].append(record.index)
                    kept += 1
            if not kept:
                continue
            row = json.dumps(record.to_row(), ensure_ascii=False, sort_keys=True)
            out.write(f"{record.index}\t{record.split}\t{row}\n")
    return part


PARALLEL_MIN_BYTES = 64 << 20
"""JSONL sources at least this big are read in parallel parts (SpineMed-450k is ~700 MB)."""


@dataclass
class _SharedRead:
    """One source read once for every component (of every mix being built) that draws from it."""

    name: str
    spec: SourceSpec
    path: Path
    states: list[tuple[int, _ComponentState]]
    """(which mix, its component's state), in mix then component order."""
    parts: list[_Part] = field(default_factory=list)


def _read_all(
    reads: list[_SharedRead],
    data_root: Path,
    leaked: list[set[str]],
    folder: Path,
    label: str,
    workers: int,
    min_bytes: int,
) -> None:
    """Read every source, a big JSONL one in ``workers`` parts, all parts as jobs of one process pool (largest
    first, so the small sources fill the gaps): each source's parts in file order in ``read.parts``."""
    jobs: list[tuple[int, _SharedRead, tuple[Any, ...]]] = []
    for read in reads:
        selectors = [(state.allowed_splits, state.component.filters, mix) for mix, state in read.states]
        ranges: list[tuple[int, int] | None] = [None]
        if workers > 1 and read.path.stat().st_size >= min_bytes and readers._is_jsonl(read.path):
            ranges = list(readers.byte_ranges(read.path, workers))
        for k, r in enumerate(ranges):
            where = f"{label} [part {k + 1}/{len(ranges)}]" if len(ranges) > 1 else label
            size = (r[1] - r[0]) if r else read.path.stat().st_size
            spool = folder / f"{read.name}.{len(jobs):03d}.tsv"
            jobs.append((size, read, (read.name, read.spec, data_root, r, selectors, leaked, spool, where)))
    if workers == 1 or len(jobs) == 1 or sum(size for size, _, _ in jobs) < min_bytes:
        results = [_read_part(*job) for _, _, job in jobs]  # small inputs: starting processes would cost more
    else:
        order = sorted(range(len(jobs)), key=lambda j: -jobs[j][0])
        with stopping.process_pool(min(workers, len(jobs))) as pool:
            futures = {j: pool.submit(_read_part, *jobs[j][2]) for j in order}
            results = [futures[j].result() for j in range(len(jobs))]
    for (_, read, _), part in zip(jobs, results, strict=True):
        read.parts.append(part)
    for read in reads:
        if len(read.parts) > 1:
            _no_repeated_ids(read.path, read.parts)


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
    absent: Path | None = None  # an optional source's missing file


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


NOT_CHECKED = "not found: not checked"


def benchmark_questions(mix: Mix, data_root: Path) -> tuple[set[str], list[dict[str, Any]]]:
    """The normalised questions of every benchmark the mix is decontaminated against, and what each was (path,
    hash, items; or, for an optional benchmark whose files are not there, that it was not checked)."""
    questions: set[str] = set()
    described: list[dict[str, Any]] = []
    for name in mix.decontaminate:
        spec = mix.benchmarks[name]
        path = under(data_root, spec.path)
        if not path.exists():
            if not spec.required:
                described.append({"name": name, "path": str(path), "status": NOT_CHECKED})
                continue
            raise BuildError(
                f"benchmark {name!r} for decontamination: {path} not found. Training data is checked against it "
                "so test items cannot leak into training; provide it, or set `decontaminate: []` in the mix to "
                "build without the check (recorded in the manifest)"
            )
        try:
            found = registry.get(spec.kind).questions(path, spec.columns)
            digest = benchmark_sha256(spec.kind, path)
        except BenchmarkError as exc:
            raise BuildError(f"benchmark {name!r}: {exc}") from None
        questions.update(normalise_question(q) for q in found)
        described.append({"name": name, "path": str(path), "sha256": digest, "items": len(found)})
    missing = [d["name"] for d in described if d.get("status") == NOT_CHECKED]
    if missing:
        logger.info(
            f"mix {mix.name}: not decontaminated against {', '.join(missing)} (not under the data root; recorded "
            "in the build manifest)"
        )
    questions.discard("")
    return questions, described


def benchmark_sha256(kind: str, path: Path) -> str:
    """The hash of a benchmark's file, or of the files a download folder stands for (name and hash of each)."""
    return benchmark.content_sha256(registry.get(kind), path, _input_sha256)


def _input_sha256(path: Path) -> str:
    """An input's sha256, hashed once per process while the file stays the same (size, mtime, inode): a
    curriculum's stages fingerprint their mixes before building them and again when each prepares, and all three
    share SpineMed-450k's ~700 MB."""
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(Path(path))


def absent_optional(mix: Mix, name: str, data_root: Path) -> Path | None:
    """The missing file of a source every component of ``mix`` reading it may do without (``optional``), or None
    (the file is there, or some component needs it: :func:`source_file` then says what is wrong)."""
    readers_of = [c for c in mix.components if c.source == name]
    path = under(data_root, mix.sources[name].path)
    if readers_of and all(c.optional for c in readers_of) and not path.is_file():
        return path
    return None


def input_fingerprint(loaded: LoadedMix, data_root: Path, seed: int, splits: Sequence[str] | None) -> dict[str, Any]:
    """Everything the output depends on: the resolved mix, seed, split restriction and each input's sha256 (an
    optional source that is absent is recorded as such, so the build is redone once it appears)."""
    mix = loaded.mix
    kept = set(splits) if splits else None
    used = sorted({c.source for c in mix.components if kept is None or mixes.component_splits(mix, c) & kept})
    inputs = []
    for name in used:
        missing = absent_optional(mix, name, data_root)
        if missing is not None:
            inputs.append({"source": name, "reader": mix.sources[name].reader, "path": str(missing), "absent": True})
            continue
        path = source_file(name, mix.sources[name], data_root)
        inputs.append(
            {"source": name, "reader": mix.sources[name].reader, "path": str(path), "sha256": _input_sha256(path)}
        )
    benches = []
    for name in mix.decontaminate:
        path = under(data_root, mix.benchmarks[name].path)
        try:
            digest = benchmark_sha256(mix.benchmarks[name].kind, path) if path.exists() else None
        except BenchmarkError:
            digest = None  # the build reports what is wrong with it
        benches.append({"name": name, "path": str(path), "sha256": digest})
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


@dataclass
class BuildJob:
    """One mix to build (:func:`build_many` builds several sharing one read of each source)."""

    loaded: LoadedMix
    output: Path
    seed: int
    splits: Sequence[str] | None = None
    fingerprint: dict[str, Any] | None = None


def build(
    loaded: LoadedMix,
    data_root: Path,
    output: Path,
    *,
    seed: int,
    splits: Sequence[str] | None = None,
    fingerprint: dict[str, Any] | None = None,
    workers: int | None = None,
    min_parallel_bytes: int = PARALLEL_MIN_BYTES,
) -> BuildResult:
    """Build ``loaded`` into ``output`` (written under a temporary name and renamed when complete). Output bytes do
    not depend on ``workers`` (default :func:`readers.data_workers`)."""
    job = BuildJob(loaded, output, seed, splits, fingerprint)
    return build_many([job], data_root, workers=workers, min_parallel_bytes=min_parallel_bytes)[0]


@dataclass
class _MixState:
    job: BuildJob
    fingerprint: dict[str, Any]
    states: list[_ComponentState]
    partial: Path
    started: float
    leaked: set[str] = field(default_factory=set)
    bench_info: list[dict[str, Any]] = field(default_factory=list)
    source_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def build_many(
    jobs: Sequence[BuildJob],
    data_root: Path,
    *,
    workers: int | None = None,
    min_parallel_bytes: int = PARALLEL_MIN_BYTES,
    lock: bool = False,
) -> list[BuildResult]:
    """Build several mixes, reading each source they share once (the three stage mixes all read SpineMed-450k).
    Each output is byte-identical to building its mix alone; a bad input fails them all, before any is written.
    ``lock``: hold each output folder's lock (a user's ``data build``: a second build into it is refused)."""
    workers = workers or readers.data_workers()
    data_root = data_root.resolve()
    started = time.monotonic()
    builds: list[_MixState] = []
    locks = [OutputLock(job.output.resolve()) for job in jobs] if lock else []
    try:
        for job in jobs:  # before any lock is taken beside it: a file or a read-only disk is a message
            if problem := folder_problem(job.output.resolve()):
                raise BuildError(f"--output-dir {job.output}: {problem}; nothing was written")
        for output_lock in locks:
            output_lock.acquire()
        for job in jobs:
            mix = job.loaded.mix
            allowed = set(job.splits) if job.splits else None
            output = job.output.resolve()
            sources = [under(data_root, spec.path).resolve() for spec in mix.sources.values()]
            check_output(output, data_root, sources)
            partial = output.with_name(f"{output.name}.partial-{os.getpid()}")  # concurrent builders never share
            shutil.rmtree(partial, ignore_errors=True)
            (partial / "components").mkdir(parents=True)
            state = _MixState(
                job,
                job.fingerprint or input_fingerprint(job.loaded, data_root, job.seed, job.splits),
                [_ComponentState(i, c, allowed, array("I"), Counter()) for i, c in enumerate(mix.components)],
                partial,
                started,
            )
            builds.append(state)
            state.leaked, state.bench_info = benchmark_questions(mix, data_root)
        return _build_all(builds, data_root, workers, min_parallel_bytes)
    except BaseException:
        for state in builds:
            shutil.rmtree(state.partial, ignore_errors=True)  # a failed build leaves nothing behind
        raise
    finally:
        for output_lock in locks:
            output_lock.release()


def _build_all(builds: list[_MixState], data_root: Path, workers: int, min_parallel_bytes: int) -> list[BuildResult]:
    # Which components read which source; mixes that spell a source the same way share its read.
    reads: dict[str, _SharedRead] = {}
    for m, build_state in enumerate(builds):
        mix = build_state.job.loaded.mix
        for state in build_state.states:
            if state.allowed_splits is not None and not mixes.component_splits(mix, state.component) & (
                state.allowed_splits
            ):
                state.selected = {}  # a split restriction leaves it nothing: not read, not sampled, reported as such
                state.counts["outside splits"] = 1
                continue
            name, spec = state.component.source, mix.sources[state.component.source]
            missing = absent_optional(mix, name, data_root)
            if missing is not None:
                state.selected = {}  # an optional source not written yet: nothing to read, reported as such
                state.counts["absent"] = 1
                state.absent = missing
                logger.info(
                    f"{mix.name}: optional source {name!r} is absent ({missing}); "
                    f"component {state.component.label!r} adds nothing"
                )
                continue
            key = f"{name}:{spec.model_dump_json()}"
            if key not in reads:
                reads[key] = _SharedRead(name, spec, source_file(name, spec, data_root), [])
            reads[key].states.append((m, state))

    # Read each source once (a big JSONL source in parallel parts): validate, filter, decontaminate, count;
    # spool the rows that qualify for any component.
    spool_dir = builds[0].partial / "spool"
    spool_dir.mkdir()
    label = "+".join(b.job.loaded.mix.name for b in builds)
    _read_all(
        list(reads.values()), data_root, [b.leaked for b in builds], spool_dir, label, workers, min_parallel_bytes
    )
    for read in reads.values():
        bad_reasons: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        for part in read.parts:  # in file order: the merged lists are what one reader would have produced
            bad_reasons.update(part.bad)
            skipped.update(part.skipped)
            for (_, state), counts, eligible in zip(read.states, part.counts, part.eligible, strict=True):
                state.counts.update(counts)
                state.eligible.extend(eligible)
        stats: dict[str, Any] = {"valid": sum(p.valid for p in read.parts), "bad": dict(sorted(bad_reasons.items()))}
        if skipped:
            stats["skipped"] = dict(sorted(skipped.items()))
        for m in dict.fromkeys(m for m, _ in read.states):
            build_state = builds[m]
            build_state.source_stats[read.name] = stats
            if build_state.job.loaded.mix.on_error == "error":
                for part in read.parts:
                    build_state.problems.extend(part.problems[: MAX_REPORTED - len(build_state.problems)])
                if bad_reasons:
                    build_state.problems.append(
                        f"source {read.name!r}: {sum(bad_reasons.values())} bad item(s) in all; "
                        "set `on_error: skip` to skip them"
                    )
    _raise_problems(builds, "bad input")

    # Draw each component's sample (item indices), seeded per component so adding one never reshuffles another.
    for build_state in builds:
        for state in build_state.states:
            if state.counts.get("outside splits") or state.counts.get("absent"):
                continue
            state.selected, issue = _draw(state, build_state.job.loaded.mix, build_state.job.seed)
            if issue:
                build_state.problems.append(issue)
    _raise_problems(builds, None)

    # Copy the drawn rows from the spool into each component's file (a source can serve several components).
    for read in reads.values():
        handles = {
            id(state): (builds[m].partial / "components" / f"{state.index:03d}.tsv").open("w", encoding="utf-8")
            for m, state in read.states
        }
        try:
            for entry in _lines([part.spool for part in read.parts]):
                index_text, rest = entry.split("\t", 1)
                index = int(index_text)
                for _, state in read.states:
                    assert state.selected is not None
                    times = state.selected.get(index)
                    if times:
                        handles[id(state)].write(f"{times}\t{rest}")
        finally:
            for handle in handles.values():
                handle.close()
    shutil.rmtree(spool_dir)
    return [_finish(build_state) for build_state in builds]


def _raise_problems(builds: list[_MixState], what: str | None) -> None:
    failed = [b for b in builds if b.problems]
    if failed:
        raise BuildError(
            "\n".join(
                f"data mix {b.job.loaded.mix.name!r}:{' ' + what if what else ''}\n"
                + "\n".join(f"  {p}" for p in b.problems)
                for b in failed
            )
        )


def _finish(build_state: _MixState) -> BuildResult:
    """Write one mix's shards and manifest, and move it into place."""
    job, partial, states, fingerprint = (
        build_state.job,
        build_state.partial,
        build_state.states,
        build_state.fingerprint,
    )
    mix, loaded = job.loaded.mix, job.loaded
    output_info = _write_shards(partial, states, mix)
    shutil.rmtree(partial / "components")
    manifest = {
        **{k: fingerprint[k] for k in ("format", "key", "seed", "splits", "data_root", "inputs")},
        "mix": mix.name,
        "files": [str(f) for f in loaded.files],
        "spec": fingerprint["mix"],
        "benchmarks": build_state.bench_info,
        "sources": {name: build_state.source_stats[name] for name in _sources_in_order(states, build_state)},
        "components": [_component_report(s) for s in states],
        "output": output_info,
        "build_seconds": round(time.monotonic() - build_state.started, 1),
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    output = job.output.resolve()
    own = own_files(output)
    if own is not None and _key_of(output) != manifest["key"]:
        # An earlier build with other inputs (check_output made sure it holds nothing else): its files alone go.
        for name in own:
            (output / name).unlink(missing_ok=True)
        output.rmdir()
    try:
        partial.rename(output)
    except OSError:
        if _key_of(output) != manifest["key"]:
            raise
        shutil.rmtree(partial)  # another process built the same thing first: its bytes are ours
        manifest = json.loads((output / MANIFEST).read_text(encoding="utf-8"))
    logger.info(f"{mix.name} built {output_info['rows']:,} rows in {manifest['build_seconds']}s -> {output}")
    return BuildResult(output, manifest)


def _sources_in_order(states: list[_ComponentState], build_state: _MixState) -> list[str]:
    """The mix's sources in the order its components first read them (the manifest's order, as one mix built alone)."""
    return [name for name in dict.fromkeys(s.component.source for s in states) if name in build_state.source_stats]


def _lines(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            yield from handle


def own_files(folder: Path) -> set[str] | None:
    """The names a build of this project wrote into ``folder`` (its manifest and its shards), or None where the
    folder holds no build (no manifest of ours): the only files a later build may remove there."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        shards = manifest["output"]["shards"]
        return {MANIFEST, *(str(shard["file"]) for shard in shards)}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_output(output: Path, data_root: Path, sources: Sequence[Path]) -> None:
    """Refuse an output folder a build may not write into: the data root, a folder holding it or a source file, a
    run folder, a file, or a folder holding anything but an earlier build (whose own files alone it replaces)."""
    where = f"--output-dir {output}"
    if output == data_root or data_root.is_relative_to(output):
        raise BuildError(f"{where}: is or holds the data root {data_root}; write builds elsewhere")
    inside = [src for src in sources if src.is_relative_to(output)]
    if inside:
        raise BuildError(f"{where}: holds the build's own source {inside[0]}; write builds elsewhere")
    if problem := folder_problem(output):
        raise BuildError(f"{where}: {problem}")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if (output / "run_manifest.json").exists():
        raise BuildError(f"{where}: holds a run (run_manifest.json); nothing was written or removed")
    own = own_files(output)
    if own is None:
        raise BuildError(
            f"{where}: is not empty and is not a build (no {MANIFEST} of spinegpt's): choose a new or empty folder; "
            "nothing was removed"
        )
    foreign = sorted(p.name for p in output.iterdir() if p.name not in own)
    if foreign:
        raise BuildError(
            f"{where}: holds an earlier build and files it did not write ({', '.join(foreign[:5])}): a build replaces "
            "only its own files; move them, or choose another folder"
        )


class OutputLock:
    """One build into an output folder at a time: an flock beside it, released by the kernel when the builder dies.
    Two builds into one folder would otherwise both report success and leave one of them."""

    def __init__(self, output: Path):
        self.lock = FolderLock(output.parent, f".{output.name}.lock")

    def acquire(self) -> None:
        try:
            self.lock.acquire({"host": platform.node(), "pid": os.getpid(), "since": time.strftime("%H:%M:%S")})
        except FolderBusy as exc:
            raise BuildError(f"{exc}: one build per output folder at a time") from None

    def release(self) -> None:
        self.lock.release()


def _verified(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """A cached build's manifest when its shards are byte for byte what the manifest records (rows and sha256 of
    each, and of all together), else why not: a cache is checked as a fresh build would be, never trusted because
    it exists. Hashing costs a read of the shards, seconds where rebuilding costs minutes."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        output = manifest["output"]
        total = hashlib.sha256()
        for shard in output["shards"]:
            digest, rows = hashlib.sha256(), 0
            with (folder / shard["file"]).open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
                    total.update(block)
                    rows += block.count(b"\n")
            if (rows, digest.hexdigest()) != (shard["rows"], shard["sha256"]):
                return None, f"has {shard['file']} changed since it was built ({rows} rows, other bytes)"
        if total.hexdigest() != output["sha256"] or sum(s["rows"] for s in output["shards"]) != output["rows"]:
            return None, "holds shards that do not add up to what its manifest records"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"cannot be read back ({type(exc).__name__}: {exc})"
    return manifest, ""


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
        if state.counts.get("outside splits") or state.counts.get("absent"):
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
    if counts.get("absent"):
        return {"name": c.label, "source": c.source, "excluded": f"optional source absent: {state.absent}"}
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
) -> BuildResult:
    """Reuse an earlier build whose inputs hash the same; otherwise build into the cache."""
    return build_cached_many([BuildJob(loaded, cache_root, seed, splits)], data_root, cache_root)[0]


def build_cached_many(jobs: Sequence[BuildJob], data_root: Path, cache_root: Path) -> list[BuildResult]:
    """:func:`build_cached` for several mixes: those the cache lacks are built together (:func:`build_many`), so
    sources they share are read once. ``job.output`` is ignored: each goes to the cache, named by its inputs."""
    data_root = data_root.resolve()
    found: dict[str, BuildResult] = {}
    missing: dict[str, BuildJob] = {}
    keys = []
    for job in jobs:
        fingerprint = input_fingerprint(job.loaded, data_root, job.seed, job.splits)
        key = fingerprint["key"]
        keys.append(key)
        target = cache_root / f"{job.loaded.mix.name}-{key[:16]}"
        if key in found or key in missing:
            continue
        if _key_of(target) == key:
            manifest, problem = _verified(target)
            if manifest is not None:
                logger.info(f"{job.loaded.mix.name} reusing {target} (same inputs, same seed)")
                found[key] = BuildResult(target, manifest)
                continue
            logger.warning(f"{job.loaded.mix.name}: the cached build {target} {problem}; discarded and rebuilt")
            # The cache's own folder, named by its inputs: moved aside first so no reader sees it half-deleted.
            aside = target.with_name(f"{target.name}.damaged-{os.getpid()}")
            with contextlib.suppress(OSError):
                target.rename(aside)
                shutil.rmtree(aside, ignore_errors=True)
        missing[key] = replace(job, output=target, fingerprint=fingerprint)
    if missing:
        built = build_many(list(missing.values()), data_root)
        found.update(zip(missing, built, strict=True))
    return [found[key] for key in keys]
