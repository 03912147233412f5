"""Numbers you can decide on, on recorded outputs (no model: a scripted stand-in answers): every result carries its
intervals, breakdowns and protocol; two results compare item by item; a protocol mismatch is refused with the field
named; re-scoring gives the original scores back when nothing changed."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from spinegpt.eval_hooks import answers, compare, evaluator, protocol, registry, rescore, results, scorecard, stats
from spinegpt.eval_hooks.config import BenchmarkConfig, JudgeConfig
from spinegpt.files import sha256_file

from ..bench_fixtures import STAND_IN, evaluate_mcq, scripted, write_mcq_bench, write_mm25, write_spinebench
from ..judge_server import GOOD, JudgeServer

SPINEBENCH_ANSWERS = {
    "most often herniated": "The answer is B.",
    "Cobb angle": "\\boxed{C}",
    "red flags": "Answer: A, B",
    "Which level is highlighted": "Answer: D",
    "Both images": "Maybe A or E",
    "structured report": "## Imaging findings\nLesion.",
    "What is the diagnosis": "<answer>B</answer>",
    "Where are the lesions": "The lesions are at L4/L5.",
}


def _evaluate_both(tmp_path: Path, judge_url: str | None) -> dict[str, Any]:
    runs = [
        BenchmarkConfig(name="sb", kind="spinebench", path=str(write_spinebench(tmp_path / "sb"))),
        BenchmarkConfig(name="mm", kind="spinebench_mm25", path=str(write_mm25(tmp_path / "mm"))),
    ]
    judge = JudgeConfig(base_url=judge_url, model="judge", backoff_s=0.01, max_attempts=1) if judge_url else None
    return evaluator.evaluate("m", runs, tmp_path / "eval", scripted(SPINEBENCH_ANSWERS), judge, engine=STAND_IN)


def _metrics(entry: dict[str, Any]) -> dict[str, scorecard.MetricStats]:
    found = scorecard.read(entry["statistics"])
    assert found is not None
    return {m.key: m for m in found.metrics}


def test_every_metric_has_its_interval_and_equals_the_benchmark_score(tmp_path: Path) -> None:
    with JudgeServer() as server:
        summary = _evaluate_both(tmp_path, server.url)
    sb = summary["benchmarks"]["sb"]
    scores, metrics = sb["scores"], _metrics(sb)
    assert list(metrics) == ["text", "image", "mcq_average", "report", "overall"]
    for key, value in (("mcq_average", scores["mcq_average"]), ("overall", scores["overall"])):
        assert metrics[key].estimate == pytest.approx(value, abs=1e-9)
    assert metrics["text"].estimate == scores["text"]["accuracy"] and metrics["text"].n == 4
    assert metrics["report"].estimate == pytest.approx(scores["report"]["score"], abs=1e-9)
    # A single accuracy: Wilson's interval, exactly; composites: the bootstrap, its seed and resamples named.
    wilson = stats.wilson(scores["text"]["correct"], 4)
    assert (metrics["text"].interval.low, metrics["text"].interval.high) == pytest.approx((wilson.low, wilson.high))
    assert metrics["overall"].interval.method == "95% percentile bootstrap, 2000 resamples within parts, seed 0"
    assert metrics["overall"].interval.low <= metrics["overall"].estimate <= metrics["overall"].interval.high
    mm = summary["benchmarks"]["mm"]
    mm_metrics = _metrics(mm)
    assert mm_metrics["diagnosis"].estimate == pytest.approx(100 * mm["scores"]["diagnosis"]["accuracy"])
    for name in ("accuracy", "precision", "recall"):
        assert mm_metrics[f"localisation_{name}"].estimate == pytest.approx(100 * mm["scores"]["localisation"][name])
    assert "bootstrap" in mm_metrics["localisation_precision"].interval.method
    assert "Wilson" in mm_metrics["localisation_accuracy"].interval.method
    # Every headline figure of the run report finds its interval by label.
    for bench in (sb, mm):
        headline = registry.get(bench["kind"]).headline(bench["scores"])
        assert set(headline) <= set(scorecard.Statistics.model_validate(bench["statistics"]).by_label())
    text = (tmp_path / "eval" / "sb.md").read_text()
    assert "95 % confidence intervals" in text and "| overall | 9 |" in text and "### Protocol" in text


def test_breakdowns_by_label_pool_the_small_groups(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path, 30, {"Trauma": 12, "Biomechanics": 4, "Cervical": 3})
    result = json.loads(evaluate_mcq(bench, tmp_path / "eval", set(range(0, 30, 2)), 30).read_text())
    (breakdown,) = result["statistics"]["breakdowns"]
    assert breakdown["name"] == "subspecialty" and breakdown["min_n"] == 10
    groups = {g["name"]: g for g in breakdown["groups"]}
    assert list(groups) == ["Trauma", "unknown", "other"]  # by n; the pooled group last
    assert groups["Trauma"]["n"] == 12 and groups["Trauma"]["correct"] == 6
    assert groups["other"]["pooled"] == ["Biomechanics", "Cervical"] and groups["other"]["n"] == 7
    assert groups["unknown"]["n"] == 11
    assert sum(g["n"] for g in groups.values()) == 30
    expected = stats.wilson(6, 12)
    assert groups["Trauma"]["interval"]["low"] == pytest.approx(expected.low, abs=1e-6)
    text = (tmp_path / "eval" / "mcq.md").read_text()
    assert "Accuracy by subspecialty" in text and "pooled as 'other' (Biomechanics, Cervical)" in text


def test_mm25_breaks_down_by_task_disease_and_level(tmp_path: Path) -> None:
    summary = _evaluate_both(tmp_path, None)
    breakdowns = {b["name"]: b for b in summary["benchmarks"]["mm"]["statistics"]["breakdowns"]}
    assert list(breakdowns) == ["task", "disease", "level"]
    pooled = breakdowns["disease"]["groups"][0]["pooled"]
    assert pooled == ["Disc herniation", "Healthy"]  # the correct options' texts
    assert breakdowns["level"]["groups"][0]["pooled"] == ["L3/L4", "L4/L5 + L5/S1"]


def test_every_result_records_its_protocol(tmp_path: Path) -> None:
    with JudgeServer() as server:
        _evaluate_both(tmp_path, server.url)
    data = json.loads((tmp_path / "eval" / "sb.json").read_text())
    made = protocol.EvalProtocol.model_validate(data["protocol"])
    assert made.benchmark.sha256 == sha256_file(tmp_path / "sb" / "spinebench.jsonl") and made.benchmark.items == 9
    assert made.prompt.template["single"].startswith("Select the single best option")
    assert made.prompt.template_sha256 == protocol.template_sha256()
    assert made.generation is not None and made.generation.max_new_tokens == {"mcq": 1024, "report": 2048}
    assert made.generation.decoding == "greedy" and made.generation.engine == "scripted stand-in"
    assert made.answers.rules_version == answers.RULES_VERSION and made.answers.extractor is None
    assert (
        made.judge is not None and made.judge.model == "judge" and made.judge.rubric_sha256 == protocol.rubric_sha256()
    )
    assert made.statistics.resamples == 2000 and made.provenance.packages["numpy"]
    assert data["protocol_sha256"] == made.sha256
    # The MM'25 file has no reports: its judge is not part of its protocol.
    mm = protocol.EvalProtocol.model_validate(json.loads((tmp_path / "eval" / "mm.json").read_text())["protocol"])
    assert mm.judge is None and mm.generation is not None and mm.generation.max_new_tokens == {"mcq": 1024}


# -- paired comparisons --------------------------------------------------------------------------------------------


def test_paired_comparison_of_two_result_files_with_known_outcomes(tmp_path: Path) -> None:
    n = 60
    bench = write_mcq_bench(tmp_path / "bench", n)
    both, a_only, b_only = set(range(20)), {20, 21}, set(range(30, 40))  # 20 both, 2 A only, 10 B only
    a = evaluate_mcq(bench, tmp_path / "a", both | a_only, n, model="A")
    b = evaluate_mcq(bench, tmp_path / "b", both | b_only, n, model="B")
    # B's records in another order: the comparison matches items by id, not by position.
    shuffled = json.loads(b.read_text())
    random.Random(3).shuffle(shuffled["records"])
    b.write_text(json.dumps(shuffled))
    comparison = compare.compare_files(a, b)
    text = comparison.metric("text")
    assert text is not None and text.n == n
    assert (text.a, text.b) == pytest.approx((100 * 22 / n, 100 * 30 / n))
    assert text.difference.estimate == pytest.approx(100 * 8 / n)
    assert text.mcnemar is not None and (text.mcnemar.b_only, text.mcnemar.a_only) == (10, 2)
    exact = 2 * sum(math.comb(12, k) for k in range(3)) / 2**12  # two-sided binomial, 2 of 12 discordant
    assert text.mcnemar.p_value == pytest.approx(exact, rel=1e-12)
    assert text.difference.interval.low < text.difference.estimate < text.difference.interval.high
    assert "B minus A" in text.difference.interval.method
    data = comparison.to_json()
    assert data["metrics"][0]["mcnemar"]["p_value"] == float(f"{exact:.4g}") and data["a"]["model"] == "A"
    # The same comparison the other way round: the sign flips, the test does not change.
    back = compare.compare_files(b, a).metric("text")
    assert back is not None and back.difference.estimate == pytest.approx(-text.difference.estimate)
    assert back.mcnemar is not None and back.mcnemar.p_value == text.mcnemar.p_value


def test_a_protocol_mismatch_is_refused_with_the_field_named(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", 10)
    a = evaluate_mcq(bench, tmp_path / "a", {1, 2}, 10)
    b = evaluate_mcq(bench, tmp_path / "b", {1, 2}, 10, max_new_tokens=12)
    with pytest.raises(compare.ComparisonRefused, match=r"different evaluation protocols: generation\.max_new_tokens"):
        compare.compare_files(a, b)
    with pytest.raises(compare.ComparisonRefused, match=r"mcq: 1024 vs 12"):
        compare.compare_files(a, b)
    # Another benchmark file (one item more): refused as a different benchmark, naming what differs.
    other = write_mcq_bench(tmp_path / "other", 11)
    c = evaluate_mcq(other, tmp_path / "c", {1, 2}, 11)
    with pytest.raises(
        compare.ComparisonRefused, match=r"different benchmarks \(items or file differ\): benchmark\.sha256"
    ):
        compare.compare_files(a, c)
    # A result written before protocols were recorded: refused with what to do, not a traceback.
    old = json.loads(a.read_text())
    for key in ("protocol", "protocol_sha256", "statistics"):
        old.pop(key)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "mcq.json").write_text(json.dumps(old))
    with pytest.raises(compare.ComparisonRefused, match=r"records no evaluation protocol.*--rescore"):
        compare.compare_files(tmp_path / "old" / "mcq.json", a)


def test_a_run_with_the_same_settings_is_comparable_and_package_versions_are_only_noted(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", 10)
    a = evaluate_mcq(bench, tmp_path / "a", {1}, 10)
    b = evaluate_mcq(bench, tmp_path / "b", {1}, 10)
    edited = json.loads(b.read_text())
    edited["protocol"]["provenance"]["packages"]["numpy"] = "0.0.1"
    b.write_text(json.dumps(edited))
    comparison = compare.compare_files(a, b)
    assert any("provenance.packages.numpy" in note for note in comparison.notes)
    assert comparison.metric("text") is not None


# -- re-scoring ----------------------------------------------------------------------------------------------------


def test_rescoring_gives_the_original_scores_back_and_never_touches_the_result(tmp_path: Path) -> None:
    with JudgeServer() as server:
        summary = _evaluate_both(tmp_path, server.url)
        asked = sum(server.calls.values())
    original = tmp_path / "eval" / "sb.json"
    before = sha256_file(original)
    again = rescore.rescore(original, tmp_path / "rescored")  # no judge given: the recorded verdicts count
    assert sha256_file(original) == before
    entry, first = again["benchmarks"]["sb"], summary["benchmarks"]["sb"]
    assert entry["scores"] == first["scores"] and entry["statistics"] == first["statistics"]
    assert entry["protocol_sha256"] == first["protocol_sha256"]
    written = json.loads((tmp_path / "rescored" / "sb.json").read_text())
    assert [r["output"] for r in written["records"]] == [
        r["output"] for r in json.loads(original.read_text())["records"]
    ]
    assert written["protocol"]["provenance"]["rescored_from"]["sha256"] == before
    assert asked > 0 and compare.compare_files(original, tmp_path / "rescored" / "sb.json").metric("overall")
    mm = rescore.rescore(tmp_path / "eval" / "mm.json", tmp_path / "rescored-mm")["benchmarks"]["mm"]
    assert mm["scores"] == summary["benchmarks"]["mm"]["scores"]
    with pytest.raises(rescore.RescoreError, match="never overwritten"):
        rescore.rescore(original, tmp_path / "eval")


def test_rescoring_judges_what_a_judge_that_was_down_could_not(tmp_path: Path) -> None:
    with pytest.raises(evaluator.EvalError, match="no report of sb could be judged"):
        _evaluate_both(tmp_path, "http://127.0.0.1:9/v1")  # nothing listens: every judgment fails
    down = json.loads((tmp_path / "eval" / "sb.json").read_text())
    assert down["scores"]["overall"] is None and "report" not in _metrics(down)
    with JudgeServer() as server:
        judge = JudgeConfig(base_url=server.url, model="judge", backoff_s=0.01)
        again = rescore.rescore(tmp_path / "eval" / "sb.json", tmp_path / "rescored", judge)
    scores = again["benchmarks"]["sb"]["scores"]
    assert scores["report"]["judged"] == 2 and scores["overall"] is not None
    assert _metrics(again["benchmarks"]["sb"])["report"].estimate == pytest.approx(20 * 4.0)  # GOOD: sections 5,3,4,4,4
    assert scores["text"] == down["scores"]["text"]  # the multiple choice is read as it was
    assert GOOD["imaging_report"] == 5


def test_rescoring_records_new_answer_rules_and_compare_keeps_them_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = write_mcq_bench(tmp_path / "bench", 10)
    original = evaluate_mcq(bench, tmp_path / "a", {1, 2, 3}, 10)
    monkeypatch.setattr(answers, "RULES_VERSION", answers.RULES_VERSION + 1)
    rescore.rescore(original, tmp_path / "b")
    rescored = results.load(tmp_path / "b" / "mcq.json")
    assert rescored.protocol is not None and rescored.protocol.answers.rules_version == answers.RULES_VERSION
    with pytest.raises(compare.ComparisonRefused, match=r"answers\.rules_version: 1 vs 2"):
        compare.compare_files(original, tmp_path / "b" / "mcq.json")


def test_a_result_from_before_protocols_rescores_from_its_benchmark_file(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", 10)
    made = json.loads(evaluate_mcq(bench, tmp_path / "a", {1, 2}, 10).read_text())
    for key in ("protocol", "protocol_sha256", "statistics", "model"):
        made.pop(key)
    for record in made["records"]:  # records then held no question or multi
        record.pop("question"), record.pop("multi")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "mcq.json").write_text(json.dumps(made))
    summary = rescore.rescore(tmp_path / "old" / "mcq.json", tmp_path / "new")
    assert summary["benchmarks"]["mcq"]["scores"]["text"]["correct"] == 2
    written = results.load(tmp_path / "new" / "mcq.json")
    assert written.protocol is not None and written.protocol.generation is None
    assert "generation: not recorded" in (tmp_path / "new" / "mcq.md").read_text()
