"""The statistics block of a result: every metric of a benchmark with its 95 % interval, and the breakdowns.

Computed from :meth:`Benchmark.item_scores` (per-item values by id) with the methods of ``stats.py``: a metric of one
binary part (an accuracy) gets Wilson's interval; any other (an average over parts, the report score, the overall,
a localisation precision) a percentile bootstrap resampling items within each part. Breakdowns give the accuracy of
every group with its n and Wilson interval, small groups pooled. Everything is in percent (0-100), whatever scale a
benchmark's own ``scores`` use (MM'25 keeps fractions there).

The block is written into ``<benchmark>.json`` and ``summary.json`` (so into the run manifest) as
:class:`Statistics`; reports, the model card and the sweep table read it back through the same class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from spinegpt.eval_hooks import stats
from spinegpt.eval_hooks.benchmark import ItemScores, Metric, Part
from spinegpt.eval_hooks.config import StatisticsConfig


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class IntervalStats(_Model):
    low: float
    high: float
    method: str

    @classmethod
    def of(cls, interval: stats.Interval) -> IntervalStats:
        return cls.model_validate(interval.to_json())

    def text(self, digits: int = 2) -> str:
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


class MetricStats(_Model):
    key: str
    label: str
    parts: list[str]
    n: int
    """Items behind the figure (over all its parts)."""
    estimate: float
    interval: IntervalStats
    correct: int | None = None
    """Right answers, for a metric whose parts are all right/wrong."""

    def text(self) -> str:
        return f"{self.estimate:.2f} {self.interval.text()}"


class GroupStats(_Model):
    name: str
    n: int
    correct: int
    accuracy: float
    interval: IntervalStats
    pooled: list[str] = []


class BreakdownStats(_Model):
    name: str
    parts: list[str]
    """The right/wrong parts whose items are grouped."""
    min_n: int
    groups: list[GroupStats]

    @property
    def pooled(self) -> list[str]:
        return [name for g in self.groups for name in g.pooled]


class Statistics(_Model):
    methods: dict[str, object]
    """``stats.describe_methods``: how to recompute every interval (method, resamples, seed, version)."""
    metrics: list[MetricStats]
    breakdowns: list[BreakdownStats] = []

    def metric(self, key: str) -> MetricStats | None:
        return next((m for m in self.metrics if m.key == key), None)

    def by_label(self) -> dict[str, MetricStats]:
        return {m.label: m for m in self.metrics}


def metric_stats(metric: Metric, parts: Sequence[Part], config: StatisticsConfig) -> MetricStats:
    values = {p.name: np.asarray(p.values, dtype=np.float64) for p in parts}
    n = sum(len(p.values) for p in parts)
    binary = all(p.binary for p in parts)
    correct = sum(int(np.sum(values[p.name] == 100.0)) for p in parts) if binary else None
    if len(parts) == 1 and binary and correct is not None:
        interval = stats.wilson(correct, n)
        estimate = 100.0 * correct / n
    else:
        interval = stats.bootstrap(values, resamples=config.resamples, seed=config.seed)
        estimate = stats.estimate(values)
    return MetricStats(
        key=metric.key,
        label=metric.label,
        parts=[p.name for p in parts],
        n=n,
        estimate=estimate,
        interval=IntervalStats.of(interval),
        correct=correct,
    )


def compute(scores: ItemScores, config: StatisticsConfig) -> Statistics:
    """Every metric with its interval, and every grouping's breakdown."""
    parts = {p.name: p for p in scores.parts}
    metrics = [metric_stats(m, [parts[name] for name in m.parts], config) for m in scores.metrics]
    breakdowns = []
    for grouping in scores.groupings:
        chosen = [parts[name] for name in grouping.parts if name in parts and parts[name].binary]
        if not chosen:
            continue
        ids = [i for p in chosen for i in p.ids]
        correct = [v == 100.0 for p in chosen for v in p.values]
        labels = [grouping.labels.get(i) for i in ids]
        if all(label is None for label in labels):
            continue  # the items carry no such label: no breakdown to show
        groups = stats.breakdown(labels, correct, min_n=config.min_group_n)
        breakdowns.append(
            BreakdownStats(
                name=grouping.name,
                parts=[p.name for p in chosen],
                min_n=config.min_group_n,
                groups=[GroupStats.model_validate(g.to_json()) for g in groups],
            )
        )
    return Statistics(
        methods=stats.describe_methods(config.resamples, config.seed), metrics=metrics, breakdowns=breakdowns
    )


def read(data: object) -> Statistics | None:
    """A result's statistics block, None where the result predates them (or the block is not readable)."""
    if not isinstance(data, dict):
        return None
    try:
        return Statistics.model_validate(data)
    except ValueError:
        return None


def markdown(statistics: Statistics) -> list[str]:
    """The intervals table and one table per breakdown, for ``<benchmark>.md``."""
    level = f"{100 * float(str(statistics.methods.get('level', stats.LEVEL))):g} %"
    lines = [
        f"### {level} confidence intervals",
        "",
        f"| metric | n | estimate | {level} interval | method |",
        "|---|---|---|---|---|",
    ]
    for m in statistics.metrics:
        lines.append(f"| {m.label} | {m.n} | {m.estimate:.2f} | {m.interval.text()} | {m.interval.method} |")
    for b in statistics.breakdowns:
        pooled = b.pooled
        note = (
            f"; groups under {b.min_n} items pooled as 'other' ({', '.join(pooled)})"
            if pooled
            else f"; no group under {b.min_n} items"
        )
        lines += [
            "",
            f"### Accuracy by {b.name}",
            "",
            f"Items of {', '.join(b.parts)}{note}.",
            "",
            f"| {b.name} | n | correct | accuracy (%) | {level} interval (Wilson) |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {g.name} | {g.n} | {g.correct} | {g.accuracy:.2f} | {g.interval.text()} |" for g in b.groups]
    return lines
