"""Two evaluations of the same benchmark side by side: is B really better than A?

Per metric: the difference B − A with its paired bootstrap interval (the same items resampled for both, within each
part: the variation the two share cancels), and for metrics made of right/wrong items the exact McNemar test on the
items the two disagree on. Items are matched by id. Two results are compared only when they are comparable: the
same benchmark (file hash, items, ids) and the same locked protocol (``protocol.py``); otherwise the comparison is
refused with the field that differs. ``spinegpt compare``, the run report and the sweep table all come here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinegpt.errors import UserError
from spinegpt.eval_hooks import results, stats
from spinegpt.eval_hooks.results import ResultFile


class ComparisonRefused(UserError, ValueError):
    """Two results that must not be put side by side; the message says which field differs."""


@dataclass(frozen=True)
class MetricComparison:
    key: str
    label: str
    n: int
    """Items in both evaluations (over the metric's parts)."""
    a: float
    b: float
    """The metric of A and of B on those items."""
    difference: stats.Difference
    mcnemar: stats.McNemar | None
    """For metrics whose items are all right/wrong."""
    unmatched: int = 0
    """Items of the metric in one evaluation only (e.g. a report judged in one of them): left out."""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "n": self.n,
            "a": round(self.a, 4),
            "b": round(self.b, 4),
            "difference": self.difference.to_json(),
            "mcnemar": self.mcnemar.to_json() if self.mcnemar else None,
            "unmatched": self.unmatched,
        }

    def delta_text(self) -> str:
        d = self.difference
        return f"{d.estimate:+.2f} [{d.interval.low:+.2f}, {d.interval.high:+.2f}]"

    def p_text(self) -> str:
        if self.mcnemar is None:
            return ""
        m = self.mcnemar
        return f"{m.p_value:.3g} ({m.b_only}/{m.a_only})"


@dataclass(frozen=True)
class Side:
    path: Path
    model: str

    def to_json(self) -> dict[str, str]:
        return {"path": str(self.path), "model": self.model}


@dataclass(frozen=True)
class Comparison:
    benchmark: str
    kind: str
    a: Side
    b: Side
    protocol_sha256: str
    metrics: list[MetricComparison]
    notes: list[str] = field(default_factory=list)
    """What differs without deciding the numbers (package versions, statistics settings), and items left out."""

    def metric(self, key: str) -> MetricComparison | None:
        return next((m for m in self.metrics if m.key == key), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "kind": self.kind,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "protocol_sha256": self.protocol_sha256,
            "metrics": [m.to_json() for m in self.metrics],
            "notes": self.notes,
        }

    def markdown(self) -> list[str]:
        lines = [
            f"## {self.benchmark} ({self.kind})",
            "",
            f"A: `{self.a.path}`" + (f" (model `{self.a.model}`)" if self.a.model else "") + "  ",
            f"B: `{self.b.path}`" + (f" (model `{self.b.model}`)" if self.b.model else "") + "  ",
            f"protocol `{self.protocol_sha256[:12]}`, the same for both",
            "",
            "| metric | n | A | B | B − A [95 % paired bootstrap] | McNemar p (B only / A only) |",
            "|---|---|---|---|---|---|",
        ]
        for m in self.metrics:
            lines.append(f"| {m.label} | {m.n} | {m.a:.2f} | {m.b:.2f} | {m.delta_text()} | {m.p_text()} |")
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return lines


def refusal(a: ResultFile, b: ResultFile) -> str | None:
    """Why ``a`` and ``b`` must not be compared, or None."""
    for side in (a, b):
        if side.status == "judging":
            return (
                f"{side.path} was written before its reports were judged (the evaluation stopped); re-score it "
                f"(`spinegpt eval --rescore {side.path} --output-dir DIR`) and compare that"
            )
        if side.protocol is None:
            return (
                f"{side.path} records no evaluation protocol (written before spinegpt recorded them): nothing says how "
                "its numbers were made. Evaluate the model again, or re-score it (`spinegpt eval --rescore`), which "
                "records how it is scored but leaves its generation settings unknown"
            )
    assert a.protocol is not None and b.protocol is not None
    if a.kind != b.kind:
        return f"different benchmarks: {a.kind} vs {b.kind}"
    differences = a.protocol.differences(b.protocol)
    benchmark = [d for d in differences if d.startswith("benchmark.")]
    if benchmark:
        return "different benchmarks (items or file differ): " + "; ".join(benchmark)
    if differences:
        return "different evaluation protocols: " + "; ".join(differences)
    return None


