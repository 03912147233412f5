"""Native readers for the upstream datasets, streaming: one record in memory at a time, whatever the file size.

Files are JSON arrays (read incrementally), JSONL or parquet. Each reader checks the fields it relies on and yields
:class:`~spinegpt.data_mixes.records.Bad` (file:line + reason) for an item it cannot use -- upstream field names
are validated loudly rather than trusted. The SpineMed-450k reader lives in :mod:`spinegpt.data_mixes.spinemed`.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt.data_mixes.records import Bad, Record, Split, detect_language, render_reasoning
from spinegpt.data_mixes.rows import IMAGE_TAG, loads
from spinegpt.errors import UserError

_CHUNK = 1 << 20
_MAX_ITEM = 64 << 20  # an item larger than this is a broken file, not an item: stop instead of buffering it all


class SourceError(UserError, ValueError):
    """A source file that cannot be read at all (missing, unreadable, not JSON / JSONL / parquet)."""


@dataclass(frozen=True)
class ReadOptions:
    image_root: Path | None = None
    """Folder that relative image paths start from (default: the input file's folder)."""
    data_root: Path | None = None
    """Root of the user's downloads of public datasets (SpineMed metadata pointers resolve under it)."""
    language: str | None = None
    """Force a language tag (``en``/``zh``); unset detects it per record."""
    reasoning_style: str = "thinking_sections"
    """How a chain of thought is rendered into the answer: ``thinking_sections`` (``## Thinking`` /
    ``## Final Response``, the medical-o1 authors' layout), ``think_tags`` or ``answer_only``."""
    volume_slices: int = 25
    """Slices sampled evenly through a 3-D volume pointer (the paper: 25)."""
    dataset: str | None = None
    """The hub id recorded as the items' provenance (the source's ``hub``); unset: the reader's own dataset."""
    conversations: str | None = None
    """PubMedVision: the field holding the conversation (the Chinese file has Alignment_VQA_conversations and
    Instruction-Tuning_VQA_conversations instead of conversations)."""
    check_images: bool = True
    """Fail an item whose image file is missing (off only for counting passes that never emit the item)."""
    byte_range: tuple[int, int] | None = None
    """JSONL only: read just the lines that start in ``[start, end)`` (a build reads a big file in parallel
    parts; :func:`byte_ranges` cuts them at line boundaries)."""


# -- files --------------------------------------------------------------------------------------------------------


def iter_items(path: Path, byte_range: tuple[int, int] | None = None) -> Iterator[tuple[int, str, Any]]:
    """``(index, where, item)`` for every item of a JSON array, JSONL or parquet file; a syntax error yields a
    :class:`Bad` in place of the item (a JSON array cannot be resynchronised after one, so it ends there).

    ``index`` orders the items: their position in a JSON array or parquet file, their 0-based line in a JSONL
    file (so a part of a JSONL file read on its own gets the same indices as the whole file read at once)."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    if _is_jsonl(path):
        yield from _jsonl(path, byte_range)
        return
    if byte_range is not None:
        raise SourceError(f"{path}: only JSONL files can be read in parts")
    items = _parquet(path) if path.suffix == ".parquet" else _json_array(path)
    for index, (where, item) in enumerate(items):
        yield index, where, item


def _is_jsonl(path: Path) -> bool:
    if path.suffix == ".parquet":
        return False
    with path.open("rb") as probe:
        head = probe.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    return not head.startswith(b"[")


def data_workers() -> int:
    """Processes reading or counting one big file: ``$SPINEGPT_DATA_WORKERS``, else the CPUs (at most 8)."""
    configured = os.environ.get("SPINEGPT_DATA_WORKERS")
    return max(1, int(configured)) if configured else max(1, min(8, os.cpu_count() or 1))


def byte_ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """``parts`` byte ranges covering a JSONL file, each starting at the beginning of a line."""
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as handle:
        for k in range(1, parts):
            handle.seek(max(cuts[-1], size * k // parts))
            handle.readline()  # to the start of the next line
            cuts.append(min(handle.tell(), size))
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _jsonl(path: Path, byte_range: tuple[int, int] | None = None) -> Iterator[tuple[int, str, Any]]:
    start, end = byte_range or (0, None)
    with path.open("rb") as handle:
        number = 0
        while handle.tell() < start:  # line numbers stay the file's own when reading a later part
            chunk = handle.read(min(1 << 24, start - handle.tell()))
            number += chunk.count(b"\n")
        position = start
        for raw in handle:
            if end is not None and position >= end:
                return
            position += len(raw)
            number += 1
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield number - 1, where, loads(raw)
            except json.JSONDecodeError as exc:
                yield number - 1, where, Bad(where, "invalid JSON", f"{exc.msg} (column {exc.colno})")
            except UnicodeDecodeError as exc:
                yield number - 1, where, Bad(where, "invalid JSON", f"not UTF-8 ({exc.reason})")


def _json_array(path: Path) -> Iterator[tuple[str, Any]]:
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8-sig") as handle:
        buffer = handle.read(_CHUNK)
        line = 1
        pos = buffer.index("[") + 1
        line += buffer.count("\n", 0, pos)
        eof = False
        expect_item = True
        while True:
            # Skip whitespace and one separator; refill when the buffer runs dry.
            while True:
                while pos < len(buffer) and buffer[pos] in " \t\r\n":
                    line += buffer[pos] == "\n"
                    pos += 1
                if pos < len(buffer) or eof:
                    break
                buffer, pos = handle.read(_CHUNK), 0
                eof = not buffer
            if pos >= len(buffer):
                yield f"{path}:{line}", Bad(f"{path}:{line}", "invalid JSON", "the array is not closed")
                return
            char = buffer[pos]
            if char == "]":
                return
            if char == "," and not expect_item:
                pos += 1
                expect_item = True
                continue
            if not expect_item:
                yield f"{path}:{line}", Bad(f"{path}:{line}", "invalid JSON", f"expected ',' or ']', found {char!r}")
                return
            while True:
                try:
                    item, end = decoder.raw_decode(buffer, pos)
                    break
                except json.JSONDecodeError as exc:
                    if eof or len(buffer) - pos > _MAX_ITEM:
                        where = f"{path}:{line + buffer.count(chr(10), pos, exc.pos)}"
                        yield where, Bad(where, "invalid JSON", exc.msg)
                        return
                    more = handle.read(_CHUNK)
                    eof = not more
                    buffer, pos = buffer[pos:] + more, 0
            yield f"{path}:{line}", item
            line += buffer.count("\n", pos, end)
            pos = end
            expect_item = False
            if pos > _CHUNK:  # drop what was consumed so the buffer stays about one chunk
                buffer, pos = buffer[pos:], 0


def _parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq  # datasets' dependency; imported here so JSON users never pay for it

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for item in batch.to_pylist():
            yield f"{path}[row {row}]", item
            row += 1


# -- field checks ---------------------------------------------------------------------------------------------------


class FileCheck:
    """Absolute image paths and whether each exists, asked once per distinct path: the same files recur across
    hundreds of thousands of items, and a stat per mention dominated the read."""

    def __init__(self, root: Path, check: bool):
        self.root, self.check = str(root), check
        self._exists: dict[str, bool] = {}

    def path(self, entry: str) -> str:
        return os.path.abspath(entry if os.path.isabs(entry) else os.path.join(self.root, entry))

    def missing(self, path: str) -> bool:
        if not self.check:
            return False
        found = self._exists.get(path)
        if found is None:
            found = self._exists[path] = os.path.isfile(path)
        return not found


def objects(path: Path, options: ReadOptions) -> Iterator[tuple[int, str, dict[str, Any] | Bad]]:
    """:func:`iter_items` with anything but a JSON object turned into a :class:`Bad`."""
    for index, where, item in iter_items(path, options.byte_range):
        yield index, where, item if isinstance(item, dict | Bad) else Bad(where, "not a JSON object")


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _missing(where: str, item: Any, keys: tuple[str, ...]) -> Bad | None:
    if not isinstance(item, dict):
        return Bad(where, "not a JSON object")
    absent = [k for k in keys if _text(item, k) is None]
    if absent:
        present = ", ".join(sorted(map(str, item))) or "none"
        return Bad(where, "missing field", f"{', '.join(repr(k) for k in absent)} empty or absent (fields: {present})")
    return None


def _file_and_line(where: str) -> dict[str, Any]:
    file, _, line = where.rpartition(":")
    if file and line.isdigit():
        return {"file": file, "line": int(line)}
    return {"file": where}


def _conversation(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question.strip()}, {"role": "assistant", "content": answer}]


# -- general medical sources -----------------------------------------------------------------------------------------


def _question_reasoning_response(
    path: Path, options: ReadOptions, source: str, dataset: str, keys: tuple[str, str, str]
) -> Iterator[Record | Bad]:
    """Text reasoning sets: one question, its chain of thought and the answer per item, under ``keys``."""
    question, reasoning, response = keys
    for index, where, item in iter_items(path, options.byte_range):
        if isinstance(item, Bad):
            yield item
            continue
        if bad := _missing(where, item, (question,) if reasoning in item else (question, reasoning)):
            yield bad  # an absent field is a file in another schema: an error, not a skip
            continue
        if not isinstance(item.get(reasoning), str) or not item[reasoning].strip():
            # Policy: a reasoning set's row without its reasoning teaches no reasoning. Some published rows have a
            # null chain of thought (loaders filter them): skipped and counted, never a failed build.
            yield Bad(where, "no chain of thought", f"{reasoning!r} is {item.get(reasoning)!r}", skip=True)
            continue
        if bad := _missing(where, item, (response,)):
            yield bad
            continue
        answer = render_reasoning(item[reasoning], item[response], options.reasoning_style)
        yield Record(
            index=index,
            id=f"{source}-{index}",
            source=source,
            split="general",
            task="reasoning",
            language=options.language or detect_language(item[question]),
            messages=_conversation(item[question], answer),
            provenance={"dataset": options.dataset or dataset, **_file_and_line(where)},
        )


def read_medical_o1(path: Path, options: ReadOptions) -> Iterator[Record | Bad]:
    """``FreedomIntelligence/medical-o1-reasoning-SFT`` (configs en / zh): ``{Question, Complex_CoT, Response}``."""
    keys = ("Question", "Complex_CoT", "Response")
    return _question_reasoning_response(
        path, options, "medical_o1", "FreedomIntelligence/medical-o1-reasoning-SFT", keys
    )


R1_QUESTION, R1_REASONING, R1_RESPONSE = "question", "reasoning (reasoning_content)", "response (content)"


def read_medical_r1_distill(path: Path, options: ReadOptions) -> Iterator[Record | Bad]:
    """``FreedomIntelligence/Medical-R1-Distill-Data``: keys really are ``question``,
    ``reasoning (reasoning_content)`` and ``response (content)``."""
    keys = (R1_QUESTION, R1_REASONING, R1_RESPONSE)
    return _question_reasoning_response(
        path, options, "medical_r1_distill", "FreedomIntelligence/Medical-R1-Distill-Data", keys
    )


MCQ_INSTRUCTION = "Answer with the letter of the correct option."


def mcq_prompt(question: str, options: dict[str, str]) -> str:
    lines = "\n".join(f"{letter}. {text.strip()}" for letter, text in options.items())
    return f"{question.strip()}\n\nOptions:\n{lines}\n\n{MCQ_INSTRUCTION}"


def read_medthoughts(path: Path, options: ReadOptions) -> Iterator[Record | Bad]:
    """``hw-hwei/MedThoughts-8K``: ``question_id, question, options{A..E}, answer_idx, ds_answer, ds_think, source``;
    the options become a multiple-choice prompt, the thinking and the answer are kept."""
    for index, where, item in iter_items(path, options.byte_range):
        if isinstance(item, Bad):
            yield item
            continue
        if bad := _missing(where, item, ("question", "answer_idx", "ds_think")):
            yield bad
            continue
        choices = item.get("options")
        if not isinstance(choices, dict) or len(choices) < 2 or not all(isinstance(v, str) for v in choices.values()):
            yield Bad(where, "bad options", "'options' must map at least two letters to option texts")
            continue
        choices = {str(k).strip().upper(): v for k, v in sorted(choices.items())}
        letter = item["answer_idx"].strip().upper()
        if letter not in choices:
            yield Bad(where, "bad answer", f"answer_idx {letter!r} is not one of the options {sorted(choices)}")
            continue
        # The answer states the correct option, as the dataset authors' own converter does: ds_answer is
        # DeepSeek-R1's free text, which need not name the letter (its reasoning is kept as the chain of thought).
        answer = render_reasoning(item["ds_think"], f"{letter}. {choices[letter].strip()}", options.reasoning_style)
        yield Record(
            index=index,
            id=f"medthoughts-{item.get('question_id', where)}",
            source="medthoughts",
            split="general",
            task="mcq",
            language=options.language or detect_language(item["question"]),
            messages=_conversation(mcq_prompt(item["question"], choices), answer),
            provenance={
                "dataset": "hw-hwei/MedThoughts-8K",
                "origin": item.get("source"),
                "question_id": item.get("question_id"),
                "answer": letter,
                **_file_and_line(where),
            },
        )


_PMV_ROLES = {"human": "user", "gpt": "assistant"}
PMV_CONVERSATIONS = ("conversations",)
"""Where a PubMedVision item keeps its conversation when the source does not say (the English files)."""


def read_pubmedvision(path: Path, options: ReadOptions) -> Iterator[Record | Bad]:
    """``FreedomIntelligence/PubMedVision``: ``image: [relative paths]``, ``conversations: [{from: human|gpt,
    value}]``, ``modality``, ``body_part``. Images are relative to ``image_root`` (the unzipped archives); a text
    without ``<image>`` placeholders gets one per image at the start of the first human turn."""
    files = FileCheck(options.image_root or path.parent, options.check_images)
    for index, where, item in objects(path, options):
        if isinstance(item, Bad):
            yield item
            continue
        key = options.conversations or next((k for k in PMV_CONVERSATIONS if k in item), "conversations")
        turns, images = item.get(key), item.get("image", [])
        if isinstance(images, str):
            images = [images]
        if not isinstance(turns, list) or not turns:
            found = [k for k in item if "conversations" in k]
            hint = f" (this item has {found}: set `conversations:` on the source)" if found and key not in item else ""
            yield Bad(where, "missing field", f"{key!r} must be a non-empty list{hint}")
            continue
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            yield Bad(where, "bad images", "'image' must be a path or a list of paths")
            continue
        messages: list[dict[str, str]] = []
        bad = None
        for i, turn in enumerate(turns):
            role = _PMV_ROLES.get(str(turn.get("from"))) if isinstance(turn, dict) else None
            if role is None or not isinstance(turn.get("value"), str):
                got = turn.get("from") if isinstance(turn, dict) else turn
                bad = Bad(where, "unknown role", f"conversations[{i}].from is {got!r}, expected human or gpt")
                break
            messages.append({"role": role, "content": turn["value"]})
        if bad:
            yield bad
            continue
        if images and not any(IMAGE_TAG in m["content"] for m in messages):
            first = next((m for m in messages if m["role"] == "user"), None)
            if first is not None:
                first["content"] = IMAGE_TAG * len(images) + "\n" + first["content"]
        resolved = [files.path(p) for p in images]
        if gone := next((p for p in resolved if files.missing(p)), None):
            yield Bad(where, "image not found", gone)
            continue
        body_part = item.get("body_part")
        yield Record(
            index=index,
            id=f"pubmedvision-{item.get('id', index)}",
            source="pubmedvision",
            split="general",
            task="vqa",
            language=options.language or detect_language(" ".join(m["content"] for m in messages[:2])),
            messages=messages,
            images=resolved,
            provenance={
                "dataset": "FreedomIntelligence/PubMedVision",
                "modality": item.get("modality"),
                "body_part": body_part,
                **_file_and_line(where),
            },
        )


Reader = Callable[[Path, ReadOptions], Iterator[Record | Bad]]


@dataclass(frozen=True)
class ReaderInfo:
    """A reader and the splits its records can fall into (what ``spinegpt plan`` knows of a mix without reading it)."""

    read: Reader
    splits: tuple[Split, ...]


READERS: dict[str, ReaderInfo] = {
    "medical_o1": ReaderInfo(read_medical_o1, ("general",)),
    "medical_r1_distill": ReaderInfo(read_medical_r1_distill, ("general",)),
    "medthoughts": ReaderInfo(read_medthoughts, ("general",)),
    "pubmedvision": ReaderInfo(read_pubmedvision, ("general",)),
}
"""The general-medical readers of this module; ``registry.py`` adds those of other modules."""
