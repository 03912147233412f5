"""Run safety under faults: a kill at the worst moment, two runs at once, a changed input on resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from spinegpt.data_mixes.rows import DataError
from spinegpt.files import FolderLock
from spinegpt.train import curriculum, manifest, plan, runner, topology
from spinegpt.train.errors import RunError
from spinegpt.train.stage import DONE

from ..conftest import SMOKE, run_spinegpt


def _failing_engine(*args: object) -> int:
    return 1  # the engine "crashed" at once: the stage is started, not done


def test_one_run_per_output_folder_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from spinegpt.files import FolderLock; "
            "FolderLock(Path(sys.argv[1])).acquire({'host': 'node-a', 'pid': 4242, 'since': 'now'}); "
            "print('locked', flush=True); time.sleep(600)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        second = run_spinegpt("run", str(SMOKE), "--output-dir", str(out), "--resume", check=False, timeout=300)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert "in use by another process (host node-a, pid 4242" in second.stderr
        assert not (out / manifest.FILE).exists() and not (out / "stages").exists()  # it touched nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = FolderLock(out)  # kill -9 released it: no stale lock to clean up by hand
    lock.acquire({"pid": os.getpid()})
    lock.release()


def _built(tmp_path: Path, *overrides: str) -> plan.Plan:
    loaded = curriculum.load(SMOKE, list(overrides))
    return plan.build(loaded, tmp_path / "run", topology.Launch())


def test_resume_refuses_a_changed_seed_or_pixel_limit(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RunError, match="engine exited with code 1"):
        runner.Runner(_built(tmp_path), engine=_failing_engine).run()
    data = json.loads((tmp_path / "run" / manifest.FILE).read_text())
    assert data["stages"][0]["status"] == "failed" and data["stages"][0]["config_sha256"]
    with pytest.raises(RunError, match="cannot resume: stage 'foundation' was started with another configuration"):
        runner.Runner(_built(tmp_path, "seed=7"), resume=True, engine=_failing_engine).run()
    monkeypatch.setenv("MAX_PIXELS", "12544")  # the smoke curriculum says 50176
    with pytest.raises(RunError, match="cannot resume: stage 'foundation'"):
        runner.Runner(_built(tmp_path), resume=True, engine=_failing_engine).run()
    monkeypatch.delenv("MAX_PIXELS")
    # The same inputs resume (and an evaluation setting is not an input of the weights).
    with pytest.raises(RunError, match="engine exited with code 1"):
        runner.Runner(_built(tmp_path, "stages.foundation.eval=false"), resume=True, engine=_failing_engine).run()


def test_another_process_count_resumes_unless_a_stage_holds_partitioned_checkpoints(
    tmp_path: Path, tiny_model: Path
) -> None:
    """A run that failed before its first checkpoint (a sweep row, say) may go on with --nproc 2; once a stage holds
    ZeRO checkpoints (partitioned per rank), only the same count resumes it."""
    with pytest.raises(RunError, match="engine exited with code 1"):
        runner.Runner(_built(tmp_path), engine=_failing_engine).run()
    two = plan.build(curriculum.load(SMOKE), tmp_path / "run", topology.Launch(nproc_per_node=2))
    with pytest.raises(RunError, match="engine exited with code 1"):
        runner.Runner(two, resume=True, engine=_failing_engine).run()
    assert json.loads((tmp_path / "run" / manifest.FILE).read_text())["world_size"] == 2
    checkpoint = two.stages[0].engine_dir / "checkpoint-2"  # a complete one: state and weights
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2, "max_steps": 3}')
    shutil.copy(next(tiny_model.glob("*.safetensors")), checkpoint / "model.safetensors")
    with pytest.raises(RunError, match=r"stage\(s\) \['foundation'\] hold ZeRO checkpoints.*--nproc 2"):
        runner.Runner(_built(tmp_path), resume=True, engine=_failing_engine).run()


def test_bad_data_leaves_the_stage_failed_not_running(tmp_path: Path, tiny_model: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"messages": "caf\xe9"}\n')
    built = _built(tmp_path, f"stages.foundation.data=[{{jsonl: '{bad}'}}]")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: not UTF-8"):
        runner.Runner(built, engine=_failing_engine).run()
    data = json.loads((tmp_path / "run" / manifest.FILE).read_text())
    assert data["status"] == "failed" and data["stages"][0]["status"] == "failed"
    assert "not UTF-8" in data["stages"][0]["error"]
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_zero_processes_is_a_clear_error(tmp_path: Path) -> None:
    result = run_spinegpt("plan", str(SMOKE), "--nproc", "0", check=False, timeout=120)
    assert result.returncode == 1 and "nproc_per_node must be at least 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_truncated_weight_shard_is_a_clear_export_error(tmp_path: Path, tiny_model: Path) -> None:
    damaged = tmp_path / "model"
    shutil.copytree(tiny_model, damaged)
    shard = next(damaged.glob("*.safetensors"))
    with shard.open("r+b") as handle:
        handle.truncate(shard.stat().st_size // 2)
    result = run_spinegpt("export", str(damaged), "--output-dir", str(tmp_path / "out"), check=False, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{shard}: truncated" in result.stderr and not (tmp_path / "out").exists()


def test_the_report_says_how_many_rows_were_dropped_and_how_answers_were_read(tmp_path: Path) -> None:
    from spinegpt.train import report
    from spinegpt.train.manifest import RunManifest, StageRecord

    stage = StageRecord(
        name="foundation",
        index=0,
        dir=str(tmp_path / "stages" / "01-foundation"),
        status="done",
        config={},
        config_sha256="x",
        model="m",
        starts_from="base",
        engine_args=[],
        command=[],
        data={"rows": 97, "inputs": [], "lengths": {"dropped": 3, "max_length": 16384}},
        eval={
            "status": "done",
            "dir": "e",
            "started_at": "t",
            "benchmarks": {
                "sb": {
                    "kind": "spinebench",
                    "answers": {"rule": 480, "llm": 5, "unparsed": 2, "llm_failed": 0},
                    "scores": {"text": {"accuracy": 80.0, "n": 294}},
                }
            },
        },
    )
    RunManifest(
        format=manifest.FORMAT,
        name="r",
        run_id="r-1",
        curriculum_file="c.yaml",
        curriculum={},
        output_dir="o",
        launch={},
        world_size=1,
        created_at="now",
        status="done",
        attempts=[],
        stages=[stage],
    ).write(tmp_path / manifest.FILE)
    text = report.write_report(tmp_path).read_text()
    assert "(97 rows; 3 dropped over max_length 16384)" in text
    assert "foundation, sb: answers read by rule: 480, by the LLM extractor: 5, unparsed: 2" in text


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_killing_the_run_group_stops_ranks_that_live_in_their_own_sessions(tmp_path: Path) -> None:
    """torchrun starts each rank with start_new_session; a kill -9 of the run's process group reached spinegpt and
    torchrun, and the ranks trained on. The engine's launcher (here a stand-in that does the same) runs under
    spinegpt.proc, whose reaper stops what is left below it."""
    marker = f"rank-{uuid.uuid4().hex}"
    rank = f"import time; time.sleep(300)  # {marker}"
    launcher = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {rank!r}], start_new_session=True); time.sleep(300)"
    )
    spinegpt = (
        "import os, sys; from pathlib import Path; from spinegpt import proc; "
        f"proc.run([sys.executable, '-c', {launcher!r}], dict(os.environ), Path({str(tmp_path / 'log')!r}))"
    )
    run = subprocess.Popen([sys.executable, "-c", spinegpt], start_new_session=True)
    deadline = time.monotonic() + 30
    while not _processes_with(marker):
        assert time.monotonic() < deadline, "the stand-in rank never started"
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 30
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_with(marker), "a rank outlived the run"


def test_a_base_model_with_its_own_code_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    """ms-swift loads models with trust_remote_code=True and no argument turns that off; Qwen2.5-VL needs no
    custom code, so a folder that declares some is refused before anything runs it."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoConfig": "evil.Config"}}))
    result = run_spinegpt("run", str(SMOKE), f"model={model}", "--output-dir", str(tmp_path / "run"), check=False)
    assert result.returncode == 1 and "declares custom model code (auto_map" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "stages" / "01-foundation" / "engine").exists()


