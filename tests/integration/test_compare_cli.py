"""`spinegpt compare` and `spinegpt eval --rescore` through the real command line, on result files recorded by a
scripted stand-in (nothing generates or trains)."""

from __future__ import annotations

import json
from pathlib import Path

from spinegpt.files import sha256_file

from ..bench_fixtures import evaluate_mcq, write_mcq_bench
from ..conftest import run_spinegpt

N = 40


def test_compare_two_result_files_and_two_evaluation_folders(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", N)
    a = evaluate_mcq(bench, tmp_path / "a" / "eval", set(range(20)), N, model="A")
    b = evaluate_mcq(bench, tmp_path / "b" / "eval", set(range(32)), N, model="B")
    shown = run_spinegpt("compare", str(a), str(b))
    # 12 items only B got right, none only A: +30 points, McNemar p = 2 / 2^12.
    assert "| text MCQ % | 40 | 50.00 | 80.00 | +30.00 [" in shown.stdout
    assert "| 0.000488 (12/0) |" in shown.stdout
    data = json.loads(run_spinegpt("compare", str(tmp_path / "a"), str(tmp_path / "b" / "eval"), "--json").stdout)
    (comparison,) = data  # a stage folder (its eval/) against an evaluation folder
    (metric,) = comparison["metrics"]
    assert metric["key"] == "text" and metric["difference"]["estimate"] == 30.0
    assert metric["mcnemar"] == {
        "b_only": 12,
        "a_only": 0,
        "n_discordant": 12,
        "p_value": 0.0004883,
        "method": "exact McNemar (two-sided binomial on discordant pairs)",
    }
    assert comparison["a"]["model"] == "A" and comparison["protocol_sha256"]


def test_compare_refuses_another_protocol_naming_the_field(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", N)
    a = evaluate_mcq(bench, tmp_path / "a", set(range(20)), N)
    b = evaluate_mcq(bench, tmp_path / "b", set(range(20)), N, max_new_tokens=64)
    refused = run_spinegpt("compare", str(a), str(b), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "different evaluation protocols: generation.max_new_tokens.mcq: 1024 vs 64" in refused.stderr
    summary = run_spinegpt("compare", str(a), str(tmp_path / "b" / "summary.json"), check=False)
    assert summary.returncode == 1 and "not an evaluation result" in summary.stderr


def test_rescore_from_the_command_line_gives_the_scores_back(tmp_path: Path) -> None:
    bench = write_mcq_bench(tmp_path / "bench", N, {"Trauma": 25})
    result = evaluate_mcq(bench, tmp_path / "eval", set(range(0, N, 3)), N)
    before = sha256_file(result)
    shown = run_spinegpt("eval", "--rescore", str(result), "--output-dir", str(tmp_path / "again"))
    assert "| text MCQ % | 40 | 35.00 |" in shown.stdout and "Accuracy by subspecialty" in shown.stdout
    original = json.loads(result.read_text())
    again = json.loads((tmp_path / "again" / "mcq.json").read_text())
    assert again["scores"] == original["scores"] and again["statistics"] == original["statistics"]
    assert sha256_file(result) == before
    same = run_spinegpt("compare", str(result), str(tmp_path / "again" / "mcq.json"))
    assert "| text MCQ % | 40 | 35.00 | 35.00 | +0.00 [+0.00, +0.00] |" in same.stdout
    misuse = run_spinegpt("eval", "--rescore", str(result), check=False)
    assert misuse.returncode == 2 and "--rescore needs --output-dir" in misuse.stderr
