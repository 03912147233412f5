"""SpineBench scoring exactly as the SpineMed-450k paper defines it (§4.2, Table 6, Appendix D).

* Close-ended QA: accuracy (%) on text-only items and on image items separately, and their sample-weighted mean.
* Reports: an LLM judge scores ten dimensions 1-5; a section score is the mean of its dimensions; the report score
  is 20 x the mean of the five section scores (0-100).
* Overall: sum over {text MCQ, image MCQ, report} of w_k * P_k with w_k = n_k / sum(n).

Every number here is computed from item-level results; nothing is copied from the paper.

The benchmark file (SpineMed format), one JSON object per line::

    {"id": "sb-0001", "type": "mcq", "question": "...", "options": {"A": "...", "B": "..."},
     "answer": "C" | ["B", "D"], "images": ["relative/or/absolute.png"],            # images: optional
     "subspecialty": "Trauma", "source": "textbook", "language": "en"}              # metadata: optional
    {"id": "sb-r-001", "type": "report", "prompt": "...", "images": [...], "reference": "..."}   # reference: optional

MCQ items with images are the "image" part of the score, the others the "text" part. Image paths are resolved
against ``image_root`` (default: the file's folder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import benchmark
from spinegpt.eval_hooks.benchmark import (
    BenchmarkError,
    Grader,
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
from spinegpt.eval_hooks.rubric import DIMENSIONS, SECTIONS

PART_NAMES = ("text", "image", "report")
PART_LABELS = {"text": "text MCQ", "image": "image MCQ", "report": "judged report (no judge, or no report item)"}
GROUPS = ("subspecialty", "source", "language")
"""Item labels the breakdowns group multiple-choice accuracy by (the paper's Tables 10 and 11)."""


@dataclass(frozen=True)
class McqResult:
    correct: int
    total: int
    unparsed: int

    @property
    def accuracy(self) -> float:
        if self.total == 0:
            raise ValueError("accuracy of zero items is undefined")
        return 100.0 * self.correct / self.total


def mcq_result(predictions: Sequence[Sequence[str]], answers: Sequence[Sequence[str]]) -> McqResult:
    """Exact-set accuracy; an empty prediction (unparsed answer) is wrong and counted."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} items")
    correct = sum(bool(p) and sorted(p) == sorted(a) for p, a in zip(predictions, answers, strict=True))
    unparsed = sum(not p for p in predictions)
    return McqResult(correct=correct, total=len(answers), unparsed=unparsed)


def weighted_mean(parts: Mapping[str, tuple[float, int]]) -> float:
    """sum(n_k * score_k) / sum(n_k); every part must have a positive count."""
    if not parts:
        raise ValueError("no parts to average")
    for name, (_, n) in parts.items():
        if n <= 0:
            raise ValueError(f"part {name!r} has {n} items; a weighted mean needs every part to have items")
    total = sum(n for _, n in parts.values())
    return sum(score * n for score, n in parts.values()) / total


def mcq_average(text: tuple[float, int], image: tuple[float, int]) -> float:
    """The close-ended 'Avg.' column: text and image accuracy weighted by their item counts."""
    return weighted_mean({"text": text, "image": image})


def section_scores(dims: Mapping[str, float]) -> dict[str, float]:
    missing = [d for d in DIMENSIONS if d not in dims]
    if missing:
        raise ValueError(f"missing report dimension(s): {', '.join(missing)}")
    for name in DIMENSIONS:
        if not 1 <= dims[name] <= 5:
            raise ValueError(f"dimension {name!r} = {dims[name]} is outside 1-5")
    return {section: sum(dims[d] for d in names) / len(names) for section, names in SECTIONS.items()}


def report_score(dims: Mapping[str, float]) -> float:
    """20 x the mean of the five section means (each the mean of its dimensions): 0-100."""
    sections = section_scores(dims)
    return 20.0 * sum(sections.values()) / len(sections)


def mean_dimensions(judged: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-dimension mean over the judged reports (failed judgments are not in ``judged``)."""
    if not judged:
        raise ValueError("no judged reports")
    return {d: sum(j[d] for j in judged) / len(judged) for d in DIMENSIONS}


def overall_score(parts: Mapping[str, tuple[float, int]]) -> float:
    """Σ n_k·P_k / Σ n_k over exactly {text, image, report}; a missing or empty part is an error, not a zero."""
    missing = [p for p in PART_NAMES if p not in parts]
    extra = [p for p in parts if p not in PART_NAMES]
    if missing or extra:
        raise ValueError(f"overall needs parts {PART_NAMES}; missing {missing}, unexpected {extra}")
    return weighted_mean(parts)


# -- the benchmark ----------------------------------------------------------------------------------------------


class SpineBench:
    """SpineBench in the SpineMed format: multiple choice (text and image) and judged reports."""

    kind = "spinebench"

    columns: tuple[str, ...] = ()

    def files(self, path: Path) -> list[Path]:
        return benchmark.single_file(path)

    def read(self, path: Path, image_root: Path | None = None, columns: Mapping[str, str] | None = None) -> list[Item]:
        benchmark.single_file(path, columns)
        root = image_root or path.parent
        items, seen = [], set()
        for where, record in benchmark.records(path):
            if not isinstance(record, dict):
                raise BenchmarkError(f"{where}: item must be a JSON object")
            kind, item_id = record.get("type"), record.get("id")
            if not isinstance(item_id, str) or not item_id:
                raise BenchmarkError(f"{where}: missing 'id'")
            if item_id in seen:
                raise BenchmarkError(f"{where}: duplicate id {item_id!r}")
            seen.add(item_id)
            images = benchmark.images(record.get("images"), root, where)
            meta = {k: record[k] for k in ("subspecialty", "source", "language") if k in record}
            if kind == "mcq":
                question = record.get("question")
                if not isinstance(question, str) or not question.strip():
                    raise BenchmarkError(f"{where}: mcq needs a 'question'")
                options = benchmark.options(record.get("options"), question, where)
                answer = benchmark.answer_letters(record.get("answer"), options, where)
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

    def questions(self, path: Path, columns: Mapping[str, str] | None = None) -> list[str]:
        benchmark.single_file(path, columns)
        return benchmark.questions(path)

    def score(self, items: list[Item], records: list[Record], judge: Grader | None) -> dict[str, Any]:
        scores: dict[str, Any] = {}
        parts: dict[str, tuple[float, int]] = {}
        for task, part in (("text_mcq", "text"), ("image_mcq", "image")):
            chosen = [r for r in records if r["task"] == task]
            if chosen:
                mcq = mcq_result([r["parsed"] for r in chosen], [r["answer"] for r in chosen])
                scores[part] = {
                    "accuracy": mcq.accuracy,
                    "n": mcq.total,
                    "correct": mcq.correct,
                    "unparsed": mcq.unparsed,
                }
                parts[part] = (mcq.accuracy, mcq.total)
        if "text" in parts and "image" in parts:
            scores["mcq_average"] = mcq_average(parts["text"], parts["image"])
        reports = [(i, r) for i, r in zip(items, records, strict=True) if i.task == "report"]
        if reports:
            report: dict[str, Any] = {"n": len(reports)}
            if judge is None:
                report["status"] = "not judged: no judge configured (--judge-url / eval.judge)"
            else:
                judgments = judge.judge_many([(i.question, r["output"], i.reference) for i, r in reports])
                for (_, record), judgment in zip(reports, judgments, strict=True):
                    record["judgment"] = judgment.to_json()
                    if judgment.scores:
                        record["report_score"] = report_score(judgment.scores)
                judged = [j.scores for j in judgments if j.scores]
                report.update(judged=len(judged), failed=len(judgments) - len(judged))
                if judged:
                    dims = mean_dimensions(judged)
                    report.update(dimensions=dims, sections=section_scores(dims), score=report_score(dims))
                    parts["report"] = (report["score"], len(judged))
                if report["failed"]:
                    # Scored from the judged subset only: never shown as if it were the whole benchmark.
                    report["partial"] = f"{len(judged)} of {len(reports)} reports judged"
            scores["report"] = report
        missing = [PART_LABELS[p] for p in PART_NAMES if p not in parts]
        scores["overall"] = overall_score(parts) if not missing else None
        if missing:
            # Said for the people reading the result: which part is absent, and why an overall needs it.
            scores["overall_missing"] = (
                f"the overall weighs text MCQ, image MCQ and judged reports by their item counts; this evaluation "
                f"has no {' and no '.join(missing)}"
            )
        if scores["overall"] is not None and scores.get("report", {}).get("partial"):
            scores["overall_partial"] = scores["report"]["partial"]
        return scores

    def markdown(self, scores: dict[str, Any]) -> list[str]:
        lines = ["| part | n | score |", "|---|---|---|"]
        for part in ("text", "image"):
            if part in scores:
                s = scores[part]
                lines.append(f"| {part} MCQ accuracy (%) | {s['n']} | {fmt(s['accuracy'])} |")
        if "mcq_average" in scores:
            n = scores["text"]["n"] + scores["image"]["n"]
            lines.append(f"| MCQ average (%) | {n} | {fmt(scores['mcq_average'])} |")
        report = scores.get("report")
        if report:
            if "score" in report:
                sections = ", ".join(f"{k} {v:.2f}" for k, v in report["sections"].items())
                lines.append(f"| report (0-100) | {report['judged']} | {fmt(report['score'])} ({sections}) |")
            else:
                lines.append(f"| report | {report['n']} | {report.get('status', 'no judged report')} |")
            if report.get("failed"):
                lines.append(f"| report judgments failed | {report['failed']} | not scored |")
        partial = f" (partial: {scores['overall_partial']})" if scores.get("overall_partial") else ""
        lines.append(f"| overall | | {fmt(scores['overall']) if scores['overall'] is not None else 'n/a'}{partial} |")
        if scores.get("overall_missing"):
            lines += ["", f"overall not computed: {scores['overall_missing']}"]
        return lines

    def headline(self, scores: dict[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in ("text", "image"):
            if part in scores:
                out[f"{part} MCQ %"] = scores[part]["accuracy"]
        partial = " (partial)" if scores.get("overall_partial") else ""
        if isinstance(scores.get("mcq_average"), int | float):
            out["MCQ avg %"] = scores["mcq_average"]
        if isinstance(scores.get("overall"), int | float):
            out[f"overall{partial}"] = scores["overall"]
        if isinstance((scores.get("report") or {}).get("score"), int | float):
            out[f"report{partial}"] = scores["report"]["score"]
        return out

    def item_scores(self, records: list[Record]) -> ItemScores:
        """Text and image MCQ as right/wrong items, reports as each judged report's own score (20 x the mean of its
        section means: their mean is the paper's report score); the MCQ average and the overall as item-weighted
        means of those parts, exactly as :meth:`score` weighs them."""
        text = [r for r in records if r["task"] == "text_mcq"]
        image = [r for r in records if r["task"] == "image_mcq"]
        reports = [r for r in records if r["task"] == "report"]
        judged = [r for r in reports if isinstance(r.get("report_score"), int | float)]
        failed = any((r.get("judgment") or {}).get("scores", 0) is None for r in reports)
        partial = " (partial)" if judged and failed else ""
        parts: list[Part] = []
        metrics: list[Metric] = []
        if text:
            parts.append(mcq_part("text", text))
            metrics.append(Metric("text", "text MCQ %", ("text",)))
        if image:
            parts.append(mcq_part("image", image))
            metrics.append(Metric("image", "image MCQ %", ("image",)))
        if text and image:
            metrics.append(Metric("mcq_average", "MCQ avg %", ("text", "image")))
        if judged:
            values = tuple(float(r["report_score"]) for r in judged)
            parts.append(Part("report", tuple(r["id"] for r in judged), values, binary=False))
            metrics.append(Metric("report", f"report{partial}", ("report",)))
            if text and image:
                metrics.append(Metric("overall", f"overall{partial}", ("text", "image", "report")))
        mcq_parts = tuple(p.name for p in parts if p.binary)
        return ItemScores(tuple(parts), tuple(metrics), meta_groupings([*text, *image], GROUPS, mcq_parts))

    def model_index(self, dataset: dict[str, str], scores: dict[str, Any]) -> list[dict[str, Any]]:
        mcq = [
            metric("Text MCQ accuracy", scores.get("text", {}).get("accuracy")),
            metric("Image MCQ accuracy", scores.get("image", {}).get("accuracy")),
            metric("MCQ average accuracy", scores.get("mcq_average")),
        ]
        partial = f" (partial: {scores['overall_partial']})" if scores.get("overall_partial") else ""
        report = [
            metric(f"Report score (0-100){partial}", scores.get("report", {}).get("score"), "report_score"),
            metric(f"Overall{partial}", scores.get("overall"), "overall"),
        ]
        return [
            *result("multiple-choice", "Close-ended QA", dataset, mcq),
            *result("text-generation", "Report generation", dataset, report),
        ]


BENCHMARK = SpineBench()
