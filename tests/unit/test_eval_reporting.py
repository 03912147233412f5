"""Where the intervals and comparisons show: the run report (the base model as row 0, each stage against the previous
one and the base), the model card, the Table 7 outputs; and the base model's evaluation, cached by model and
protocol. On recorded outputs made by a scripted stand-in (no model); the after-stage evaluation through the real
engine is tests/e2e/test_smoke_run.py's."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from spinegpt.eval_hooks import evaluator, scorecard
from spinegpt.eval_hooks.config import BenchmarkConfig, EvalJob
from spinegpt.train import (
    ablation_table,
    baseline,
    commands,
    curriculum,
    manifest,
    model_card,
    plan,
    report,
    swift_adapter,
)
from spinegpt.train.hooks.evaluation import EvaluationHook
from spinegpt.train.hooks.manifest import ManifestHook
from spinegpt.train.manifest import BaselineRecord, EvalRecord, RunManifest, StageRecord

from ..bench_fixtures import STAND_IN, evaluate_mcq, scripted, write_mcq_bench, write_spinebench
from ..conftest import CURRICULA

N = 40


def _stage(index: int, name: str, eval_dir: Path) -> StageRecord:
    summary = json.loads((eval_dir / evaluator.SUMMARY).read_text())
    return StageRecord(
        name=name,
        index=index,
        dir=str(eval_dir.parent),
        status="done",
        config={},
        config_sha256="x",
        model="m",
        starts_from="base",
        engine_args=[],
        command=[],
        eval=EvalRecord(status="done", dir=str(eval_dir), started_at="t", benchmarks=summary["benchmarks"]),
    )


def _run(tmp_path: Path, stages: list[StageRecord], base: Path | None) -> Path:
    run = RunManifest(
        format=manifest.FORMAT,
        name="r",
        run_id="r-1",
        curriculum_file="c.yaml",
        curriculum={},
        output_dir=str(tmp_path),
        launch={},
        world_size=1,
        created_at="now",
        status="done",
        stages=stages,
    )
    if base is not None:
        summary = json.loads((base / evaluator.SUMMARY).read_text())
        run.baseline = BaselineRecord(
            status="done", dir=str(base), started_at="t", model="base", benchmarks=summary["benchmarks"]
        )
    tmp_path.mkdir(parents=True, exist_ok=True)
    run.write(tmp_path / manifest.FILE)
    return tmp_path


def test_the_run_report_sets_every_stage_against_the_previous_one_and_the_base_model(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", N)
    base = evaluate_mcq(bench, tmp_path / "baseline" / "eval", set(range(10)), N).parent
    first = evaluate_mcq(bench, tmp_path / "s1" / "eval", set(range(30)), N).parent
    second = evaluate_mcq(bench, tmp_path / "s2" / "eval", set(range(31)), N).parent
    third = evaluate_mcq(bench, tmp_path / "s3" / "eval", set(range(31)), N, max_new_tokens=7).parent
    stages = [_stage(0, "one", first), _stage(1, "two", second), _stage(2, "three", third)]
    text = report.write_report(_run(tmp_path / "run", stages, base)).read_text()
    # Row 0 and every figure with its interval.
    assert "| base model | 25.00 [14.19, 40.19] |" in text
    assert "| one | 75.00 [59.81, 85.81] |" in text
    # Stage one against the base (its previous evaluation): +50 points, McNemar on 20 discordant items, all for B.
    assert "| one | base model | +50.00 [" in text and "p 1.91e-06" in text
    # Stage two: against one (previous) and against the base.
    assert "| two | one | +2.50 [+0.00, +7.50], p 1 |" in text
    assert "| two | base model | +52.50 [" in text
    # Stage three was evaluated under another protocol: marked, with the differing field, not compared.
    assert (
        "| three | two | not comparable: different evaluation protocols: generation.max_new_tokens.mcq: 1024 vs 7"
        in (text)
    )
    assert (tmp_path / "run" / "report" / "eval.png").is_file()


def test_error_bars_of_degenerate_intervals(tmp_path: Path) -> None:
    """Every text item right and every image item wrong: the average's bootstrap interval is the single value 4/7,
    recorded with six decimals just below the figure; the plots draw it as a bar without error, not an error."""
    path = write_spinebench(tmp_path / "sb")
    bench = BenchmarkConfig(name="sb", kind="spinebench", path=str(path), mcq_only=True)
    answers = {"most often": "B", "Cobb": "B", "cauda": "A", "red flags": "Answer: A, B", "highlighted": "A"}
    summary = evaluator.evaluate("m", [bench], tmp_path / "eval", scripted(answers), engine=STAND_IN)
    metric = _statistics(summary)["mcq_average"]
    assert metric.interval.high < metric.estimate == pytest.approx(400 / 7)  # a hair below, from the rounding
    assert report.plot_eval([report.EvalRow("one", tmp_path / "eval", summary["benchmarks"])], tmp_path / "e.png")
    row = {"name": "r", "splits": [], "scores": summary["benchmarks"]["sb"]["scores"]}
    row["statistics"] = summary["benchmarks"]["sb"]["statistics"]
    ablation_table.chart([row], False, tmp_path / "t.png", "t")
    assert (tmp_path / "t.png").stat().st_size > 0


def _statistics(summary: dict[str, Any]) -> dict[str, Any]:
    found = scorecard.read(summary["benchmarks"]["sb"]["statistics"])
    assert found is not None
    return {m.key: m for m in found.metrics}


def test_a_report_of_results_without_statistics_still_renders(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", N)
    first = evaluate_mcq(bench, tmp_path / "s1" / "eval", set(range(30)), N).parent
    stage = _stage(0, "one", first)
    assert stage.eval is not None and stage.eval.benchmarks is not None
    for entry in stage.eval.benchmarks.values():  # as a manifest written before statistics were recorded
        entry.pop("statistics"), entry.pop("protocol_sha256")
    text = report.write_report(_run(tmp_path / "run", [stage], None)).read_text()
    assert "| one | 75.00 |" in text


def test_the_model_card_gives_each_figure_its_interval(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", N)
    stage = _stage(0, "one", evaluate_mcq(bench, tmp_path / "s1" / "eval", set(range(30)), N).parent)
    lines = model_card.intervals(stage)
    assert lines[0].startswith("- mcq, with 95 % confidence intervals: text MCQ % 75.00 [59.81, 85.81] (n 40).")
    assert "Evaluation protocol `" in lines[0] and "2000 resamples, seed 0" in lines[-1]


def _row(name: str, splits: list[str], result: Path) -> dict[str, Any]:
    summary = json.loads((result.parent / evaluator.SUMMARY).read_text())["benchmarks"]["mcq"]
    return {"name": name, "splits": splits, "scores": summary["scores"], "statistics": summary["statistics"]} | {
        "result_file": str(result)
    }


def test_table7_marks_each_row_against_the_full_curriculum(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", N)
    rows = [
        _row("base", [], evaluate_mcq(bench, tmp_path / "r1", set(range(10)), N)),
        _row("spine", ["spine"], evaluate_mcq(bench, tmp_path / "r2", set(range(29)), N)),
        _row("other", ["general"], evaluate_mcq(bench, tmp_path / "r3", set(range(29)), N, max_new_tokens=5)),
        _row("full", ["general", "non_spine", "spine"], evaluate_mcq(bench, tmp_path / "r4", set(range(30)), N)),
    ]
    md, table, png = ablation_table.write(rows, tmp_path, "t7", compare_paper=False, title="t")
    text = md.read_text()
    assert "avg − row 4 [95 % CI]" in text and "| reference |" in text
    # A sweep run with --only keeps Table 7's own row numbers (row.json's "number"), not positions.
    numbered = ablation_table.markdown([r | {"number": n} for r, n in zip(rows, (1, 4, 5, 6), strict=True)], False, "t")
    assert "avg − row 6 [95 % CI]" in numbered and "| 4 | spine |" in numbered
    # Intervals: Wilson's for 10, 29 and 30 of 40 (checked against scipy's binomtest); 20 discordant items, all one
    # way, give McNemar's p = 2 / 2^20.
    assert "| 1 | base |  |  |  | 25.00 (14.19–40.19) |  | 25.00 (14.19–40.19) | 40 | 0 | -50.00 [" in text
    assert "| 1.91e-06 |" in text
    assert (
        "| 2 | spine |  |  | ✓ | 72.50 (57.17–83.89) |  | 72.50 (57.17–83.89) | 40 | 0 | -2.50 [-7.50, +0.00] | 1 |"
        in (text)
    )
    assert "not comparable (different evaluation protocols: generation.max_new_tokens.mcq: 1024 vs 5)" in text
    with table.open() as handle:
        by_name = {r["curriculum"]: r for r in csv.DictReader(handle)}
    assert by_name["base"]["avg − full"] == "-50.00" and by_name["base"]["p (McNemar)"] == "1.91e-06"
    assert (by_name["spine"]["text low"], by_name["spine"]["text high"]) == ("57.17", "83.89")
    assert by_name["full"]["avg − full"] == "" and by_name["other"]["vs full"].startswith("not comparable")
    assert png.stat().st_size > 0


# -- the base model as row 0 ---------------------------------------------------------------------------------------


class StandInEngine:
    """Stands in for the evaluation process (``spinegpt eval MODEL --config ... --output-dir ...``): it runs the
    evaluation in-process with a scripted model and counts how often it was started."""

    def __init__(self) -> None:
        self.started = 0

    def __call__(self, command: list[str], env: dict[str, str], log: Path) -> int:
        self.started += 1
        job = EvalJob.read(Path(command[command.index("--config") + 1]))
        out = Path(command[command.index("--output-dir") + 1])
        answers = {f"Question {i}?": "Answer: A" for i in range(5)}
        evaluator.evaluate(command[4], job.benchmarks, out, scripted(answers), engine=STAND_IN)
        return 0


def _model_folder(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def _baseline_plan(tmp_path: Path, model: Path, bench: Path, out: str = "run") -> plan.Plan:
    evaluation = f"eval={{benchmarks: [{{kind: spinebench, path: '{bench}', name: mcq}}], baseline: true}}"
    loaded = curriculum.load(CURRICULA / "smoke.yaml", [f"model={model}", evaluation])
    return plan.build(loaded, tmp_path / out)


def _started_run(built: plan.Plan, engine: StandInEngine) -> RunManifest:
    run = RunManifest(
        name="r",
        run_id="r-1",
        curriculum_file="c.yaml",
        curriculum={},
        output_dir=str(built.output_dir),
        launch={},
        world_size=1,
        created_at="now",
        status="running",
    )
    saved = ManifestHook(built.output_dir / manifest.FILE)
    built.output_dir.mkdir(parents=True, exist_ok=True)
    saved.run_started(run)
    EvaluationHook(built, engine, saved).run_started(run)
    return RunManifest.read(built.output_dir / manifest.FILE)


def test_the_base_model_is_evaluated_once_and_reused_by_model_and_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))
    bench = write_mcq_bench(tmp_path / "bench", 10)
    model = _model_folder(tmp_path / "model", b"weights one")
    engine = StandInEngine()
    built = _baseline_plan(tmp_path, model, bench)
    assert built.baseline is not None and "baseline   : the base model on mcq" in built.render()
    run = _started_run(built, engine)
    assert engine.started == 1
    assert run.baseline is not None and run.baseline.status == "done" and not run.baseline.cached
    assert run.baseline.benchmarks is not None and run.baseline.benchmarks["mcq"]["scores"]["text"]["correct"] == 5
    assert (built.baseline_dir / "mcq.json").is_file()
    # The same run resumed: its own baseline is there, nothing runs.
    _started_run(built, engine)
    assert engine.started == 1
    # Another run from the same model, same settings: from the cache.
    other = _started_run(_baseline_plan(tmp_path, model, bench, out="other"), engine)
    assert engine.started == 1 and other.baseline is not None and other.baseline.cached
    assert other.baseline.cache_key == run.baseline.cache_key
    # Other weights, or another generation budget: evaluated again.
    _model_folder(model, b"weights two")
    _started_run(_baseline_plan(tmp_path, model, bench, out="third"), engine)
    assert engine.started == 2
    job = built.baseline.model_copy(deep=True)
    budget = job.benchmarks[0].model_copy(update={"max_new_tokens": 9})
    changed = job.model_copy(update={"eval": job.eval.model_copy(update={"benchmarks": [budget]})})
    identity = baseline.model_identity(built.curriculum, str(model))
    assert identity is not None
    assert baseline.cache_key(identity, changed, {}) != baseline.cache_key(identity, job, {})
    assert baseline.cache_key(identity, job, {"MAX_PIXELS": "50176"}) != baseline.cache_key(identity, job, {})


def test_a_failed_base_model_evaluation_is_recorded_and_training_goes_on(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", 10)
    built = _baseline_plan(tmp_path, tmp_path / "no-such-model", bench)
    run = _started_run(built, StandInEngine())
    assert run.baseline is not None and run.baseline.status == "failed"
    assert "no-such-model" in str(run.baseline.error)


def test_baseline_is_a_curriculum_setting_not_a_stage_one(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", 3)
    stage_eval = f"stages.foundation.eval={{benchmarks: [{{kind: spinebench, path: '{bench}'}}], baseline: true}}"
    with pytest.raises(curriculum.CurriculumError, match="set it in the curriculum's eval"):
        curriculum.load(CURRICULA / "smoke.yaml", [stage_eval])


def test_compare_finds_the_last_evaluated_stage_of_a_run_and_a_stage_folders_eval(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", N)
    first = evaluate_mcq(bench, tmp_path / "s1" / "eval", set(range(30)), N).parent
    second = evaluate_mcq(bench, tmp_path / "s2" / "eval", set(range(31)), N).parent
    run = _run(tmp_path / "run", [_stage(0, "one", first), _stage(1, "two", second)], None)
    assert commands.evaluation_target(run) == second
    assert commands.evaluation_target(tmp_path / "s1") == first
    assert commands.evaluation_target(first / "mcq.json") == first / "mcq.json"


def test_the_generator_records_the_settings_that_decide_its_outputs() -> None:
    generator = swift_adapter.Generator(
        "m", model_type="qwen2_5_vl", template="qwen2_5_vl", torch_dtype="bfloat16", attn_impl="sdpa", batch_size=4
    )
    settings = generator.settings({"MAX_PIXELS": "50176"})
    assert settings.backend in ("transformers", "vllm")  # "auto" is resolved, never recorded as such
    assert (settings.max_pixels, settings.min_pixels, settings.batch_size) == ("50176", None, 4)
    assert settings.decoding == "greedy" and settings.temperature == 0.0 and settings.seed == generator.SEED
    forced = swift_adapter.Generator(
        "m", model_type="x", template="y", torch_dtype="float32", attn_impl="eager", batch_size=1, backend="vllm"
    )
    assert forced.settings({}).backend == "vllm"
