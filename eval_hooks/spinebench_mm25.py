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
from spinegpt.eval_hooks.benchmark import BenchmarkError, Grader, Item, Record, fmt, metric, result

TASKS = {"spine_disease_classification": "diagnosis", "spine_lesion_localization": "localisation"}


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
            items.append(Item(item_id, task, question, images, options, answer, multi=task == "localisation"))
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
        lines = ["| task | n | accuracy | precision | recall |", "|---|---|---|---|---|"]
        if "diagnosis" in scores:
            lines.append(f"| diagnosis | {scores['diagnosis']['n']} | {fmt(scores['diagnosis']['accuracy'])} | | |")
        if "localisation" in scores:
            s = scores["localisation"]
            lines.append(
                f"| localisation | {s['n']} | {fmt(s['accuracy'])} | {fmt(s['precision'])} | {fmt(s['recall'])} |"
            )
        return lines

    def headline(self, scores: dict[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        if "diagnosis" in scores:
            out["diagnosis %"] = 100 * scores["diagnosis"]["accuracy"]
        for name in ("accuracy", "precision", "recall"):
            if name in scores.get("localisation", {}):
                out[f"localisation {name} %"] = 100 * scores["localisation"][name]
        return out

    def model_index(self, dataset: dict[str, str], scores: dict[str, Any]) -> list[dict[str, Any]]:
        metrics = [
            metric("Diagnosis accuracy", scores.get("diagnosis", {}).get("accuracy")),
            metric("Localisation accuracy", scores.get("localisation", {}).get("accuracy")),
            metric("Localisation precision", scores.get("localisation", {}).get("precision"), "precision"),
            metric("Localisation recall", scores.get("localisation", {}).get("recall"), "recall"),
        ]
        return result("multiple-choice", "Spine diagnosis and localisation", dataset, metrics)


BENCHMARK = SpineBenchMM25()
