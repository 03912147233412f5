"""wandb (offline) and tensorboard on every stage, the live progress file, and `spinegpt report`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from spinegpt.train import manifest
from spinegpt.train.hooks.progress import read_progress

from ..conftest import run_spinegpt
from ..wandb_log import summary as wandb_summary

SECRET = "wandb-key-that-must-never-be-written-0123456789"


def _png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("tracked") / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_API_KEY": SECRET}
    steps = [f"stages.{s}.max_steps=2" for s in ("foundation", "specialise", "reports")]
    run_spinegpt(
        "run",
        "curricula/smoke.yaml",
        "report_to=[wandb, tensorboard]",
        "eval=null",  # this run is about tracking: no evaluation
        *steps,
        "--nproc",
        "2",
        "--output-dir",
        str(out),
        env=env,
    )
    return out, json.loads((out / manifest.FILE).read_text())


def test_wandb_groups_the_stages_of_one_run(tracked_run: tuple[Path, dict[str, Any]]) -> None:
    _, data = tracked_run
    for stage in data["stages"]:
        (run_file,) = Path(stage["dir"]).glob("wandb/offline-run-*/run-*.wandb")
        run = wandb_summary(run_file)
        assert (run["project"], run["group"], run["job_type"]) == ("spinegpt", data["run_id"], stage["name"])
        logged = run["history"]["train/loss"]
        assert logged == pytest.approx([loss for _, loss in stage["losses"]], abs=1e-5)  # every step's loss
        config = run["config"]["spinegpt"]
        assert config["curriculum"]["name"] == "smoke" and config["stage"] == stage["name"]
        assert config["data"]["sha256"] == stage["data"]["sha256"]
        assert config["packages"]["ms-swift"] == "4.6.0"


def test_tensorboard_event_files_hold_every_stage_loss(tracked_run: tuple[Path, dict[str, Any]]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, data = tracked_run
    for stage in data["stages"]:
        (events_dir,) = {p.parent for p in Path(stage["dir"]).glob("engine/runs/**/events.out.tfevents.*")}
        accumulator = EventAccumulator(str(events_dir))
        accumulator.Reload()
        scalars = accumulator.Scalars("train/loss")
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([loss for _, loss in stage["losses"]], abs=1e-5)


def test_credentials_are_never_written(tracked_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = tracked_run
    for path in out.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path


def test_progress_file_and_report_of_a_finished_run(tracked_run: tuple[Path, dict[str, Any]]) -> None:
    out, data = tracked_run
    progress = read_progress(out)
    assert progress is not None and progress["status"] == "done" and progress["n_stages"] == 3
    result = run_spinegpt("report", str(out))
    report = Path(result.stdout.strip())
    assert report == out / "report" / "report.md"
    text = report.read_text()
    for stage in data["stages"]:
        assert f"| {stage['name']} | done |" in text and stage["weights_sha256"][:12] in text
    assert "Nothing: every stage finished" in text and data["run_id"] in text
    _png(out / "report" / "loss_lr.png")
    assert not (out / "report" / "eval.png").exists()  # nothing was evaluated in this run


def test_report_shows_evaluations(smoke_run: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    run, _, _ = smoke_run
    run_spinegpt("report", str(run), "--output", str(tmp_path / "rep"))
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Evaluation" in text and "spinebench: text MCQ %" in text
    _png(tmp_path / "rep" / "eval.png")
    _png(tmp_path / "rep" / "loss_lr.png")


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = run_spinegpt("report", str(tmp_path), check=False)
    assert result.returncode == 1 and "run_manifest.json" in result.stderr
