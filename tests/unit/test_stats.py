"""The evaluation's statistics (eval_hooks/stats.py) against hand-computed references.

Reference values are written out from the closed forms here, never obtained by calling the code under test.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import numpy as np
import pytest

from spinegpt.eval_hooks import stats
from spinegpt.eval_hooks.stats import (
    Interval,
    as_percent,
    bootstrap,
    breakdown,
    describe_methods,
    estimate,
    mcnemar,
    paired_bootstrap,
    weighted_mean_statistic,
    wilson,
)

Z = 1.959963984540054


def wilson_reference(k: int, n: int) -> tuple[float, float]:
    """(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), in percent."""
    p = k / n
    centre = p + Z**2 / (2 * n)
    spread = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return 100 * (centre - spread) / (1 + Z**2 / n), 100 * (centre + spread) / (1 + Z**2 / n)


def mcq(n: int, correct: int, seed: int) -> np.ndarray:
    """n items as 0/100, exactly ``correct`` of them right, in a shuffled order."""
    values = np.array([100.0] * correct + [0.0] * (n - correct))
    random.Random(seed).shuffle(values)  # type: ignore[arg-type]
    return values


# -- Wilson --------------------------------------------------------------------------------------------------------


def test_wilson_at_the_ends_is_exact() -> None:
    # k = 0: the upper bound is z²/(n + z²); k = n mirrors it.
    upper = 100 * Z**2 / (10 + Z**2)
    assert upper == pytest.approx(27.7533, abs=1e-4)
    assert wilson(0, 10).low == 0.0
    assert wilson(0, 10).high == pytest.approx(upper, abs=1e-9)
    assert wilson(10, 10).high == 100.0
    assert wilson(10, 10).low == pytest.approx(100 - upper, abs=1e-9)
    assert wilson(10, 10).low == pytest.approx(72.2467, abs=1e-4)


def test_wilson_ends_are_exact_for_every_n() -> None:
    for n in range(1, 600):
        assert wilson(0, n).low == 0.0
        assert wilson(n, n).high == 100.0
        assert wilson(1, n).low >= 0.0 and wilson(n - 1, n).high <= 100.0


@pytest.mark.parametrize(("k", "n"), [(87, 100), (425, 487), (263, 294), (163, 193), (4, 9), (1, 1), (5, 11)])
def test_wilson_matches_the_closed_form(k: int, n: int) -> None:
    low, high = wilson_reference(k, n)
    interval = wilson(k, n)
    assert interval.low == pytest.approx(low, abs=1e-9)
    assert interval.high == pytest.approx(high, abs=1e-9)
    assert interval.low < 100 * k / n < interval.high or k in (0, n)
    assert interval.method == "95% Wilson score"


def test_wilson_known_values() -> None:
    # Hand arithmetic for 87/100: centre (0.87 + 0.019208) / 1.038415, half-width 1.96·sqrt(0.001131 + 0.0000960)/…
    interval = wilson(87, 100)
    assert interval.low == pytest.approx(79.0, abs=0.05)
    assert interval.high == pytest.approx(92.2, abs=0.05)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (87, 100), (425, 487), (4, 9)])
def test_wilson_is_symmetric(k: int, n: int) -> None:
    a, b = wilson(k, n), wilson(n - k, n)
    assert a.low == pytest.approx(100 - b.high, abs=1e-9)
    assert a.high == pytest.approx(100 - b.low, abs=1e-9)


def test_wilson_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="n=0"):
        wilson(0, 0)
    with pytest.raises(ValueError, match="outside"):
        wilson(11, 10)
    with pytest.raises(ValueError, match="outside"):
        wilson(-1, 10)
    with pytest.raises(TypeError):
        wilson(0.5, 10)  # type: ignore[arg-type]


def test_interval_json_rounds_but_object_keeps_full_precision() -> None:
    interval = wilson(0, 10)
    assert interval.to_json() == {"low": 0.0, "high": 27.75328, "method": "95% Wilson score"}
    assert interval.high != 27.75328
    with pytest.raises(AttributeError):
        interval.low = 1.0  # type: ignore[misc]


# -- McNemar -------------------------------------------------------------------------------------------------------


def pairs(b_only: int, a_only: int, both: int = 5, neither: int = 3) -> tuple[list[bool], list[bool]]:
    a = [False] * b_only + [True] * a_only + [True] * both + [False] * neither
    b = [True] * b_only + [False] * a_only + [True] * both + [False] * neither
    return a, b


def test_mcnemar_exact_binomial_by_hand() -> None:
    result = mcnemar(*pairs(10, 2))
    assert (result.b_only, result.a_only, result.n_discordant) == (10, 2, 12)
    # 2 · (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 · 79 / 4096
    assert result.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-12)
    assert result.p_value == pytest.approx(0.0385742, abs=1e-7)
    # Symmetric in A and B, the counts swapped.
    swapped = mcnemar(*reversed(pairs(10, 2)))
    assert (swapped.b_only, swapped.a_only, swapped.p_value) == (2, 10, result.p_value)
    # 5 vs 0: 2 / 2^5
    assert mcnemar(*pairs(5, 0)).p_value == pytest.approx(0.0625, rel=1e-12)


def test_mcnemar_without_evidence_is_one() -> None:
    assert mcnemar(*pairs(7, 7)).p_value == 1.0
    assert mcnemar(*pairs(6, 5)).p_value == 1.0  # 2·P(X<=5 | 11) = 1 exactly: capped, not above
    none = mcnemar(*pairs(0, 0))
    assert (none.n_discordant, none.p_value) == (0, 1.0)
    assert mcnemar([], []).p_value == 1.0


def test_mcnemar_large_n_is_exact_and_finite() -> None:
    result = mcnemar(*pairs(3000, 2900, both=100, neither=100))
    n, k = 5900, 2900
    # Independent reference in log space: Σ exp(lgamma-based log C(n,i) - n log 2).
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)
    ]
    top = max(log_terms)
    reference = 2 * math.exp(top) * math.fsum(math.exp(t - top) for t in log_terms)
    assert 0 < result.p_value <= 1
    assert result.p_value == pytest.approx(reference, rel=1e-8)
    assert 0.1 < result.p_value < 0.3  # 50 discordant pairs' worth of imbalance on 5900 is not significant
    strong = mcnemar(*pairs(6000, 4000, both=0, neither=0))
    assert 0 < strong.p_value < 1e-80


def test_wilson_and_mcnemar_agree_with_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is not installed: the independent cross-check")
    for k, n in [(0, 10), (4, 9), (263, 294), (163, 193), (487, 487)]:
        reference = scipy_stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        ours = wilson(k, n)
        assert ours.low == pytest.approx(100 * reference.low, abs=1e-7)
        assert ours.high == pytest.approx(100 * reference.high, abs=1e-7)
    for b_only, a_only in [(10, 2), (3, 3), (40, 25), (0, 7)]:
        expected = scipy_stats.binomtest(b_only, b_only + a_only, 0.5).pvalue
        assert mcnemar(*pairs(b_only, a_only)).p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_rejects_unaligned_outcomes() -> None:
    with pytest.raises(ValueError, match="same items"):
        mcnemar([True, False], [True])


def test_mcnemar_json() -> None:
    data = mcnemar(*pairs(10, 2)).to_json()
    assert data["b_only"] == 10 and data["a_only"] == 2 and data["n_discordant"] == 12
    assert data["p_value"] == 0.03857
    assert "McNemar" in data["method"]


# -- bootstrap -----------------------------------------------------------------------------------------------------


def spinebench_parts(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "text": mcq(294, 263, seed),
        "image": mcq(193, 163, seed + 1),
        "report": rng.uniform(40, 90, size=87),
    }


def test_weighted_mean_statistic_is_the_overall() -> None:
    parts = spinebench_parts()
    accuracy = {k: float(np.mean(v)) for k, v in parts.items()}
    overall = (294 * accuracy["text"] + 193 * accuracy["image"] + 87 * accuracy["report"]) / (294 + 193 + 87)
    assert estimate(parts) == pytest.approx(overall, abs=1e-9)
    mcq_avg = estimate({"text": parts["text"], "image": parts["image"]})
    assert mcq_avg == pytest.approx(100 * (263 + 163) / 487, abs=1e-9)
    # Vectorised: one value per row.
    rows = weighted_mean_statistic({"x": np.array([[0.0, 100.0], [100.0, 100.0]]), "y": np.array([[0.0], [100.0]])})
    assert rows.tolist() == pytest.approx([100 / 3, 100.0])


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    parts = spinebench_parts()
    first = bootstrap(parts, weighted_mean_statistic, seed=7)
    again = bootstrap(parts, weighted_mean_statistic, seed=7)
    reordered = bootstrap(dict(reversed(list(parts.items()))), weighted_mean_statistic, seed=7)
    other = bootstrap(parts, weighted_mean_statistic, seed=8)
    assert first == again == reordered
    assert (first.low, first.high) != (other.low, other.high)
    assert first.method == "95% percentile bootstrap, 2000 resamples within parts, seed 7"


def test_bootstrap_contains_the_estimate_and_agrees_with_wilson() -> None:
    parts = spinebench_parts()
    interval = bootstrap(parts)
    point = estimate(parts)
    assert interval.low < point < interval.high
    assert 2 < interval.high - interval.low < 8
    # One binary part: the bootstrap's interval is close to Wilson's.
    single = bootstrap({"mcq": mcq(487, 425, 3)})
    reference = wilson(425, 487)
    assert single.low == pytest.approx(reference.low, abs=1.0)
    assert single.high == pytest.approx(reference.high, abs=1.0)


def test_bootstrap_tails_are_the_2_5_and_97_5_percentiles() -> None:
    # A mean of 400 continuous values is close to normal: each half of the 95 % interval is about 1.96 standard
    # errors (a 90 % interval would be 1.64, a one-sided 95 % tail 1.64 on that side).
    values = np.random.default_rng(11).uniform(0, 100, size=400)
    se = float(np.std(values)) / math.sqrt(values.size)
    interval = bootstrap({"x": values}, resamples=4000)
    point = estimate({"x": values})
    assert (point - interval.low) / se == pytest.approx(Z, rel=0.07)
    assert (interval.high - point) / se == pytest.approx(Z, rel=0.07)
    narrow = bootstrap({"x": values}, resamples=4000, level=0.80)
    assert (narrow.high - narrow.low) / se == pytest.approx(2 * 1.2815515655446004, rel=0.07)
    assert narrow.method.startswith("80% percentile bootstrap")


def test_bootstrap_keeps_the_part_weights() -> None:
    # Constant values within each part: only the mix of parts could vary, and stratification fixes it.
    parts = {"text": np.full(294, 100.0), "image": np.full(193, 50.0)}
    interval = bootstrap(parts, resamples=500)
    point = estimate(parts)
    assert point == pytest.approx((294 * 100 + 193 * 50) / 487, abs=1e-12)
    assert interval.low == interval.high == point
    # Pooled into one part, the same items do vary: the stratification is what collapsed the interval.
    pooled = bootstrap({"all": np.concatenate(list(parts.values()))}, resamples=500)
    assert pooled.high - pooled.low > 1


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="'image'"):
        bootstrap({"text": [100.0, 0.0], "image": []})
    with pytest.raises(ValueError, match=r"shape"):
        bootstrap({"text": [100.0, 0.0]}, lambda parts: float(np.mean(parts["text"])), resamples=10)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap({"text": [1.0]}, resamples=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap({"text": [1.0]}, level=95)
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap({"text": [1.0, float("nan")]})


DIMENSION_SECTIONS = {  # the paper's 10 dimensions in 5 sections of unequal size (Appendix D)
    "SIP": ("imaging_report",),
    "AAD": ("diagnosis",),
    "TR": ("patient_guidance", "evidence_based_plan", "technical_feasibility"),
    "RPM": ("risk_prognosis",),
    "RD": ("coverage", "relevance", "granularity", "explanation"),
}


def test_report_score_is_the_mean_of_per_report_scores() -> None:
    rng = random.Random(5)
    dims = [d for names in DIMENSION_SECTIONS.values() for d in names]
    judged = [{d: rng.randint(1, 5) for d in dims} for _ in range(87)]

    def report_score(scores: Mapping[str, float]) -> float:
        sections = [sum(scores[d] for d in names) / len(names) for names in DIMENSION_SECTIONS.values()]
        return 20 * sum(sections) / len(sections)

    # The paper's order: mean over reports per dimension, then sections, then 20 × their mean.
    paper = report_score({d: sum(j[d] for j in judged) / len(judged) for d in dims})
    per_report = [report_score(j) for j in judged]
    assert estimate({"report": per_report}) == pytest.approx(paper, abs=1e-9)
    # Not a tautology: a plain mean of the ten dimensions (sections unweighted) gives another number.
    plain = 20 * sum(sum(j.values()) / len(dims) for j in judged) / len(judged)
    assert abs(plain - paper) > 1e-6


# -- paired bootstrap ----------------------------------------------------------------------------------------------


def test_paired_identical_evaluations_differ_by_nothing() -> None:
    parts = spinebench_parts()
    diff = paired_bootstrap(parts, parts)
    assert diff.estimate == 0.0
    assert (diff.interval.low, diff.interval.high) == (0.0, 0.0)


def test_paired_b_better_is_positive_and_excludes_zero() -> None:
    a = {"text": mcq(294, 230, 1), "image": mcq(193, 150, 2)}
    b = {k: v.copy() for k, v in a.items()}
    wrong = np.flatnonzero(b["text"] == 0)[:40]
    b["text"][wrong] = 100.0  # B fixes 40 text items and breaks none
    diff = paired_bootstrap(a, b)
    assert diff.estimate == pytest.approx(100 * 40 / 487, abs=1e-9)
    assert 0 < diff.interval.low < diff.estimate < diff.interval.high
    assert "B minus A" in diff.interval.method
    reverse = paired_bootstrap(b, a)
    assert reverse.estimate == pytest.approx(-diff.estimate, abs=1e-12)
    assert reverse.interval.high < 0
    assert diff.to_json()["direction"] == "B minus A"


def test_paired_small_difference_includes_zero() -> None:
    a = {"text": mcq(294, 230, 1)}
    b = {"text": a["text"].copy()}
    right, wrong = np.flatnonzero(b["text"] == 100)[:10], np.flatnonzero(b["text"] == 0)[:11]
    b["text"][right], b["text"][wrong] = 0.0, 100.0  # one item net: no evidence
    diff = paired_bootstrap(a, b)
    assert diff.estimate > 0
    assert diff.interval.low < 0 < diff.interval.high


def test_paired_rejects_unaligned_parts() -> None:
    with pytest.raises(ValueError, match="'text'"):
        paired_bootstrap({"text": [1.0, 0.0]}, {"text": [1.0]})
    with pytest.raises(ValueError, match="same parts"):
        paired_bootstrap({"text": [1.0]}, {"image": [1.0]})


# -- breakdown -----------------------------------------------------------------------------------------------------

TABLE_10 = {
    "Tumor and Osteomyelitis": 96,
    "Complications": 62,
    "Dysplastic and Congenital Deformities": 49,
    "Idiopathic Scoliosis": 47,
    "The Thoracic and Lumbar Degenerative Spine": 34,
    "General Considerations": 33,
    "Kyphosis and Postlaminectomy Deformities": 31,
    "Anatomic Approaches": 31,
    "Adult Spinal Deformity": 26,
    "Spondylolisthesis": 23,
    "Trauma": 23,
    "Neuromuscular Spine Deformity": 12,
    "Biomechanics": 11,
    "The Cervical Degenerative Spine": 9,
}


def test_breakdown_pools_small_groups_and_orders() -> None:
    groups: list[str | None] = [name for name, n in TABLE_10.items() for _ in range(n)]
    assert len(groups) == 487
    correct = [i % 4 != 0 for i in range(len(groups))]  # 3 of 4 right, in order
    groups += [None, "", None]
    correct += [True, False, True]
    scores = breakdown(groups, correct, min_n=12)
    names = [s.name for s in scores]
    assert names[:4] == [
        "Tumor and Osteomyelitis",
        "Complications",
        "Dysplastic and Congenital Deformities",
        "Idiopathic Scoliosis",
    ]
    assert names.index("Anatomic Approaches") + 1 == names.index("Kyphosis and Postlaminectomy Deformities")
    assert names.index("Spondylolisthesis") + 1 == names.index("Trauma")
    assert names[-2] == "Neuromuscular Spine Deformity"  # 12 items: kept
    pooled = scores[-1]
    assert pooled.name == "other"
    assert pooled.pooled == ("Biomechanics", "The Cervical Degenerative Spine", "unknown")
    assert pooled.n == 11 + 9 + 3
    expected = sum(
        ok
        for g, ok in zip(groups, correct, strict=True)
        if g in (None, "", "Biomechanics", "The Cervical Degenerative Spine")
    )
    assert pooled.correct == expected
    assert "unknown" not in names and "Biomechanics" not in names
    assert sum(s.n for s in scores) == len(groups)
    for s in scores:
        assert s.accuracy == pytest.approx(100 * s.correct / s.n)
        assert (s.interval.low, s.interval.high) == pytest.approx(wilson_reference(s.correct, s.n), abs=1e-9)
    assert scores[0].to_json()["pooled"] == []
    assert pooled.to_json()["pooled"] == ["Biomechanics", "The Cervical Degenerative Spine", "unknown"]


def test_breakdown_keeps_large_unknown_and_names_other() -> None:
    groups = ["A"] * 12 + [None] * 10 + ["B"] * 2
    scores = breakdown(groups, [True] * 24, min_n=10, other="pooled (n<10)")
    assert [(s.name, s.n) for s in scores] == [("A", 12), ("unknown", 10), ("pooled (n<10)", 2)]
    assert scores[-1].pooled == ("B",)
    assert scores[0].interval.high == 100.0
    # No small groups: nothing pooled.
    assert [s.name for s in breakdown(["A"] * 10 + ["B"] * 10, [True] * 20)] == ["A", "B"]
    assert breakdown([], []) == []


def test_breakdown_rejects_a_group_called_like_the_pool() -> None:
    with pytest.raises(ValueError, match="'other'"):
        breakdown(["other"] * 12 + ["B"], [True] * 13)
    with pytest.raises(ValueError, match="group labels"):
        breakdown(["A"], [True, False])


# -- provenance ----------------------------------------------------------------------------------------------------


def test_describe_methods_records_what_recomputes_the_numbers() -> None:
    described = describe_methods(5000, 3)
    assert described["stats_version"] == stats.STATS_VERSION == 1
    assert (described["resamples"], described["seed"], described["level"]) == (5000, 3, 0.95)
    assert "Wilson" in described["proportion_interval"] and "McNemar" in described["paired_test"]


def test_as_percent() -> None:
    assert as_percent([True, False, True]).tolist() == [100.0, 0.0, 100.0]
    assert isinstance(wilson(1, 2), Interval)
