from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spinegpt.eval_hooks import evaluator, registry, spinebench
from spinegpt.eval_hooks.benchmark import BenchmarkError, prompt_for
from spinegpt.eval_hooks.config import BenchmarkConfig, EvalConfig, ExtractorConfig, JudgeConfig

from ..bench_fixtures import write_mm25, write_mm25_parquet, write_spinebench
from ..judge_server import GOOD, JudgeServer


def test_spinebench_reader(tmp_path: Path) -> None:
    items = registry.get("spinebench").read(write_spinebench(tmp_path))
    tasks = [i.task for i in items]
    assert tasks.count("text_mcq") == 4 and tasks.count("image_mcq") == 3 and tasks.count("report") == 2
    multi = next(i for i in items if i.id == "t3")
    assert multi.multi and multi.answer == ["A", "B"]
    two_images = next(i for i in items if i.id == "i2")
    assert len(two_images.images) == 2 and all(Path(p).is_absolute() for p in two_images.images)
    prompt = prompt_for(two_images)
    assert prompt.startswith("<image><image>Both images") and "\nE. L5\n" in prompt and "Answer:" in prompt


def test_mm25_reader_maps_option_texts_to_letters(tmp_path: Path) -> None:
    items = registry.get("spinebench_mm25").read(write_mm25(tmp_path))
    assert [i.task for i in items] == ["diagnosis", "diagnosis", "localisation", "localisation"]
    assert items[1].answer == ["C"]  # "Healthy" given as text
    assert items[3].answer == ["D", "E"] and items[3].multi
    assert items[0].options["B"] == "Disc herniation"
    assert prompt_for(items[0]).count("B. Disc herniation") == 1  # options already in the question


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"id": "x", "type": "mcq", "question": "q", "options": {"A": "a", "B": "b"}, "answer": "C"}',
            "neither an option letter",
        ),
        ('{"id": "x", "type": "essay", "prompt": "p"}', "type must be 'mcq' or 'report'"),
        ('{"type": "report", "prompt": "p"}', "missing 'id'"),
        ('{"id": "x", "type": "mcq", "question": "q", "options": {"A": "a"}, "answer": "A"}', "at least two options"),
        ('{"id": "x", "type": "report", "prompt": "p", "images": ["nope.png"]}', "image not found"),
        ('{"id": "x", "type": "mcq"', "invalid JSON"),
    ],
)
def test_spinebench_reader_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text('{"id": "ok", "type": "report", "prompt": "fine"}\n' + line + "\n")
    with pytest.raises(BenchmarkError, match=message) as info:
        registry.get("spinebench").read(path)
    assert f"{path}:2" in str(info.value)


def test_mm25_reader_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps([{"task": "spine_disease_classification", "question": "Q\nA. x\nB. y", "answers": ["A", "B"]}])
    )
    with pytest.raises(BenchmarkError, match=r"m.json\[0\]: a diagnosis item has exactly one"):
        registry.get("spinebench_mm25").read(path)


def _scripted(answers: dict[str, str]) -> evaluator.Generator:
    """A stand-in for the model: answers by a keyword of the prompt (the real engine is tested end to end)."""

    def generate(requests, max_new_tokens):  # type: ignore[no-untyped-def]
        out = []
        for prompt, _ in requests:
            out.append(next((a for key, a in answers.items() if key in prompt), "I do not know."))
        return out

    return generate


def test_scores_every_item_and_counts_unparsed(tmp_path: Path) -> None:
    sb = write_spinebench(tmp_path / "sb")
    mm = write_mm25(tmp_path / "mm")
    generate = _scripted(
        {
            "most often herniated": "## Thinking\nA is rare.\n## Final Response\nThe answer is B.",
            "Cobb angle": "\\boxed{C}",
            "red flags": "Answer: A, B",
            "Which level is highlighted": "Answer: D",
            "Both images": "Maybe A or E",
            "structured report": "## Imaging findings\nLesion.",
            "What is the diagnosis": "<answer>B</answer>",
            "Where are the lesions": "The lesions are at L4/L5 and L5/S1.",
        }
    )
    runs = [
        BenchmarkConfig(name="spinebench", kind="spinebench", path=str(sb)),
        BenchmarkConfig(name="mm25", kind="spinebench_mm25", path=str(mm)),
    ]
    with JudgeServer() as server:
        judge = JudgeConfig(base_url=server.url, model="judge", backoff_s=0.01)
        summary = evaluator.evaluate("scripted", runs, tmp_path / "eval", generate, judge)
    scores = summary["benchmarks"]["spinebench"]["scores"]
    assert scores["text"] == {"accuracy": 50.0, "n": 4, "correct": 2, "unparsed": 1}
    assert scores["image"]["correct"] == 1 and scores["image"]["n"] == 3 and scores["image"]["unparsed"] == 1
    assert scores["mcq_average"] == pytest.approx((50.0 * 4 + 100 / 3 * 3) / 7)
    report = scores["report"]
    assert report["judged"] == 2 and report["failed"] == 0
    assert report["score"] == pytest.approx(spinebench.report_score(GOOD))
    assert scores["overall"] == pytest.approx((50.0 * 4 + 100 / 3 * 3 + report["score"] * 2) / 9)
    mm25 = summary["benchmarks"]["mm25"]["scores"]
    assert mm25["diagnosis"]["accuracy"] == 0.5
    assert mm25["localisation"] == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "n": 2, "unparsed": 0}
    written = json.loads((tmp_path / "eval" / "spinebench.json").read_text())
    assert len(written["records"]) == 9 and written["unparsed"] == 2
    assert all("output" in r for r in written["records"])
    assert "| overall |" in (tmp_path / "eval" / "spinebench.md").read_text()
    assert (tmp_path / "eval" / evaluator.SUMMARY).is_file()


