"""Benchmark readers: SpineBench in the SpineMed format (ours) and the MM'25 SpineBench JSON.

SpineBench (SpineMed format), one JSON object per line::

    {"id": "sb-0001", "type": "mcq", "question": "...", "options": {"A": "...", "B": "..."},
     "answer": "C" | ["B", "D"], "images": ["relative/or/absolute.png"],            # images: optional
     "subspecialty": "Trauma", "source": "textbook", "language": "en"}              # metadata: optional
    {"id": "sb-r-001", "type": "report", "prompt": "...", "images": [...], "reference": "..."}   # reference: optional

MCQ items with images are the "image" part of the score, the others the "text" part.

MM'25 SpineBench (``Silversorrow/SpineBench``), a JSON array (or JSONL) of
``{image, question, task: spine_disease_classification | spine_lesion_localization, answers | answer}``; options
come from an ``options`` field or from ``A. ...`` lines in the question; answers may be letters or option texts.

Image paths are resolved against ``image_root`` (default: the file's folder). Every problem names file and line/item.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LETTERS = "ABCDEFGH"
MM25_TASKS = {"spine_disease_classification": "diagnosis", "spine_lesion_localization": "localisation"}
_OPTION_LINE = re.compile(r"^\s*\(?([A-H])[\.\):：]\s*(.+?)\s*$", re.M)


class BenchmarkError(ValueError):
    """A benchmark file that cannot be read; the message names file and line (or item index)."""


@dataclass(frozen=True)
class Item:
    id: str
    task: str
    """``text_mcq`` | ``image_mcq`` | ``report`` (SpineBench); ``diagnosis`` | ``localisation`` (MM'25)."""
    question: str
    images: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    answer: list[str] = field(default_factory=list)
    """Correct option letters, sorted (empty for reports)."""
    multi: bool = False
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_mcq(self) -> bool:
        return self.task != "report"


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) pairs from a JSON array or a JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read ({exc.strerror})") from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchmarkError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        for i, record in enumerate(data):
            yield f"{path}[{i}]", record
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield f"{path}:{number}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}:{number}: invalid JSON: {exc.msg}") from None


def _images(value: Any, root: Path, where: str) -> list[str]:
    if value is None:
        return []
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BenchmarkError(f"{where}: images must be a path or a list of paths")
    resolved = []
    for p in paths:
        full = Path(p) if Path(p).is_absolute() else root / p
        if not full.is_file():
            raise BenchmarkError(f"{where}: image not found: {full}")
        resolved.append(str(full.resolve()))
    return resolved


def _options(value: Any, question: str, where: str) -> dict[str, str]:
    if isinstance(value, dict):
        options = {str(k).strip().upper(): str(v) for k, v in value.items()}
    elif isinstance(value, list):
        options = {LETTERS[i]: str(v) for i, v in enumerate(value)}
    elif value is None:
        options = {m.group(1): m.group(2) for m in _OPTION_LINE.finditer(question)}
    else:
        raise BenchmarkError(f"{where}: options must be an object letter -> text, or a list")
    if len(options) < 2 or any(k not in LETTERS for k in options):
        raise BenchmarkError(f"{where}: needs at least two options lettered A-H (found {sorted(options)})")
    return options