def test_a_lost_or_cut_manifest_is_not_taken_for_a_fresh_run(tmp_path: Path, tiny_model: Path) -> None:
    """Before: with run_manifest.json deleted, a run with other settings skipped every done stage ("already done")
    and recorded the new settings beside the old weights; report / export / --resume gave pydantic tracebacks."""
    built = _built(tmp_path)
    first = built.stages[0]
    first.dir.mkdir(parents=True)
    (first.dir / "final").symlink_to(tiny_model)
    record = runner.stage_record(built, first)
    (first.dir / DONE).write_text(json.dumps({"name": "foundation", "config_sha256": record.config_sha256}))
    with pytest.raises(RunError, match=r"holds done stages \(foundation\) but no run_manifest.json"):
        runner.Runner(_built(tmp_path, "seed=7"), engine=_failing_engine).run()
    with pytest.raises(RunError, match="stage 'foundation' is done, but not with the settings"):
        runner.Runner(_built(tmp_path, "seed=7"), resume=True, engine=_failing_engine).run()
    # With the same settings, --resume takes the done stage over and goes on with the next one.
    with pytest.raises(RunError, match=r"\[2/3 specialise\] engine exited with code 1"):
        runner.Runner(_built(tmp_path), resume=True, engine=_failing_engine).run()
    data = json.loads((tmp_path / "run" / manifest.FILE).read_text())
    assert [s["status"] for s in data["stages"]][:2] == ["done", "failed"]
    (tmp_path / "run" / manifest.FILE).write_text('{"format": 1, "name": "sm')  # cut short by a full disk
    report = run_spinegpt("report", str(tmp_path / "run"), check=False)
    assert report.returncode == 1 and "not a readable run manifest" in report.stderr
    assert "Traceback" not in report.stderr
    with pytest.raises(RunError, match=r"\[2/3 specialise\] engine exited"):  # --resume sets it aside, goes on
        runner.Runner(_built(tmp_path), resume=True, engine=_failing_engine).run()
    assert list((tmp_path / "run").glob(f"{manifest.FILE}.unreadable-*"))