def test_without_a_judge_reports_are_not_scored_and_overall_is_missing(tmp_path: Path) -> None:
    sb = write_spinebench(tmp_path / "sb")
    summary = evaluator.evaluate(
        "m", [BenchmarkConfig(name="sb", kind="spinebench", path=str(sb))], tmp_path / "eval", _scripted({}), None
    )
    scores = summary["benchmarks"]["sb"]["scores"]
    assert "not judged" in scores["report"]["status"] and "score" not in scores["report"]
    assert scores["overall"] is None and "report" in scores["overall_missing"]
    assert scores["text"]["unparsed"] == 4 and scores["text"]["accuracy"] == 0.0


def test_failed_judgments_are_counted_not_scored(tmp_path: Path) -> None:
    sb = write_spinebench(tmp_path / "sb")
    text = sb.read_text().replace("CT. [[good]]", "CT. [[http500]]")
    sb.write_text(text)
    with JudgeServer() as server:
        judge = JudgeConfig(base_url=server.url, model="judge", backoff_s=0.01, max_attempts=2)
        summary = evaluator.evaluate(
            "m", [BenchmarkConfig(name="sb", kind="spinebench", path=str(sb))], tmp_path / "eval", _scripted({}), judge
        )
    report = summary["benchmarks"]["sb"]["scores"]["report"]
    assert report["judged"] == 1 and report["failed"] == 1
    records = json.loads((tmp_path / "eval" / "sb.json").read_text())["records"]
    failed = next(r for r in records if r["id"] == "r1")
    assert failed["judgment"]["scores"] is None and "report_score" not in failed
    assert "judgments failed | 1" in (tmp_path / "eval" / "sb.md").read_text()


def test_a_partly_failed_judging_marks_every_overall_partial(tmp_path: Path) -> None:
    sb = write_spinebench(tmp_path / "sb")
    sb.write_text(sb.read_text().replace("CT. [[good]]", "CT. [[http500]]"))
    with JudgeServer() as server:
        judge = JudgeConfig(base_url=server.url, model="judge", backoff_s=0.01, max_attempts=2)
        bench = BenchmarkConfig(name="sb", kind="spinebench", path=str(sb))
        summary = evaluator.evaluate("m", [bench], tmp_path / "eval", _scripted({}), judge)
    scores = summary["benchmarks"]["sb"]["scores"]
    assert scores["overall"] is not None and scores["overall_partial"] == "1 of 2 reports judged"
    assert "(partial: 1 of 2 reports judged)" in (tmp_path / "eval" / "sb.md").read_text()
    assert "overall (partial)" in spinebench.BENCHMARK.headline(scores)
    metrics = [
        m["name"] for r in spinebench.BENCHMARK.model_index({"name": "sb", "type": "x"}, scores) for m in r["metrics"]
    ]
    assert "Overall (partial: 1 of 2 reports judged)" in metrics


def test_nothing_judged_fails_the_evaluation_but_keeps_the_mcq_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = write_spinebench(tmp_path / "sb")
    sb.write_text(sb.read_text().replace("[[good]]", "[[http500]]"))
    written_as: list[str] = []
    original = evaluator.run_benchmark

    def watched(bench: Any, generate: Any, judge: Any, write: Any, **kw: Any) -> dict[str, Any]:
        record = lambda r: (written_as.append(r.get("status", "complete")), write(r))  # noqa: E731
        return original(bench, generate, judge, record, **kw)

    monkeypatch.setattr(evaluator, "run_benchmark", watched)
    with JudgeServer() as server:
        judge = JudgeConfig(base_url=server.url, model="judge", backoff_s=0.01, max_attempts=1)
        bench = BenchmarkConfig(name="sb", kind="spinebench", path=str(sb))
        with pytest.raises(evaluator.EvalError, match="no report of sb could be judged"):
            evaluator.evaluate("m", [bench], tmp_path / "eval", _scripted({}), judge)
    assert written_as == ["judging", "complete"]  # the MCQ scores were on disk before the judge was asked
    written = json.loads((tmp_path / "eval" / "sb.json").read_text())
    assert written["scores"]["text"]["n"] > 0 and written["scores"]["report"]["judged"] == 0
    assert (tmp_path / "eval" / evaluator.SUMMARY).is_file()