def _answer_letters(value: Any, options: dict[str, str], where: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    by_text = {re.sub(r"\s+", " ", v).strip().lower(): k for k, v in options.items()}
    letters = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise BenchmarkError(f"{where}: answer must be an option letter or text, got {v!r}")
        key = v.strip().upper().rstrip(".")
        if key in options:
            letters.append(key)
        elif (letter := by_text.get(re.sub(r"\s+", " ", v).strip().lower())) is not None:
            letters.append(letter)
        else:
            raise BenchmarkError(f"{where}: answer {v!r} is neither an option letter nor an option text")
    if not letters:
        raise BenchmarkError(f"{where}: no answer")
    return sorted(set(letters))


def read_spinebench(path: Path, image_root: Path | None = None) -> list[Item]:
    root = image_root or path.parent
    items, seen = [], set()
    for where, record in _records(path):
        if not isinstance(record, dict):
            raise BenchmarkError(f"{where}: item must be a JSON object")
        kind, item_id = record.get("type"), record.get("id")
        if not isinstance(item_id, str) or not item_id:
            raise BenchmarkError(f"{where}: missing 'id'")
        if item_id in seen:
            raise BenchmarkError(f"{where}: duplicate id {item_id!r}")
        seen.add(item_id)
        images = _images(record.get("images"), root, where)
        meta = {k: record[k] for k in ("subspecialty", "source", "language") if k in record}
        if kind == "mcq":
            question = record.get("question")
            if not isinstance(question, str) or not question.strip():
                raise BenchmarkError(f"{where}: mcq needs a 'question'")
            options = _options(record.get("options"), question, where)
            answer = _answer_letters(record.get("answer"), options, where)
            multi = isinstance(record.get("answer"), list) and len(answer) > 1
            task = "image_mcq" if images else "text_mcq"
            items.append(Item(item_id, task, question, images, options, answer, multi, meta=meta))
        elif kind == "report":
            prompt = record.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise BenchmarkError(f"{where}: report needs a 'prompt'")
            reference = record.get("reference")
            items.append(Item(item_id, "report", prompt, images, reference=reference, meta=meta))
        else:
            raise BenchmarkError(f"{where}: type must be 'mcq' or 'report', got {kind!r}")
    if not items:
        raise BenchmarkError(f"{path}: no items")
    return items


def read_mm25(path: Path, image_root: Path | None = None) -> list[Item]:
    root = image_root or path.parent
    items = []
    for index, (where, record) in enumerate(_records(path)):
        if not isinstance(record, dict):
            raise BenchmarkError(f"{where}: item must be a JSON object")
        task = MM25_TASKS.get(record.get("task", ""))
        if task is None:
            raise BenchmarkError(f"{where}: task must be one of {sorted(MM25_TASKS)}, got {record.get('task')!r}")
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise BenchmarkError(f"{where}: missing 'question'")
        options = _options(record.get("options"), question, where)
        raw_answer = record["answers"] if "answers" in record else record.get("answer")
        answer = _answer_letters(raw_answer, options, where)
        if task == "diagnosis" and len(answer) != 1:
            raise BenchmarkError(f"{where}: a diagnosis item has exactly one correct option, got {answer}")
        images = _images(record.get("image", record.get("images")), root, where)
        item_id = str(record.get("id", f"{task}-{index:05d}"))
        items.append(Item(item_id, task, question, images, options, answer, multi=task == "localisation"))
    if not items:
        raise BenchmarkError(f"{path}: no items")
    return items


READERS = {"spinebench": read_spinebench, "spinebench_mm25": read_mm25}


def read(kind: str, path: Path, image_root: Path | None = None) -> list[Item]:
    if kind not in READERS:
        raise BenchmarkError(f"unknown benchmark kind {kind!r}; known: {', '.join(READERS)}")
    return READERS[kind](path, image_root)


def prompt_for(item: Item) -> str:
    """The user turn the model sees: one <image> tag per image, the question, the options, the answer format."""
    tags = "<image>" * len(item.images)
    if item.task == "report":
        return tags + item.question.strip()
    body = item.question.strip()
    if not all(re.search(rf"^\s*\(?{k}[\.\):：]", body, re.M) for k in item.options):
        body += "\n\n" + "\n".join(f"{k}. {v}" for k, v in item.options.items())
    if item.multi:
        instruction = "Select every correct option. End with 'Answer:' followed by the letters, separated by commas."
    else:
        instruction = "Select the single best option. End with 'Answer:' followed by its letter."
    return f"{tags}{body}\n\n{instruction}"


def questions(kind: str, path: Path) -> list[str]:
    """Every question (MCQ) and prompt (report) of a benchmark file, without checking its images: what training
    data is decontaminated against, so the test set's images need not be on the machine that builds data."""
    if kind not in READERS:
        raise BenchmarkError(f"unknown benchmark kind {kind!r}; known: {', '.join(READERS)}")
    found = []
    for where, record in _records(path):
        if not isinstance(record, dict):
            raise BenchmarkError(f"{where}: item must be a JSON object")
        text = record.get("question", record.get("prompt"))
        if not isinstance(text, str) or not text.strip():
            raise BenchmarkError(f"{where}: no 'question' (or report 'prompt')")
        found.append(text)
    return found
