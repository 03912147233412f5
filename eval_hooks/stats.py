"""The statistics behind every evaluation number: intervals, paired comparisons and group breakdowns.

A benchmark score on a few hundred items is an estimate, not a fact: on SpineBench's 294 text items one item is
0.34 points, and a 95 % interval on an accuracy near 87 % is about ±4 points wide. A number you can decide on
therefore comes with its uncertainty, and a comparison of two checkpoints with a test on the *same* items. This
module is the one home of those methods so that every report, table and model card computes them the same way:

* :func:`wilson` — 95 % Wilson score interval for one accuracy (text MCQ, image MCQ, MM'25 diagnosis accuracy,
  MM'25 localisation exact match, a subspecialty). Chosen over the normal ("Wald") interval because it stays inside
  0-100 and keeps its coverage at 0 % and 100 % and for small groups.
* :func:`bootstrap` — percentile bootstrap for composite scores (the MCQ average, the report score, the overall,
  MM'25 localisation precision/recall), resampling items *within* each part so the paper's sample-count weights
  stay fixed (the benchmark always has 294 text, 193 image and 87 report items; a resample must too).
* :func:`paired_bootstrap` and :func:`mcnemar` — two evaluations on the same items: the interval of the difference
  (B minus A) and the exact McNemar test for paired right/wrong outcomes. Paired methods are far sharper than
  comparing two unpaired intervals, because most items are answered the same way by both models.
* :func:`breakdown` — per-group accuracy with n and interval, small groups pooled.

Units: accuracies are in percent (0-100), like the rest of the repository. Intervals from the bootstrap are in the
units of the values given to it, so give MCQ correctness as 0/100 (:func:`as_percent`) when it is combined with
report scores (0-100) into the overall; the point estimate then equals ``spinebench.overall_score``.

Report part. The paper's report score is ``20 × mean over sections of (mean over reports of each dimension)``.
Every step is a mean over the same judged reports (a failed judgment drops the whole report, never single
dimensions), and means commute, so this equals the mean over reports of each report's own
``20 × mean(section means)``. A report part can therefore be given to the bootstrap as per-report scores, and
:func:`weighted_mean_statistic` over ``{text, image, report}`` reproduces the overall. (The tests check the algebra.)

Written here rather than taken from scipy: scipy is not a dependency of this package, each method is a few lines
of closed form (exact integer arithmetic for McNemar), and the tests check them against hand-computed references and,
where scipy happens to be installed, against ``scipy.stats.binomtest``.

Everything is deterministic: the bootstrap draws from ``numpy.random.default_rng(seed)``, and the seed, the number
of resamples and :data:`STATS_VERSION` are recorded (:func:`describe_methods`) so a result can be recomputed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Bump when a method or its defaults change in a way that changes reported numbers.
STATS_VERSION = 1

LEVEL = 0.95
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95 % interval
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0

Values = Sequence[float] | NDArray[Any]  # per-item values of one part
Parts = Mapping[str, NDArray[np.float64]]
Statistic = Callable[[Parts], NDArray[np.float64] | float]


def _r6(x: float) -> float:
    # Six decimals: files stay readable, and a figure shown with two decimals from the file rounds as the exact value
    # does (four would turn 57.165044 into 57.165, shown as 57.16 rather than 57.17).
    return round(float(x), 6)


def _level_label(level: float) -> str:
    return f"{100.0 * level:.4g}%"


@dataclass(frozen=True)
class Interval:
    """A confidence interval; ``method`` says how it was computed (and with which seed), so it can be recomputed."""

    low: float
    high: float
    method: str

    def to_json(self) -> dict[str, Any]:
        return {"low": _r6(self.low), "high": _r6(self.high), "method": self.method}


@dataclass(frozen=True)
class Difference:
    """``estimate`` = statistic(B) - statistic(A) ("B minus A": how much B gained over A), with its interval."""

    estimate: float
    interval: Interval

    def to_json(self) -> dict[str, Any]:
        return {"estimate": _r6(self.estimate), "direction": "B minus A", "interval": self.interval.to_json()}


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: only the items the two evaluations disagree on carry information."""

    b_only: int  # items B got right and A wrong
    a_only: int  # items A got right and B wrong
    n_discordant: int
    p_value: float  # two-sided exact binomial on the discordant pairs, p = 0.5

    def to_json(self) -> dict[str, Any]:
        return {
            "b_only": self.b_only,
            "a_only": self.a_only,
            "n_discordant": self.n_discordant,
            # Significant figures, not decimals: a p-value of 3e-7 must not print as 0.
            "p_value": float(f"{self.p_value:.4g}"),
            "method": "exact McNemar (two-sided binomial on discordant pairs)",
        }


