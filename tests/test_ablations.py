"""Table 7 as code: the six row curricula plan the right splits at full size; the smoke sweep trains and evaluates
every row on CPU and rebuilds the table and chart with computed averages; a finished row is skipped on the next
run; a failing row is reported while the others still run; the SLURM launcher submits one job per row."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from spinegpt.eval_hooks import spinebench
from spinegpt.train import ablation_table

from .conftest import REPO, run_spinegpt

ABLATIONS = REPO / "curricula" / "ablations"
ROWS = {
    # row: (stage -> splits it trains on), stages skipped
    "t7_1_base": ({}, ["foundation", "specialise", "reports"]),
    "t7_2_general": ({"foundation": ["general"]}, ["specialise", "reports"]),
    "t7_3_nonspine": ({"foundation": ["non_spine"], "reports": ["non_spine"]}, ["specialise"]),
    "t7_4_spine": ({"specialise": ["spine"], "reports": ["spine"]}, ["foundation"]),
    "t7_5_general_nonspine": ({"foundation": ["general", "non_spine"], "reports": ["non_spine"]}, ["specialise"]),
    "t7_6_full": (
        {"foundation": ["general", "non_spine"], "specialise": ["spine"], "reports": ["non_spine", "spine"]},
        [],
    ),
}
# Small and quick on 2 cores: one process, no DeepSpeed, one step per stage (the engine path is the same).
FAST = [
    *(f"stages.{s}.max_steps=1" for s in ("foundation", "specialise", "reports")),
    *(f"stages.{s}.deepspeed=null" for s in ("foundation", "specialise", "reports")),
]


@pytest.fixture(scope="module")
def full() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run_spinegpt("plan", "curricula/spinegpt.yaml", "--json", "--nproc", "8").stdout)
    return data


@pytest.mark.parametrize("row", sorted(ROWS))
def test_full_size_rows_train_on_their_splits_and_share_everything_else(row: str, full: dict[str, Any]) -> None:
    data = json.loads(run_spinegpt("plan", f"curricula/ablations/{row}.yaml", "--json", "--nproc", "8").stdout)
    trains, skipped = ROWS[row]
    assert {s["name"]: s["splits"] for s in data["stages"]} == trains
    assert [s["name"] for s in data["skipped"]] == skipped
    by_name = {s["name"]: s for s in full["stages"]}
    previous = "base"
    for stage in data["stages"]:
        same = by_name[stage["name"]]
        for key in ("learning_rate", "max_length", "deepspeed", "zero_stage", "global_batch", "tuner_type"):
            assert stage[key] == same[key], (row, stage["name"], key)
        assert stage["starts_from"] == previous  # a skipped stage is bridged: the next starts from the last trained
        previous = f"stage:{stage['name']}"
    assert data["base_model"] == full["base_model"] == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_the_paper_table_is_consistent_with_spec() -> None:
    # Rows 3-5 print their weighted means; rows 2 and 6 do not (SPEC §4): the recomputed column says so.
    for splits, expected in ((["general"], 63.64), (["general", "non_spine", "spine"], 87.48)):
        paper = ablation_table.paper_figures(splits)
        assert paper is not None and round(paper["avg_recomputed"], 2) == expected != paper["avg"]
    paper = ablation_table.paper_figures(["spine"])
    assert paper is not None and round(paper["avg_recomputed"], 2) == paper["avg"]


def test_table_averages_weigh_text_and_image_by_their_item_counts(tmp_path: Path) -> None:
    # SpineGPT's own figures (SPEC §4): 89.46 on 294 text items and 84.46 on 193 image items average 87.48, not
    # the 87.89 the paper prints; a row with only text items averages to its text figure.
    rows = [
        {
            "name": "full",
            "splits": ["general", "non_spine", "spine"],
            "scores": {"text": {"accuracy": 89.46, "n": 294}, "image": {"accuracy": 84.46, "n": 193}},
        },
        {"name": "text_only", "splits": ["spine"], "scores": {"text": {"accuracy": 50.0, "n": 2}}},
    ]
    paths = ablation_table.write(rows, tmp_path, "t7", compare_paper=True, title="t")
    assert [p.name for p in paths] == ["t7.md", "t7.csv", "t7.png"]
    with paths[1].open() as handle:
        full, text_only = list(csv.DictReader(handle))
    assert full["avg"] == "87.48" and full["paper avg (printed)"] == "87.89" and full["paper avg (294:193)"] == "87.48"
    assert text_only["avg"] == "50.00" and text_only["image"] == "" and text_only["paper text"] == "87.76"
    assert "| 2 | text_only |  |  | ✓ | 50.00 |  | 50.00 | 2 | 0 |" in paths[0].read_text()


@pytest.mark.slow
def test_smoke_sweep_end_to_end_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = run_spinegpt("sweep", "curricula/ablations/smoke", "--output-dir", str(out), "--compare-paper", *FAST)
    progress = json.loads((out / "progress.json").read_text())
    assert [r["status"] for r in progress["rows"].values()] == ["done"] * 6, progress
    rows = [json.loads((out / "rows" / name / "row.json").read_text()) for name in ROWS]
    for row, (name, (trains, _)) in zip(rows, ROWS.items(), strict=True):
        assert row["name"] == name and [s["name"] for s in row["stages"]] == list(trains)
        assert row["splits"] == sorted(
            {s for v in trains.values() for s in v}, key=["general", "non_spine", "spine"].index
        )
        text, image = row["scores"]["text"], row["scores"]["image"]
        assert text["n"] == 2 and image["n"] == 3  # the smoke SpineBench's multiple-choice items
    summary = json.loads((out / "rows" / "t7_1_base" / "eval" / "summary.json").read_text())
    assert summary["benchmarks"]["spinebench"]["items"] == 5  # the report prompt is left out of Table 7
    assert "tiny-qwen2_5_vl" in rows[0]["model"]  # row 1: the base model itself
    assert rows[5]["model"].endswith("03-reports/final")

    with (out / "table7.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [t["curriculum"] for t in table] == list(ROWS)
    for line, row in zip(table, rows, strict=True):
        text, image = row["scores"]["text"], row["scores"]["image"]
        weighted = spinebench.mcq_average((text["accuracy"], text["n"]), (image["accuracy"], image["n"]))
        assert float(line["avg"]) == pytest.approx(weighted, abs=0.005)  # computed from counts, not copied
        assert float(line["text"]) == pytest.approx(text["accuracy"], abs=0.005)
        assert [line["General"], line["No-Spine"], line["Spine"]] == [
            "1" if s in row["splits"] else "" for s in ("general", "non_spine", "spine")
        ]
    assert table[5]["paper avg (printed)"] == "87.89" and table[5]["paper avg (294:193)"] == "87.48"
    markdown = (out / "table7.md").read_text()
    assert "| 6 | t7_6_full | ✓ | ✓ | ✓ |" in markdown
    assert (out / "table7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "table: " in result.stdout

    # Resume: every row is done, nothing is trained or evaluated again.
    stamps = {name: (out / "rows" / name / "row.json").stat().st_mtime_ns for name in ROWS}
    again = run_spinegpt("sweep", "curricula/ablations/smoke", "--output-dir", str(out), *FAST)
    assert again.stderr.count("done already, skipping") == 6
    assert stamps == {name: (out / "rows" / name / "row.json").stat().st_mtime_ns for name in ROWS}


def test_a_failing_row_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    # The failing row stops before its engine starts (records over max_length with over_length: error), the
    # other trains nothing: the test exercises the sweep's bookkeeping, not training.
    (tmp_path / "too_long.yaml").write_text(
        f"extends: {ABLATIONS / 't7_2_general.yaml'}\nname: too_long\n"
        "stages:\n  - name: foundation\n    max_length: 8\n    over_length: error\n"
    )
    (tmp_path / "sweep.yaml").write_text(
        f"name: failing\nbase: {REPO / 'curricula' / 'smoke.yaml'}\n"
        f"rows: [too_long.yaml, {ABLATIONS / 't7_1_base.yaml'}]\n"
        "benchmark: {kind: spinebench, path: SpineBench/spinebench.jsonl, max_new_tokens: 4}\n"
    )
    out = tmp_path / "out"
    result = run_spinegpt("sweep", str(tmp_path), "--output-dir", str(out), check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    progress = json.loads((out / "progress.json").read_text())["rows"]
    assert progress["too_long"]["status"] == "failed" and "max_length 8" in progress["too_long"]["error"]
    assert progress["t7_1_base"]["status"] == "done"
    assert "1 row(s) failed: too_long" in result.stderr
    table = (out / "table7.csv").read_text().splitlines()
    assert len(table) == 2 and ",t7_1_base," in table[1]  # the table holds the rows that finished

    # --only runs just the named row (by name or number); the finished one is left alone.
    again = run_spinegpt("sweep", str(tmp_path), "--output-dir", str(out), "--only", "2")
    assert "t7_1_base: done already, skipping" in again.stderr and "too_long" not in again.stdout + again.stderr


def test_bad_sweeps_name_every_problem(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(
        "name: bad\nrows: [missing.yaml]\nbenchmark: {kind: spinebench}\nunknown_key: 1\n"
    )
    result = run_spinegpt("sweep", str(tmp_path / "sweep.yaml"), "--dry-run", check=False)
    assert result.returncode == 2
    assert "sweep.yaml:3: benchmark.path: required" in result.stderr
    assert "sweep.yaml:4: unknown_key: unknown key" in result.stderr
    (tmp_path / "sweep.yaml").write_text(
        "name: bad\nrows: [missing.yaml]\nbenchmark: {kind: spinebench, path: x.jsonl}\n"
    )
    result = run_spinegpt("sweep", str(tmp_path), "--dry-run", check=False)
    assert result.returncode == 2 and "rows[0] (missing.yaml)" in result.stderr and "cannot read" in result.stderr
    result = run_spinegpt("sweep", "curricula/ablations/smoke", "--dry-run", "--only", "t7_9", check=False)
    assert result.returncode == 2 and "--only: no row 't7_9'" in result.stderr


def test_slurm_launcher_submits_one_job_per_unfinished_row(tmp_path: Path) -> None:
    # sbatch cannot run here: a stand-in on PATH records its arguments and answers like `sbatch --parsable`.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/sh\necho "SPINEGPT_COMMAND=$SPINEGPT_COMMAND $*" >> {calls}\necho 4242\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    dry = run_spinegpt(
        "sweep", "curricula/ablations/sweep.yaml", "--launcher", "slurm", "--dry-run", "--output-dir", str(out), env=env
    ).stdout
    assert dry.count("SPINEGPT_COMMAND=sweep sbatch --parsable") == 6 and not calls.exists()
    run_spinegpt(
        "sweep",
        "curricula/ablations/sweep.yaml",
        "--launcher",
        "slurm",
        "--only",
        "t7_4_spine,6",
        "--output-dir",
        str(out),
        "--sbatch-arg=--nodes=2",
        env=env,
    )
    submitted = calls.read_text().splitlines()
    assert len(submitted) == 2
    assert all(line.startswith("SPINEGPT_COMMAND=sweep --parsable --job-name=table7-t7_") for line in submitted)
    assert "--nodes=2" in submitted[0] and "launch/slurm.sbatch" in submitted[0]
    assert f"--only t7_4_spine --output-dir {out}" in submitted[0]
    progress = json.loads((out / "progress.json").read_text())["rows"]
    assert progress["t7_4_spine"]["status"] == "submitted" and progress["t7_4_spine"]["job_id"] == "4242"
    assert progress["t7_1_base"]["status"] == "pending"


def test_every_shipped_sweep_loads_and_dry_runs() -> None:
    from spinegpt.train import sweep

    found = sorted(ABLATIONS.rglob("sweep.yaml"))
    assert [p.relative_to(ABLATIONS).as_posix() for p in found] == ["smoke/sweep.yaml", "sweep.yaml"]
    for path in found:
        loaded = sweep.load(path, [])
        assert [r.name for r in loaded.rows] == list(ROWS)
    text = run_spinegpt("sweep", "curricula/ablations/smoke", "--dry-run").stdout
    assert text.count("\nrow ") == 6 and "none: the base model is only evaluated" in text and "MISSING" not in text
