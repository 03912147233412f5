"""The regression budget: the pure rule, a run's stages against its base model (manifest, log record, report), and
the sweep's general-medicine table against its base-model row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spinegpt.eval_hooks import regression as rule
from spinegpt.train import ablation_table, manifest, regression, report
from spinegpt.train.manifest import RunManifest, StageRecord


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


def _stage(name: str, index: int, benchmarks: dict[str, Any], tmp_path: Path) -> StageRecord:
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
        eval={"status": "done", "dir": "e", "started_at": "t", "benchmarks": benchmarks},
    )


def _run(stages: list[StageRecord], baseline: dict[str, Any] | None) -> RunManifest:
    extra = {"baseline": {"status": "done", "dir": "b", "started_at": "t", "benchmarks": baseline}} if baseline else {}
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
        **extra,
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
    assert first.eval is not None and first.eval.model_extra is not None
    assert first.eval.model_extra["regressions"][0]["difference"] == pytest.approx(-2.0)
    (flag,) = regression.record(run, second)
    assert flag.benchmark == "medqa" and flag.difference == pytest.approx(-9.0) and second.status == "done"
    run.write(tmp_path / manifest.FILE)
    assert RunManifest.read(tmp_path / manifest.FILE).stages[1].eval.model_extra["regressions"][0]["flagged"]  # type: ignore[union-attr]
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
    assert failed.model_extra is not None
    failed.model_extra["baseline"]["status"] = "failed"
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
