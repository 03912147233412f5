"""What a benchmark is to the evaluator, and the reading helpers the shipped benchmarks share.

A benchmark is one module implementing :class:`Benchmark` (read its file into :class:`Item` s, score the answered
items, write its markdown rows and its model-card metrics, and give its scores back as per-item values) and one line
in ``registry.py``. The shipped ones: ``spinebench.py`` (SpineMed format), ``spinebench_mm25.py`` (the MM'25
SpineBench), and the general medical ones, one generic reader per shape configured per benchmark: ``vqa.py``
(closed/open VQA: VQA-RAD, PathVQA, SLAKE), ``mcq.py`` (multiple choice: PMC-VQA, MedQA) and ``mmmu.py`` (MMMU's
Health & Medicine subjects). Every reading problem is a :class:`BenchmarkError` naming file and line (or row) and
the field.

A benchmark path may be a file, a folder of the download (PathVQA's shards, MMMU's subject folders: each benchmark
says which files a folder stands for, :meth:`Benchmark.files`), or ``builtin:<name>``: a tiny copy the package
ships (``eval_hooks/tiny/``) for smoke runs and first tries.

Intervals, breakdowns and paired comparisons are the same for every benchmark (``scorecard.py``, ``compare.py``,
the methods in ``stats.py``); what a benchmark contributes is :meth:`Benchmark.item_scores`: its scores as
:class:`Part` s (per-item values in percent, by item id), the :class:`Metric` s built from them (each an item-weighted
mean of one or more parts, so a resample keeps every part's size) and the :class:`Grouping` s its items carry. It
reads the answered records only (never the benchmark file), so a result file can be compared or re-scored anywhere.
A multiple-choice-only benchmark needs two lines (:func:`mcq_part` per task, one :class:`Metric` each).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from spinegpt.errors import UserError
from spinegpt.eval_hooks.rubric import Judgment
from spinegpt.files import sha256_file
from spinegpt.paths import cache_root

LETTERS = "ABCDEFGHIJ"
"""Option letters an item may use: MMMU goes up to I, MMMU-Pro to J. An item with more options is refused."""
_OPTION_LINE = re.compile(rf"^\s*\(?([{LETTERS}])[\.\):：]\s*(.+?)\s*$", re.M)
BUILTIN = "builtin:"
"""``builtin:<name>``: a tiny benchmark copy shipped with the package (``eval_hooks/tiny/<name>``)."""


class BenchmarkError(UserError, ValueError):
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
    answer_texts: list[str] = field(default_factory=list)
    """Accepted answers of a free-text item (VQA; MMMU's open questions), as published: the item has no options,
    and its benchmark scores the output against these."""
    instruction: str | None = None
    """The :data:`PROMPT_TEMPLATE` entry whose answer-format line the prompt ends with (``yes_no``, ``short``,
    ``yes_no_zh``, ``short_zh``; default: the multiple-choice one, none for a report or a bare free-text item)."""
    unusable: str | None = None
    """Why the benchmark's own rules leave this row out of scoring (an MMMU test answer "?"). Such an item is never
    generated; the evaluation counts it by reason."""

    @property
    def is_mcq(self) -> bool:
        """Answered by option letters (read by ``answers.parse_choices``); reports and free-text items are not."""
        return bool(self.options)


def records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) pairs from a JSON array, a JSONL file or a parquet file (the hub's conversion)."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read ({exc.strerror})") from None
    if magic == b"PAR1":
        yield from _parquet(path)
        return
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path}: neither UTF-8 JSON/JSONL/CSV nor parquet (byte {exc.start})") from None
    if path.suffix.lower() == ".csv":
        yield from _csv(path, text)
        return
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


def _parquet(path: Path) -> Iterator[tuple[str, Any]]:
    """Rows of a parquet file, a row group at a time (an image column can hold megabytes per row)."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        row = 0
        for group in range(table.num_row_groups):
            for record in table.read_row_group(group).to_pylist():
                yield f"{path}[row {row}]", record
                row += 1
    except (OSError, ValueError) as exc:  # pyarrow's ArrowException subclasses these
        raise BenchmarkError(f"{path}: unreadable parquet ({exc})") from None


def _csv(path: Path, text: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Rows of a CSV file with a header, each named by the line it starts on (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))  # the csv module's own line handling: quoted line breaks
    try:
        header = next(reader)
    except StopIteration:
        raise BenchmarkError(f"{path}: empty CSV file (no header)") from None
    except csv.Error as exc:
        raise BenchmarkError(f"{path}:1: unreadable CSV header ({exc})") from None
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise BenchmarkError(f"{path}:1: repeated column(s) {repeated}")
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise BenchmarkError(f"{path}:{start}: unreadable CSV row ({exc})") from None
        where = f"{path}:{start}"
        start = reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue  # a blank line is no row
        if len(cells) != len(header):
            raise BenchmarkError(f"{where}: {len(cells)} cells for {len(header)} columns ({', '.join(header)})")
        yield where, dict(zip(header, cells, strict=True))


def table_rows(paths: Sequence[Path]) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """``(file, where, row)`` for every row of a table benchmark's files (the hub's parquet, JSON, JSONL); a row that
    is not an object of named fields is an error naming it."""
    for path in paths:
        for where, record in records(path):
            if not isinstance(record, dict):
                raise BenchmarkError(f"{where}: a row must be an object with named fields")
            yield path, where, record


def files(path: Path, patterns: Sequence[str]) -> list[Path]:
    """The files ``path`` stands for: itself, or in a folder the files matching ``patterns`` (globs relative to
    the folder, tried in order: the first that matches wins), sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BenchmarkError(f"{path}: no such file or folder")
    for pattern in patterns:
        found = sorted(p for p in path.glob(pattern) if p.is_file())
        if found:
            return found
    raise BenchmarkError(f"{path}: a folder holding none of the benchmark's files ({', '.join(patterns)})")


_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})(?:-[0-9a-f]+)?\.parquet$")


def whole_split(paths: Sequence[Path]) -> list[Path]:
    """``paths`` when they hold every shard of each split they shard (the hub names shards
    ``test-00000-of-00002[-hash].parquet``); one shard alone would evaluate part of a benchmark as if whole."""
    shards: dict[tuple[Path, str, int], set[int]] = {}
    for path in paths:
        match = _SHARD.match(path.name)
        if match:
            key = (path.parent, match["stem"], int(match["total"]))
            shards.setdefault(key, set()).add(int(match["index"]))
    for (folder, stem, total), found in shards.items():
        missing = sorted(set(range(total)) - found)
        if missing:
            names = ", ".join(f"{stem}-{i:05d}-of-{total:05d}" for i in missing)
            hint = " (give the folder holding all of them)" if len(paths) == 1 else ""
            raise BenchmarkError(
                f"{folder}: {stem} is split into {total} shards and {names} is missing{hint}: a part of the "
                "split would be scored as if it were the whole benchmark"
            )
    return list(paths)


def builtin(name: str) -> Path:
    """The tiny benchmark copy ``builtin:<name>`` names (package data, so a wheel install has it too)."""
    root = Path(str(importlib.resources.files("spinegpt.eval_hooks") / "tiny"))
    target = root / name
    if not name or not target.exists():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise BenchmarkError(f"no builtin benchmark {name!r}; shipped: {', '.join(known) or 'none'}")
    return target


def resolve(value: str, root: Path) -> Path:
    """A configured benchmark path: ``builtin:<name>``, absolute, or relative to ``root``."""
    if value.startswith(BUILTIN):
        return builtin(value.removeprefix(BUILTIN))
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (root / path).resolve()


@dataclass(frozen=True)
class Columns:
    """Which column of the file holds each field a reader asks for: the benchmark's published names, with a
    user's column map (``columns:`` in the config) on top, so the same reader takes a user's own files."""

    names: Mapping[str, str]

    @classmethod
    def of(cls, defaults: Mapping[str, str], user: Mapping[str, str] | None) -> Columns:
        return cls({**defaults, **(user or {})})

    def name(self, field: str) -> str:
        return self.names.get(field, field)

    def has(self, record: Mapping[str, Any], field: str) -> bool:
        return record.get(self.name(field)) is not None

    def value(self, record: Mapping[str, Any], field: str, where: str) -> Any:
        column = self.name(field)
        if column not in record:
            raise BenchmarkError(f"{where}: no column {column!r} ({field}); the row has {sorted(record)}")
        return record[column]

    def text(self, record: Mapping[str, Any], field: str, where: str, required: bool = True) -> str | None:
        """A text cell, stripped; a missing or blank one is an error unless not ``required`` (then None)."""
        column = self.name(field)
        value = record.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            if not required:
                return None
            if column not in record:
                raise BenchmarkError(f"{where}: no column {column!r} ({field}); the row has {sorted(record)}")
            raise BenchmarkError(f"{where}: {column!r} ({field}) is empty")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BenchmarkError(f"{where}: {column!r} ({field}) must be text, got {type(value).__name__}")
        return str(value).strip()


def embedded_image(value: dict[str, Any], where: str) -> str:
    """An image stored in the file (the hub's Image feature: ``{bytes, path}``), written once into the cache by
    its content hash and reused by every later read. Bytes that are no image are refused here, before they could
    stop the evaluation half-way."""
    data = value.get("bytes")
    if not isinstance(data, bytes | bytearray) or not data:
        raise BenchmarkError(f"{where}: an embedded image has no bytes")
    digest = hashlib.sha256(data).hexdigest()
    suffix = Path(str(value.get("path") or "")).suffix.lower() or ".png"
    target = cache_root() / "benchmark-images" / digest[:2] / f"{digest}{suffix}"
    # The cached copy is checked against its name, its content hash, on every read (images are small): one cut short
    # or changed on disk is written again, never handed to the model.
    if not (target.is_file() and target.stat().st_size == len(data) and sha256_file(target) == digest):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()  # headers and checksums; checked once, when first written
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise BenchmarkError(f"{where}: the embedded image is not a readable image ({exc})") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return str(target)


def images(value: Any, root: Path, where: str) -> list[str]:
    """Image paths (relative to ``root``) or embedded images, one or a list, as absolute paths that exist."""
    if value is None:
        return []
    entries = value if isinstance(value, list) else [value]
    resolved = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("bytes"):
            resolved.append(embedded_image(entry, where))
            continue
        if isinstance(entry, dict):  # an Image feature without bytes: its path
            entry = entry.get("path")
        if not isinstance(entry, str) or not entry:
            raise BenchmarkError(f"{where}: images must be paths or embedded images ({{bytes, path}})")
        full = Path(entry) if Path(entry).is_absolute() else root / entry
        if not full.is_file():
            raise BenchmarkError(f"{where}: image not found: {full}")
        resolved.append(str(full.resolve()))
    return resolved


def options(value: Any, question: str, where: str) -> dict[str, str]:
    if isinstance(value, dict):
        options = {str(k).strip().upper(): str(v) for k, v in value.items()}
    elif isinstance(value, list):
        if len(value) > len(LETTERS):
            raise BenchmarkError(
                f"{where}: {len(value)} options; at most {len(LETTERS)} ({LETTERS[0]}-{LETTERS[-1]}) are supported"
            )
        options = {LETTERS[i]: str(v) for i, v in enumerate(value)}
    elif value is None:
        options = {m.group(1): m.group(2) for m in _OPTION_LINE.finditer(question)}
    else:
        raise BenchmarkError(f"{where}: options must be an object letter -> text, or a list")
    if len(options) < 2 or any(k not in LETTERS for k in options):
        raise BenchmarkError(
            f"{where}: needs at least two options lettered {LETTERS[0]}-{LETTERS[-1]} (found {sorted(options)})"
        )
    return options


def answer_letters(value: Any, options: dict[str, str], where: str) -> list[str]:
    """Letters of the correct options: given as letters or option texts, as a list or joined by commas."""
    values = value if isinstance(value, list) else [value]
    by_text = {re.sub(r"\s+", " ", v).strip().lower(): k for k, v in options.items()}

    def letter_of(text: str) -> str | None:
        key = text.strip().upper().rstrip(".")
        return key if key in options else by_text.get(re.sub(r"\s+", " ", text).strip().lower())

    letters = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise BenchmarkError(f"{where}: answer must be an option letter or text, got {v!r}")
        if (letter := letter_of(v)) is not None:
            letters.append(letter)
            continue
        parts = [letter_of(p) for p in re.split(r"[,，;]", v) if p.strip()]  # "L4/L5, L5/S1" or "A,B"
        if len(parts) < 2 or any(p is None for p in parts):
            raise BenchmarkError(f"{where}: answer {v!r} is neither an option letter nor an option text")
        letters += [p for p in parts if p is not None]
    if not letters:
        raise BenchmarkError(f"{where}: no answer")
    return sorted(set(letters))


PROMPT_TEMPLATE: dict[str, str] = {
    "mcq": "{images}{question}{options}\n\n{instruction}",
    "options": "\n\n{lines}",
    "option_line": "{letter}. {text}",
    "single": "Select the single best option. End with 'Answer:' followed by its letter.",
    "multi": "Select every correct option. End with 'Answer:' followed by the letters, separated by commas.",
    "report": "{images}{question}",
    "image": "<image>",
    "free_text": "{images}{question}\n\n{instruction}",
    "yes_no": "Answer with yes or no.",
    "yes_no_zh": "请回答是或否。",
    "short": "Answer the question using a single word or phrase.",
    "short_zh": "请用一个单词或者短语回答该问题。",
}
"""How :func:`prompt_for` builds the user turn: ``{images}`` is one image tag per image, ``{options}`` is empty when
the question lists its options itself. A free-text item (a VQA question, an MMMU open question) ends with the
answer-format line its :attr:`Item.instruction` names (``yes_no``, ``short`` and their Chinese forms: MedEvalKit's
and LLaVA-1.5's short-answer prompts). Recorded (text and hash) in every result's protocol: another wording is
another evaluation."""


def prompt_for(item: Item) -> str:
    """The user turn the model sees: one <image> tag per image, the question, the options, the answer format."""
    t = PROMPT_TEMPLATE
    tags = t["image"] * len(item.images)
    if item.task == "report":
        return t["report"].format(images=tags, question=item.question.strip())
    body = item.question.strip()
    if not item.options:  # a free-text item (VQA, MMMU's open questions): the question and how to answer it
        instruction = t[item.instruction] if item.instruction else ""
        return t["free_text"].format(images=tags, question=body, instruction=instruction).rstrip()
    options = ""
    if not all(re.search(rf"^\s*\(?{k}[\.\):：]", body, re.M) for k in item.options):
        lines = "\n".join(t["option_line"].format(letter=k, text=v) for k, v in item.options.items())
        options = t["options"].format(lines=lines)
    instruction = t[item.instruction] if item.instruction else t["multi"] if item.multi else t["single"]
    return t["mcq"].format(images=tags, question=body, options=options, instruction=instruction)


def single_file(path: Path, columns: Mapping[str, str] | None = None) -> list[Path]:
    """``files`` of a benchmark read from one file in a fixed format (SpineBench, MM'25)."""
    if columns:
        raise BenchmarkError(f"{path}: this benchmark's format is fixed; a column map is not accepted")
    if not path.is_file():
        raise BenchmarkError(
            f"{path}: no such file" + (" (a folder: give the benchmark file)" if path.is_dir() else "")
        )
    return [path]


def questions(path: Path) -> list[str]:
    """Every question (MCQ) and prompt (report) of a benchmark file, without checking its images: what training
    data is decontaminated against, so the test set's images need not be on the machine that builds data."""
    found = []
    for where, record in records(path):
        if not isinstance(record, dict):
            raise BenchmarkError(f"{where}: item must be a JSON object")
        text = record.get("question", record.get("prompt"))
        if not isinstance(text, str) or not text.strip():
            raise BenchmarkError(f"{where}: no 'question' (or report 'prompt')")
        found.append(text)
    return found


Record = dict[str, Any]
"""One answered item as written to ``<benchmark>.json``: id, task, question, prompt, images, output (and the item's
``meta``, ``multi``, ``reference``, ``answer_texts`` where it has them: with these a result re-scores without its
benchmark file), and for a multiple-choice item its options, gold answer, parsed answer, the path that decided it
and its correctness (a judged report adds its judgment and ``report_score``; a free-text item what its benchmark's
``score`` reads: the answer span, correctness, recall)."""


@dataclass(frozen=True)
class Part:
    """One part of a benchmark's score as per-item values: what intervals and paired comparisons resample.

    A part's score is the mean of its values; a resample draws its items from this part only, so a composite keeps
    the part sizes (and so the weights) the benchmark has."""

    name: str
    ids: tuple[str, ...]
    """Item ids, aligned with ``values``: a paired comparison matches two evaluations' items by these."""
    values: tuple[float, ...]
    """Per item, in percent (0-100): 0 or 100 for a right/wrong item, a report's own score, 100 x a precision."""
    binary: bool
    """Every value is 0 or 100: the part's accuracy gets a Wilson interval, and comparisons McNemar's test."""

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.values):
            raise ValueError(f"part {self.name!r}: {len(self.ids)} ids for {len(self.values)} values")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"part {self.name!r}: item ids repeat")
        if self.binary and any(v not in (0.0, 100.0) for v in self.values):
            raise ValueError(f"part {self.name!r} is binary but holds values other than 0 and 100")


@dataclass(frozen=True)
class Metric:
    """A reported figure as an item-weighted mean of parts: one part (an accuracy), or several (an average, an
    overall). Its interval is Wilson's for one binary part, else a percentile bootstrap within parts."""

    key: str
    """Stable name in result files and comparisons (``text``, ``mcq_average``, ``localisation_recall``)."""
    label: str
    """How reports show it: the same label as the benchmark's :meth:`Benchmark.headline` figure."""
    parts: tuple[str, ...]


@dataclass(frozen=True)
class Grouping:
    """A breakdown of right/wrong items by a label they carry (subspecialty, source, language, task, disease)."""

    name: str
    parts: tuple[str, ...]
    """The binary parts whose items are grouped."""
    labels: dict[str, str | None]
    """Item id -> its group (None or empty: unknown) for the items of those parts; an id not here is unknown."""


@dataclass(frozen=True)
class ItemScores:
    """What :meth:`Benchmark.item_scores` returns: parts, the metrics built from them, and the groupings."""

    parts: tuple[Part, ...]
    metrics: tuple[Metric, ...]
    groupings: tuple[Grouping, ...] = ()

    def part(self, name: str) -> Part:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(name)

    def __post_init__(self) -> None:
        empty = [p.name for p in self.parts if not p.ids]
        if empty:
            raise ValueError(f"parts without items: {empty} (leave a part out when it has no items)")
        names = {p.name for p in self.parts}
        for metric in self.metrics:
            missing = [p for p in metric.parts if p not in names]
            if missing or not metric.parts:
                raise ValueError(f"metric {metric.key!r} needs parts {list(metric.parts)}; missing {missing}")


def mcq_part(name: str, records: Sequence[Record]) -> Part:
    """A binary part from answered multiple-choice records (their ``correct``; an unparsed answer is wrong)."""
    return Part(name, tuple(r["id"] for r in records), tuple(100.0 if r.get("correct") else 0.0 for r in records), True)


def meta_labels(records: Sequence[Record], key: str) -> dict[str, str | None]:
    """Item id -> the item's ``meta[key]`` as text (None where absent)."""
    labels: dict[str, str | None] = {}
    for record in records:
        value = (record.get("meta") or {}).get(key)
        labels[record["id"]] = None if value is None or value == "" else str(value)
    return labels


def meta_groupings(records: Sequence[Record], keys: Sequence[str], parts: Sequence[str]) -> tuple[Grouping, ...]:
    """A grouping per ``meta`` key that at least one of ``records`` carries (the items of ``parts``)."""
    out = []
    for key in keys:
        labels = meta_labels(records, key)
        if any(label is not None for label in labels.values()):
            out.append(Grouping(key, tuple(parts), labels))
    return tuple(out)


class Grader(Protocol):
    """What a benchmark asks of a judge (``judge.Judge``): a verdict per (prompt, answer, reference), in order."""

    def judge_many(self, items: Sequence[tuple[str, str, str | None]]) -> list[Judgment]: ...


@runtime_checkable
class Benchmark(Protocol):
    """A benchmark the evaluator can run. Implementations are stateless module-level objects."""

    kind: str
    """The name configs use (``kind: spinebench``)."""

    columns: tuple[str, ...]
    """The fields a user's column map (``columns:``) may point at other columns; empty: a fixed file format."""

    def files(self, path: Path) -> list[Path]:
        """The files a configured path stands for (a folder: the benchmark's files in it), in reading order."""
        ...

    def read(self, path: Path, image_root: Path | None = None, columns: Mapping[str, str] | None = None) -> list[Item]:
        """Every item of the file, checked (images exist, answers are options); a problem is a BenchmarkError.
        Rows the benchmark's own rules cannot score come back as items with ``unusable`` set, never dropped."""
        ...

    def questions(self, path: Path, columns: Mapping[str, str] | None = None) -> list[str]:
        """The question texts training data must not contain (decontamination); needs no images."""
        ...

    def score(self, items: list[Item], records: list[Record], judge: Grader | None) -> dict[str, Any]:
        """Scores from the answered items (``records`` in ``items`` order; a judge grades free-text items)."""
        ...

    def markdown(self, scores: dict[str, Any]) -> list[str]:
        """The score table of ``<benchmark>.md``."""
        ...

    def headline(self, scores: dict[str, Any]) -> dict[str, float]:
        """A few figures by label (percent), for run reports and their plots."""
        ...

    def model_index(self, dataset: dict[str, str], scores: dict[str, Any]) -> list[dict[str, Any]]:
        """Results in the hub's model-index form (``task``, ``dataset``, ``metrics``), for the model card."""
        ...

    def item_scores(self, records: list[Record]) -> ItemScores:
        """The scores as per-item values (``records`` as scored, reports with their ``report_score``): each
        :class:`Metric`'s estimate must equal the figure :meth:`score` reports (the tests check it). Where the items
        carry labels, their :class:`Grouping` s. Only parts with items are returned."""
        ...


def content_sha256(bench: Benchmark, path: Path, hash_file: Callable[[Path], str] = sha256_file) -> str:
    """What a benchmark path holds, as one sha256: a file's own hash, or for a download folder the hash of the
    listing (relative name and hash) of the files it stands for (:meth:`Benchmark.files`). What the evaluation
    protocol, the base-model cache and the decontamination record identify a benchmark by."""
    found = bench.files(path)
    if path.is_file():
        return hash_file(path)
    listing = "".join(f"{f.relative_to(path)}\t{hash_file(f)}\n" for f in found)
    return hashlib.sha256(listing.encode()).hexdigest()


def metric(name: str, value: float | None, kind: str = "accuracy") -> dict[str, Any] | None:
    """One model-index metric, or None when the score is missing."""
    return None if value is None else {"type": kind, "name": name, "value": round(float(value), 2)}


def result(task_type: str, task_name: str, dataset: dict[str, str], metrics: list[Any]) -> list[dict[str, Any]]:
    """A model-index result with the metrics that exist (none: no result)."""
    present = [m for m in metrics if m]
    return [{"task": {"type": task_type, "name": task_name}, "dataset": dataset, "metrics": present}] if present else []


def fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
