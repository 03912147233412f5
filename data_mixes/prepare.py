"""Turn a stage's ``data`` entries into the one JSONL file the engine trains on.

Every row is checked on the way (the engine's own errors name neither file nor line), image paths are made
absolute so the engine can run from any directory, and the result carries sha256 hashes of every input and of
the output for the run manifest. The output is a pure function of the inputs: preparing twice gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from spinegpt.data_mixes import audit, readers
from spinegpt.data_mixes.image_check import check_images

from spinegpt.errors import UserError
from spinegpt.files import first_of, sha256_file
from spinegpt.offline import smoke_images

ROLES = ("system", "user", "assistant", "tool")
IMAGE_TAG = "<image>"
MAX_REPORTED = 20


class DataError(UserError, ValueError):
    """Bad training data; the message names file and line of every problem found (up to a limit)."""


class Source(Protocol):
    """What preparation needs of a stage data entry (``spinegpt.train.curriculum.DataSource``)."""

    @property
    def kind(self) -> str: ...

    @property
    def ref(self) -> str: ...

    @property
    def splits(self) -> Sequence[str] | None: ...

    @property
    def set(self) -> Mapping[str, Any]: ...

    def label(self) -> str: ...


@dataclass(frozen=True)
class InputRecord:
    source: str
    file: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class PreparedData:
    path: Path
    sha256: str
    rows: int
    image_rows: int
    inputs: list[InputRecord] = field(default_factory=list)
    mixes: list[dict[str, Any]] = field(default_factory=list)
    """For each mix the stage used: its build folder, input key and output hash (provenance in its manifest)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "rows": self.rows,
            "image_rows": self.image_rows,
            "inputs": [vars(i) for i in self.inputs],
            "mixes": self.mixes,
        }


def smoke_file(name: str) -> Path:
    path = Path(str(importlib.resources.files("spinegpt.data_mixes") / "smoke" / f"{name}.jsonl"))
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.jsonl"))
        raise DataError(f"no bundled smoke set {name!r}; available: {', '.join(known)}")
    return path


def check_row(
    row: Any,
    image_root: Path,
    check_files: bool = True,
    known: dict[tuple[str, str], tuple[bool, str]] | None = None,
) -> tuple[list[str], list[str]]:
    """Problems with one engine row, and its image paths made absolute (``check_files=False``: paths already
    absolute and checked by the reader that made the row; ``known``: image files already looked at)."""
    if not isinstance(row, dict):
        return ["row is not a JSON object"], []
    problems: list[str] = []
    unknown = set(row) - {"messages", "images"}
    if unknown:
        problems.append(f"unknown field(s) {sorted(unknown)} (expected messages, images)")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "'messages' must be a non-empty list"], []
    tags = 0
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            problems.append(f"messages[{i}] must be an object with a string 'content'")
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append(f"messages[{i}].role {role!r} is not one of {', '.join(ROLES)}")
            continue
        if role == "assistant" and not message["content"].strip():
            problems.append(f"messages[{i}] is an empty assistant turn")
        tags += message["content"].count(IMAGE_TAG)
        if role != "system":
            turns.append(role)
    if turns and turns[-1] != "assistant":
        problems.append("the last turn must be the assistant's (nothing to learn otherwise)")
    for i in range(1, len(turns)):
        if turns[i] == turns[i - 1] and turns[i] in ("user", "assistant"):
            problems.append(f"two {turns[i]} turns in a row: the conversation must alternate")
            break
    images = row.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        return [*problems, "'images' must be a list of paths"], []
    if tags != len(images):
        problems.append(f"{tags} {IMAGE_TAG} tag(s) but {len(images)} image(s)")
    if not check_files:
        return problems, images
    resolved = []
    for image in images:
        found, absolute = _image_file(image, str(image_root), known if known is not None else {})
        if not found:
            problems.append(f"image not found: {absolute}")
        resolved.append(absolute)
    return problems, resolved


