"""The regression budget: how far below the base model a stage's scores may fall before the stage is flagged.

A benchmark's ``max_drop`` (points, ``eval:`` config) applies to each of its headline figures (accuracy %, VQA
closed/open/overall, SpineBench's text/image/average ...): a figure that fell by more than ``max_drop`` points from
the base model's is *flagged*. A flagged stage is not a failed stage: it trained, it is kept, and the run goes on;
the flag is what a clinical team reads before choosing a curriculum.

The rule is written for plain differences (``stage - base``, the point estimates) and takes, where one is known,
the 95 % interval of that difference (a paired bootstrap on the items both evaluations share): the flag is still
decided by the point estimate, and the interval says how sure it is -- ``beyond`` when the whole interval lies
below ``-max_drop`` (the drop is larger than the budget beyond sampling noise), ``uncertain`` when the interval
reaches back inside the budget. Without an interval the certainty is ``unknown``. The intervals come from the
paired comparison of two result files; this module only judges the numbers it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Certainty = Literal["beyond", "uncertain", "unknown"]


@dataclass(frozen=True)
class Check:
    """One headline figure of one benchmark, a stage against the base model."""

    benchmark: str
    metric: str
    base: float
    value: float
    max_drop: float
    interval: tuple[float, float] | None = None
    """95 % interval of ``value - base``, where the paired comparison gave one."""

    @property
    def difference(self) -> float:
        return self.value - self.base

    @property
    def flagged(self) -> bool:
        """The figure fell by more than the budget (point estimates)."""
        return -self.difference > self.max_drop

    @property
    def certainty(self) -> Certainty:
        if self.interval is None:
            return "unknown"
        return "beyond" if self.interval[1] < -self.max_drop else "uncertain"

    def describe(self) -> str:
        interval = f" [{self.interval[0]:+.2f}, {self.interval[1]:+.2f}]" if self.interval else ""
        verdict = f"FLAGGED: drop beyond {self.max_drop:g}" if self.flagged else f"within {self.max_drop:g}"
        if self.flagged and self.interval is not None:
            verdict += " (the whole interval)" if self.certainty == "beyond" else " (the interval reaches inside)"
        return (
            f"{self.benchmark}: {self.metric} {self.base:.2f} -> {self.value:.2f} "
            f"({self.difference:+.2f}{interval}): {verdict}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "metric": self.metric,
            "base": self.base,
            "value": self.value,
            "difference": self.difference,
            "max_drop": self.max_drop,
            "interval": list(self.interval) if self.interval else None,
            "flagged": self.flagged,
            "certainty": self.certainty,
        }


def check(
    benchmark: str,
    base: Mapping[str, float],
    stage: Mapping[str, float],
    max_drop: float,
    intervals: Mapping[str, tuple[float, float]] | None = None,
) -> list[Check]:
    """Each figure present in both the base model's and the stage's headline (``Benchmark.headline``), against the
    budget; ``intervals`` by figure label where known."""
    if max_drop < 0:
        raise ValueError(f"max_drop must be >= 0, got {max_drop}")
    return [
        Check(benchmark, label, base[label], stage[label], max_drop, (intervals or {}).get(label))
        for label in stage
        if label in base
    ]


def flagged(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.flagged]
