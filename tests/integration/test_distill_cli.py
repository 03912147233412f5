"""`spinegpt data distill` as users run it: killed with SIGKILL mid-run and run again, and its refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from ..conftest import REPO, run_spinegpt, spinegpt_command
from ..teacher_server import TeacherServer, lines, mcq, open_item, results, write_bank


def distill_args(bank: Path, out: Path, server: TeacherServer, *extra: str) -> list[str]:
    return [
        "data",
        "distill",
        str(bank),
        "--teacher-url",
        server.url,
        "--teacher-model",
        "teacher-x",
        "--output-dir",
        str(out),
        "--max-attempts",
        "2",
        "--backoff",
        "0.01",
        "--timeout",
        "20",
        *extra,
    ]


def test_a_run_killed_with_sigkill_continues_on_rerun_with_no_duplicate_and_no_loss(tmp_path: Path) -> None:
    items = [mcq(i, "answer-C" if i % 4 else "hedge") for i in range(16)]
    bank = write_bank(tmp_path / "bank.jsonl", items)
    out = tmp_path / "out"
    env = {**os.environ, "SPINEGPT_CACHE": str(tmp_path / "cache")}
    with TeacherServer(delay_s=0.3) as server:
        args = distill_args(bank, out, server, "--concurrency", "2", "--samples", "2")
        log = (tmp_path / "killed.log").open("w")
        process = subprocess.Popen(
            [*spinegpt_command(), *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        try:
            while len(results(out)) < 6:
                assert process.poll() is None, (tmp_path / "killed.log").read_text()
                assert time.monotonic() < deadline, "no results within 120 s"
                time.sleep(0.1)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            log.close()
        before = results(out)
        assert 6 <= len(before) < 32  # stopped part-way
        rerun = run_spinegpt(*args, env=env)
    summary = json.loads(rerun.stdout)
    after = results(out)  # raises on a duplicate id
    wanted = {f"q{i}-cot{s}" for i in range(16) for s in range(2)}
    assert set(after) == wanted and all(after[k] == v for k, v in before.items())
    assert summary["done"] == summary["wanted"] == 32 and summary["pending"] == 0
    assert summary["kept"] == 24 and summary["rejected"] == {"no answer": 8}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["this_run"]["requests"] <= 32 - len(before)  # only what was missing (less what the cache had)
    assert manifest["counts"]["generated"] == len(lines(out / "chains.jsonl")) + len(lines(out / "rejected.jsonl"))


def test_refusals_are_one_clear_line(tmp_path: Path) -> None:
    bank = write_bank(tmp_path / "bank.jsonl", [mcq(0, "answer-C"), open_item(0)])
    out = tmp_path / "out"
    with TeacherServer() as server:
        refused = run_spinegpt(*distill_args(bank, out, server), check=False)
        assert refused.returncode == 1 and server.teacher_calls() == 0
        assert refused.stderr.strip().splitlines()[-1].startswith("error: 1 open-ended item(s) selected")
        assert "--teacher-judges" in refused.stderr and "Traceback" not in refused.stderr
        usage = run_spinegpt(*distill_args(bank, out, server, "--judge-url", server.url), check=False)
        assert usage.returncode == 2 and "--judge-url needs --judge-model" in usage.stderr
        task = run_spinegpt(*distill_args(bank, out, server, "--task", "report"), check=False)
        assert task.returncode == 2 and "not report" in task.stderr and "Traceback" not in task.stderr
        unknown = run_spinegpt("data", "distill", "nowhere.jsonl", *distill_args(bank, out, server)[3:], check=False)
        assert unknown.returncode == 1 and "not a SpineMed source of sources.yaml (spinemed" in unknown.stderr
        template = tmp_path / "prompt.txt"
        template.write_text("Answer step by step.")
        bad = run_spinegpt(*distill_args(bank, out, server, "--prompt-template", str(template)), check=False)
        assert bad.returncode == 2 and f"{template}: a prompt template holds {{question}} exactly once" in bad.stderr
        ok = run_spinegpt(*distill_args(bank, out, server, "--task", "mcq"))
    assert json.loads(ok.stdout)["kept"] == 1
