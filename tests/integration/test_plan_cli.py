"""The command line's plans: `spinegpt plan` (text, JSON, --memory) and `spinegpt validate`, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from ..conftest import engine_arg, run_spinegpt


def test_plan_json_cli_for_the_paper_curriculum() -> None:
    result = run_spinegpt(
        "plan", "curricula/spinegpt.yaml", "--json", "--nproc", "8", "--output-dir", "/nonexistent/run"
    )
    data = json.loads(result.stdout)
    assert data["name"] == "spinegpt" and data["world_size"] == 8
    stages = data["stages"]
    assert [s["learning_rate"] for s in stages] == [1e-5, 1e-5, 1e-6]
    assert [s["max_length"] for s in stages] == [16384, 16384, 49152]
    assert [s["zero_stage"] for s in stages] == [2, 2, 3]
    assert stages[0]["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    offload = stages[2]["deepspeed_config"]["zero_optimization"]  # what the engine will read
    assert offload == json.loads(Path(stages[2]["deepspeed_source"]).read_text())["zero_optimization"] | {
        "stage3_param_persistence_threshold": 10**10  # the fused loss under ZeRO-3 (configs/deepspeed/README.md)
    }
    assert offload["offload_optimizer"]["device"] == "cpu" and offload["offload_param"]["device"] == "cpu"
    assert engine_arg(stages[2]["command"], "max_length") == "49152"
    assert not Path("/nonexistent/run").exists()


def test_plan_text_and_validate_cli() -> None:
    text = run_spinegpt("plan", "curricula/smoke.yaml", "--nproc", "2").stdout
    assert "stage 3/3: reports" in text and "ZeRO-3" in text and "swift.cli.sft" in text
    assert "curricula/smoke.yaml: ok (3 stage(s))" in run_spinegpt("validate", "curricula/smoke.yaml").stdout


def test_cli_reports_every_error_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: m\nstages:\n  - name: a\n    learning_rate: 0\n    max_length: -3\n")
    result = run_spinegpt("plan", str(bad), check=False)
    assert result.returncode == 2
    for expected in (
        "stages[0].data: required",
        "stages[0].learning_rate: must be > 0",
        "stages[0].max_length: must be > 0",
        f"{bad}:5:",
    ):
        assert expected in result.stderr, result.stderr


def test_plan_memory_cli() -> None:
    data = json.loads(run_spinegpt("plan", "curricula/spinegpt.yaml", "--memory", "--nproc", "8", "--json").stdout)
    assert [m["stage"] for m in data["memory"]] == ["foundation", "specialise", "reports"]
    assert all(m["fits"] for m in data["memory"])
    # The memory of the launch the plan shows, nothing else: one process plans one GPU.
    one = json.loads(run_spinegpt("plan", "curricula/spinegpt.yaml", "--memory", "--json").stdout)
    assert one["world_size"] == 1 and not one["memory"][0]["fits"]
    text = run_spinegpt("plan", "curricula/spinegpt.yaml", "--memory", "--gpus", "2", "--gpu-mem-gb", "40").stdout
    assert "DOES NOT FIT" in text and "fix:" in text


def test_validate_refuses_what_this_install_cannot_run_naming_stage_and_fix() -> None:
    """packing with attn_impl auto passes the schema; here auto is sdpa, which ms-swift refuses for packing."""
    result = run_spinegpt("validate", "curricula/spinegpt.yaml", "stages.specialise.packing=true", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "specialise (packing: attention sdpa)" in result.stderr and "fix:" in result.stderr
