"""MMMU's Health & Medicine subjects (validation: 5 subjects x 30 = 150 questions), read as ``MMMU/MMMU`` publishes
them and scored by MMMU's own rules.

**The files** (checked against the MMMU dataset card's features and the MMMU repository's ``eval/data_utils.py`` and
``eval/eval_utils.py``, and MedEvalKit's ``MMMU/eval_val.py``, 2026-11): one parquet per subject and split,
``<Subject>/validation-00000-of-00001.parquet`` for ``Basic_Medical_Science``, ``Clinical_Medicine``,
``Diagnostics_and_Laboratory_Medicine``, ``Pharmacy``, ``Public_Health``; columns ``id`` (``validation_Pharmacy_12``),
``question``, ``options`` (a Python list written as a string: ``"['A', 'B']"``; ``"[]"`` for open questions),
``explanation``, ``image_1`` .. ``image_7`` (the datasets Image feature; null when unused), ``img_type`` (a list
string), ``answer`` (a letter for multiple choice, up to I; text for open questions; ``?`` in the test split, whose
answers are withheld), ``topic_difficulty``, ``question_type`` (``multiple-choice`` | ``open``), ``subfield``. The
question and the options refer to their images as ``<image N>``.

Give the download folder (the five subjects' validation files are read; a missing subject is an error, not a
smaller benchmark) or one subject's parquet file.

**Prompt.** The item's images (every non-null ``image_N``, in order, so ``<image N>`` is the N-th image shown) come
first; the question keeps its ``<image N>`` references; the options are lettered below it; a placeholder whose
column is null is refused.

**Scoring** (MMMU's ``eval_utils.py``): a multiple-choice answer is right when the letter read from the reply is
the answer (the reply may give the letter or the option's text: ``answers.parse_choices``); an open answer is right
when a number it states equals the answer's (to 2 decimals) or the answer's text is contained in one of its key
phrases (:func:`parse_open_response`, :func:`eval_open`). Accuracy per subject and over all (MMMU reports the
micro average). One deliberate difference: where MMMU's parser finds no letter it *guesses one at random*
(``random.choice``, seed 42); here such an answer is unparsed, scored wrong and counted, like every other
multiple-choice answer of this repository (a guess would credit a non-answer with 1/k expected accuracy).

A row whose answer is withheld (``?``: the test split) cannot be scored by MMMU's rules: it is kept out of
generation and counted as unusable, never dropped silently.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import benchmark
from spinegpt.eval_hooks.answers import decisive_part
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
    meta_groupings,
    metric,
    result,
)

SUBJECTS = (
    "Basic_Medical_Science",
    "Clinical_Medicine",
    "Diagnostics_and_Laboratory_Medicine",
    "Pharmacy",
    "Public_Health",
)
"""MMMU's Health & Medicine discipline (``DOMAIN_CAT2SUB_CAT`` of its ``data_utils.py``)."""
IMAGE_FIELDS = tuple(f"image_{n}" for n in range(1, 8))
FIELDS = ("id", "question", "options", "answer", "question_type", *IMAGE_FIELDS)
_PLACEHOLDER = re.compile(r"<image (\d+)>")
_HIDDEN = "?"
OPEN_INSTRUCTION = "short"
"""MMMU's own prompt for open questions ("Answer the question using a single word or phrase.": the
``benchmark.PROMPT_TEMPLATE`` entry)."""


