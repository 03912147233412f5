"""A curriculum's data, owned in one place: from a stage's ``data`` entries to the counted file the engine reads.

    data = CurriculumData(base_dir, data_root, seed)
    data.build(every stage's entries)                         # the stage mixes built together (shared sources once)
    prepared, lengths = data.prepare_stage(entries, out_dir, counter, max_length, over_length)

The planner asks it what a stage's entries are (:meth:`describe`, :meth:`splits`), preflight which upstream files
they need (:meth:`source_files`), the runner and the audit build and prepare through it. One object serves one
command, so each mix definition is read once however many of them ask; built mixes are reused across commands by
the hash of their inputs (``$SPINEGPT_CACHE/mixes``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from spinegpt.data_mixes import build, lengths, mixes, smoke_root
from spinegpt.data_mixes.audit import TokenCounter
from spinegpt.data_mixes.prepare import Input, InputFile, PreparedData, prepare
from spinegpt.data_mixes.rows import DataError
from spinegpt.paths import cache_root


class Source(Protocol):
    """One entry of a stage's ``data`` (``spinegpt.train.curriculum.DataSource``): a mix, a JSONL file or a smoke
    set."""

    @property
    def kind(self) -> str: ...

    @property
    def ref(self) -> str: ...

    @property
    def splits(self) -> Sequence[str] | None: ...

    @property
    def set(self) -> Mapping[str, Any]: ...

    def label(self) -> str: ...


def resolve_data_root(value: str | None, base_dir: Path) -> Path:
    """The folder data mixes read the upstream datasets from (``builtin:smoke``: the offline smoke root)."""
    value = value or os.environ.get("SPINEGPT_DATA_ROOT")
    if not value:
        raise DataError(
            "data mixes read your copies of the upstream datasets: set `data_root` in the curriculum "
            "(or SPINEGPT_DATA_ROOT) to the folder laid out as data_mixes/sources.yaml describes"
        )
    if value == "builtin:smoke":
        return smoke_root.write(smoke_root.default_root())
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (base_dir / path).resolve()


def mix_cache() -> Path:
    """Where built mixes are kept, each in a folder named by the hash of its inputs."""
    return cache_root() / "mixes"


class CurriculumData:
    """The data of one curriculum's stages, for one command."""

    def __init__(self, base_dir: Path, data_root: str | None, seed: int):
        self.base_dir = base_dir
        """Where relative paths of the curriculum start (its file's folder)."""
        self.data_root = data_root
        self.seed = seed
        self._loaded: dict[str, mixes.LoadedMix | Exception] = {}
        self._built: dict[str, build.BuildResult] = {}
        self._root: Path | None = None

    # -- reading the definitions (no data is read) ---------------------------------------------------------------

    def mix(self, source: Source) -> mixes.LoadedMix:
        """The mix an entry names, with the entry's ``set`` applied; read once per command."""
        key = f"{source.ref}|{sorted(source.set.items())!r}"
        if key not in self._loaded:
            try:
                self._loaded[key] = mixes.load(source.ref, source.set, search=[self.base_dir])
            except (mixes.MixError, FileNotFoundError) as exc:
                self._loaded[key] = exc
        found = self._loaded[key]
        if isinstance(found, Exception):
            raise DataError(str(found))
        return found

    def splits(self, source: Source, restriction: Sequence[str] | None = None) -> list[str]:
        """The splits a mix entry trains on (its own ``splits``, then ``restriction``), from the definition."""
        return mixes.splits_of(self.mix(source), restriction)

    def describe(self, sources: Sequence[Source]) -> list[dict[str, Any]]:
        """What ``spinegpt plan`` shows of a stage's data, without reading or writing anything."""
        described = []
        for source in sources:
            entry: dict[str, Any] = {"source": source.label()}
            if source.kind == "jsonl":
                entry["path"] = str((self.base_dir / source.ref).resolve())
            elif source.kind == "smoke":
                entry["path"] = str(smoke_root.smoke_file(source.ref))
            else:
                try:
                    loaded = self.mix(source)
                    entry["path"] = str(loaded.files[0])
                    entry["splits"] = mixes.splits_of(loaded, source.splits)
                except DataError as exc:
                    entry["path"] = f"invalid: {exc}"
                if source.set:
                    entry["set"] = dict(source.set)
            described.append(entry)
        return described

    def root(self) -> Path:
        """The data root, resolved once (``builtin:smoke`` is written on first use)."""
        if self._root is None:
            self._root = resolve_data_root(self.data_root, self.base_dir)
        return self._root

    def source_files(self, sources: Sequence[Source]) -> list[tuple[str, Path]]:
        """(source name, upstream file) of every source the mixes among ``sources`` read, for the splits they
        train on: what must be on disk before a run starts."""
        needed: list[tuple[str, Path]] = []
        for source in sources:
            if source.kind != "mix":
                continue
            loaded = self.mix(source)
            wanted = set(mixes.splits_of(loaded, source.splits))
            for component in loaded.mix.components:
                if component.optional:
                    continue  # may be absent: the build reports it, nothing has to be on disk for it
                if mixes.component_splits(loaded.mix, component) & wanted:
                    spec = loaded.mix.sources[component.source]
                    needed.append((component.source, build.under(self.root(), spec.path)))
        return needed

    # -- building and preparing -----------------------------------------------------------------------------------

    def _job(self, source: Source) -> build.BuildJob:
        loaded = self.mix(source)
        seed = self.seed if loaded.mix.seed is None else loaded.mix.seed
        return build.BuildJob(loaded, mix_cache(), seed, source.splits)

    @staticmethod
    def _key(source: Source) -> str:
        return f"{source.ref}|{sorted(source.set.items())!r}|{source.splits!r}"

    def build(self, sources: Sequence[Source]) -> list[build.BuildResult]:
        """Build, together, every mix among ``sources`` that the cache lacks (a curriculum's stages, before the
        first): the stage mixes share SpineMed-450k, which is then parsed once rather than once per stage. Each
        result is remembered for this command, so preparing a stage afterwards looks nothing up again."""
        wanted = [s for s in sources if s.kind == "mix" and self._key(s) not in self._built]
        if wanted:
            try:
                built = build.build_cached_many([self._job(s) for s in wanted], self.root(), mix_cache())
            except (build.BuildError, FileNotFoundError) as exc:
                raise DataError(str(exc)) from None
            self._built.update(zip((self._key(s) for s in wanted), built, strict=True))
        return [self._built[self._key(s)] for s in sources if s.kind == "mix"]

    def _input(self, source: Source, images_dir: Path) -> Input:
        if source.kind == "jsonl":
            path = (self.base_dir / source.ref).resolve()
            return Input(source.label(), [InputFile(path, path.parent)])
        if source.kind == "smoke":
            path = smoke_root.materialise_set(source.ref, images_dir)
            return Input(source.label(), [InputFile(path, images_dir.parent)])
        if source.kind != "mix":
            raise DataError(f"unknown data source kind {source.kind!r}")
        (built,) = self.build([source])  # found in the cache when the curriculum's mixes were built together
        shards = [
            InputFile(shard, shard.parent, s["sha256"])
            for shard, s in zip(built.shards, built.manifest["output"]["shards"], strict=True)
        ]
        mix = {
            "source": source.label(),
            "dir": str(built.dir),
            "key": built.manifest["key"],
            "rows": built.rows,
            "sha256": built.sha256,
            "splits": source.splits,
        }
        return Input(source.label(), shards, canonical=True, mix=mix)

    def prepare(self, sources: Sequence[Source], out_dir: Path) -> PreparedData:
        """The stage's entries checked and concatenated into ``out_dir/train.jsonl`` (mixes built as needed)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        return prepare([self._input(source, out_dir / "images") for source in sources], out_dir)

    def prepare_stage(
        self,
        sources: Sequence[Source],
        out_dir: Path,
        counter: TokenCounter,
        max_length: int,
        over_length: lengths.Policy,
    ) -> tuple[PreparedData, dict[str, Any]]:
        """A stage's data as the engine will read it: prepared, every row counted exactly, and the stage's
        over-length policy applied; returns the prepared file and the length audit."""
        return lengths.apply_length_policy(self.prepare(sources, out_dir), counter, max_length, over_length)


def prepare_sources(
    sources: Sequence[Source], base_dir: Path, out_dir: Path, *, data_root: str | None = None, seed: int = 42
) -> PreparedData:
    """One stage's entries prepared on their own, outside a curriculum (a benchmark of the overhead, a test)."""
    return CurriculumData(base_dir, data_root, seed).prepare(sources, out_dir)
