"""One process, as a user with one GPU runs the curriculum: every stage kind trains (ZeRO-2, ZeRO-3, ZeRO-3 with CPU
offload, LoRA). Without a launcher DeepSpeed found no RANK / WORLD_SIZE / MASTER_ADDR and fell back to MPI
discovery (mpi4py, port 29500), so a single-process run failed before its first step."""

from __future__ import annotations

import json
from pathlib import Path

from spinegpt.train import manifest

from ..conftest import run_spinegpt


def test_the_smoke_curriculum_trains_every_stage_in_one_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_spinegpt("run", "curricula/smoke.yaml", "--nproc", "1", "--output-dir", str(out))
    data = json.loads((out / manifest.FILE).read_text())
    assert data["status"] == "done" and data["world_size"] == 1
    assert [(s["status"], s["zero_stage"]) for s in data["stages"]] == [("done", 2), ("done", 2), ("done", 3)]
    assert all("--nproc_per_node=1" in s["command"] for s in data["stages"])
    assert "offload_optimizer" in Path(data["stages"][2]["deepspeed"]).read_text()
    # The README's next commands on that run: the smoke model on the smoke SpineBench, and its report.
    final = out / "stages" / "03-reports" / "final"
    args = ["--benchmark", "spinebench", "--data", "builtin:smoke", "--output-dir", str(out / "eval")]
    result = run_spinegpt("eval", str(final), *args, "--max-new-tokens", "8")  # 8: a tiny model says nothing useful
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["benchmarks"]["spinebench"]["items"] > 0 and "| text MCQ accuracy (%) |" in result.stdout
    assert Path(run_spinegpt("report", str(out)).stdout.strip()).is_file()


def test_lora_and_zero3_in_one_process(lora_run: Path) -> None:
    data = json.loads((lora_run / manifest.FILE).read_text())
    stages = data["stages"][:2]
    assert [(s["status"], s["zero_stage"]) for s in stages] == [("done", 3), ("done", 3)]
    assert stages[0]["config"]["tuner_type"] == "lora" and stages[0]["final_checkpoint"].endswith("-merged")
