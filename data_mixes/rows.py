"""The engine row: what one line of a stage's training file is, how it is checked, and how such files are read.

An engine row is ms-swift's dataset format: ``{"messages": [{"role", "content"}, ...], "images": [paths]}``, with
one ``<image>`` tag in the text per image. Every module that writes or reads rows (the readers, the mix builder,
stage preparation, the token audit) takes the row's rules from here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from spinegpt.errors import UserError

ROLES = ("system", "user", "assistant", "tool")
IMAGE_TAG = "<image>"
"""Where an image goes in a message's text (ms-swift's placeholder; one per entry of ``images``)."""
MAX_ROW_BYTES = 16 << 20
"""A row longer than this cannot fit any max_length (even at 16 bytes a token it is a million tokens); it is an
error before it is parsed or tokenized, which would cost gigabytes for one row."""


class DataError(UserError, ValueError):
    """Bad training data; the message names file and line of every problem found (up to a limit)."""


def loads(raw: bytes | str) -> Any:
    """One JSON document: orjson (~3x the standard parser, which was a fifth of reading SpineMed-450k), and the
    standard parser wherever orjson refuses, so what parses, the values and the error messages stay its own (NaN,
    integers past 64 bits, invalid UTF-8 and syntax errors all take that path)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


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


def read_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None, str]]:
    """``(line number, row, problem, line text)`` for every non-blank line of an engine JSONL file; a line that is
    too long, not UTF-8 or not JSON comes with its problem and no row (the caller names the file and line)."""
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
            yield number, loads(line), None, line
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON: {exc.msg} (column {exc.colno})", line


def dumps(row: dict[str, Any]) -> str:
    """One engine row as the line every prepared file holds (sorted keys, UTF-8 kept: the same row, the same
    bytes, so prepared files hash the same wherever they are written)."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"