def compare(a: ResultFile, b: ResultFile) -> Comparison:
    """B against A, metric by metric; raises :class:`ComparisonRefused` when they are not comparable."""
    reason = refusal(a, b)
    if reason is not None:
        raise ComparisonRefused(f"cannot compare {a.path} with {b.path}: {reason}")
    assert a.protocol is not None and b.protocol is not None
    notes = [f"recorded differently (not deciding the scores): {n}" for n in a.protocol.notes(b.protocol)]
    if a.protocol.generation is None:
        notes.append("generation settings not recorded for either (both re-scored from results made before protocols)")
    settings = a.protocol.statistics
    scores_a, scores_b = a.item_scores(), b.item_scores()
    keys_b = {m.key: m for m in scores_b.metrics}
    metrics = []
    for metric in scores_a.metrics:
        other = keys_b.get(metric.key)
        if other is None or set(other.parts) != set(metric.parts):
            notes.append(f"{metric.label}: only in A")
            continue
        parts_a: dict[str, list[float]] = {}
        parts_b: dict[str, list[float]] = {}
        unmatched = 0
        for name in metric.parts:
            part_a, part_b = scores_a.part(name), scores_b.part(name)
            values_b = dict(zip(part_b.ids, part_b.values, strict=True))
            values_a = dict(zip(part_a.ids, part_a.values, strict=True))
            common = [i for i in part_a.ids if i in values_b]
            unmatched += len(part_a.ids) + len(part_b.ids) - 2 * len(common)
            if common:
                parts_a[name] = [values_a[i] for i in common]
                parts_b[name] = [values_b[i] for i in common]
        if len(parts_a) != len(metric.parts):
            notes.append(f"{metric.label}: no item in both evaluations for every part; not compared")
            continue
        if unmatched:
            notes.append(f"{metric.label}: {unmatched} item(s) in one evaluation only (e.g. judged once) left out")
        difference = stats.paired_bootstrap(parts_a, parts_b, resamples=settings.resamples, seed=settings.seed)
        binary = all(scores_a.part(name).binary for name in metric.parts)
        mcnemar = None
        if binary:
            right_a = [v == 100.0 for name in metric.parts for v in parts_a[name]]
            right_b = [v == 100.0 for name in metric.parts for v in parts_b[name]]
            mcnemar = stats.mcnemar(right_a, right_b)
        metrics.append(
            MetricComparison(
                key=metric.key,
                label=metric.label,
                n=sum(len(v) for v in parts_a.values()),
                a=stats.estimate(parts_a),
                b=stats.estimate(parts_b),
                difference=difference,
                mcnemar=mcnemar,
                unmatched=unmatched,
            )
        )
    notes += [f"{m.label}: only in B" for m in scores_b.metrics if m.key not in {x.key for x in scores_a.metrics}]
    return Comparison(
        benchmark=a.label,
        kind=a.kind,
        a=Side(a.path, a.model),
        b=Side(b.path, b.model),
        protocol_sha256=a.protocol.sha256,
        metrics=metrics,
        notes=notes,
    )


def compare_files(a: Path, b: Path) -> Comparison:
    return compare(results.load(a), results.load(b))


def result_files(target: Path) -> dict[str, Path]:
    """A result file, or the results of an evaluation folder, by benchmark name."""
    if target.is_dir():
        return results.in_folder(target)
    if not target.is_file():
        raise ComparisonRefused(f"{target}: no such file or folder")
    return {results.load(target).label: target}


def compare_paths(a: Path, b: Path) -> list[Comparison]:
    """Every benchmark the two (result files or evaluation folders) share; two single results of different names
    are compared with each other (their protocols still have to match)."""
    files_a, files_b = result_files(a), result_files(b)
    common = [name for name in files_a if name in files_b]
    if not common and len(files_a) == len(files_b) == 1:
        return [compare_files(next(iter(files_a.values())), next(iter(files_b.values())))]
    if not common:
        raise ComparisonRefused(
            f"{a} and {b} share no benchmark ({', '.join(files_a)} vs {', '.join(files_b)}); nothing to compare"
        )
    return [compare_files(files_a[name], files_b[name]) for name in common]


def render(comparisons: list[Comparison]) -> str:
    lines: list[str] = []
    for comparison in comparisons:
        lines += [*comparison.markdown(), ""]
    lines.append(
        "B − A: the difference with its 95 % paired percentile bootstrap interval (items resampled within parts, the "
        "same items for both). McNemar: exact two-sided test on the items only one of the two got right."
    )
    return "\n".join(lines) + "\n"
