"""Metrics of the MM'25 SpineBench (Zhang et al.): disease diagnosis and lesion localisation, both multiple choice.

* Diagnosis: accuracy (one correct option of five, "Healthy" always among them).
* Localisation (one or more of L1/L2 ... L5/S1): instance-based exact-match accuracy, precision
  |pred ∩ gold| / |pred| (0 when nothing is predicted) and recall |pred ∩ gold| / |gold|, each averaged over items.

The file (``Silversorrow/SpineBench``): a JSON array (or JSONL) of
``{image, question, task: spine_disease_classification | spine_lesion_localization, answers | answer}``; options
come from an ``options`` field or from ``A. ...`` lines in the question; answers may be letters or option texts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import benchmark
from spinegpt.eval_hooks.benchmark import (
    BenchmarkError,
    Grader,
    Grouping,
    Item,
    ItemScores,
    Metric,
    Part,
    Record,
    fmt,
    metric,
    result,
)

TASKS = {"spine_disease_classification": "diagnosis", "spine_lesion_localization": "localisation"}
LABELS = ("disease", "level")
"""Item fields kept as labels for the breakdowns where a file has them; without them the disease is the correct
option of a diagnosis item and the level the correct options of a localisation item."""


def diagnosis_accuracy(predictions: Sequence[set[str]], references: Sequence[set[str]]) -> float:
    """Fraction of items whose single predicted option is the correct one (an unparsed answer is wrong)."""
    _same_length(predictions, references)
    if not references:
        raise ValueError("no items")
    return sum(p == r and len(p) == 1 for p, r in zip(predictions, references, strict=True)) / len(references)


def localisation_scores(predictions: list[set[str]], references: list[set[str]]) -> dict[str, float]:
    """Instance-based accuracy, precision and recall as fractions in [0, 1]."""
    _same_length(predictions, references)
    if not references:
        raise ValueError("no items")
    for i, gold in enumerate(references):
        if not gold:
            raise ValueError(f"item {i} has no correct option: recall is undefined")
    n = len(references)
    accuracy = sum(p == g for p, g in zip(predictions, references, strict=True)) / n
    precision = sum(len(p & g) / len(p) if p else 0.0 for p, g in zip(predictions, references, strict=True)) / n
    recall = sum(len(p & g) / len(g) for p, g in zip(predictions, references, strict=True)) / n
    return {"accuracy": accuracy, "precision": precision, "recall": recall}


def _diagnosed(record: Record) -> bool:
    """As :func:`diagnosis_accuracy` counts it: exactly the one correct option."""
    parsed, gold = set(record["parsed"]), set(record["answer"])
    return parsed == gold and len(parsed) == 1


def _part(name: str, records: list[Record], values: list[float], binary: bool) -> Part:
    return Part(name, tuple(r["id"] for r in records), tuple(values), binary)


def _label(record: Record, key: str) -> str | None:
    """The item's own label, else the text of its correct option(s) (the disease; the levels, joined)."""
    given = (record.get("meta") or {}).get(key)
    if given:
        return str(given)
    options = record.get("options") or {}
    texts = [str(options.get(letter, letter)) for letter in record.get("answer") or []]
    return " + ".join(texts) or None