@dataclass(frozen=True)
class GroupScore:
    """Accuracy of one group, always with its n and interval; ``pooled`` lists the small groups merged into it."""

    name: str
    n: int
    correct: int
    accuracy: float  # percent
    interval: Interval
    pooled: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "correct": self.correct,
            "accuracy": _r6(self.accuracy),
            "interval": self.interval.to_json(),
            "pooled": list(self.pooled),
        }


# -- proportions ---------------------------------------------------------------------------------------------------


def wilson(correct: int, n: int, z: float = Z_95) -> Interval:
    """Wilson score interval for ``correct`` of ``n``, in percent.

    Exact at the ends (lower bound 0 at 0 correct, upper bound 100 at all correct) rather than off by rounding, so a
    perfect group never shows an upper bound of 99.9999.
    """
    if isinstance(correct, bool) or isinstance(n, bool) or not isinstance(correct, int) or not isinstance(n, int):
        raise TypeError(f"wilson needs integer counts, got correct={correct!r}, n={n!r}")
    if n <= 0:
        raise ValueError(f"a proportion of n={n} items has no interval: n must be positive")
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} is outside 0..n={n}")
    if not z > 0 or not math.isfinite(z):
        raise ValueError(f"z must be a positive number, got {z}")
    p = correct / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denominator
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    level = math.erf(z / math.sqrt(2.0))
    return Interval(100.0 * low, 100.0 * high, f"{_level_label(level)} Wilson score")


def as_percent(correct: Sequence[bool]) -> NDArray[np.float64]:
    """Right/wrong outcomes as 100/0, the scale of accuracies and report scores, for the bootstrap's parts."""
    return 100.0 * np.asarray(correct, dtype=bool).astype(np.float64)


# -- bootstrap -----------------------------------------------------------------------------------------------------


def weighted_mean_statistic(parts: Parts) -> NDArray[np.float64]:
    """Σ n_k·mean_k / Σ n_k over the parts: the item-weighted mean, i.e. the mean of all items together.

    This is the paper's close-ended "Avg." over {text, image} and its overall over {text, image, report} (with MCQ
    parts as 0/100 and the report part as per-report scores; see the module docstring). Vectorised: each part has
    shape ``(resamples, n_k)`` and the result shape ``(resamples,)``; 1-D parts give a 0-d array.
    """
    if not parts:
        raise ValueError("no parts to average")
    total = sum(np.sum(values, axis=-1) for values in parts.values())
    count = sum(values.shape[-1] for values in parts.values())
    return np.asarray(total / count, dtype=np.float64)


def _as_parts(parts: Mapping[str, Values], what: str = "parts") -> dict[str, NDArray[np.float64]]:
    if not parts:
        raise ValueError(f"{what}: no parts given")
    out: dict[str, NDArray[np.float64]] = {}
    for name in sorted(parts):  # sorted: the random draws must not depend on the caller's dict order
        values = np.asarray(parts[name], dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"{what}: part {name!r} must be a flat sequence of per-item values")
        if values.size == 0:
            raise ValueError(f"{what}: part {name!r} has no items; a part must have items to be resampled")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{what}: part {name!r} has non-finite values")
        out[name] = values
    return out