class Mmmu:
    """MMMU, Health & Medicine."""

    kind = "mmmu"
    columns: tuple[str, ...] = FIELDS

    def files(self, path: Path) -> list[Path]:
        if path.is_file():
            return benchmark.whole_split([path])
        if not path.is_dir():
            raise BenchmarkError(f"{path}: no such file or folder")
        found, missing = [], []
        for subject in SUBJECTS:
            shards = sorted((path / subject).glob("validation-*.parquet"))
            if shards:
                found += shards
            else:
                missing.append(subject)
        if missing:
            raise BenchmarkError(
                f"{path}: no {', '.join(f'{s}/validation-*.parquet' for s in missing)}; MMMU Health & Medicine "
                f"is the five subjects {', '.join(SUBJECTS)} (or give one subject's file)"
            )
        return benchmark.whole_split(found)

    def read(self, path: Path, image_root: Path | None = None, columns: Mapping[str, str] | None = None) -> list[Item]:
        cols = Columns.of({}, columns)
        items, seen = [], set()
        for file, where, record in benchmark.table_rows(self.files(path)):
            item_id = cols.text(record, "id", where)
            question = cols.text(record, "question", where)
            kind = cols.text(record, "question_type", where)
            answer = cols.text(record, "answer", where)
            assert item_id is not None and question is not None and kind is not None and answer is not None
            if item_id in seen:
                raise BenchmarkError(f"{where}: repeated id {item_id!r}")
            seen.add(item_id)
            if kind not in ("multiple-choice", "open"):
                raise BenchmarkError(
                    f"{where}: {cols.name('question_type')!r} must be multiple-choice or open, got {kind!r}"
                )
            options = _option_list(cols.value(record, "options", where), f"{where} ({cols.name('options')})")
            subject = _subject(file, item_id)
            meta = {"subject": subject, "question_type": kind}
            meta.update({k: record[k] for k in ("subfield", "topic_difficulty", "img_type") if record.get(k)})
            images = self._images(record, cols, question, options, image_root or file.parent, where)
            unusable = "answer withheld ('?': the test split)" if answer == _HIDDEN else None
            if kind == "multiple-choice":
                lettered = benchmark.options(options, question, f"{where} ({cols.name('options')})")
                letters = [] if unusable else _answer_letter(answer, lettered, f"{where} ({cols.name('answer')})")
                items.append(Item(item_id, kind, question, images, lettered, letters, meta=meta, unusable=unusable))
            else:
                accepted = [] if unusable else _accepted(answer)
                items.append(
                    Item(
                        item_id,
                        kind,
                        question,
                        images,
                        answer_texts=accepted,
                        instruction=OPEN_INSTRUCTION,
                        meta=meta,
                        unusable=unusable,
                    )
                )
        if not items:
            raise BenchmarkError(f"{path}: no items")
        return items

    def _images(
        self,
        record: dict[str, Any],
        cols: Columns,
        question: str,
        options: list[str],
        root: Path,
        where: str,
    ) -> list[str]:
        present = [n for n, f in enumerate(IMAGE_FIELDS, 1) if record.get(cols.name(f)) is not None]
        for n in sorted({int(m) for text in (question, *options) for m in _PLACEHOLDER.findall(text)}):
            if n not in present:
                column = cols.name(f"image_{n}") if n <= len(IMAGE_FIELDS) else f"image_{n}"
                raise BenchmarkError(f"{where}: the question refers to <image {n}> but {column!r} is empty")
        images: list[str] = []
        for n in present:
            column = cols.name(f"image_{n}")
            images += benchmark.images(record[column], root, f"{where} ({column})")
        return images

    def questions(self, path: Path, columns: Mapping[str, str] | None = None) -> list[str]:
        cols = Columns.of({}, columns)
        found = []
        for _, where, record in benchmark.table_rows(self.files(path)):
            question = cols.text(record, "question", where)
            assert question is not None
            found.append(_PLACEHOLDER.sub(" ", question))  # training data never carries MMMU's placeholders
        return found

    # -- scoring --------------------------------------------------------------------------------------------------

    def score(self, items: list[Item], records: list[Record], judge: Grader | None) -> dict[str, Any]:
        for item, record in zip(items, records, strict=True):
            record["subject"] = item.meta["subject"]
            if not item.is_mcq:
                predictions = parse_open_response(_reply(record["output"]))
                record.update(
                    answer=item.answer_texts,
                    parsed=[str(p) for p in predictions],
                    correct=eval_open(item.answer_texts, predictions),
                    decided_by="rule" if record["output"].strip() else "unparsed",
                )
        scores: dict[str, Any] = {}
        for name, kind in (("multiple_choice", "multiple-choice"), ("open", "open")):
            chosen = [r for r in records if r["task"] == kind]
            if chosen:
                scores[name] = _accuracy(chosen)
        if records:
            scores["overall"] = _accuracy(records)
            subjects = sorted({r["subject"] for r in records})
            scores["by_subject"] = {s: _accuracy([r for r in records if r["subject"] == s]) for s in subjects}
        return scores

    def markdown(self, scores: dict[str, Any]) -> list[str]:
        lines = ["| part | n | accuracy (%) |", "|---|---|---|"]
        for part in ("multiple_choice", "open", "overall"):
            if part in scores:
                lines.append(f"| {part.replace('_', ' ')} | {scores[part]['n']} | {fmt(scores[part]['accuracy'])} |")
        for subject, s in (scores.get("by_subject") or {}).items():
            lines.append(f"| {subject.replace('_', ' ')} | {s['n']} | {fmt(s['accuracy'])} |")
        return lines

    def headline(self, scores: dict[str, Any]) -> dict[str, float]:
        return {"accuracy %": scores["overall"]["accuracy"]} if "overall" in scores else {}

    def item_scores(self, records: list[Record]) -> ItemScores:
        """Multiple-choice and open questions as right/wrong parts; the accuracy over both as their item-weighted
        mean (MMMU's micro average), each kind's accuracy apart; broken down by subject."""
        parts = tuple(
            mcq_part(name, chosen)
            for name, kind in (("multiple_choice", "multiple-choice"), ("open", "open"))
            if (chosen := [r for r in records if r["task"] == kind])
        )
        names = tuple(p.name for p in parts)
        metrics = [Metric(name, f"{name.replace('_', ' ')} %", (name,)) for name in names]
        if names:
            metrics.append(Metric("accuracy", "accuracy %", names))
        return ItemScores(parts, tuple(metrics), meta_groupings(records, ("subject",), names))

    def model_index(self, dataset: dict[str, str], scores: dict[str, Any]) -> list[dict[str, Any]]:
        metrics = [metric("Accuracy (Health & Medicine)", scores.get("overall", {}).get("accuracy"))]
        return result("multiple-choice", "MMMU Health & Medicine", dataset, metrics)


