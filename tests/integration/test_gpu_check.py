"""bench/gpu_check.py's CPU-side parts: the 7B-width model config, the exactly counted rows, the curriculum that
extends the paper's, the engine commands and the planner's predictions (the GPU part runs on a GPU machine)."""

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
    assert 15_000 < counts[16384][0] <= 16384 and 45_000 < counts[49152][0] <= 49152
    assert counts[16384][1] < 100 and counts[16384][2] > 5000  # a short row and a large-image row
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if "planner" in line}
    assert "--max_length 16384" in lines["foundation"] and "zero2.json" in lines["foundation"]
    assert "--use_liger_kernel" not in lines["foundation"] and "--use_liger_kernel true" in lines["specialise"]
    assert "--max_length 49152" in lines["reports"] and "zero3_offload.json" in lines["reports"]
    assert "01-foundation/final" in lines["specialise"]  # the next stage starts from the saved final weights
    # what `spinegpt plan --cost` predicts for each stage's rows, to be put beside the measured tokens/s
    predicted = [line for line in result.stdout.splitlines() if " cost model " in line]
    assert [line.split(":")[0] for line in predicted] == ["foundation", "specialise", "reports"]
    assert all("tokens/s on A100-80GB at its assumed MFU" in line for line in predicted)
