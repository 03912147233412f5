from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinegpt.eval_hooks import launch as eval_launch
from spinegpt.train import curriculum, plan, swift_adapter, topology

from .conftest import CURRICULA, run_spinegpt

ALL_CURRICULA = list(curriculum.iter_curricula(CURRICULA))


def _arg(command: list[str], key: str) -> str:
    return command[command.index(f"--{key}") + 1]


@pytest.mark.parametrize("path", ALL_CURRICULA, ids=[str(p.relative_to(CURRICULA)) for p in ALL_CURRICULA])
def test_every_curriculum_plans(path: Path, tmp_path: Path) -> None:
    built = plan.build(curriculum.load(path), tmp_path / "out", topology.Launch(nproc_per_node=8))
    data = built.to_json()
    assert data["name"] == built.loaded.curriculum.name
    for i, stage in enumerate(data["stages"]):
        for key in (
            "name",
            "model",
            "data",
            "learning_rate",
            "max_length",
            "num_train_epochs",
            "deepspeed",
            "tuner_type",
            "command",
        ):
            assert key in stage, (path, key)
        command = stage["command"]
        assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"]
        assert "--nproc_per_node=8" in command
        assert _arg(command, "output_dir") == str(
            tmp_path / "out" / "stages" / f"{i + 1:02d}-{stage['name']}" / "engine"
        )
        if i > 0:  # each stage starts from the previous stage's final weights, as the engine's --model
            previous = data["stages"][i - 1]
            assert _arg(command, "model") == str(Path(previous["dir"]) / "final")
            assert "--resume_from_checkpoint" not in command
    assert not (tmp_path / "out").exists()  # planning writes nothing


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
    offload = json.loads(Path(stages[2]["deepspeed"]).read_text())["zero_optimization"]
    assert offload["offload_optimizer"]["device"] == "cpu" and offload["offload_param"]["device"] == "cpu"
    assert _arg(stages[2]["command"], "max_length") == "49152"
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


def test_engine_arguments_use_ms_swift_names(tmp_path: Path) -> None:
    loaded = curriculum.load(CURRICULA / "smoke.yaml", ["stages.reports.engine_args.lora_dropout=0.1"])
    built = plan.build(loaded, tmp_path, topology.Launch())
    command = built.stages[2].command
    assert command[1:3] == ["-m", "swift.cli.sft"]  # one process: no launcher
    assert _arg(command, "deepspeed").endswith("configs/deepspeed/zero3_offload.json")
    assert _arg(command, "tuner_type") == "full" and _arg(command, "learning_rate") == "0.0001"
    assert _arg(command, "lora_dropout") == "0.1"  # engine_args pass through untouched
    assert _arg(command, "model_type") == "qwen2_5_vl" and _arg(command, "add_version") == "false"


def test_multi_node_command() -> None:
    launch = topology.Launch(nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29600)
    command = swift_adapter.command(["--x", "1"], launch, "python")
    assert command[:8] == [
        "python",
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--node_rank=1",
        "--master_addr=10.0.0.1",
        "--master_port=29600",
        "--nproc_per_node=8",
    ]


def test_plan_shows_the_evaluation_after_each_stage(tmp_path: Path) -> None:
    bench = tmp_path / "sb.jsonl"
    bench.write_text("")
    override = f"eval={{benchmarks: [{{kind: spinebench, path: '{bench}'}}]}}"
    loaded = curriculum.load(CURRICULA / "smoke.yaml", [override, "stages.reports.eval=false"])
    built = plan.build(loaded, tmp_path / "out")
    data = built.to_json()
    assert [s["eval"] for s in data["stages"]] == [["spinebench"], ["spinebench"], []]
    command = eval_launch.command(str(built.stages[0].final), built.stages[0].eval_dir)
    assert command[1:5] == ["-m", "spinegpt.cli", "eval", str(built.stages[0].final)]
    assert "eval after  : spinebench" in built.render()


def test_long_context_switches_reach_the_engine(tmp_path: Path) -> None:
    overrides = [
        "attn_impl=flash_attn",
        "stages.reports.use_liger_kernel=true",
        "stages.reports.sequence_parallel_size=4",
        "stages.reports.padding_free=true",
    ]
    built = plan.build(curriculum.load(CURRICULA / "smoke.yaml", overrides), tmp_path)
    reports, foundation = built.stages[2].command, built.stages[0].command
    assert _arg(reports, "use_liger_kernel") == "true" and _arg(reports, "padding_free") == "true"
    assert _arg(reports, "sequence_parallel_size") == "4" and _arg(reports, "attn_impl") == "flash_attn"
    assert "--use_liger_kernel" not in foundation and "--sequence_parallel_size" not in foundation
    sdpa = plan.build(curriculum.load(CURRICULA / "smoke.yaml", ["stages.reports.attn_impl=sdpa"]), tmp_path)
    assert _arg(sdpa.stages[2].command, "attn_impl") == "sdpa"


def test_packing_without_flash_attention_is_refused() -> None:
    with pytest.raises(curriculum.CurriculumError, match="packing / padding_free need attn_impl: flash_attn"):
        curriculum.load(CURRICULA / "smoke.yaml", ["stages.reports.packing=true"])  # smoke runs sdpa
