"""`spinegpt data distill` through ms-swift's own OpenAI-compatible server (`swift deploy`) on the tiny offline
Qwen2.5-VL: real requests with images, real replies (random weights: nonsense, so nearly all are rejected), and the
manifest has to account for every one of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from spinegpt.data_mixes import chains

from ..conftest import run_spinegpt
from ..swift_deploy import swift_deploy
from ..teacher_server import lines


def test_distill_through_swift_deploy_on_the_tiny_model(tiny_model: Path, root: Path, tmp_path: Path) -> None:
    out = tmp_path / "chains"
    env = {**os.environ, "SPINEGPT_CACHE": str(tmp_path / "cache")}  # every reply asked of the server, none cached
    with swift_deploy(tiny_model, tmp_path / "deploy.log") as url:
        args = [
            "data",
            "distill",
            "spinemed",
            "--data-root",
            str(root),
            "--teacher-url",
            url,
            "--teacher-model",
            "tiny-teacher",
            "--output-dir",
            str(out),
            "--split",
            "spine",
            "--task",
            "mcq",
            "--count",
            "3",
            "--samples",
            "2",
            "--max-tokens",
            "24",
            "--concurrency",
            "2",
            "--timeout",
            "120",
        ]
        result = run_spinegpt(*args, env=env)
        again = run_spinegpt(*args, env=env)  # a rerun finds everything done and asks nothing
    summary = json.loads(result.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    counts, first = summary, json.loads(again.stdout)
    assert counts["wanted"] == 6 and counts["done"] == 6 and counts["pending"] == 0
    assert counts["generated"] == counts["kept"] + sum(counts["rejected"].values()) == 6
    assert first == counts
    rejected = lines(out / "rejected.jsonl")
    kept = lines(out / "chains.jsonl")
    assert len(rejected) + len(kept) == 6
    assert all(r["reason"] in chains.REJECTIONS and r["reply"]["completion_tokens"] > 0 for r in rejected)
    items = {r["provenance"]["source_id"] for r in kept} | {r["source_id"] for r in rejected}
    assert len(items) == 3
    assert {r["id"] for r in kept + rejected} == {f"{i}-cot{s}" for i in items for s in (0, 1)}
    assert manifest["this_run"]["requests"] == 0 and manifest["totals"]["runs"] == 2
    assert manifest["totals"]["requests"] >= 6
    assert manifest["totals"]["prompt_tokens"] > 0 and manifest["totals"]["completion_tokens"] > 0
    assert manifest["selection"]["selected"] == 3 and manifest["teacher"]["model"] == "tiny-teacher"
