"""SIGTERM (`kill PID`, what schedulers send) means what Ctrl-C means everywhere: stop, clean up, record
`interrupted`, exit non-zero. Each scenario runs in a process of its own that gets a real SIGTERM at its worst
moment."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from spinegpt.data_mixes import build, mixes
from spinegpt.errors import Terminated

from ..conftest import REPO, SMOKE


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    code = "import sys\nfrom spinegpt import stopping\nstopping.on_sigterm_raise()\n" + textwrap.dedent(script)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _terminate_when(process: subprocess.Popen[str], ready: str, timeout: float = 300) -> str:
    """SIGTERM the process once it printed ``ready``; its whole output."""
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        seen.append(line)
        if ready in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    else:
        raise AssertionError(f"exited {process.wait()} before {ready!r}:\n{''.join(seen)}")
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=60)
    return "".join(seen) + rest


def _alive(marker: str) -> list[int]:
    """Processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _left_behind(marker: str, within: float = 15.0) -> list[int]:
    """Processes holding ``marker`` still alive ``within`` seconds after their parent exited. A SIGTERM that lands
    while the child is being started leaves no handle to stop it with: its reaper (spinegpt.reaper) stops it when it
    sees the parent gone, a moment later (longer on a loaded machine), so the check waits a bounded while; a child
    nobody stops sleeps 300 s and is still found."""
    deadline = time.monotonic() + within
    while (alive := _alive(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def test_sigterm_during_an_after_stage_evaluation_stops_the_run(tmp_path: Path, tiny_model: Path, root: Path) -> None:
    """Before: SIGTERM ended the evaluation only, and the run went on to train the next stage."""
    marker = f"spinegpt-test-{uuid.uuid4().hex}"
    bench = root / "SpineBench" / "spinebench.jsonl"
    script = f"""
    import json
    from pathlib import Path
    from spinegpt import proc
    from spinegpt.errors import Terminated
    from spinegpt.train import plan, runner, topology

    evaluation = "stages.foundation.eval={{benchmarks: [{{kind: spinebench, path: '{bench}'}}]}}"
    built = plan.build(plan.load('{SMOKE}', [evaluation]), Path('{tmp_path / "run"}'), topology.Launch())
    first = built.stages[0].dir
    first.mkdir(parents=True)
    done = {{"config_sha256": runner.stage_record(built, built.stages[0]).config_sha256}}
    (first / "DONE.json").write_text(json.dumps(done))
    (first / "final").symlink_to('{tiny_model}')  # the first stage is done; its evaluation is not

    def engine(command, env, log, on_line=proc.echo_own_progress, cwd=None, stop=None):
        assert "eval" in command, "the second stage must not start"
        print("evaluating", flush=True)
        return proc.run([sys.executable, "-c", "import time; time.sleep(300)  # {marker}"], env, log, on_line, cwd)

    try:
        runner.Runner(built, engine=engine, resume=True).run()
    except Terminated:
        sys.exit(143)
    """
    process = _start(script)
    output = _terminate_when(process, "evaluating")
    assert process.returncode == 143, output
    data = json.loads((tmp_path / "run" / "run_manifest.json").read_text())
    assert data["status"] == "interrupted" and data["attempts"][-1]["status"] == "interrupted"
    assert data["stages"][0]["eval"]["status"] == "interrupted"
    assert data["stages"][1]["status"] == "pending"  # not trained after the evaluation was stopped
    assert not _left_behind(marker)  # the evaluation's process went with it


def test_sigterm_during_the_base_model_evaluation_ends_the_run_interrupted(tmp_path: Path, root: Path) -> None:
    """Before: the base model's evaluation ran outside the block that records an interruption, so the manifest said
    `running` forever."""
    marker = f"spinegpt-test-{uuid.uuid4().hex}"
    bench = root / "SpineBench" / "spinebench.jsonl"
    script = f"""
    from pathlib import Path
    from spinegpt import proc
    from spinegpt.errors import Terminated
    from spinegpt.train import plan, runner, topology

    evaluation = "eval={{baseline: true, benchmarks: [{{kind: spinebench, path: '{bench}'}}]}}"
    built = plan.build(plan.load('{SMOKE}', [evaluation]), Path('{tmp_path / "run"}'), topology.Launch())

    def engine(command, env, log, on_line=proc.echo_own_progress, cwd=None, stop=None):
        assert "eval" in command, "no stage may start before the base model is evaluated"
        print("evaluating", flush=True)
        return proc.run([sys.executable, "-c", "import time; time.sleep(300)  # {marker}"], env, log, on_line, cwd)

    try:
        runner.Runner(built, engine=engine).run()
    except Terminated:
        sys.exit(143)
    """
    process = _start(script)
    output = _terminate_when(process, "evaluating")
    assert process.returncode == 143, output
    data = json.loads((tmp_path / "run" / "run_manifest.json").read_text())
    assert data["status"] == "interrupted" and data["attempts"][-1]["status"] == "interrupted", data["status"]
    assert data["baseline"]["status"] == "interrupted" and data["stages"][0]["status"] == "pending"
    assert not _left_behind(marker)


def test_sigterm_during_a_sweep_stops_the_sweep(tmp_path: Path) -> None:
    """Before: SIGTERM failed the current row and the sweep started the next one."""
    script = f"""
    import time
    from pathlib import Path
    from spinegpt.errors import Terminated
    from spinegpt.train import sweep, topology

    loaded = sweep.load(Path('{REPO / "curricula" / "ablations" / "smoke"}'), [], Path('{tmp_path / "sweep"}'))

    def run_row(sweep_, row, launch):
        print(f"training {{row.name}}", flush=True)
        time.sleep(300)

    sweep.run_row = run_row
    try:
        sweep.run_local(loaded, loaded.rows, topology.Launch(), compare_paper=False)
    except Terminated:
        sys.exit(143)
    """
    process = _start(script)
    output = _terminate_when(process, "training ")
    assert process.returncode == 143 and output.count("training ") == 1, output
    rows = json.loads((tmp_path / "sweep" / "progress.json").read_text())["rows"]
    statuses = [row["status"] for row in rows.values()]
    assert statuses[0] == "interrupted" and set(statuses[1:]) == {"pending"}


def test_a_worker_pool_leaves_no_worker_behind(tmp_path: Path) -> None:
    """Before: a SIGTERM to a build left its reading processes running, orphaned."""
    marker = f"spinegpt-test-{uuid.uuid4().hex}"
    script = """
    import os, time
    from spinegpt import stopping
    from spinegpt.errors import Terminated

    try:
        with stopping.process_pool(2) as pool:
            futures = [pool.submit(time.sleep, 300) for _ in range(2)]
            time.sleep(3)  # the workers are up
            print("workers", *[p.pid for p in pool._processes.values()], flush=True)
            [f.result() for f in futures]
    except Terminated:
        sys.exit(143)
    """.replace("import os, time", f"import os, time  # {marker}")
    process = _start(script)
    started = time.monotonic()
    output = _terminate_when(process, "workers")
    assert process.returncode == 143 and time.monotonic() - started < 60, output
    pids = [int(p) for p in next(line for line in output.splitlines() if line.startswith("workers")).split()[1:]]
    time.sleep(1)
    assert pids and not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def test_a_stopped_build_leaves_no_partial_folder(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(*args: object, **kwargs: object) -> None:
        raise Terminated("stopped by SIGTERM")

    monkeypatch.setattr(build, "_write_shards", stopped)
    with pytest.raises(Terminated):
        build.build(mixes.load("stage3_reports"), root, tmp_path / "out", seed=42)
    assert list(tmp_path.iterdir()) == []