def _check_settings(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")


def _evaluate(statistic: Statistic, parts: Parts, rows: int) -> NDArray[np.float64]:
    values = np.asarray(statistic(parts), dtype=np.float64)
    if values.shape == () and rows == 1:
        values = values.reshape(1)
    if values.shape != (rows,):
        raise ValueError(
            f"the statistic returned shape {values.shape}, expected ({rows},): it receives each part as an array "
            "of shape (resamples, n_k) and must return one value per resample (see weighted_mean_statistic)"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("the statistic returned non-finite values")
    return values


def estimate(parts: Mapping[str, Values], statistic: Statistic = weighted_mean_statistic) -> float:
    """The statistic on the data as observed: the point estimate the bootstrap's interval belongs to."""
    arrays = _as_parts(parts)
    return float(_evaluate(statistic, {k: v[np.newaxis, :] for k, v in arrays.items()}, 1)[0])


def _indices(arrays: Parts, resamples: int, seed: int) -> dict[str, NDArray[np.intp]]:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, values.size, size=(resamples, values.size)) for name, values in arrays.items()}


def _percentile(values: NDArray[np.float64], level: float) -> tuple[float, float]:
    low, high = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def bootstrap(
    parts: Mapping[str, Values],
    statistic: Statistic = weighted_mean_statistic,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> Interval:
    """Percentile bootstrap interval of a composite score, resampling items within each part (stratified).

    ``parts`` maps a part name to its per-item values (0/100 correctness for MCQ parts, per-report scores for the
    report part). Each resample draws n_k items with replacement from part k only, so every resample has the same
    part sizes as the benchmark and the composite's weights never move.

    ``statistic`` is vectorised: it receives a mapping from part name to an array of shape ``(resamples, n_k)``
    and must return an array of shape ``(resamples,)`` (use :func:`weighted_mean_statistic` for means).

    Use the default 2000 resamples (or more) for reported numbers; fewer are accepted for tests only, as the 2.5 %
    tails of a few hundred resamples rest on a handful of draws. Parts are drawn in sorted name order, so the same
    seed gives the same interval whatever the order of ``parts``.
    """
    _check_settings(resamples, level)
    arrays = _as_parts(parts)
    index = _indices(arrays, resamples, seed)
    values = _evaluate(statistic, {name: arrays[name][index[name]] for name in arrays}, resamples)
    low, high = _percentile(values, level)
    method = f"{_level_label(level)} percentile bootstrap, {resamples} resamples within parts, seed {seed}"
    return Interval(low, high, method)


def paired_bootstrap(
    a: Mapping[str, Values],
    b: Mapping[str, Values],
    statistic: Statistic = weighted_mean_statistic,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> Difference:
    """Difference statistic(B) - statistic(A) of two evaluations on the same items, with a paired interval.

    Items are aligned by position (the caller matches them by id first): each resample applies the *same* item
    indices to A and B, so the item-to-item variation both share cancels and only their disagreements remain.
    Resampling is stratified within parts, as in :func:`bootstrap`.
    """
    _check_settings(resamples, level)
    arrays_a, arrays_b = _as_parts(a, "a"), _as_parts(b, "b")
    if arrays_a.keys() != arrays_b.keys():
        raise ValueError(f"a and b must have the same parts; a has {sorted(arrays_a)}, b has {sorted(arrays_b)}")
    for name in arrays_a:
        if arrays_a[name].size != arrays_b[name].size:
            raise ValueError(
                f"part {name!r} has {arrays_a[name].size} items in a and {arrays_b[name].size} in b; "
                "a paired comparison needs the same items, aligned by position"
            )
    point = estimate(arrays_b, statistic) - estimate(arrays_a, statistic)
    index = _indices(arrays_a, resamples, seed)
    values_a = _evaluate(statistic, {name: arrays_a[name][index[name]] for name in arrays_a}, resamples)
    values_b = _evaluate(statistic, {name: arrays_b[name][index[name]] for name in arrays_b}, resamples)
    low, high = _percentile(values_b - values_a, level)
    method = f"{_level_label(level)} paired percentile bootstrap (B minus A), {resamples} resamples within parts, "
    method += f"seed {seed}"
    return Difference(point, Interval(low, high, method))


# -- paired test ---------------------------------------------------------------------------------------------------


def _binomial_half_cdf(k: int, n: int) -> Fraction:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly: Σ_{i<=k} C(n, i) / 2^n with integer arithmetic."""
    term, total = 1, 0
    for i in range(k + 1):
        total += term
        term = term * (n - i) // (i + 1)
    return Fraction(total, 2**n)


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    """Exact (binomial) McNemar test of two evaluations' right/wrong outcomes on the same items, aligned by position.

    Under "A and B are equally good" each discordant item is a fair coin; p = min(1, 2·P(X <= min(b_only, a_only)))
    with X ~ Binomial(n_discordant, 1/2), and p = 1 without discordant items. Computed with exact integers, so it
    neither overflows nor loses precision at benchmark sizes (tens of thousands of items).
    (Only the final conversion to float rounds: a p below ~1e-308 prints as 0.0.)
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(f"{len(a_correct)} outcomes for A and {len(b_correct)} for B; they must be the same items")
    b_only = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if y and not x)
    a_only = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if x and not y)
    n = a_only + b_only
    if n == 0:
        return McNemar(b_only=0, a_only=0, n_discordant=0, p_value=1.0)
    p = min(Fraction(1), 2 * _binomial_half_cdf(min(a_only, b_only), n))
    return McNemar(b_only=b_only, a_only=a_only, n_discordant=n, p_value=float(p))


