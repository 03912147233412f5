"""Check and concatenate a stage's inputs into the one JSONL file the engine trains on.

Every row is checked on the way (the engine's own errors name neither file nor line), image paths are made
absolute so the engine can run from any directory, and the result carries sha256 hashes of every input and of
the output for the run manifest. The output is a pure function of the inputs: preparing twice gives the same bytes.
Which files a stage's ``data`` entries stand for (a built mix's shards, a JSONL file, a smoke set) is decided by
:mod:`stage_data`, the one owner of a stage's data; this module only reads files and writes the result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinegpt.data_mixes import audit
from spinegpt.data_mixes.image_check import check_images
from spinegpt.data_mixes.rows import DataError, check_row, dumps, read_jsonl
from spinegpt.files import first_of, sha256_file

MAX_REPORTED = 20


@dataclass(frozen=True)
class InputFile:
    path: Path
    image_root: Path
    """The folder the file's relative image paths start from."""
    sha256: str | None = None
    """Its hash where already known (a built mix's manifest records each shard's)."""


@dataclass(frozen=True)
class Input:
    """One ``data`` entry of a stage, resolved to the files it stands for."""

    label: str
    files: list[InputFile]
    canonical: bool = False
    """The files' lines are already in this module's output format (a built mix's shards are written so)."""
    mix: dict[str, Any] | None = None
    """A built mix's provenance: its build folder, input key, rows, output hash and splits."""


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


def _rows(
    path: Path, image_root: Path, errors: list[str], image_uses: dict[str, str], canonical: bool = False
) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(row, its ``file:line``, its output line) for each good row. ``canonical``: the file's lines are already
    this function's output format (a built mix's shards are written so), and a line whose image paths need no
    change is passed through rather than serialised again (a third of preparing a paper-scale stage)."""
    known: dict[tuple[str, str], tuple[bool, str]] = {}
    for number, row, parse_error, line in read_jsonl(path):
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
        yield out, f"{path}:{number}", line if same else dumps(out)


def prepare(inputs: Sequence[Input], out_dir: Path) -> PreparedData:
    """Check and concatenate ``inputs`` into ``out_dir/train.jsonl`` (written atomically), each row's source
    ``file:line`` beside it (errors about the prepared rows name the source)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "train.jsonl"
    tmp = target.with_suffix(".jsonl.tmp")
    origins_tmp = audit.origins_of(target).with_suffix(".tmp")
    errors: list[str] = []
    image_uses: dict[str, str] = {}
    records: list[InputRecord] = []
    rows = image_rows = 0
    try:
        with tmp.open("w", encoding="utf-8") as out, origins_tmp.open("w", encoding="utf-8") as origins:
            for entry in inputs:
                for file in entry.files:
                    count = 0
                    for row, origin, line in _rows(file.path, file.image_root, errors, image_uses, entry.canonical):
                        out.write(line)
                        origins.write(origin + "\n")
                        count += 1
                        image_rows += bool(row.get("images"))
                    records.append(
                        InputRecord(entry.label, str(file.path), file.sha256 or sha256_file(file.path), count)
                    )
                    rows += count
        errors += check_images(image_uses)
        if errors:
            raise DataError(f"{len(errors)} problem(s) in the stage data:\n{first_of(errors, MAX_REPORTED)}")
        if rows == 0:
            raise DataError(f"the stage data is empty: {', '.join(entry.label for entry in inputs)}")
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failure anywhere leaves no half-written file behind
        origins_tmp.unlink(missing_ok=True)
        raise
    origins_tmp.replace(audit.origins_of(target))
    tmp.replace(target)
    mixes = [entry.mix for entry in inputs if entry.mix is not None]
    return PreparedData(target, sha256_file(target), rows, image_rows, records, mixes)
