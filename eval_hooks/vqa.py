"""Closed and open visual question answering, read from the files as their uploaders publish them and scored as the
field scores them: VQA-RAD, PathVQA and SLAKE. One reader (:class:`VqaBenchmark`) configured per benchmark
(:class:`VqaSpec`); a column map (``columns:`` in the config) points the same kinds at a user's own files.

**The files** (field names checked against each dataset card and the loaders of the uploaders and of the harnesses
that evaluate on them, 2026-11):

* ``vqa_rad`` -- ``flaviagiammarino/vqa-rad``: ``data/test-00000-of-00001-<hash>.parquet``, 451 rows, columns
  ``image`` (the datasets Image feature, a ``{bytes, path}`` struct), ``question``, ``answer``; the uploader
  lower-cased the text. Checked: the dataset card and repository tree, MedEvalKit's ``VQA_RAD.py`` (reads
  ``question``/``image``/``answer`` of split ``test``), the med_eval harness README. There is no answer-type column:
  a question is *closed* when its answer is yes or no, as both harnesses decide.
* ``path_vqa`` -- ``flaviagiammarino/path-vqa``: the same three columns, the test split in two shards
  (``data/test-0000{0,1}-of-00002.parquet``, 6,719 rows); some images are CMYK JPEGs (the engine converts every
  image to RGB when it loads it). Give the folder: one shard alone is refused rather than scored as the benchmark.
  Checked: the repository trees of the dataset and its mirrors, MedEvalKit's ``PATH_VQA.py``.
* ``slake`` -- ``BoKelvin/SLAKE``: ``test.json``, one JSON array (2,094 rows: 1,061 ``en``, 1,033 ``zh``) of
  ``{img_id, img_name, question, answer, q_lang, location, modality, answer_type: OPEN|CLOSED, base_type, triple,
  qid, content_type}`` (key order varies; Chinese as raw UTF-8); images ``imgs/xmlabN/source.jpg`` from
  ``imgs.zip`` unzipped beside ``test.json``. Checked: MedEvalKit's ``SLAKE.py`` (``img_name`` under ``imgs/``,
  ``q_lang``, ``answer_type``) and PMC-VQA's copy of ``Slake1.0/test.json``. Not checked: the full file (only
  field names and samples were seen).

**Scoring** (``open_answers.py`` has the rules and where LLaVA-Med and MedEvalKit disagree): closed yes/no
questions by the reply's yes/no verdict; closed questions answered by a word (SLAKE) by exact match; open questions
by exact match and token recall, reported apart; ``overall`` counts closed right and open exactly matched over all
items, MedEvalKit's single figure. SLAKE is also reported per language (``by_language``).

Every part has ``n``, ``correct`` and ``accuracy`` (percent); open parts add ``recall`` (mean, percent); each
record carries its ``part``, ``answer``, the ``parsed`` answer span (or verdict), ``correct``, and for open items
``recall``: what intervals and paired comparisons are computed from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import benchmark, open_answers
from spinegpt.eval_hooks.benchmark import (
    BenchmarkError,
    Columns,
    Grader,
    Grouping,
    Item,
    ItemScores,
    Metric,
    Part,
    Record,
    fmt,
    mcq_part,
    meta_groupings,
    metric,
    result,
)

FIELDS = ("id", "question", "answer", "image", "answer_type", "language")
"""What the reader asks of a row; a column map renames any of them."""
INSTRUCTIONS = {
    ("yes_no", "en"): "yes_no",
    ("yes_no", "zh"): "yes_no_zh",
    ("short", "en"): "short",
    ("short", "zh"): "short_zh",
}
"""The answer-format line by question kind and language: the ``benchmark.PROMPT_TEMPLATE`` entry (MedEvalKit's
and LLaVA-1.5's short-answer prompts), so the protocol records its wording."""
PARTS = ("closed", "open")


@dataclass(frozen=True)
class VqaSpec:
    """One VQA benchmark as published."""

    kind: str
    title: str
    hub: str
    folder_files: tuple[str, ...]
    """What a folder stands for: globs tried in order (the first that matches is read)."""
    columns: Mapping[str, str]
    """Reader field -> the published column."""
    answer_type_required: bool = False
    """Closed/open comes from the answer-type column (SLAKE); else from it where a column map gives one, and from
    the answer (yes/no: closed) otherwise (VQA-RAD, PathVQA)."""
    language_required: bool = False
    """Every row names its language (SLAKE's ``q_lang``) and scores are also reported per language."""
    image_subdir: str | None = None
    """Image paths are relative to this folder beside the file (SLAKE: ``imgs``) unless ``image_root`` is given."""
    meta_fields: tuple[str, ...] = ()
    """Published columns kept in each item's ``meta`` (for breakdowns)."""


class VqaBenchmark:
    """A closed/open VQA benchmark: read, score, tables."""

    columns: tuple[str, ...] = FIELDS

    def __init__(self, spec: VqaSpec):
        self.spec = spec
        self.kind = spec.kind

    def files(self, path: Path) -> list[Path]:
        return benchmark.whole_split(benchmark.files(path, self.spec.folder_files))

    def read(self, path: Path, image_root: Path | None = None, columns: Mapping[str, str] | None = None) -> list[Item]:
        spec, cols = self.spec, Columns.of(self.spec.columns, columns)
        items, seen = [], set()
        for index, (file, where, record) in enumerate(benchmark.table_rows(self.files(path))):
            item_id = cols.text(record, "id", where, required=False) or f"{spec.kind}-{index:05d}"
            if item_id in seen:
                raise BenchmarkError(f"{where}: repeated id {item_id!r} ({cols.name('id')})")
            seen.add(item_id)
            question = cols.text(record, "question", where)
            answer = cols.text(record, "answer", where)
            assert question is not None and answer is not None  # required
            language = self._language(record, cols, where)
            closed = self._closed(record, cols, answer, where)
            yes_no = closed and open_answers.polarity(answer) is not None
            if not open_answers.tokens(answer):
                raise BenchmarkError(f"{where}: answer {answer!r} ({cols.name('answer')}) has no words to compare")
            root = image_root or (file.parent / spec.image_subdir if spec.image_subdir else file.parent)
            image_where = f"{where} ({cols.name('image')})"
            images = benchmark.images(cols.value(record, "image", where), root, image_where)
            if len(images) != 1:
                raise BenchmarkError(f"{image_where}: a VQA question has one image, found {len(images)}")
            part = "closed" if closed else "open"
            instruction = INSTRUCTIONS[("yes_no" if yes_no else "short", language if language == "zh" else "en")]
            meta = {"part": part, "language": language, "yes_no": yes_no}
            meta.update({k: record[k] for k in spec.meta_fields if record.get(k) is not None})
            items.append(
                Item(item_id, part, question, images, answer_texts=[answer], instruction=instruction, meta=meta)
            )
        if not items:
            raise BenchmarkError(f"{path}: no items")
        return items

    def _language(self, record: dict[str, Any], cols: Columns, where: str) -> str:
        language = cols.text(record, "language", where, required=self.spec.language_required)
        if language is None:
            return "en"
        language = language.lower()
        if language not in ("en", "zh"):
            raise BenchmarkError(f"{where}: {cols.name('language')!r} must be en or zh, got {language!r}")
        return language

    def _closed(self, record: dict[str, Any], cols: Columns, answer: str, where: str) -> bool:
        given = cols.text(record, "answer_type", where, required=self.spec.answer_type_required)
        if given is None:
            return open_answers.polarity(answer) is not None
        if given.upper() not in ("CLOSED", "OPEN"):
            raise BenchmarkError(f"{where}: {cols.name('answer_type')!r} must be CLOSED or OPEN, got {given!r}")
        return given.upper() == "CLOSED"

    def questions(self, path: Path, columns: Mapping[str, str] | None = None) -> list[str]:
        cols = Columns.of(self.spec.columns, columns)
        found = []
        for _, where, record in benchmark.table_rows(self.files(path)):
            question = cols.text(record, "question", where)
            assert question is not None
            found.append(question)
        return found

    # -- scoring --------------------------------------------------------------------------------------------------

    def score(self, items: list[Item], records: list[Record], judge: Grader | None) -> dict[str, Any]:
        for item, record in zip(items, records, strict=True):
            grade(item, record)
        scores: dict[str, Any] = tally(records)
        if self.spec.language_required:
            languages = sorted({r["language"] for r in records})
            scores["by_language"] = {lang: tally([r for r in records if r["language"] == lang]) for lang in languages}
        return scores

    def markdown(self, scores: dict[str, Any]) -> list[str]:
        lines = ["| language | part | n | accuracy (%) | recall (%) | unparsed |", "|---|---|---|---|---|---|"]
        groups = [("all", scores), *(scores.get("by_language") or {}).items()]
        for language, group in groups:
            for part in (*PARTS, "overall"):
                if part in group:
                    s = group[part]
                    accuracy = "exact match " + fmt(s["accuracy"]) if part == "open" else fmt(s["accuracy"])
                    recall = fmt(s["recall"]) if "recall" in s else ""
                    unparsed = str(s["unparsed"]) if "unparsed" in s else ""
                    lines.append(f"| {language} | {part} | {s['n']} | {accuracy} | {recall} | {unparsed} |")
        return lines

    def headline(self, scores: dict[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        if "closed" in scores:
            out["closed %"] = scores["closed"]["accuracy"]
        if "open" in scores:
            out["open exact %"] = scores["open"]["accuracy"]
            out["open recall %"] = scores["open"]["recall"]
        if "overall" in scores:
            out["overall %"] = scores["overall"]["accuracy"]
        return out

    def item_scores(self, records: list[Record]) -> ItemScores:
        """Closed items and open items' exact match as right/wrong parts, open items' token recall as a part of
        per-item recalls; the overall (closed right and open exactly matched, over all items) as the item-weighted
        mean of the two right/wrong parts, exactly as :func:`tally` counts it. SLAKE's items break down by language,
        answer type and its published labels."""
        closed = [r for r in records if r["part"] == "closed"]
        opened = [r for r in records if r["part"] == "open"]
        parts: list[Part] = []
        metrics: list[Metric] = []
        if closed:
            parts.append(mcq_part("closed", closed))
            metrics.append(Metric("closed", "closed %", ("closed",)))
        if opened:
            parts.append(mcq_part("open_exact", opened))
            metrics.append(Metric("open_exact", "open exact %", ("open_exact",)))
            recalls = tuple(100.0 * float(r["recall"]) for r in opened)
            parts.append(Part("open_recall", tuple(r["id"] for r in opened), recalls, binary=False))
            metrics.append(Metric("open_recall", "open recall %", ("open_recall",)))
        right_wrong = tuple(p.name for p in parts if p.binary)
        if right_wrong:
            metrics.append(Metric("overall", "overall %", right_wrong))
        groupings: tuple[Grouping, ...] = ()
        if self.spec.language_required:  # SLAKE: both languages, the published answer types and labels
            answer_type = Grouping("answer_type", right_wrong, {r["id"]: str(r["part"]).upper() for r in records})
            groupings = (
                *meta_groupings(records, ("language",), right_wrong),
                answer_type,
                *meta_groupings(records, self.spec.meta_fields, right_wrong),
            )
        return ItemScores(tuple(parts), tuple(metrics), groupings)

    def model_index(self, dataset: dict[str, str], scores: dict[str, Any]) -> list[dict[str, Any]]:
        metrics = [
            metric("Closed accuracy", scores.get("closed", {}).get("accuracy")),
            metric("Open exact match", scores.get("open", {}).get("accuracy"), "exact_match"),
            metric("Open token recall", scores.get("open", {}).get("recall"), "recall"),
            metric("Overall accuracy", scores.get("overall", {}).get("accuracy")),
        ]
        return result("visual-question-answering", self.spec.title, dataset, metrics)


def grade(item: Item, record: Record) -> None:
    """One answered VQA item, written into its record: the answer span (or verdict), right or wrong, recall."""
    output, answer = record["output"], item.answer_texts[0]
    record.update(part=item.meta["part"], language=item.meta["language"], answer=answer)
    gold = open_answers.polarity(answer) if item.meta["yes_no"] else None
    if gold is not None:
        said = open_answers.verdict(output)
        record.update(parsed=said, correct=said == gold, decided_by="rule" if said else "unparsed")
        return
    span = open_answers.answer_span(output)
    record.update(
        parsed=span,
        correct=open_answers.exact_match(output, item.answer_texts),
        decided_by="rule" if span else "unparsed",
    )
    if item.meta["part"] == "open":
        record["recall"] = open_answers.token_recall(output, answer)


def _part(records: Sequence[Record], recall: bool) -> dict[str, Any]:
    n = len(records)
    correct = sum(bool(r["correct"]) for r in records)
    out: dict[str, Any] = {"n": n, "correct": correct, "accuracy": 100.0 * correct / n}
    out["unparsed"] = sum(r["decided_by"] == "unparsed" for r in records)
    if recall:
        out["recall"] = 100.0 * sum(r["recall"] for r in records) / n
    return out


def tally(records: Sequence[Record]) -> dict[str, Any]:
    """closed / open / overall of graded records (a part without items is left out)."""
    out: dict[str, Any] = {}
    for part in PARTS:
        chosen = [r for r in records if r["part"] == part]
        if chosen:
            out[part] = _part(chosen, recall=part == "open")
    if records:
        out["overall"] = _part(records, recall=False)
    return out


VQA_RAD = VqaBenchmark(
    VqaSpec(
        kind="vqa_rad",
        title="VQA-RAD",
        hub="flaviagiammarino/vqa-rad",
        folder_files=("data/test-*.parquet", "test-*.parquet"),
        columns={"question": "question", "answer": "answer", "image": "image"},
    )
)
PATH_VQA = VqaBenchmark(
    VqaSpec(
        kind="path_vqa",
        title="PathVQA",
        hub="flaviagiammarino/path-vqa",
        folder_files=("data/test-*.parquet", "test-*.parquet"),
        columns={"question": "question", "answer": "answer", "image": "image"},
    )
)
SLAKE = VqaBenchmark(
    VqaSpec(
        kind="slake",
        title="SLAKE",
        hub="BoKelvin/SLAKE",
        folder_files=("test.json",),
        columns={
            "id": "qid",
            "question": "question",
            "answer": "answer",
            "image": "img_name",
            "answer_type": "answer_type",
            "language": "q_lang",
        },
        answer_type_required=True,
        language_required=True,
        image_subdir="imgs",
        meta_fields=("modality", "location", "content_type", "base_type"),
    )
)