def _accuracy(records: Sequence[Record]) -> dict[str, Any]:
    n = len(records)
    correct = sum(bool(r["correct"]) for r in records)
    return {"n": n, "correct": correct, "accuracy": 100.0 * correct / n}


def _option_list(value: Any, where: str) -> list[str]:
    """MMMU's options: a Python list written as a string (or a real list, as other conversions store it)."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise BenchmarkError(f"{where}: not a list of options: {value[:80]!r}") from None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str | int | float) for v in value):
        raise BenchmarkError(f"{where}: options must be a list of texts")
    if len(value) > len(LETTERS):
        raise BenchmarkError(f"{where}: {len(value)} options; at most {len(LETTERS)} ({LETTERS[0]}-{LETTERS[-1]})")
    return [str(v) for v in value]


def _answer_letter(answer: str, options: dict[str, str], where: str) -> list[str]:
    letter = answer.strip().upper()
    if letter not in options:
        raise BenchmarkError(f"{where}: answer {answer!r} is not one of the options' letters {''.join(options)}")
    return [letter]


def _accepted(answer: str) -> list[str]:
    """An open answer: a text, or several accepted ones written as a Python list (``"['1.5', '1.50']"``)."""
    if answer.startswith("[") and answer.endswith("]"):
        try:
            value = ast.literal_eval(answer)
        except (ValueError, SyntaxError):
            return [answer]
        if isinstance(value, list) and value and all(isinstance(v, str | int | float) for v in value):
            return [str(v) for v in value]
    return [answer]


def _subject(file: Path, item_id: str) -> str:
    if file.parent.name in SUBJECTS:
        return file.parent.name
    match = re.match(r"^(?:dev|validation|test)_(.+)_\d+$", item_id)
    return match.group(1) if match else "unknown"


def _reply(output: str) -> str:
    """What MMMU's open-answer parser reads: a marked answer (tags, ``\\boxed{}``) where the reply has one, as
    MedEvalKit extracts it first, else the whole reply (``<think>`` removed)."""
    region, explicit = decisive_part(output)
    return region if explicit else (region or output)


# -- MMMU's open-answer rules (eval/eval_utils.py), kept as they are so scores compare with MMMU's own -----------


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def normalize_str(text: str) -> list[str | float]:
    """MMMU's ``normalize_str``: a number as a float rounded to 2 decimals, else lower-cased text (a single
    character padded with a space on either side, to avoid trivial matches)."""
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
    """MMMU's ``extract_numbers``: numbers with thousands commas, in scientific notation, and plain."""
    with_commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", text)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", text)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", text)
    return with_commas + scientific + simple


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    sub_responses = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    keys = []
    for index, sub in enumerate(sub_responses):
        if index == len(sub_responses) - 1:
            indicators = [*indicators, "="]  # the last sentence may be an equation
        shortest = None
        for indicator in indicators:
            if indicator in sub:
                tail = sub.split(indicator)[-1].strip()
                if shortest is None or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    return keys or [response]


def parse_open_response(response: str) -> list[str | float]:
    """MMMU's ``parse_open_response``: the key phrases of a reply and the numbers in them, normalised."""
    keys = _key_subresponses(response)
    candidates = list(keys)
    for key in keys:
        candidates += extract_numbers(key)
    normalised: list[str | float] = []
    for candidate in candidates:
        normalised += normalize_str(candidate)
    return list(dict.fromkeys(normalised))  # MMMU takes set(); order kept here so records are reproducible


def eval_open(answers: Sequence[str], predictions: Sequence[str | float]) -> bool:
    """MMMU's ``eval_open``: a text answer contained in a text prediction, or a number equal to a predicted one."""
    gold: list[str | float] = []
    for answer in answers:
        gold += normalize_str(answer)
    for prediction in predictions:
        if isinstance(prediction, str):
            if any(isinstance(g, str) and g in prediction for g in gold):
                return True
        elif prediction in gold:
            return True
    return False


BENCHMARK = Mmmu()
