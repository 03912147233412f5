"""bench/gpu_check.py's CPU-side parts: the 7B-width model config, the exactly counted rows, the curriculum that
extends the paper's, the engine commands, the planner's predictions, and the budgets of the one GPU machine it must
fit: disk, time and the wheels it lacks (the GPU part runs on a GPU machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..conftest import REPO


def test_the_dry_run_builds_every_input_and_plans_the_three_stages(tmp_path: Path) -> None:
    work = tmp_path / "gc"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--layers", "2", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((work / "model" / "config.json").read_text())
    text = config.get("text_config", config)
    assert (text["hidden_size"], text["num_hidden_layers"], text["vocab_size"]) == (3584, 2, 152064)
    assert config["vision_config"]["depth"] == 32 and not list((work / "model").glob("*.safetensors"))
    counts: dict[int, list[int]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("rows at "):
            length, values = line.removeprefix("rows at ").split(" tokens: ")
            counts[int(length.replace(",", ""))] = json.loads(values)
    # Every row nearly fills its max_length (so every step trains about that many tokens), one with a large image.
    assert all(length - 64 - 500 < n <= length - 64 for length, rows in counts.items() for n in rows)
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if "planner" in line}
    assert "--max_length 16384" in lines["foundation"] and "zero2.json" in lines["foundation"]
    assert "--use_liger_kernel" not in lines["foundation"] and "--use_liger_kernel true" in lines["specialise"]
    assert "--nproc_per_node=1" in lines["foundation"]  # the one-GPU path users take
    # Stage 3's path exactly: ZeRO-3 offload with the fused loss, its config changed to keep parameters gathered.
    assert "--max_length 49152" in lines["reports"] and "03-reports/deepspeed.json" in lines["reports"]
    assert "01-foundation/final" in lines["specialise"]  # the next stage starts from the saved final weights
    budget = {line.split(":")[0]: line for line in result.stdout.splitlines() if " budget: " in line}
    disk = float(budget["disk budget"].split("peak ")[1].split(" GB")[0])
    assert 0 < disk <= 64 * 2**30 / 1e9  # the 64 GiB disk: one checkpoint per stage, DeepSpeed states removed
    seconds = float(budget["time budget"].split(": ")[1].split(" s expected")[0])
    assert 0 < seconds <= 480  # 8 minutes of the 10 a command may take
    wheels = next(line for line in result.stdout.splitlines() if line.startswith("wheels the machine lacks"))
    assert "ms-swift==4.6.0" in wheels and "deepspeed==0.19.8" in wheels and "liger-kernel" in wheels
    assert "torchvision==0.26.*" in wheels and "transformers" not in wheels  # matches the machine's torch 2.11
    # what `spinegpt plan --cost` predicts for each stage's rows, to be put beside the measured tokens/s
    predicted = [line for line in result.stdout.splitlines() if " cost model " in line]
    assert [line.split(":")[0] for line in predicted] == ["foundation", "specialise", "reports"]
    assert all("tokens/s on A100-80GB at its assumed MFU" in line for line in predicted)