def _image_file(image: str, image_root: str, known: dict[tuple[str, str], tuple[bool, str]]) -> tuple[bool, str]:
    """Whether an image exists and its resolved path, asked once per distinct path: the same images recur across
    a paper-scale stage, and resolving symlinks stats every folder on the way (half of a warm audit's time)."""
    key = (image, image_root)
    if key not in known:
        path = Path(image) if os.path.isabs(image) else Path(image_root) / image
        found = path.is_file()
        known[key] = (found, str(path.resolve()) if found else str(path))  # an error names the path as given
    return known[key]


MAX_ROW_BYTES = 16 << 20
"""A row longer than this cannot fit any max_length (even at 16 bytes a token it is a million tokens); it is an
error before it is parsed or tokenized, which would cost gigabytes for one row."""


def _lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(line number, raw line) of a file, a line over MAX_ROW_BYTES as None, read in bounded pieces."""
    with path.open("rb") as handle:
        number = 0
        while True:
            line = handle.readline(MAX_ROW_BYTES + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_ROW_BYTES and not line.endswith(b"\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the oversized line without holding it
                yield number, None
                continue
            yield number, line


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None, str]]:
    for number, raw in _lines(path):
        if raw is None:
            yield number, None, f"row longer than {MAX_ROW_BYTES >> 20} MB: no sample that long fits a max_length", ""
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, f"not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})", ""
            continue
        if not line.strip():
            continue
        try:
            yield number, readers.loads(line), None, line
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON: {exc.msg} (column {exc.colno})", line


def _rows(
    path: Path, image_root: Path, errors: list[str], image_uses: dict[str, str], canonical: bool = False
) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(row, its ``file:line``, its output line) for each good row. ``canonical``: the file's lines are already
    this function's output format (a built mix's shards are written so), and a line whose image paths need no
    change is passed through rather than serialised again (a third of preparing a paper-scale stage)."""
    known: dict[tuple[str, str], tuple[bool, str]] = {}
    for number, row, parse_error, line in _read_jsonl(path):
        problems = [parse_error] if parse_error else []
        images: list[str] = []
        if not problems:
            problems, images = check_row(row, image_root, known=known)
        if problems:
            errors.extend(f"{path}:{number}: {p}" for p in problems)
            continue
        for image in images:
            image_uses.setdefault(image, f"{path}:{number}")
        out = {"messages": row["messages"]}
        if images:
            out["images"] = images
        same = canonical and row.get("images", None) == (images or None) and line.endswith("\n")
        yield out, f"{path}:{number}", line if same else json.dumps(out, ensure_ascii=False, sort_keys=True) + "\n"


def _materialise_smoke(name: str, images_dir: Path) -> Path:
    """Draw the images a bundled smoke set references; return the set's JSONL."""
    path = smoke_file(name)
    for _, row, _error, _line in _read_jsonl(path):
        for image in (row or {}).get("images", []):
            if smoke_images.is_synthetic(image):
                smoke_images.write_image(image, images_dir)
    return path


def resolve_data_root(value: str | None, base_dir: Path) -> Path:
    """The folder data mixes read the upstream datasets from (``builtin:smoke``: the offline smoke root)."""
    value = value or os.environ.get("SPINEGPT_DATA_ROOT")
    if not value:
        raise DataError(
            "data mixes read your copies of the upstream datasets: set `data_root` in the curriculum "
            "(or SPINEGPT_DATA_ROOT) to the folder laid out as data_mixes/sources.yaml describes"
        )
    if value == "builtin:smoke":
        from spinegpt.data_mixes import smoke_root

        return smoke_root.write(smoke_root.default_root())
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (base_dir / path).resolve()


def mix_cache() -> Path:
    from spinegpt.paths import cache_root

    return cache_root() / "mixes"


