"""wandb (offline) and tensorboard on every stage, the live progress file, and `spinegpt report`, on the shared smoke
run (tests/conftest.py: ``smoke_run`` tracks every stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spinegpt.train.hooks.progress import read_progress

from ..conftest import WANDB_SECRET, run_spinegpt
from ..wandb_log import summary as wandb_summary


def _png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path


def test_wandb_groups_the_stages_of_one_run(smoke_run: tuple[Path, dict[str, Any], str]) -> None:
    _, data, _ = smoke_run
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


def test_tensorboard_event_files_hold_every_stage_loss(smoke_run: tuple[Path, dict[str, Any], str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, data, _ = smoke_run
    for stage in data["stages"]:
        (events_dir,) = {p.parent for p in Path(stage["dir"]).glob("engine/runs/**/events.out.tfevents.*")}
        accumulator = EventAccumulator(str(events_dir))
        accumulator.Reload()
        scalars = accumulator.Scalars("train/loss")
        assert [s.step for s in scalars] == [step for step, _ in stage["losses"]] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx([loss for _, loss in stage["losses"]], abs=1e-5)


def test_credentials_are_never_written(smoke_run: tuple[Path, dict[str, Any], str]) -> None:
    out, _, _ = smoke_run
    for path in out.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert WANDB_SECRET.encode() not in path.read_bytes(), path


def test_progress_file_and_report_of_a_finished_run(smoke_run: tuple[Path, dict[str, Any], str]) -> None:
    out, data, _ = smoke_run
    progress = read_progress(out)
    assert progress is not None and progress["status"] == "done" and progress["n_stages"] == 3
    result = run_spinegpt("report", str(out))
    report = Path(result.stdout.strip())
    assert report == out / "report" / "report.md"
    text = report.read_text()
    for stage in data["stages"]:
        assert f"| {stage['name']} | done |" in text and stage["weights_sha256"][:12] in text
    assert "Nothing: every stage finished" in text and data["run_id"] in text
    assert "## Evaluation" in text and "spinebench: text MCQ %" in text  # the last stage was evaluated
    _png(out / "report" / "loss_lr.png")
    _png(out / "report" / "eval.png")


def test_report_to_another_folder(smoke_run: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    run, _, _ = smoke_run
    run_spinegpt("report", str(run), "--output", str(tmp_path / "rep"))
    assert "## Evaluation" in (tmp_path / "rep" / "report.md").read_text()
    _png(tmp_path / "rep" / "eval.png")


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = run_spinegpt("report", str(tmp_path), check=False)
    assert result.returncode == 1 and "run_manifest.json" in result.stderr
