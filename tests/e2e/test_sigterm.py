"""`kill PID` of a training run, as a scheduler stops a job: the command exits non-zero, says how to go on, records
the stage as interrupted, and leaves no rank behind; --resume continues."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from spinegpt.train import manifest

from ..conftest import REPO, SMOKE, run_spinegpt, spinegpt_command


def test_sigterm_while_training_stops_everything_and_resume_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", str(SMOKE), "--nproc", "1", "--output-dir", str(out), "--until", "foundation"]
    process = subprocess.Popen(
        # 12 steps: some ten seconds of training still ahead when the signal goes, and a resume that is short
        [*spinegpt_command(), *args, "stages.foundation.max_steps=12"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "step 1/12" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 143, "".join(lines) + rest
    assert "stopped by SIGTERM; continue with --resume" in rest and "Traceback" not in rest
    data = json.loads((out / manifest.FILE).read_text())
    assert data["status"] == "interrupted" and data["stages"][0]["status"] == "interrupted"
    time.sleep(2)
    ranks = subprocess.run(["pgrep", "-f", f"swift.cli.sft.*{out}"], capture_output=True, text=True).stdout
    assert not ranks.strip()  # no rank kept training into the run folder
    run_spinegpt(*args, "stages.foundation.max_steps=12", "--resume")
    assert json.loads((out / manifest.FILE).read_text())["stages"][0]["status"] == "done"