def build_mix(source: Source, base_dir: Path, data_root: str | None, seed: int) -> Any:
    """Build (or reuse, by the hash of its inputs) the mix a stage names."""
    from spinegpt.data_mixes import build, mixes

    try:
        loaded = mixes.load(source.ref, source.set, search=[base_dir])
        root = resolve_data_root(data_root, base_dir)
        return build.build_cached(
            loaded, root, mix_cache(), seed=seed if loaded.mix.seed is None else loaded.mix.seed, splits=source.splits
        )
    except (mixes.MixError, build.BuildError, FileNotFoundError) as exc:
        raise DataError(str(exc)) from None


def build_mixes(sources: Sequence[Source], base_dir: Path, data_root: str | None, seed: int) -> None:
    """Build, together, every mix among ``sources`` that the cache lacks (a curriculum's stages, before the
    first): the stage mixes share SpineMed-450k, which is then parsed once rather than once per stage. Each stage's
    :func:`prepare` then finds its mix in the cache."""
    from spinegpt.data_mixes import build, mixes

    named = [s for s in sources if s.kind == "mix"]
    if len(named) < 2:
        return  # nothing shared: the stage builds its own when it prepares
    try:
        root = resolve_data_root(data_root, base_dir)
        jobs = []
        for source in named:
            loaded = mixes.load(source.ref, source.set, search=[base_dir])
            seed_ = seed if loaded.mix.seed is None else loaded.mix.seed
            jobs.append(build.BuildJob(loaded, mix_cache(), seed_, source.splits))
        build.build_cached_many(jobs, root, mix_cache())
    except (mixes.MixError, build.BuildError, FileNotFoundError) as exc:
        raise DataError(str(exc)) from None


def resolve_input(source: Source, base_dir: Path, images_dir: Path) -> tuple[Path, Path]:
    """The JSONL file behind a ``jsonl`` or ``smoke`` entry and the folder its relative image paths start from."""
    if source.kind == "jsonl":
        path = (base_dir / source.ref).resolve()
        return path, path.parent
    if source.kind == "smoke":
        return _materialise_smoke(source.ref, images_dir), images_dir.parent
    raise DataError(f"unknown data source kind {source.kind!r}")


