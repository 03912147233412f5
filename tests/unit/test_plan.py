"""Planning without side effects: every shipped curriculum plans, commands start from the previous stage, evaluation
settings reach the evaluation process."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinegpt.eval_hooks import launch as eval_launch
from spinegpt.train import curriculum, plan, swift_adapter, topology

from ..conftest import CURRICULA, engine_arg

ALL_CURRICULA = list(curriculum.iter_curricula(CURRICULA))


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
        assert engine_arg(command, "output_dir") == str(
            tmp_path / "out" / "stages" / f"{i + 1:02d}-{stage['name']}" / "engine"
        )
        if i > 0:  # each stage starts from the previous stage's final weights, as the engine's --model
            previous = data["stages"][i - 1]
            assert engine_arg(command, "model") == str(Path(previous["dir"]) / "final")
            assert "--resume_from_checkpoint" not in command
    assert not (tmp_path / "out").exists()  # planning writes nothing


def test_engine_arguments_use_ms_swift_names(tmp_path: Path) -> None:
    loaded = curriculum.load(CURRICULA / "smoke.yaml", ["stages.reports.engine_args.lora_dropout=0.1"])
    built = plan.build(loaded, tmp_path, topology.Launch())
    command = built.stages[2].command
    # One process under torchrun too: a 1-rank group, so DeepSpeed never falls back to MPI discovery.
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m"]
    assert engine_arg(command, "deepspeed").endswith("configs/deepspeed/zero3_offload.json")
    assert engine_arg(command, "tuner_type") == "full" and engine_arg(command, "learning_rate") == "0.0001"
    assert engine_arg(command, "lora_dropout") == "0.1"  # engine_args pass through untouched
    assert engine_arg(command, "model_type") == "qwen2_5_vl" and engine_arg(command, "add_version") == "false"


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
    # As shipped: the last stage on the general medical benchmarks' tiny copies.
    shipped = plan.build(curriculum.load(CURRICULA / "smoke.yaml"), tmp_path / "shipped").to_json()
    assert [s["eval"] for s in shipped["stages"]] == [[], [], ["vqa_rad", "medqa"]] and shipped["baseline"] == []
    with_base = curriculum.load(CURRICULA / "smoke.yaml", ["eval.baseline=true"])
    assert plan.build(with_base, tmp_path / "base").to_json()["baseline"] == ["vqa_rad", "medqa"]
    bench = tmp_path / "sb.jsonl"
    bench.write_text("")
    override = f"eval={{benchmarks: [{{kind: spinebench, path: '{bench}'}}]}}"
    stages = ["stages.foundation.eval=null", "stages.specialise.eval=null", "stages.reports.eval=false"]
    loaded = curriculum.load(CURRICULA / "smoke.yaml", [override, *stages])
    built = plan.build(loaded, tmp_path / "out")
    data = built.to_json()
    assert [s["eval"] for s in data["stages"]] == [["spinebench"], ["spinebench"], []]
    command = eval_launch.command(str(built.stages[0].final), built.stages[0].eval_dir)
    assert command[1:5] == ["-m", "spinegpt.cli", "eval", str(built.stages[0].final)]
    assert "eval after  : spinebench" in built.render()


def test_every_argument_the_adapter_writes_is_ms_swifts_and_listed(tmp_path: Path) -> None:
    """What sft_arguments writes (everything switched on) is an argument of the installed ms-swift, and each is in
    MANAGED_ARGS or STAGE_ARGS: the lists a cached argument list is checked against."""
    overrides = [
        "attn_impl=flash_attn",
        "stages.reports.use_liger_kernel=true",
        "stages.reports.sequence_parallel_size=4",
        "stages.reports.packing=true",
        "stages.reports.padding_free=true",
        "stages.reports.tuner_type=lora",
        "stages.reports.save_total_limit=2",
    ]
    built = plan.build(curriculum.load(CURRICULA / "smoke.yaml", overrides), tmp_path)
    written = {
        arg[2:]
        for stage in built.stages
        for arg in swift_adapter.sft_arguments(
            stage=stage.stage,
            curriculum=built.curriculum,
            model="m",
            dataset="d",
            output_dir="o",
            deepspeed="z",
            resume_from_checkpoint="c",
        )
        if arg.startswith("--")
    } - set(built.stages[0].stage.engine_args)
    known = swift_adapter.engine_argument_names()
    assert known is not None and written <= known, sorted(written - known)
    assert written <= swift_adapter.MANAGED_ARGS | swift_adapter.STAGE_ARGS, sorted(
        written - swift_adapter.MANAGED_ARGS - swift_adapter.STAGE_ARGS
    )
    assert known >= swift_adapter.STAGE_ARGS


def test_long_context_switches_reach_the_engine(tmp_path: Path) -> None:
    overrides = [
        "attn_impl=flash_attn",
        "stages.reports.use_liger_kernel=true",
        "stages.reports.sequence_parallel_size=4",
        "stages.reports.padding_free=true",
    ]
    built = plan.build(curriculum.load(CURRICULA / "smoke.yaml", overrides), tmp_path)
    reports, foundation = built.stages[2].command, built.stages[0].command
    assert engine_arg(reports, "use_liger_kernel") == "true" and engine_arg(reports, "padding_free") == "true"
    assert engine_arg(reports, "sequence_parallel_size") == "4" and engine_arg(reports, "attn_impl") == "flash_attn"
    assert "--use_liger_kernel" not in foundation and "--sequence_parallel_size" not in foundation
    sdpa = plan.build(curriculum.load(CURRICULA / "smoke.yaml", ["stages.reports.attn_impl=sdpa"]), tmp_path)
    assert engine_arg(sdpa.stages[2].command, "attn_impl") == "sdpa"


def test_packing_without_flash_attention_is_refused() -> None:
    with pytest.raises(curriculum.CurriculumError, match="packing / padding_free need attn_impl: flash_attn"):
        curriculum.load(CURRICULA / "smoke.yaml", ["stages.reports.packing=true"])  # smoke runs sdpa
