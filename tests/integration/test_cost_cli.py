"""`spinegpt plan --cost` on the smoke curriculum through the real command line, the cost a run records in its
manifest when it starts, and the audit's trained-token counts against the engine's own labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinegpt.train import curriculum, manifest, plan, runner, topology
from spinegpt.train.errors import RunError

from ..conftest import SMOKE, run_spinegpt

REQUIRED = ("stage", "rows", "tokens", "flops", "steps", "packed_sequences", "packed_steps", "gpu_hours", "mfu")


def test_plan_cost_json_has_every_stage_and_the_required_keys(tiny_model: Path) -> None:
    result = run_spinegpt("plan", str(SMOKE), "--nproc", "2", "--cost", "--json", "--gpu", "h200", "--mfu", "0.4")
    data = json.loads(result.stdout)
    assert [c["stage"] for c in data["cost"]] == [s["name"] for s in data["stages"]]
    for stage in data["cost"]:
        for key in (*REQUIRED, "mfu_source"):
            assert key in stage, key
        assert stage["rows"] > 0 and stage["tokens"] > 0 and stage["flops"] > 0 and stage["steps"] == 3
        assert (stage["mfu"], stage["mfu_source"], stage["gpu"], stage["gpus"]) == (0.4, "given", "H200", 2)
        terms = stage["flops_terms"]
        assert stage["flops"] == pytest.approx(terms["llm_params"] + terms["attention"] + terms["vision"])
        assert stage["flops_with_recompute"] == pytest.approx(stage["flops"] + terms["recompute"])
        assert 0 < stage["trained_tokens"] < stage["tokens"]
    assert data["cost_assumptions"]["peak_flops"] == 989e12
    assert "audit" not in data  # --cost audits, but shows the audit only with --audit


def test_plan_cost_text_and_bad_options(tiny_model: Path) -> None:
    text = run_spinegpt("plan", str(SMOKE), "--cost").stdout
    assert "Cost on 1 x A100-80GB" in text and "MFU assumed" in text and "packing  :" in text
    bad = run_spinegpt("plan", str(SMOKE), "--cost", "--gpu", "V100", check=False)
    assert bad.returncode == 1 and "--gpu: unknown GPU 'V100'" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_spinegpt("plan", str(SMOKE), "--cost", "--mfu", "40", check=False)
    assert bad.returncode == 1 and "an MFU is a fraction in (0, 1]" in bad.stderr


def _failing_engine(*args: object) -> int:
    return 1


def test_a_run_records_its_predicted_cost_when_it_starts(tmp_path: Path, tiny_model: Path) -> None:
    built = plan.build(curriculum.load(SMOKE), tmp_path / "run", topology.Launch())
    with pytest.raises(RunError, match="engine exited with code 1"):
        runner.Runner(built, engine=_failing_engine).run()
    data = manifest.RunManifest.read(tmp_path / "run" / manifest.FILE)
    assert data.cost is not None and data.cost.created_at
    assert [s.stage for s in data.cost.stages] == ["foundation", "specialise", "reports"]
    assert data.cost.assumptions.gpu_source in ("detected", "default") and data.cost.assumptions.gpus == 1
    first = data.cost.stages[0]
    assert first.rows > 0 and first.steps == 3 and first.gpu_hours > 0 and first.mfu_source == "assumed"
    raw = json.loads((tmp_path / "run" / manifest.FILE).read_text())
    assert all(key in raw["cost"]["stages"][0] for key in REQUIRED)
    # a resumed run keeps the prediction made when the run started
    with pytest.raises(RunError):
        runner.Runner(built, resume=True, engine=_failing_engine).run()
    again = manifest.RunManifest.read(tmp_path / "run" / manifest.FILE)
    assert again.cost is not None and again.cost.created_at == data.cost.created_at


def test_trained_tokens_are_the_engines_labels(tiny_model: Path, tmp_path: Path) -> None:
    """The audit's trained tokens per row equal the labels ms-swift's own qwen2_5_vl template marks for training,
    on the smoke rows (system prompts, images, multi-turn consultations)."""
    from swift.model import get_processor
    from swift.template import get_template
    from transformers import AutoTokenizer

    from spinegpt.data_mixes import audit
    from spinegpt.data_mixes.stage_data import prepare_sources
    from spinegpt.train.curriculum import DataSource

    prepared = prepare_sources([DataSource(smoke=s) for s in ("stage1", "stage2", "stage3")], tmp_path, tmp_path / "s")
    rows = [json.loads(line) for line in prepared.path.read_text().splitlines()]
    counter = audit.TokenCounter(AutoTokenizer.from_pretrained(tiny_model), 3136, 50176)
    counted = counter.count_rows(rows)
    processor = get_processor(str(tiny_model), model_type="qwen2_5_vl", use_hf=True, download_model=False)
    template = get_template(processor, template_type="qwen2_5_vl", max_length=100_000, max_pixels=50176)
    template.set_mode("train")
    multi_turn = 0
    for row, trained, length in zip(rows, counted.trained or [], counted.lengths, strict=True):
        encoded = template.encode({"messages": row["messages"], "images": row.get("images") or []})
        assert sum(label != -100 for label in encoded["labels"]) == trained, row
        assert abs(len(encoded["input_ids"]) - length) <= 1, row  # the engine tokenizes the turns apart
        multi_turn += sum(m["role"] == "assistant" for m in row["messages"]) > 1
    assert multi_turn and any(row.get("images") for row in rows)
