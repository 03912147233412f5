"""The regression budget: the pure rule, a run's stages against its base model (manifest, log record, report), and
the sweep's general-medicine table against its base-model row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spinegpt.eval_hooks import evaluator
from spinegpt.eval_hooks import regression as rule
from spinegpt.eval_hooks.config import BenchmarkConfig
from spinegpt.train import ablation_table, manifest, regression, report
from spinegpt.train.manifest import BaselineRecord, RunManifest, StageRecord

from .. import bench_fixtures as bf


def test_a_drop_beyond_the_budget_is_flagged_and_an_interval_says_how_sure() -> None:
    base = {"closed %": 70.0, "open recall %": 50.0, "overall %": 60.0}
    stage = {"closed %": 64.0, "open recall %": 45.0, "only in the stage": 1.0}
    checks = {c.metric: c for c in rule.check("vqa_rad", base, stage, max_drop=5.0)}
    assert set(checks) == {"closed %", "open recall %"}  # figures the base lacks are not judged
    assert checks["closed %"].flagged and checks["closed %"].difference == pytest.approx(-6.0)
    assert not checks["open recall %"].flagged  # exactly the budget is within it
    assert checks["closed %"].certainty == "unknown"
    sure = rule.check("vqa_rad", base, stage, 5.0, {"closed %": (-9.0, -5.5)})[0]
    unsure = rule.check("vqa_rad", base, stage, 5.0, {"closed %": (-11.0, -1.0)})[0]
    assert sure.certainty == "beyond" and unsure.certainty == "uncertain" and sure.flagged and unsure.flagged
    assert "FLAGGED: drop beyond 5 (the whole interval)" in sure.describe()
    assert "[-11.00, -1.00]" in unsure.describe() and "(the interval reaches inside)" in unsure.describe()
    assert rule.check("x", {"a": 80.0}, {"a": 90.0}, 0.0)[0].flagged is False  # a gain is never flagged
    with pytest.raises(ValueError, match="max_drop must be >= 0"):
        rule.check("x", {}, {}, -1.0)


def _entry(kind: str, scores: dict[str, Any], max_drop: float | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": kind, "items": 10, "unparsed": 0, "scores": scores}
    if max_drop is not None:
        entry["max_drop"] = max_drop
    return entry


def _mcq(accuracy: float) -> dict[str, Any]:
    return {"overall": {"n": 100, "correct": int(accuracy), "accuracy": accuracy, "unparsed": 0}}


BASE = {"medqa": _entry("medqa", _mcq(60.0)), "mmmu": _entry("mmmu", _mcq(40.0))}


def _stage(name: str, index: int, benchmarks: dict[str, Any], tmp_path: Path, eval_dir: str = "e") -> StageRecord:
    return StageRecord(
        name=name,
        index=index,
        dir=str(tmp_path / "stages" / f"0{index + 1}-{name}"),
        status="done",
        config={},
        config_sha256="x",
        model="m",
        starts_from="base",
        engine_args=[],
        command=[],
        eval={"status": "done", "dir": eval_dir, "started_at": "t", "benchmarks": benchmarks},
    )


def _run(stages: list[StageRecord], baseline: dict[str, Any] | None, base_dir: str = "b") -> RunManifest:
    record = {"status": "done", "dir": base_dir, "started_at": "t", "benchmarks": baseline, "model": "m"}
    return RunManifest(
        format=manifest.FORMAT,
        name="r",
        run_id="r-1",
        curriculum_file="c.yaml",
        curriculum={},
        output_dir="o",
        launch={},
        world_size=1,
        created_at="now",
        status="done",
        attempts=[],
        stages=stages,
        baseline=BaselineRecord.model_validate(record) if baseline else None,
    )


def test_each_stage_is_set_against_the_base_model_and_flagged_not_failed(tmp_path: Path) -> None:
    first = _stage(
        "foundation",
        0,
        {"medqa": _entry("medqa", _mcq(58.0), 5.0), "mmmu": _entry("mmmu", _mcq(20.0))},  # mmmu: no budget
        tmp_path,
    )
    second = _stage("specialise", 1, {"medqa": _entry("medqa", _mcq(51.0), 5.0)}, tmp_path)
    run = _run([first, second], BASE)
    assert regression.record(run, first) == []
    assert first.eval is not None and first.eval.regressions is not None
    assert first.eval.regressions[0]["difference"] == pytest.approx(-2.0)
    assert first.eval.regressions[0]["interval"] is None  # no result files to pair: the plain difference alone
    (flag,) = regression.record(run, second)
    assert flag.benchmark == "medqa" and flag.difference == pytest.approx(-9.0) and second.status == "done"
    run.write(tmp_path / manifest.FILE)
    again = RunManifest.read(tmp_path / manifest.FILE).stages[1].eval
    assert again is not None and again.regressions is not None and again.regressions[0]["flagged"]
    text = report.write_report(tmp_path).read_text()
    assert "## Regression budget (against the base model)" in text
    assert "| specialise | medqa | accuracy % | 60.00 | 51.00 | -9.00 | 5 | **flagged** |" in text
    assert "| foundation | medqa | accuracy % | 60.00 | 58.00 | -2.00 | 5 | within budget |" in text
    assert "Flagged is not failed" in text and "mmmu" not in text.split("## Regression budget")[1]


def test_without_a_base_evaluation_the_report_says_nothing_was_checked(tmp_path: Path) -> None:
    stage = _stage("foundation", 0, {"medqa": _entry("medqa", _mcq(58.0), 5.0)}, tmp_path)
    run = _run([stage], None)
    assert regression.base_benchmarks(run) is None and regression.record(run, stage) == []
    run.write(tmp_path / manifest.FILE)
    text = report.write_report(tmp_path).read_text()
    assert "Budgets are set (max drop in points: medqa 5) but the run records no evaluation of its base model" in text
    # A run whose base-model evaluation failed compares with nothing either.
    failed = _run([stage], BASE)
    assert failed.baseline is not None
    failed.baseline.status = "failed"
    assert regression.base_benchmarks(failed) is None


def _row(name: str, splits: list[str], medqa: float, stages: int = 1) -> dict[str, Any]:
    spine = {"text": {"accuracy": 80.0, "n": 4, "correct": 3}, "image": {"accuracy": 50.0, "n": 2, "correct": 1}}
    return {
        "name": name,
        "splits": splits,
        "stages": [{"name": f"s{i}"} for i in range(stages)],
        "benchmark": "spinebench",
        "scores": spine,
        "benchmarks": {
            "spinebench": _entry("spinebench", spine),
            "medqa": _entry("medqa", _mcq(medqa), 4.0),
        },
    }


def test_the_sweep_table_flags_rows_against_its_base_model_row() -> None:
    rows = [
        _row("t7_1_base", [], 60.0, stages=0),
        _row("t7_2_general", ["general"], 58.0),
        _row("t7_4_spine", ["spine"], 50.0),
    ]
    text = ablation_table.markdown(rows, compare_paper=False, title="Table 7")
    general = text.split("## General medicine")[1]
    assert "| row | curriculum | medqa: accuracy % | regression budget |" in general
    assert "| 1 | t7_1_base | 60.00 | base model |" in general
    assert "| 2 | t7_2_general | 58.00 | within budget |" in general
    assert "| 3 | t7_4_spine | 50.00 | **flagged** medqa accuracy % -10.00 (max drop 4) |" in general
    no_base = ablation_table.markdown(rows[1:], compare_paper=False, title="Table 7")
    assert "no base model to compare with" in no_base
    plain = [dict(r, benchmarks={"spinebench": r["benchmarks"]["spinebench"]}) for r in rows]
    assert "## General medicine" not in ablation_table.markdown(plain, compare_paper=False, title="Table 7")


MEDQA_RIGHT = {"chest pain": "Answer: B", "honey": "Answer: A", "scurvy": "Answer: C", "wrist drop": "Answer: D"}


def _medqa_eval(bench: Path, out: Path, right: set[str]) -> dict[str, Any]:
    """MedQA (the fixture's 4 items) answered right exactly on the questions named by keyword in ``right``."""
    replies = {k: a if k in right else "Answer: A" if a != "Answer: A" else "Answer: B" for k, a in MEDQA_RIGHT.items()}
    config = BenchmarkConfig(kind="medqa", path=str(bench), max_drop=5)
    summary = evaluator.evaluate("m", [config], out, bf.scripted(replies), engine=bf.STAND_IN)
    benchmarks: dict[str, Any] = summary["benchmarks"]
    return benchmarks


def test_the_check_carries_the_paired_interval_of_the_difference(tmp_path: Path) -> None:
    """Result files on disk: each stage's drop is set against the base model item by item. A drop on every item is
    beyond the budget whatever the resample; a drop on half of 4 items is flagged but within noise."""
    bench = bf.write_medqa(tmp_path / "medqa")
    every = set(MEDQA_RIGHT)
    base = _medqa_eval(bench, tmp_path / "base", every)
    worst = _medqa_eval(bench, tmp_path / "s1", set())
    half = _medqa_eval(bench, tmp_path / "s2", {"chest pain", "honey"})
    first = _stage("foundation", 0, worst, tmp_path, str(tmp_path / "s1"))
    second = _stage("specialise", 1, half, tmp_path, str(tmp_path / "s2"))
    run = _run([first, second], base, str(tmp_path / "base"))
    (sure,) = regression.record(run, first)
    assert sure.difference == pytest.approx(-100.0) and sure.interval == pytest.approx((-100.0, -100.0))
    assert sure.certainty == "beyond"
    (unsure,) = regression.record(run, second)
    assert unsure.difference == pytest.approx(-50.0) and unsure.interval is not None
    assert unsure.interval[0] <= -50.0 <= unsure.interval[1] and unsure.interval[1] > -5.0
    assert unsure.certainty == "uncertain" and unsure.flagged
    assert second.eval is not None and second.eval.regressions is not None
    assert second.eval.regressions[0]["certainty"] == "uncertain"
    run.write(tmp_path / manifest.FILE)
    text = report.write_report(tmp_path).read_text()
    row = "| foundation | medqa | accuracy % | 100.00 | 0.00 | -100.00 [-100.00, -100.00] | 5 |"
    assert f"{row} **flagged** (beyond noise) |" in text
    assert "| specialise | medqa | accuracy % | 100.00 | 50.00 | -50.00 [" in text
    assert "**flagged** (interval reaches inside the budget)" in text
    # Results made under another protocol are not paired: the check rests on the plain difference.
    other = _medqa_eval(bench, tmp_path / "s3", set())
    changed = json.loads((tmp_path / "s3" / "medqa.json").read_text())
    changed["protocol"]["answers"]["rules_version"] = -1
    (tmp_path / "s3" / "medqa.json").write_text(json.dumps(changed))
    third = _stage("reports", 2, other, tmp_path, str(tmp_path / "s3"))
    (plain,) = regression.record(_run([third], base, str(tmp_path / "base")), third)
    assert plain.flagged and plain.interval is None and plain.certainty == "unknown"


def test_the_sweep_table_shows_intervals_and_pairs_each_row_with_the_base_row(tmp_path: Path) -> None:
    bench = bf.write_medqa(tmp_path / "medqa")
    evaluations = {
        "t7_1_base": _medqa_eval(bench, tmp_path / "base", set(MEDQA_RIGHT)),
        "t7_4_spine": _medqa_eval(bench, tmp_path / "spine", set()),
    }
    rows = [
        {
            **_row(name, [] if name == "t7_1_base" else ["spine"], 0.0, stages=0 if name == "t7_1_base" else 1),
            "benchmarks": {**_row(name, [], 0.0)["benchmarks"], "medqa": entry["medqa"]},
            "result_file": str(tmp_path / folder / "spinebench.json"),  # the row's evaluation folder
        }
        for (name, entry), folder in zip(evaluations.items(), ("base", "spine"), strict=True)
    ]
    general = ablation_table.markdown(rows, compare_paper=False, title="Table 7").split("## General medicine")[1]
    assert "| 1 | t7_1_base | 100.00 (" in general  # the figure with its Wilson interval
    flag = "**flagged** medqa accuracy % -100.00 [-100.00, -100.00] (max drop 5, beyond noise)"
    assert "| 2 | t7_4_spine | 0.00 (0.00–" in general and flag in general
