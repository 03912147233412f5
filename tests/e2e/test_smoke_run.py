"""The smoke curriculum end to end: `spinegpt run` -> ms-swift -> DeepSpeed (ZeRO-2, ZeRO-3 + CPU offload) on 2
processes over gloo, three stages chained by their weights. Slow: minutes on 2 cores."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from spinegpt.train import manifest, report, weights

from ..bench_fixtures import write_mm25, write_mm25_parquet, write_spinebench
from ..conftest import run_spinegpt, run_until_then_kill
from ..judge_server import JudgeServer


def test_three_stages_trained_and_loadable(smoke_run: tuple[Path, dict[str, Any], str]) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _, data, _ = smoke_run
    assert data["status"] == "done" and data["world_size"] == 2
    assert [s["name"] for s in data["stages"]] == ["foundation", "specialise", "reports"]
    assert [s["zero_stage"] for s in data["stages"]] == [2, 2, 3]
    for stage in data["stages"]:
        final = Path(stage["final"])
        assert stage["status"] == "done" and (Path(stage["dir"]) / "DONE.json").is_file()
        model = AutoModelForImageTextToText.from_pretrained(final)
        AutoProcessor.from_pretrained(final)
        assert sum(p.numel() for p in model.parameters()) > 0
        assert weights.weights_sha256(final) == stage["weights_sha256"]


def test_each_stage_starts_from_the_previous_stage(
    smoke_run: tuple[Path, dict[str, Any], str], tiny_model: Path
) -> None:
    _, data, _ = smoke_run
    stages = data["stages"]
    assert stages[0]["model"] == str(tiny_model)
    assert stages[0]["started_from_sha256"] == weights.weights_sha256(tiny_model)
    for previous, stage in itertools.pairwise(stages):
        assert stage["model"] == previous["final"]
        assert stage["started_from_sha256"] == previous["weights_sha256"]
        # What the engine itself recorded that it loaded (its args.json), not just what we meant to pass.
        engine_args = json.loads((Path(stage["dir"]) / "engine" / "args.json").read_text())
        assert Path(engine_args["model"]).resolve() == Path(previous["final"]).resolve()
        assert not engine_args.get("resume_from_checkpoint")


def test_training_changed_the_weights(smoke_run: tuple[Path, dict[str, Any], str], tiny_model: Path) -> None:
    import torch
    from safetensors.torch import load_file

    _, data, _ = smoke_run
    hashes = [weights.weights_sha256(tiny_model)] + [s["weights_sha256"] for s in data["stages"]]
    assert len(set(hashes)) == 4
    before = load_file(str(tiny_model / "model.safetensors"))
    after = load_file(str(Path(data["stages"][-1]["final"]) / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("layers" in k for k in changed)
    # The vision tower is frozen by default (freeze_vit): it must come out untouched.
    assert not [k for k in changed if "visual.blocks" in k]


def test_losses_logged_and_finite(smoke_run: tuple[Path, dict[str, Any], str]) -> None:
    _, data, stdout = smoke_run
    for stage in data["stages"]:
        steps = [step for step, _ in stage["losses"]]
        assert steps == list(range(1, stage["global_step"] + 1))
        assert all(math.isfinite(loss) and loss > 0 for _, loss in stage["losses"])
        assert stage["final_loss"] == stage["losses"][-1][1]
    assert "[3/3 reports] step 3/3" in stdout


def test_manifest_records_provenance(smoke_run: tuple[Path, dict[str, Any], str]) -> None:
    _, data, _ = smoke_run
    attempt = data["attempts"][0]
    assert attempt["packages"]["ms-swift"] == "4.6.0" and attempt["packages"]["deepspeed"] == "0.19.8"
    assert attempt["git"] is None or len(attempt["git"]["commit"]) == 40
    assert data["curriculum"]["name"] == "smoke"
    for stage in data["stages"]:
        assert stage["data"]["rows"] > 0 and len(stage["data"]["sha256"]) == 64
        assert stage["data"]["inputs"][0]["sha256"]
        assert "--deepspeed" in stage["engine_args"]
        assert stage["started_at"] <= stage["ended_at"]


def test_rerun_without_resume_refuses_and_keeps_the_run(smoke_run: tuple[Path, dict[str, Any], str]) -> None:
    out, data, _ = smoke_run
    result = run_spinegpt("run", "curricula/smoke.yaml", "--nproc", "2", "--output-dir", str(out), check=False)
    assert result.returncode == 1 and "--resume" in result.stderr
    assert json.loads((out / manifest.FILE).read_text())["stages"] == data["stages"]


def test_resume_after_sigkill_in_stage_two(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Shrink by overrides: stage 2 long enough to be killed after its first checkpoint, stage 3 short.
    overrides = [
        "eval=null",  # about resuming training; the evaluation after each stage is tested below
        "stages.specialise.max_steps=6",
        "stages.specialise.save_steps=2",
        "stages.reports.max_steps=2",
    ]
    args = ["run", "curricula/smoke.yaml", *overrides, "--nproc", "2", "--output-dir", str(out)]
    stage2 = out / "stages" / "02-specialise" / "engine"
    run_until_then_kill(args, stage2 / "checkpoint-2" / "trainer_state.json", tmp_path / "first.log")

    first = json.loads((out / manifest.FILE).read_text())
    assert first["stages"][0]["status"] == "done"
    assert first["stages"][1]["status"] == "running"  # never marked done
    assert not (out / "stages" / "02-specialise" / "DONE.json").exists()
    # `spinegpt report` on the interrupted run: what finished, where stage 2 stopped, what is missing.
    report = Path(run_spinegpt("report", str(out)).stdout.strip()).read_text()
    assert "| foundation | done |" in report and "| specialise | running |" in report
    assert "stage 'specialise' did not finish at step" in report and "stage 'reports' has not started" in report
    assert (out / "report" / "loss_lr.png").stat().st_size > 10_000
    progress = json.loads((out / "progress.json").read_text())
    assert progress["stage"] == "specialise" and progress["step"] >= 1 and progress["max_steps"] == 6
    stage1_done = (out / "stages" / "01-foundation" / "DONE.json").read_bytes()
    stage1_log_size = (out / "stages" / "01-foundation" / "engine.log").stat().st_size

    result = run_spinegpt(*args, "--resume")
    assert "[1/3 foundation] already done, skipping" in result.stderr
    assert "[2/3 specialise] training resuming from checkpoint-" in result.stderr
    data = json.loads((out / manifest.FILE).read_text())
    assert data["status"] == "done" and len(data["attempts"]) == 2
    assert [s["status"] for s in data["stages"]] == ["done", "done", "done"]
    assert data["stages"][1]["global_step"] == 6
    assert Path(data["stages"][1]["resumed_from"]).name.startswith("checkpoint-")
    # Stage 1 did not run again: its marker and its engine log are byte-for-byte what they were.
    assert (out / "stages" / "01-foundation" / "DONE.json").read_bytes() == stage1_done
    assert (out / "stages" / "01-foundation" / "engine.log").stat().st_size == stage1_log_size
    # The resumed stage logged every step once across both attempts, and stage 3 started from its final weights.
    assert [s for s, _ in data["stages"][1]["losses"]][-1] == 6
    assert data["stages"][2]["started_from_sha256"] == data["stages"][1]["weights_sha256"]


def test_lora_stage_is_merged_before_the_next_stage(one_process_run: Path, tiny_model: Path) -> None:
    """A LoRA stage hands full (merged) weights to the next stage."""
    data = json.loads((one_process_run / manifest.FILE).read_text())
    lora, full = data["stages"][0], data["stages"][1]
    assert lora["final_checkpoint"].endswith("checkpoint-2-merged")
    assert (Path(lora["dir"]) / "engine" / "checkpoint-2" / "adapter_config.json").is_file()
    weights.check_matches(Path(lora["final"]), tiny_model)  # full weights, same tensors as the base
    assert lora["weights_sha256"] != weights.weights_sha256(tiny_model)
    assert full["started_from_sha256"] == lora["weights_sha256"] and full["status"] == "done"


def test_eval_after_each_stage_through_the_real_engine(tmp_path: Path) -> None:
    """Both SpineBench kinds after stage 1, judged by a chat-completions server on loopback; stage 2's evaluation
    is broken on purpose and must be recorded as failed without touching the trained stage. The smoke curriculum's
    own block, with `eval.baseline` on, evaluates the base model (row 0) and stage 3 on two general medical
    benchmarks (the tiny copies the package ships); stage 3 is set against the base model: paired differences, the
    regression budget with its intervals, `spinegpt compare` and the report. Every result carries its intervals and
    protocol."""
    bench = tmp_path / "bench"
    sb, mm = write_spinebench(bench), write_mm25(bench)
    broken = bench / "broken.jsonl"
    broken.write_text('{"id": "x", "type": "mcq", "question": "q"}\n')  # exists, so the plan accepts it
    out = tmp_path / "run"
    with JudgeServer() as server:
        stage1 = (
            f"stages.foundation.eval={{benchmarks: [{{kind: spinebench, path: '{sb}', max_new_tokens: 12,"
            f" report_max_new_tokens: 16}}, {{kind: spinebench_mm25, path: '{mm}', max_new_tokens: 12}}],"
            f" judge: {{base_url: '{server.url}', model: fake-judge}}, batch_size: 4}}"
        )
        stage2 = f"stages.specialise.eval={{benchmarks: [{{kind: spinebench, path: '{broken}'}}]}}"
        result = run_spinegpt(
            "run",
            "curricula/smoke.yaml",
            stage1,
            stage2,
            "eval.baseline=true",  # the base model on the smoke curriculum's general medical benchmarks: row 0
            "stages.foundation.max_steps=1",
            "stages.specialise.max_steps=1",
            "stages.reports.max_steps=1",
            "stages.reports.deepspeed=null",  # evaluation is tested here, not ZeRO-3 offload
            "--nproc",
            "2",
            "--output-dir",
            str(out),
        )
    data = json.loads((out / manifest.FILE).read_text())
    assert data["status"] == "done"
    first, second, third = data["stages"]
    assert first["status"] == "done" and first["eval"]["status"] == "done"
    assert second["status"] == "done" and second["eval"]["status"] == "failed"
    assert (out / "stages" / "02-specialise" / "DONE.json").is_file()
    assert "evaluation FAILED" in result.stderr

    eval_dir = Path(first["dir"]) / "eval"
    records = json.loads((eval_dir / "spinebench.json").read_text())["records"]
    assert [r["id"] for r in records] == ["t0", "t1", "t2", "t3", "i0", "i1", "i2", "r0", "r1"]  # every item
    assert all(isinstance(r["output"], str) for r in records)
    summary = json.loads((eval_dir / "summary.json").read_text())["benchmarks"]
    scores = summary["spinebench"]["scores"]
    assert scores["text"]["n"] == 4 and scores["image"]["n"] == 3
    assert scores["report"]["judged"] == 2 and scores["overall"] is not None
    assert summary["spinebench"]["unparsed"] == scores["text"]["unparsed"] + scores["image"]["unparsed"]
    mm25 = summary["spinebench_mm25"]["scores"]
    assert mm25["diagnosis"]["n"] == 2 and mm25["localisation"]["n"] == 2
    judgments = [r["judgment"] for r in records if r["task"] == "report"]
    assert all(j["scores"] for j in judgments)
    # The judge was really asked, or asked before about these very outputs (a warm $SPINEGPT_CACHE, as `make test`
    # keeps in the clone, holds its verdicts).
    assert server.calls or all(j["cached"] for j in judgments)
    assert first["eval"]["benchmarks"]["spinebench"]["scores"] == scores  # the manifest carries the scores
    assert (eval_dir / "spinebench.md").is_file() and (eval_dir / "spinebench_mm25.md").is_file()

    made = json.loads((eval_dir / "spinebench.json").read_text())["protocol"]
    assert made["generation"]["backend"] == "transformers" and made["generation"]["max_pixels"] == "50176"
    assert made["generation"]["max_new_tokens"] == {"mcq": 12, "report": 16} and made["judge"]["model"] == "fake-judge"
    assert {m["key"] for m in summary["spinebench"]["statistics"]["metrics"]} >= {"text", "image", "overall"}

    # Row 0 and stage 3: the shipped VQA-RAD (parquet, embedded images) and MedQA copies, scored by their rules.
    base = data["baseline"]
    assert base["status"] == "done" and base["benchmarks"]["vqa_rad"]["items"] == 5
    assert third["eval"]["status"] == "done"
    general = third["eval"]["benchmarks"]
    vqa, medqa = general["vqa_rad"], general["medqa"]
    assert vqa["items"] == 5 and vqa["max_drop"] == 5
    assert (vqa["scores"]["closed"]["n"], vqa["scores"]["open"]["n"], vqa["scores"]["overall"]["n"]) == (3, 2, 5)
    assert medqa["items"] == 4 and medqa["scores"]["overall"]["n"] == 4
    assert {m["key"] for m in vqa["statistics"]["metrics"]} == {"closed", "open_exact", "open_recall", "overall"}
    stage_vqa = json.loads((Path(third["dir"]) / "eval" / "vqa_rad.json").read_text())
    vqa_records = stage_vqa["records"]
    assert all(isinstance(r["correct"], bool) and r["part"] in ("closed", "open") for r in vqa_records)
    assert all(Path(r["images"][0]).is_file() for r in vqa_records)  # written once into the cache by content
    assert stage_vqa["protocol"]["generation"]["max_new_tokens"] == {"answer": 8}
    base_vqa = json.loads((out / "baseline" / "eval" / "vqa_rad.json").read_text())
    assert base_vqa["protocol_sha256"] == stage_vqa["protocol_sha256"]  # the same protocol: comparable
    compared = json.loads(run_spinegpt("compare", str(out / "baseline" / "eval"), str(out), "--json").stdout)
    assert [c["benchmark"] for c in compared] == ["vqa_rad", "medqa"]
    # The regression budget: stage 3's headline figures against the base model's, each with its paired interval.
    checks = third["eval"]["regressions"]
    assert {(c["benchmark"], c["metric"]) for c in checks} >= {("vqa_rad", "closed %"), ("medqa", "accuracy %")}
    assert all(c["max_drop"] == 5 and c["interval"] is not None for c in checks)
    text = report.write_report(out).read_text()
    assert "| base model |" in text and "| reports | base model |" in text
    assert "## Regression budget (against the base model)" in text


def test_standalone_eval_command(tmp_path: Path, tiny_model: Path) -> None:
    mm = write_mm25(tmp_path / "bench")
    out = tmp_path / "eval"
    result = run_spinegpt(
        "eval",
        str(tiny_model),
        "--benchmark",
        "spinebench_mm25",
        "--data",
        str(mm),
        "--max-new-tokens",
        "8",
        "--output",
        str(out),
        "--batch-size",
        "2",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmarks"]["spinebench_mm25"]["items"] == 4
    assert "| localisation |" in result.stdout


def test_eval_of_the_hub_parquet_on_the_tiny_model(tmp_path: Path, tiny_model: Path) -> None:
    """The MM'25 SpineBench in the hub's parquet form, end to end through `spinegpt eval` and the real engine."""
    parquet = write_mm25_parquet(tmp_path / "hub")
    out = tmp_path / "eval"
    result = run_spinegpt(
        "eval",
        str(tiny_model),
        "--benchmark",
        "spinebench_mm25",
        "--data",
        str(parquet),
        "--max-new-tokens",
        "4",
        "--output-dir",
        str(out),
        "--batch-size",
        "2",
    )
    summary = json.loads((out / "summary.json").read_text())["benchmarks"]["spinebench_mm25"]
    assert summary["items"] == 4 and set(summary["scores"]) == {"diagnosis", "localisation"}
    assert sum(summary["answers"][p] for p in ("rule", "llm", "unparsed")) == 4
    assert "4/4 answers" in result.stderr + result.stdout  # progress, as plain lines when not on a terminal
