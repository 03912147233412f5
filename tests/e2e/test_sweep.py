"""The smoke sweep end to end: Table 7 rows trained and evaluated on CPU, the table and chart rebuilt with computed
averages, and a second run skips every finished row.

Three of the six rows, one of each shape: the base model (nothing trained), a row whose first stage is skipped (it
starts from the base model at stage 2), and the full curriculum. Each trained row costs a minute or more on 2 cores;
which stages every row trains on which splits is checked for all six in tests/integration/test_ablations.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from spinegpt.eval_hooks import spinebench

from ..conftest import TABLE7_ROWS, run_spinegpt

ROWS = ["t7_1_base", "t7_4_spine", "t7_6_full"]
# Small and quick on 2 cores: one process, no DeepSpeed, one step per stage (the engine path is the same).
FAST = [
    "--only",
    ",".join(ROWS),
    *(f"stages.{s}.max_steps=1" for s in ("foundation", "specialise", "reports")),
    *(f"stages.{s}.deepspeed=null" for s in ("foundation", "specialise", "reports")),
]


def test_smoke_sweep_end_to_end_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = run_spinegpt("sweep", "curricula/ablations/smoke", "--output-dir", str(out), "--compare-paper", *FAST)
    progress = json.loads((out / "progress.json").read_text())
    assert {n: r["status"] for n, r in progress["rows"].items() if r["status"] != "pending"} == dict.fromkeys(
        ROWS, "done"
    ), progress
    rows = [json.loads((out / "rows" / name / "row.json").read_text()) for name in ROWS]
    for row, name in zip(rows, ROWS, strict=True):
        trains = TABLE7_ROWS[name][0]
        assert row["name"] == name and [s["name"] for s in row["stages"]] == list(trains)
        assert row["splits"] == sorted(
            {s for v in trains.values() for s in v}, key=["general", "non_spine", "spine"].index
        )
        text, image = row["scores"]["text"], row["scores"]["image"]
        assert text["n"] == 2 and image["n"] == 3  # the smoke SpineBench's multiple-choice items
    summary = json.loads((out / "rows" / "t7_1_base" / "eval" / "summary.json").read_text())
    assert summary["benchmarks"]["spinebench"]["items"] == 5  # the report prompt is left out of Table 7
    assert "tiny-qwen2_5_vl" in rows[0]["model"]  # row 1: the base model itself
    assert rows[2]["model"].endswith("03-reports/final")
    assert [s["name"] for s in rows[1]["stages"]] == ["specialise", "reports"] and rows[1]["stages"][0][
        "starts_from"
    ] == "base"

    with (out / "table7.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [t["curriculum"] for t in table] == ROWS
    for line, row in zip(table, rows, strict=True):
        text, image = row["scores"]["text"], row["scores"]["image"]
        weighted = spinebench.mcq_average((text["accuracy"], text["n"]), (image["accuracy"], image["n"]))
        assert float(line["avg"]) == pytest.approx(weighted, abs=0.005)  # computed from counts, not copied
        assert float(line["text"]) == pytest.approx(text["accuracy"], abs=0.005)
        assert [line["General"], line["No-Spine"], line["Spine"]] == [
            "1" if s in row["splits"] else "" for s in ("general", "non_spine", "spine")
        ]
    assert table[2]["paper avg (printed)"] == "87.89" and table[2]["paper avg (294:193)"] == "87.48"
    markdown = (out / "table7.md").read_text()
    assert "| 6 | t7_6_full | ✓ | ✓ | ✓ |" in markdown
    general = markdown.split("## General medicine")[1]  # VQA-RAD beside Table 7, each row against the base row
    assert "| 1 | t7_1_base |" in general and "base model" in general and "t7_6_full" in general
    assert all(row["benchmarks"]["vqa_rad"]["items"] == 5 for row in rows)
    assert (out / "table7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "table: " in result.stdout

    # Resume: every row is done, nothing is trained or evaluated again.
    stamps = {name: (out / "rows" / name / "row.json").stat().st_mtime_ns for name in ROWS}
    again = run_spinegpt("sweep", "curricula/ablations/smoke", "--output-dir", str(out), *FAST)
    assert again.stderr.count("done already, skipping") == 3
    assert stamps == {name: (out / "rows" / name / "row.json").stat().st_mtime_ns for name in ROWS}
