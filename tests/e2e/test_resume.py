"""A stage killed after its final checkpoint but before DONE.json: --resume verifies it, never trains on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from spinegpt.train import manifest
from spinegpt.train.stage import DONE

from ..conftest import SMOKE, run_spinegpt


def test_resume_after_the_final_checkpoint_verifies_instead_of_training(
    smoke_run: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    """Killed after the last stage's final checkpoint but before its DONE.json: --resume must take that checkpoint
    as the finished stage, never train past max_steps (which also rotated the real final checkpoint away)."""
    run, data, _ = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    last = copy / "stages" / "03-reports"
    (last / DONE).unlink()
    (last / "final").unlink()
    engine_log = (last / "engine.log").read_text()
    checkpoints = sorted(p.name for p in (last / "engine").glob("checkpoint-*"))

    result = run_spinegpt("run", str(SMOKE), "--nproc", "2", "--output-dir", str(copy), "--resume")
    assert "is the stage's last step: verifying it, not training on" in result.stderr
    assert (last / "engine.log").read_text() == engine_log  # the engine was not started again
    assert sorted(p.name for p in (last / "engine").glob("checkpoint-*")) == checkpoints
    resumed = json.loads((copy / manifest.FILE).read_text())["stages"][2]
    assert (last / DONE).is_file() and (last / "final").resolve().name == checkpoints[-1]
    assert resumed["status"] == "done" and resumed["weights_sha256"] == data["stages"][2]["weights_sha256"]
    assert resumed["global_step"] == data["stages"][2]["global_step"]
    # A second --resume finds every stage done and trains nothing.
    again = run_spinegpt("run", str(SMOKE), "--nproc", "2", "--output-dir", str(copy), "--resume")
    assert again.stderr.count("already done, skipping") == 3
