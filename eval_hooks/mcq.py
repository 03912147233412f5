"""Multiple-choice benchmarks read from the files as published: PMC-VQA (image) and MedQA (text). One reader
(:class:`McqBenchmark`) configured per benchmark (:class:`McqSpec`); a column map (``columns:``) points the same
kinds at a user's own files. Answers are read by ``answers.parse_choices`` (and the optional LLM extractor) like
every multiple-choice answer of this repository; the score is accuracy, an unparsed answer wrong and counted.

**The files** (field names checked against the dataset cards and the uploaders' own loaders, 2026-11):

* ``pmc_vqa`` -- ``xmcmic/PMC-VQA``: ``test_clean.csv`` (the clean test set, about 2,000 rows; images
  ``images/<Figure_path>`` from ``images.zip``) or version 2's ``test_2.csv`` (about 33,000 rows; images
  ``figures/<Figure_path>`` from ``images_2.zip``). Columns ``Figure_path, Question, Answer, Choice A, Choice B,
  Choice C, Choice D, Answer_label`` (version 2 adds ``index, Caption, split``). Choice cells are written ``A:text``
  with stray spaces, quotes and non-breaking spaces (``" B:Focal uptake pattern"``): the label is stripped, as
  positional as the authors' own test code treats it (MedVInT ``PMC_QA_Dataset.py`` rewrites it by the column's
  position), and the text cleaned (NFKC, spaces, quotes). The correct letter is ``Answer_label`` where the file has
  it, else ``Answer`` (a letter or an option text). Checked: the dataset card (both README revisions: the first
  spells the column ``Anwser``), MedVInT's loader, MedEvalKit's ``PMC_VQA.py`` (which reads ``test_2.csv``
  positionally). Not checked: every row of the published files.
* ``medqa`` -- ``GBaker/MedQA-USMLE-4-options``: ``phrases_no_exclude_test.jsonl``, 1,273 rows of ``{question,
  answer (the correct option's text), options {A..D}, meta_info, answer_idx}`` (and ``metamap_phrases``). The
  answer text must be the text of option ``answer_idx``; a row where it is not is refused. Checked: the dataset
  card and file listing, the original MedQA release's key names.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import benchmark
from spinegpt.eval_hooks.benchmark import (
    LETTERS,
    BenchmarkError,
    Columns,
    Grader,
    Item,
    ItemScores,
    Metric,
    Record,
    fmt,
    mcq_part,
    metric,
    result,
)

CHOICE_FIELDS = tuple(f"choice_{letter}" for letter in LETTERS)
FIELDS = ("id", "question", "options", *CHOICE_FIELDS, "answer", "answer_text", "image")
"""What the reader asks of a row: the options as one field (an object letter -> text, or a list) or one column per
letter (``choice_A`` ...), the correct letter (``answer``) and/or the correct text (``answer_text``)."""
_QUOTES = "\"'“”‘’`"
_LABEL = re.compile(rf"^\(?([{LETTERS}{LETTERS.lower()}])\)?\s*[:：.]?$")


@dataclass(frozen=True)
class McqSpec:
    """One multiple-choice benchmark as published."""

    kind: str
    title: str
    hub: str
    folder_files: tuple[str, ...]
    columns: Mapping[str, str]
    """Reader field -> the published column."""
    image_dirs: tuple[str, ...] = ()
    """Where images live beside the file, tried in order (PMC-VQA: ``images/`` for v1, ``figures/`` for v2);
    empty: a text-only benchmark."""
    check_answer_text: bool = False
    """Refuse a row whose answer text is not the text of its answer letter (MedQA ships both)."""


def clean_choice(cell: str, letter: str = "") -> str:
    """A published choice cell as option text: NFKC (non-breaking spaces become spaces), quotes and spaces trimmed,
    a leading label removed (``A:``, ``(A)``, ``A.``; a colon label of any letter, as PMC-VQA's labels are
    positional)."""
    text = unicodedata.normalize("NFKC", cell).strip().strip(_QUOTES).strip()
    own = rf"^\(?{letter}\s*[:：.)]\s*|" if letter else ""
    text = re.sub(rf"{own}^[{LETTERS}]\s*[:：]\s*", "", text, count=1)
    return re.sub(r"\s+", " ", text.strip().strip(_QUOTES)).strip()


class McqBenchmark:
    """A multiple-choice benchmark: read, score (accuracy), tables."""

    columns: tuple[str, ...] = FIELDS

    def __init__(self, spec: McqSpec):
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
            assert question is not None
            options = self._options(record, cols, where)
            answer = self._answer(record, cols, options, where)
            images = self._image(file, record, cols, image_root, where)
            task = "image_mcq" if images else "text_mcq"
            items.append(Item(item_id, task, question, images, options, answer))
        if not items:
            raise BenchmarkError(f"{path}: no items")
        return items

    def _options(self, record: dict[str, Any], cols: Columns, where: str) -> dict[str, str]:
        per_letter = [f for f in CHOICE_FIELDS if cols.name(f) in record]
        if not per_letter:
            return benchmark.options(cols.value(record, "options", where), "", f"{where} ({cols.name('options')})")
        options: dict[str, str] = {}
        for f in CHOICE_FIELDS:
            letter = f.removeprefix("choice_")
            cell = cols.text(record, f, where, required=False)
            text = clean_choice(cell, letter) if cell is not None else ""
            if not text:
                continue
            if len(options) != LETTERS.index(letter):
                raise BenchmarkError(f"{where}: {cols.name(f)!r} is filled but an earlier choice is empty")
            options[letter] = text
        if len(options) < 2:
            raise BenchmarkError(f"{where}: needs at least two filled choice columns, found {len(options)}")
        return options

    def _answer(self, record: dict[str, Any], cols: Columns, options: dict[str, str], where: str) -> list[str]:
        letter = cols.text(record, "answer", where, required=False)
        text = cols.text(record, "answer_text", where, required=False)
        if letter is None and text is None:
            raise BenchmarkError(
                f"{where}: no answer: neither {cols.name('answer')!r} (letter) nor {cols.name('answer_text')!r} (text)"
            )
        if letter is not None:
            bare = _LABEL.match(unicodedata.normalize("NFKC", letter).strip().strip(_QUOTES))
            key = bare.group(1).upper() if bare else clean_choice(letter)
            answer = benchmark.answer_letters(key, options, f"{where} ({cols.name('answer')})")
        else:
            assert text is not None
            answer = benchmark.answer_letters(clean_choice(text), options, f"{where} ({cols.name('answer_text')})")
        if len(answer) != 1:
            raise BenchmarkError(f"{where}: one correct option expected, got {answer}")
        if self.spec.check_answer_text and letter is not None and text is not None:
            expected = options[answer[0]]
            if _plain(text) != _plain(expected):
                raise BenchmarkError(
                    f"{where}: answer text {text!r} ({cols.name('answer_text')}) is not option {answer[0]} "
                    f"({expected!r}) that {cols.name('answer')!r} names"
                )
        return answer

    def _image(
        self, file: Path, record: dict[str, Any], cols: Columns, image_root: Path | None, where: str
    ) -> list[str]:
        if not self.spec.image_dirs and not cols.has(record, "image"):
            return []
        image_where = f"{where} ({cols.name('image')})"
        value = cols.value(record, "image", where)
        if isinstance(value, str) and image_root is None:
            # The file's folder decides the image folder: images/ for test_clean.csv, figures/ for test_2.csv.
            tried = [file.parent / d / value.strip() for d in self.spec.image_dirs] or [file.parent / value.strip()]
            found = next((p for p in tried if p.is_file()), None)
            if found is None:
                raise BenchmarkError(f"{image_where}: image not found: tried {', '.join(map(str, tried))}")
            return [str(found.resolve())]
        images = benchmark.images(value, image_root or file.parent, image_where)
        if len(images) != 1:
            raise BenchmarkError(f"{image_where}: one image expected, found {len(images)}")
        return images

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
        return {"overall": accuracy(records)} if records else {}

    def markdown(self, scores: dict[str, Any]) -> list[str]:
        lines = ["| part | n | accuracy (%) | unparsed |", "|---|---|---|---|"]
        if "overall" in scores:
            s = scores["overall"]
            lines.append(f"| all | {s['n']} | {fmt(s['accuracy'])} | {s['unparsed']} |")
        return lines

    def headline(self, scores: dict[str, Any]) -> dict[str, float]:
        return {"accuracy %": scores["overall"]["accuracy"]} if "overall" in scores else {}

    def item_scores(self, records: list[Record]) -> ItemScores:
        """Every item right or wrong: the accuracy is one part's mean."""
        if not records:
            return ItemScores((), ())
        return ItemScores((mcq_part("all", records),), (Metric("accuracy", "accuracy %", ("all",)),))

    def model_index(self, dataset: dict[str, str], scores: dict[str, Any]) -> list[dict[str, Any]]:
        return result(
            "multiple-choice", self.spec.title, dataset, [metric("Accuracy", scores.get("overall", {}).get("accuracy"))]
        )


