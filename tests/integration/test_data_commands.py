"""`spinegpt data convert | build | audit` and `plan --audit` as a user runs them: engine rows, cached builds,
several mixes read together, exact audits, and --json that is JSON alone."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from spinegpt.data_mixes import build, mixes

from ..conftest import REPO, build_mix, spinegpt_command

# -- readers --------------------------------------------------------------------------------------------------------


def test_convert_command_writes_engine_rows(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    result = subprocess.run(
        [
            *spinegpt_command(),
            "data",
            "convert",
            "--source",
            "pubmedvision",
            str(root / "PubMedVision" / "PubMedVision_Alignment_VQA.json"),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["messages"][0]["content"].count("<image>") == len(r["images"]) for r in rows)


# -- mixes ----------------------------------------------------------------------------------------------------------


def test_build_command_and_cached_reuse(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = subprocess.run(
        [*spinegpt_command(), "data", "build", "stage3_reports", "--data-root", str(root), "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((out / build.MANIFEST).read_text())["output"]["rows"] == json.loads(result.stdout)["rows"]
    first = build.build_cached(mixes.load("stage3_reports"), root, tmp_path / "cache", seed=3)
    again = build.build_cached(mixes.load("stage3_reports"), root, tmp_path / "cache", seed=3)
    assert again.dir == first.dir and again.manifest == first.manifest


def test_mixes_built_together_read_shared_sources_once_and_equal_each_built_alone(root: Path, tmp_path: Path) -> None:
    """`data build A B C`: the stage mixes share SpineMed; each output keeps the bytes and manifest it has alone."""
    names = ("stage1_foundation", "stage2_spine", "stage3_reports")
    alone = {
        n: build_mix(root, tmp_path / "alone" / n, n, settings={"pubmedvision.count": 2} if n == names[0] else {})
        for n in names
    }
    reads: list[str] = []
    original = build._read_part
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "_read_part", lambda *a: reads.append(a[0]) or original(*a))
        jobs = [
            build.BuildJob(mixes.load(n, {"pubmedvision.count": 2} if n == names[0] else {}), tmp_path / "t" / n, 42)
            for n in names
        ]
        together = build.build_many(jobs, root, workers=1)
    assert reads.count("spinemed") == 1 and len(reads) == len(set(reads))
    for result in together:
        one = alone[result.manifest["mix"]]
        assert [s.read_bytes() for s in result.shards] == [s.read_bytes() for s in one.shards]
        drop = ("build_seconds",)
        assert {k: v for k, v in result.manifest.items() if k not in drop} == {
            k: v for k, v in one.manifest.items() if k not in drop
        }
    # All source parts as jobs of a process pool (SpineMed in two parts): the same bytes again.
    pooled = [build.BuildJob(j.loaded, tmp_path / "pool" / j.loaded.mix.name, 42) for j in jobs]
    assert [r.sha256 for r in build.build_many(pooled, root, workers=2, min_parallel_bytes=1)] == [
        alone[n].sha256 for n in names
    ]
    # The command.
    out = tmp_path / "cli"
    command = [*spinegpt_command(), "data", "build", *names, "--data-root", str(root), "--output-dir", str(out)]
    result = subprocess.run(
        [*command, "--set", "stage1_foundation:pubmedvision.count=2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        env={**os.environ, "SPINEGPT_DATA_WORKERS": "2"},
    )
    assert result.returncode == 0, result.stderr
    assert [r["sha256"] for r in json.loads(result.stdout)] == [alone[n].sha256 for n in names]
    refused = subprocess.run([*command, "--set", "pubmedvision.count=2"], capture_output=True, text=True, cwd=REPO)
    assert refused.returncode == 2 and "name the mix (MIX:component.key=value)" in refused.stderr


def test_plan_audits_each_stage_exactly(tiny_model: Path) -> None:
    """`spinegpt plan --audit`: per stage, exact totals and percentiles, records over max_length, optimizer steps
    for the stage's global batch at this world size."""
    from ..conftest import run_spinegpt

    result = run_spinegpt(
        "plan",
        str(REPO / "curricula" / "smoke.yaml"),
        "--nproc",
        "2",
        "--audit",
        "--json",
        "stages.foundation.max_length=60",
        "stages.foundation.max_steps=null",
    )
    data = json.loads(result.stdout)
    audits = {a["stage"]: a for a in data["audit"]}
    assert list(audits) == [s["name"] for s in data["stages"]]
    for stage in data["stages"]:
        a = audits[stage["name"]]
        assert a["global_batch"] == stage["global_batch"] and a["records"] > 0
        assert a["percentiles"]["p50"] <= a["percentiles"]["p99"] <= a["percentiles"]["max"] <= a["total_tokens"]
    foundation = audits["foundation"]
    assert foundation["max_length"] == 60 and 0 < foundation["over_max_length"] < foundation["records"]
    assert len(foundation["over_length_rows"]) == foundation["over_max_length"] or foundation["over_max_length"] > 5
    # one epoch, no max_steps, over-length records dropped: as ms-swift's sampler deals them, kept // 2 rows to each
    # of the 2 ranks, in micro-batches of 2, one micro-batch a step
    kept = foundation["records"] - foundation["over_max_length"]
    assert foundation["optimizer_steps"] == -(-(kept // 2) // 2)
    assert audits["specialise"]["optimizer_steps"] == 3  # max_steps wins
    text = run_spinegpt("plan", str(REPO / "curricula" / "smoke.yaml"), "--audit").stdout
    assert "Data audit (exact tokens; 1 rank(s))" in text and "over max_length" not in text


def test_convert_data_root_means_what_a_curriculums_data_root_means(root: Path, tmp_path: Path) -> None:
    """Pointers resolve under the data root's open_datasets/, as in `data build`."""
    out = tmp_path / "rows.jsonl"
    source = root / "SpineMed-450k" / "train.jsonl"
    command = [*spinegpt_command(), "data", "convert", "--source", "spinemed", str(source), "--output", str(out)]
    result = subprocess.run([*command, "--data-root", str(root)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    pointed = [p for r in rows for p in r.get("images", []) if "open_datasets" in p]
    assert pointed and all(Path(p).is_file() for p in pointed)


def test_audit_json_is_json_alone_whatever_libraries_print(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """DeepSpeed, imported on the way when the tiny model is first built, logs a notice to stdout."""
    from spinegpt import cli
    from spinegpt.train import commands

    def noisy(*_: Any) -> list[Any]:
        print("[WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU.")
        return []

    monkeypatch.setattr(commands, "audit_curriculum", noisy)
    assert cli.main(["data", "audit", str(REPO / "curricula" / "smoke.yaml"), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == [] and "Setting accelerator" in out.err


def test_a_damaged_mix_cache_is_rebuilt_not_reused(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = build.build_cached(mixes.load("stage3_reports"), root, tmp_path / "cache", seed=3)
    shard = first.shards[0]
    original = shard.read_bytes()
    for damaged in (original[: len(original) // 2], original.replace(b'"', b"'", 1), b""):
        shard.write_bytes(damaged)  # cut short, changed in place, emptied
        caplog.clear()
        again = build.build_cached(mixes.load("stage3_reports"), root, tmp_path / "cache", seed=3)
        assert shard.read_bytes() == original and again.manifest == first.manifest
        assert "discarded and rebuilt" in caplog.text
    shard.unlink()
    assert build.build_cached(mixes.load("stage3_reports"), root, tmp_path / "cache", seed=3).manifest == first.manifest
    (first.dir / build.MANIFEST).write_text('{"key": "' + first.manifest["key"] + '"}')  # a manifest without output
    assert build.build_cached(mixes.load("stage3_reports"), root, tmp_path / "cache", seed=3).manifest == first.manifest