# -- groups --------------------------------------------------------------------------------------------------------


def breakdown(
    groups: Sequence[str | None],
    correct: Sequence[bool],
    *,
    min_n: int = 10,
    other: str = "other",
) -> list[GroupScore]:
    """Accuracy per group (e.g. subspecialty, source), each with n and its Wilson interval.

    The paper's Table 10 has subspecialties as small as n = 9 (The Cervical Degenerative Spine) and 11
    (Biomechanics); at that size a 95 % interval spans tens of points (4 of 9 correct: 19-73 %), so a per-group
    figure means nothing without n and its interval beside it, and groups under ``min_n`` items are pooled into one
    ``other`` group whose members are listed in ``pooled``. Items without a group (None or "") count as
    ``"unknown"`` (merged with a group literally called "unknown"), which is pooled too when small.

    Sorted by n descending, then name; the pooled group comes last.
    """
    if len(groups) != len(correct):
        raise ValueError(f"{len(groups)} group labels for {len(correct)} outcomes")
    if isinstance(min_n, bool) or not isinstance(min_n, int) or min_n < 1:
        raise ValueError(f"min_n must be a positive integer, got {min_n!r}")
    names = [g if g else "unknown" for g in groups]
    counts = Counter(names)
    right = Counter(name for name, ok in zip(names, correct, strict=True) if ok)
    small = sorted(name for name, n in counts.items() if n < min_n)
    if small and other in counts and other not in small:
        raise ValueError(f"a group is named {other!r}, the name of the pooled small groups; pass another `other`")
    out = [_score(name, counts[name], right[name]) for name in counts if name not in small]
    out.sort(key=lambda g: (-g.n, g.name))
    if small:
        n = sum(counts[name] for name in small)
        out.append(_score(other, n, sum(right[name] for name in small), tuple(small)))
    return out


def _score(name: str, n: int, correct: int, pooled: tuple[str, ...] = ()) -> GroupScore:
    return GroupScore(name, n, correct, 100.0 * correct / n, wilson(correct, n), pooled)


# -- provenance ----------------------------------------------------------------------------------------------------


def describe_methods(
    resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = LEVEL
) -> dict[str, Any]:
    """What a result's protocol records so that its intervals and tests can be recomputed exactly."""
    _check_settings(resamples, level)
    return {
        "stats_version": STATS_VERSION,
        "level": level,
        "proportion_interval": "Wilson score",
        "composite_interval": "percentile bootstrap, items resampled within parts (part sizes fixed)",
        "paired_difference": "paired percentile bootstrap, same item indices for A and B, B minus A",
        "paired_test": "exact McNemar (two-sided binomial on discordant pairs)",
        "resamples": resamples,
        "seed": seed,
        "rng": "numpy.random.default_rng(seed), parts drawn in sorted name order",
        "units": "percent (0-100)",
    }