def prepare(
    sources: Sequence[Source], base_dir: Path, out_dir: Path, *, data_root: str | None = None, seed: int = 42
) -> PreparedData:
    """Check and concatenate the stage's sources into ``out_dir/train.jsonl`` (written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images_dir = out_dir / "images"
    target = out_dir / "train.jsonl"
    tmp = target.with_suffix(".jsonl.tmp")
    origins_tmp = audit.origins_of(target).with_suffix(".tmp")
    errors: list[str] = []
    image_uses: dict[str, str] = {}
    inputs: list[InputRecord] = []
    mixes: list[dict[str, Any]] = []
    rows = image_rows = 0
    try:
        with tmp.open("w", encoding="utf-8") as out, origins_tmp.open("w", encoding="utf-8") as origins:
            for source in sources:
                if source.kind == "mix":
                    built = build_mix(source, base_dir, data_root, seed)
                    files = [
                        (shard, shard.parent, s["sha256"])
                        for shard, s in zip(built.shards, built.manifest["output"]["shards"], strict=True)
                    ]
                    mixes.append(
                        {
                            "source": source.label(),
                            "dir": str(built.dir),
                            "key": built.manifest["key"],
                            "rows": built.rows,
                            "sha256": built.sha256,
                            "splits": source.splits,
                        }
                    )
                else:
                    path, image_root = resolve_input(source, base_dir, images_dir)
                    files = [(path, image_root, None)]
                for path, image_root, digest in files:
                    count = 0
                    for row, origin, line in _rows(path, image_root, errors, image_uses, source.kind == "mix"):
                        out.write(line)
                        origins.write(origin + "\n")
                        count += 1
                        image_rows += bool(row.get("images"))
                    inputs.append(InputRecord(source.label(), str(path), digest or sha256_file(path), count))
                    rows += count
        errors += check_images(image_uses)
        if errors:
            raise DataError(f"{len(errors)} problem(s) in the stage data:\n{first_of(errors, MAX_REPORTED)}")
        if rows == 0:
            raise DataError(f"the stage data is empty: {', '.join(s.label() for s in sources)}")
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failure anywhere leaves no half-written file behind
        origins_tmp.unlink(missing_ok=True)
        raise
    origins_tmp.replace(audit.origins_of(target))
    tmp.replace(target)
    return PreparedData(target, sha256_file(target), rows, image_rows, inputs, mixes)


def describe(sources: Iterable[Source], base_dir: Path) -> list[dict[str, Any]]:
    """What ``spinegpt plan`` shows for the data, without reading or writing anything."""
    described = []
    for source in sources:
        entry: dict[str, Any] = {"source": source.label()}
        if source.kind == "jsonl":
            entry["path"] = str((base_dir / source.ref).resolve())
        elif source.kind == "smoke":
            entry["path"] = str(smoke_file(source.ref))
        else:
            from spinegpt.data_mixes import mixes

            try:
                loaded = mixes.load(source.ref, source.set, search=[base_dir])
                entry["path"] = str(loaded.files[0])
                entry["splits"] = mixes.splits_of(loaded, source.splits)
            except (FileNotFoundError, mixes.MixError) as exc:
                entry["path"] = f"invalid: {exc}"
            if source.set:
                entry["set"] = dict(source.set)
        described.append(entry)
    return described


# -- lengths ----------------------------------------------------------------------------------------------------


def enforce_lengths(path: Path, counter: audit.Counter, max_length: int, policy: str) -> dict[str, Any]:
    """Apply a stage's over-length policy to its prepared rows (``drop`` rewrites the file atomically)."""
    over: list[str] = []
    lengths: list[int] = []
    image_rows = 0
    tmp = path.with_suffix(".lengths.tmp")
    origins = audit.origins_of(path)
    origins_tmp = origins.with_name(origins.name + ".tmp")
    # Each row's source file:line, where preparation recorded it (a file prepared elsewhere: its own lines).
    sources = audit.origin_lines(origins)
    with tmp.open("w", encoding="utf-8") as kept, origins_tmp.open("w", encoding="utf-8") as kept_origins:
        for number, tokens, row in audit.count_file(path, counter):
            origin = next(sources, None) or f"{path}:{number}"
            if tokens > max_length:
                over.append(f"{origin}: {tokens} tokens")
                if policy == "drop":
                    continue
            lengths.append(tokens)
            image_rows += bool(row.get("images"))
            kept.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            kept_origins.write(origin + "\n")
    if over and policy == "drop":
        origins_tmp.replace(origins)
    else:
        origins_tmp.unlink()
    if over and policy == "error":
        tmp.unlink()
        raise DataError(
            f"{len(over)} record(s) exceed max_length {max_length} (over_length: error; use drop or truncate, or "
            f"raise max_length / lower MAX_PIXELS):\n{first_of(over)}"
        )
    if over and policy == "drop":
        tmp.replace(path)
    else:
        tmp.unlink()
    return {
        "policy": policy,
        "max_length": max_length,
        "over_max_length": len(over),
        "dropped": len(over) if policy == "drop" else 0,
        "truncated": len(over) if policy == "truncate" else 0,
        "rows": len(lengths),
        "image_rows": image_rows,
        "tokens": sum(lengths),
        "percentiles": audit.percentiles(lengths),
        "min_pixels": counter.min_pixels,
        "max_pixels": counter.max_pixels,
    }


def apply_length_policy(
    prepared: PreparedData, counter: audit.Counter, max_length: int, policy: str
) -> tuple[PreparedData, dict[str, Any]]:
    """Exact token counts of the prepared rows against ``max_length``, and the stage's ``over_length`` policy applied
    (``drop`` rewrites the file and its hash; ``error`` names every record; ``truncate`` leaves it to the engine)."""
    lengths = enforce_lengths(prepared.path, counter, max_length, policy)
    if lengths["dropped"]:
        prepared = dataclasses.replace(
            prepared, rows=lengths["rows"], image_rows=lengths["image_rows"], sha256=sha256_file(prepared.path)
        )
    return prepared, lengths
