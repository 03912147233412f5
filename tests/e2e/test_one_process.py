"""One process, as a user with one GPU runs the curriculum: every stage kind trains (ZeRO-2, ZeRO-3, ZeRO-3 with CPU
offload, LoRA). Without a launcher DeepSpeed found no RANK / WORLD_SIZE / MASTER_ADDR and fell back to MPI
discovery (mpi4py, port 29500), so a single-process run failed before its first step."""

from __future__ import annotations

import json
from pathlib import Path

from spinegpt.train import manifest

from ..conftest import run_spinegpt


def test_every_stage_kind_trains_in_one_process(one_process_run: Path, tmp_path: Path) -> None:
    data = json.loads((one_process_run / manifest.FILE).read_text())
    assert data["status"] == "done" and data["world_size"] == 1
    stages = data["stages"]
    assert [(s["status"], s["zero_stage"]) for s in stages] == [("done", 3), ("done", 2), ("done", 3)]
    assert all("--nproc_per_node=1" in s["command"] for s in stages)
    assert stages[0]["config"]["tuner_type"] == "lora" and stages[0]["final_checkpoint"].endswith("-merged")
    assert "offload_optimizer" in Path(stages[2]["deepspeed"]).read_text()
    # The README's next commands on that run: the final model on the smoke SpineBench, and the run's report.
    final = one_process_run / "stages" / "03-reports" / "final"
    out = tmp_path / "eval"
    args = ["--benchmark", "spinebench", "--data", "builtin:smoke", "--output-dir", str(out)]
    result = run_spinegpt("eval", str(final), *args, "--max-new-tokens", "8")  # 8: a tiny model says nothing useful
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmarks"]["spinebench"]["items"] > 0 and "| text MCQ accuracy (%) |" in result.stdout
    assert Path(run_spinegpt("report", str(one_process_run)).stdout.strip()).is_file()