def test_the_extractor_reads_what_the_rules_cannot_and_every_decision_is_counted(tmp_path: Path) -> None:
    sb = write_spinebench(tmp_path / "sb")
    generate = _scripted(
        {
            "most often herniated": "Hmm, herniation is common in the lower spine. [[letters-b]]",  # rules: nothing
            "Cobb angle": "Answer: B",  # a rule decides; the extractor is not asked
            "cauda equina": "It depends on the history. [[letters-none]]",  # the extractor says none: unparsed
            "red flags": "Several of these matter. [[http500]]",  # the extractor fails: unparsed, failure recorded
            "Which level is highlighted": "Answer: D",
            "Both images": "Answer: E",
        }
    )
    bench = BenchmarkConfig(name="sb", kind="spinebench", path=str(sb), mcq_only=True)
    with JudgeServer() as server:
        judge = JudgeConfig(base_url=server.url, model="judge", backoff_s=0.01, max_attempts=2)
        config = EvalConfig(benchmarks=[bench], judge=judge, extractor=ExtractorConfig(backoff_s=0.01, max_attempts=2))
        extractor = config.extractor_server()
        cache = tmp_path / "cache.sqlite"
        summary = evaluator.evaluate("m", [bench], tmp_path / "eval", generate, judge, cache, extractor)
        asked = sum(server.calls.values())
        evaluator.evaluate("m", [bench], tmp_path / "again", generate, judge, cache, extractor)
        assert (
            sum(server.calls.values()) - asked == 2
        )  # cached: the mapped and the "none" answers; asked again: the failed one
    records = {r["id"]: r for r in json.loads((tmp_path / "eval" / "sb.json").read_text())["records"]}
    assert records["t0"]["decided_by"] == "llm" and records["t0"]["parsed"] == ["B"] and records["t0"]["correct"]
    assert records["t1"]["decided_by"] == "rule" and "extractor" not in records["t1"]
    assert records["t2"]["decided_by"] == "unparsed" and records["t2"]["extractor"]["letters"] == []
    assert records["t3"]["decided_by"] == "unparsed" and records["t3"]["extractor"]["letters"] is None
    assert records["t3"]["extractor"]["errors"] == ["HTTP 500", "HTTP 500"]
    answers = summary["benchmarks"]["sb"]["answers"]
    assert answers == {"rule": 4, "llm": 1, "unparsed": 2, "llm_failed": 1}
    assert summary["benchmarks"]["sb"]["scores"]["text"]["unparsed"] == 2
    text = (tmp_path / "eval" / "sb.md").read_text()
    assert "answers read by rule: 4, by the LLM extractor: 1, unparsed: 2 (1 extractor failure(s))" in text


def test_the_extractor_is_off_by_default_and_needs_a_server() -> None:
    assert EvalConfig(benchmarks=[BenchmarkConfig(kind="spinebench", path="x")]).extractor_server() is None
    with pytest.raises(ValueError, match="extractor: give base_url and model, or configure a judge"):
        EvalConfig(benchmarks=[BenchmarkConfig(kind="spinebench", path="x")], extractor=ExtractorConfig())


def test_mm25_as_the_hub_ships_it_in_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))
    path = write_mm25_parquet(tmp_path / "hub")
    mm25 = registry.get("spinebench_mm25")
    items = mm25.read(path)
    assert [i.task for i in items] == ["diagnosis", "diagnosis", "localisation", "localisation"]
    assert [i.answer for i in items] == [["B"], ["C"], ["D", "E"], ["D", "E"]]
    assert items[0].options["B"] == "Disc herniation" and items[1].options["C"] == "Healthy"
    first = [Path(i.images[0]) for i in items]
    assert all(p.is_file() and p.is_relative_to(tmp_path / "cache") for p in first)
    assert first[2] == first[3]  # the same embedded image is written once
    mtime = first[0].stat().st_mtime_ns
    assert [Path(i.images[0]) for i in mm25.read(path)] == first and first[0].stat().st_mtime_ns == mtime
    assert mm25.questions(path)[0] == "What is the diagnosis?"


def test_unreadable_benchmark_files_name_the_file_and_row(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\x00" * 64)
    with pytest.raises(BenchmarkError, match=r"broken.parquet: unreadable parquet"):
        registry.get("spinebench_mm25").read(broken)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BenchmarkError, match=r"binary.json: neither UTF-8 JSON/JSONL/CSV nor parquet"):
        registry.get("spinebench_mm25").read(binary)
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad.parquet"
    row = {"task": "spine_lesion_localization", "question": "Where?", "options": ["L4/L5", "L5/S1"], "answer": "S2/S3"}
    pq.write_table(pa.Table.from_pylist([row]), bad)
    with pytest.raises(BenchmarkError, match=r"bad.parquet\[row 0\]: answer 'S2/S3' is neither"):
        registry.get("spinebench_mm25").read(bad)