def accuracy(records: list[Record]) -> dict[str, Any]:
    """n, correct, accuracy (percent) and unparsed of answered multiple-choice records (``correct`` set by the
    evaluator)."""
    n = len(records)
    correct = sum(bool(r["correct"]) for r in records)
    return {
        "n": n,
        "correct": correct,
        "accuracy": 100.0 * correct / n,
        "unparsed": sum(not r["parsed"] for r in records),
    }


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().strip(".").lower()


PMC_VQA = McqBenchmark(
    McqSpec(
        kind="pmc_vqa",
        title="PMC-VQA",
        hub="xmcmic/PMC-VQA",
        folder_files=("test_clean.csv",),
        columns={
            "question": "Question",
            "choice_A": "Choice A",
            "choice_B": "Choice B",
            "choice_C": "Choice C",
            "choice_D": "Choice D",
            "answer": "Answer_label",
            "answer_text": "Answer",
            "image": "Figure_path",
        },
        image_dirs=("images", "figures"),
    )
)
MEDQA = McqBenchmark(
    McqSpec(
        kind="medqa",
        title="MedQA (USMLE, 4 options)",
        hub="GBaker/MedQA-USMLE-4-options",
        folder_files=("phrases_no_exclude_test.jsonl",),
        columns={"question": "question", "options": "options", "answer": "answer_idx", "answer_text": "answer"},
        check_answer_text=True,
    )
)