def _same_length(predictions: Sequence[set[str]], references: Sequence[set[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} items")


class SpineBenchMM25:
    """The MM'25 SpineBench: disease diagnosis and lesion localisation, both multiple choice on spine images."""

    kind = "spinebench_mm25"

    columns: tuple[str, ...] = ()

    def files(self, path: Path) -> list[Path]:
        return benchmark.single_file(path)

    def read(self, path: Path, image_root: Path | None = None, columns: Mapping[str, str] | None = None) -> list[Item]:
        benchmark.single_file(path, columns)
        root = image_root or path.parent
        items = []
        for index, (where, record) in enumerate(benchmark.records(path)):
            if not isinstance(record, dict):
                raise BenchmarkError(f"{where}: item must be a JSON object")
            task = TASKS.get(record.get("task", ""))
            if task is None:
                raise BenchmarkError(f"{where}: task must be one of {sorted(TASKS)}, got {record.get('task')!r}")
            question = record.get("question")
            if not isinstance(question, str) or not question.strip():
                raise BenchmarkError(f"{where}: missing 'question'")
            options = benchmark.options(record.get("options"), question, where)
            raw_answer = record["answers"] if "answers" in record else record.get("answer")
            answer = benchmark.answer_letters(raw_answer, options, where)
            if task == "diagnosis" and len(answer) != 1:
                raise BenchmarkError(f"{where}: a diagnosis item has exactly one correct option, got {answer}")
            images = benchmark.images(record.get("image", record.get("images")), root, where)
            item_id = str(record.get("id", f"{task}-{index:05d}"))
            meta = {k: str(record[k]) for k in LABELS if record.get(k) not in (None, "")}
            items.append(
                Item(item_id, task, question, images, options, answer, multi=task == "localisation", meta=meta)
            )
        if not items:
            raise BenchmarkError(f"{path}: no items")
        return items

    def questions(self, path: Path, columns: Mapping[str, str] | None = None) -> list[str]:
        benchmark.single_file(path, columns)
        return benchmark.questions(path)

    def score(self, items: list[Item], records: list[Record], judge: Grader | None) -> dict[str, Any]:
        scores: dict[str, Any] = {}
        diagnosis = [r for r in records if r["task"] == "diagnosis"]
        if diagnosis:
            scores["diagnosis"] = {
                "accuracy": diagnosis_accuracy(
                    [set(r["parsed"]) for r in diagnosis], [set(r["answer"]) for r in diagnosis]
                ),
                "n": len(diagnosis),
                "unparsed": sum(not r["parsed"] for r in diagnosis),
            }
        localisation = [r for r in records if r["task"] == "localisation"]
        if localisation:
            scores["localisation"] = {
                **localisation_scores(
                    [set(r["parsed"]) for r in localisation], [set(r["answer"]) for r in localisation]
                ),
                "n": len(localisation),
                "unparsed": sum(not r["parsed"] for r in localisation),
            }
        return scores

    def markdown(self, scores: dict[str, Any]) -> list[str]:
        lines = ["| task | n | accuracy (%) | precision (%) | recall (%) |", "|---|---|---|---|---|"]
        if "diagnosis" in scores:
            s = scores["diagnosis"]
            lines.append(f"| diagnosis | {s['n']} | {fmt(100 * s['accuracy'])} | | |")
        if "localisation" in scores:
            s = scores["localisation"]
            figures = " | ".join(fmt(100 * s[k]) for k in ("accuracy", "precision", "recall"))
            lines.append(f"| localisation | {s['n']} | {figures} |")
        return lines

    def headline(self, scores: dict[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        if "diagnosis" in scores:
            out["diagnosis %"] = 100 * scores["diagnosis"]["accuracy"]
        for name in ("accuracy", "precision", "recall"):
            if name in scores.get("localisation", {}):
                out[f"localisation {name} %"] = 100 * scores["localisation"][name]
        return out

    def item_scores(self, records: list[Record]) -> ItemScores:
        """Diagnosis and localisation exact match as right/wrong items; localisation precision and recall as each
        item's own fraction (x 100); breakdowns by task, disease (diagnosis items) and level (localisation items)."""
        diagnosis = [r for r in records if r["task"] == "diagnosis"]
        localisation = [r for r in records if r["task"] == "localisation"]
        parts: list[Part] = []
        metrics: list[Metric] = []
        if diagnosis:
            right = [_diagnosed(r) for r in diagnosis]
            parts.append(_part("diagnosis", diagnosis, [100.0 * ok for ok in right], binary=True))
            metrics.append(Metric("diagnosis", "diagnosis %", ("diagnosis",)))
        if localisation:
            pairs = [(set(r["parsed"]), set(r["answer"])) for r in localisation]
            per_item = {
                "accuracy": [100.0 * (p == g) for p, g in pairs],
                "precision": [100.0 * len(p & g) / len(p) if p else 0.0 for p, g in pairs],
                "recall": [100.0 * len(p & g) / len(g) for p, g in pairs],
            }
            for name, values in per_item.items():
                parts.append(_part(f"localisation_{name}", localisation, values, binary=name == "accuracy"))
                metrics.append(Metric(f"localisation_{name}", f"localisation {name} %", (f"localisation_{name}",)))
        binary = tuple(p.name for p in parts if p.binary)
        groupings = [Grouping("task", binary, {r["id"]: r["task"] for r in [*diagnosis, *localisation]})]
        if diagnosis:
            groupings.append(Grouping("disease", ("diagnosis",), {r["id"]: _label(r, "disease") for r in diagnosis}))
        if localisation:
            labels = {r["id"]: _label(r, "level") for r in localisation}
            groupings.append(Grouping("level", ("localisation_accuracy",), labels))
        return ItemScores(tuple(parts), tuple(metrics), tuple(groupings))

    def model_index(self, dataset: dict[str, str], scores: dict[str, Any]) -> list[dict[str, Any]]:
        metrics = [
            metric("Diagnosis accuracy", scores.get("diagnosis", {}).get("accuracy")),
            metric("Localisation accuracy", scores.get("localisation", {}).get("accuracy")),
            metric("Localisation precision", scores.get("localisation", {}).get("precision"), "precision"),
            metric("Localisation recall", scores.get("localisation", {}).get("recall"), "recall"),
        ]
        return result("multiple-choice", "Spine diagnosis and localisation", dataset, metrics)


BENCHMARK = SpineBenchMM25()
