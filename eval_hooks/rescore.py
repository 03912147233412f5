"""Re-scoring a result from its recorded outputs, without a model: ``spinegpt eval --rescore RESULT.json``.

Answers are read again by today's rules, scores, intervals and breakdowns computed again, and a new protocol
recorded (its generation section copied: the outputs are the same). Useful after the answer rules improve, or when
a judge that was down is back. The outputs are never touched, and the result is written to another folder.

Reports keep their recorded verdicts where the same judge on the same rubric gave them; a report whose judgment
failed (or was never asked) is judged by the judge given now, if any. The LLM extractor likewise: recorded
readings are reused, and only answers it never saw go to the extractor given now. So a re-score with nothing
changed gives the original scores back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spinegpt.errors import UserError
from spinegpt.eval_hooks import answers, evaluator, protocol, results
from spinegpt.eval_hooks.benchmark import BenchmarkError, Grader, Item
from spinegpt.eval_hooks.config import BenchmarkConfig, JudgeConfig, StatisticsConfig
from spinegpt.eval_hooks.extractor import Extractor, Request
from spinegpt.eval_hooks.judge import Judge
from spinegpt.eval_hooks.llm_client import Outcome, Server
from spinegpt.eval_hooks.rubric import Judgment
from spinegpt.files import sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

GENERATED = ("id", "task", "question", "prompt", "images", "output", "multi", "reference", "answer_texts", "meta")
"""What a record holds from generation; everything else in it is re-computed."""


class RescoreError(UserError, ValueError):
    """A result that cannot be re-scored; the message names the file."""


class RecordedJudge:
    """The verdicts a result recorded (keyed by task text and output), and a live judge for the reports that have
    none; without a live judge those stay failed."""

    def __init__(self, recorded: dict[tuple[str, str], dict[str, int]], live: Judge | None):
        self.recorded, self.live = recorded, live

    def judge_many(self, items: Sequence[tuple[str, str, str | None]]) -> list[Judgment]:
        out: list[Judgment | None] = [
            Judgment(scores=self.recorded[(q, a)], attempts=0, cached=True) if (q, a) in self.recorded else None
            for q, a, _ in items
        ]
        missing = [i for i, j in enumerate(out) if j is None]
        if missing and self.live is not None:
            for i, judgment in zip(missing, self.live.judge_many([items[i] for i in missing]), strict=True):
                out[i] = judgment
        why = "no recorded verdict, and no judge given to the re-scoring (--judge-url / --judge-model)"
        return [j if j is not None else Judgment(scores=None, attempts=0, errors=[why]) for j in out]


class RecordedReader:
    """The LLM extractor's recorded readings (keyed by question and output), and a live extractor for the answers
    it never saw; without one those stay unparsed."""

    def __init__(self, recorded: dict[tuple[str, str], list[str] | None], live: Extractor | None):
        self.recorded, self.live = recorded, live

    def extract_many(self, requests: Sequence[Request]) -> list[Outcome[list[str]]]:
        out: list[Outcome[list[str]] | None] = [
            Outcome(self.recorded[(r.question, r.answer)], attempts=0, cached=True)
            if (r.question, r.answer) in self.recorded
            else None
            for r in requests
        ]
        missing = [i for i, o in enumerate(out) if o is None]
        if missing and self.live is not None:
            for i, outcome in zip(missing, self.live.extract_many([requests[i] for i in missing]), strict=True):
                out[i] = outcome
        why = "not read by the extractor when the result was made, and no extractor given to the re-scoring"
        return [o if o is not None else Outcome(None, attempts=0, errors=[why]) for o in out]


def _items(result: results.ResultFile) -> list[Item]:
    """The evaluated items, from the records (results written since they carry the question) or, for older ones,
    from the benchmark file at the recorded path, matched by id."""
    records = result.records
    if all("question" in r and (r["task"] == "report" or "multi" in r or "answer_texts" in r) for r in records):
        return [
            Item(
                id=r["id"],
                task=r["task"],
                question=r["question"],
                images=list(r.get("images") or []),
                options=dict(r.get("options") or {}),
                # The gold letters of an item with options; a free-text record's "answer" is what its score wrote.
                answer=list(r.get("answer") or []) if r.get("options") else [],
                multi=bool(r.get("multi", False)),
                reference=r.get("reference"),
                meta=dict(r.get("meta") or {}),
                answer_texts=list(r.get("answer_texts") or []),
            )
            for r in records
        ]
    path = Path(str(result.raw.get("path") or ""))
    columns = result.protocol.benchmark.columns if result.protocol is not None else None
    try:
        by_id = {i.id: i for i in result.benchmark.read(path, None, columns)}
    except BenchmarkError as exc:
        raise RescoreError(
            f"{result.path}: its records predate the ones that re-score alone, and its benchmark file cannot be read "
            f"({exc})"
        ) from None
    missing = [r["id"] for r in records if r["id"] not in by_id]
    if missing:
        raise RescoreError(f"{result.path}: items {missing[:5]} are not in {path} (another version of the file?)")
    return [by_id[r["id"]] for r in records]


def _judge(
    result: results.ResultFile, items: list[Item], judge_config: JudgeConfig | None, judge_cache: Path | None
) -> tuple[Grader | None, protocol.JudgeSpec | None, Judge | None, str | None]:
    """Who judges the reports now: (grader, its protocol entry, the live judge to close, the judge's URL)."""
    if not any(i.task == "report" for i in items):
        return None, None, None, None
    old = result.protocol
    old_spec = old.judge if old is not None else None
    live = Judge(judge_config, cache_path=judge_cache) if judge_config is not None else None
    spec = protocol.judge_spec(judge_config) if judge_config is not None else old_spec
    # Recorded verdicts count only where the judge and rubric that gave them are the ones recorded now: a result
    # is judged by one judge on one rubric, never a mix.
    reusable = old_spec is not None and spec == old_spec and old_spec.rubric_sha256 == protocol.rubric_sha256()
    if old_spec is not None and not reusable:
        logger.warning(
            f"{result.path}: its verdicts come from {old_spec.model} on rubric v{old_spec.rubric_version}, not the "
            "judge and rubric of this re-scoring; "
            + ("every report is judged again" if live else "no judge given (--judge-url): reports are left unjudged")
        )
    recorded: dict[tuple[str, str], dict[str, int]] = {}
    if reusable:
        for record, item in zip(result.records, items, strict=True):
            scores = (record.get("judgment") or {}).get("scores")
            if item.task == "report" and isinstance(scores, dict):
                recorded[(item.question, record["output"])] = scores
    if live is None and not recorded:
        return None, None, None, None
    url = judge_config.base_url if judge_config is not None else (old.provenance.judge_url if old else None)
    return RecordedJudge(recorded, live), spec, live, url


def rescore(
    result_path: Path,
    out_dir: Path,
    judge_config: JudgeConfig | None = None,
    judge_cache: Path | None = None,
    extractor_server: tuple[Server, int] | None = None,
    statistics: StatisticsConfig | None = None,
) -> dict[str, Any]:
    """Score ``result_path``'s recorded outputs again into ``out_dir`` (``<name>.json``, ``.md``, ``summary.json``);
    returns the summary."""
    result = results.load(result_path)
    target = out_dir / f"{result.label}.json"
    if out_dir.resolve() == result_path.parent.resolve():
        raise RescoreError(
            f"--output-dir {out_dir} holds the result being re-scored; write the re-scored result to another folder "
            "(the original is never overwritten)"
        )
    if not result.records:
        raise RescoreError(f"{result_path}: no answered items to re-score")
    records = [{k: r[k] for k in GENERATED if k in r} for r in result.records]
    items = _items(result)
    for record, item in zip(records, items, strict=True):
        record.setdefault("question", item.question)
        if item.is_mcq:
            record.setdefault("multi", item.multi)
    old = result.protocol
    settings = statistics or (
        StatisticsConfig(
            resamples=old.statistics.resamples, seed=old.statistics.seed, min_group_n=old.statistics.min_group_n
        )
        if old is not None
        else StatisticsConfig()
    )

    live_extractor = Extractor(*extractor_server, cache_path=judge_cache) if extractor_server is not None else None
    recorded_letters = {
        (item.question, r["output"]): r["extractor"].get("letters")
        for r, item in zip(result.records, items, strict=True)
        if isinstance(r.get("extractor"), dict) and r["extractor"].get("letters") is not None
    }
    old_extractor = old.answers.extractor if old is not None else None
    reader = RecordedReader(recorded_letters, live_extractor) if (live_extractor or old_extractor) else None
    extractor_spec = protocol.answers_spec(live_extractor.server.model if live_extractor else None).extractor
    if live_extractor is None and old_extractor is not None:
        extractor_spec = old_extractor

    grader, judge_spec, live_judge, judge_url = _judge(result, items, judge_config, judge_cache)
    bench = BenchmarkConfig(
        kind=result.kind,
        path=str(result.raw.get("path") or ""),
        name=result.label,
        limit=old.benchmark.limit if old else None,
        mcq_only=old.benchmark.mcq_only if old else False,
        columns=dict(old.benchmark.columns) if old else {},
    )
    unusable: dict[str, int] = dict(result.raw.get("unusable") or {})
    rescored_from = {
        "file": str(result_path.resolve()),
        "sha256": sha256_file(result_path),
        "protocol_sha256": old.sha256 if old is not None else None,
    }
    if old is not None:
        benchmark_spec, prompt_spec, generation = old.benchmark, old.prompt, old.generation
    else:
        benchmark_spec = protocol.benchmark_spec(bench, items, unusable=sum(unusable.values()))
        prompt_spec = protocol.prompt_spec([r["prompt"] for r in records])
        generation = None
    made = protocol.EvalProtocol(
        benchmark=benchmark_spec,
        prompt=prompt_spec,
        generation=generation,
        answers=protocol.AnswersSpec(rules_version=answers.RULES_VERSION, extractor=extractor_spec),
        judge=judge_spec,
        statistics=protocol.statistics_spec(settings),
        provenance=protocol.provenance(bench.path, judge_url, rescored_from),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / evaluator.SUMMARY).unlink(missing_ok=True)
    head: dict[str, Any] = {"benchmark": result.label, "kind": result.kind, "path": bench.path, "model": result.model}
    if unusable:
        head["unusable"] = unusable  # rows the benchmark's rules left out: as counted when the result was made
    if result.raw.get("max_drop") is not None:
        head["max_drop"] = result.raw["max_drop"]
    try:
        scored = evaluator.score_records(
            result.benchmark,
            head,
            items,
            records,
            made,
            settings,
            lambda data: write_json_atomic(target, data),
            judge=grader,
            extractor=reader,
        )
    finally:
        for closing in (live_judge, live_extractor):
            if closing is not None:
                closing.close()
    (out_dir / f"{result.label}.md").write_text(evaluator.markdown(scored, result.model or "(not recorded)"))
    summary: dict[str, Any] = {
        "model": result.model,
        "rescored_from": str(result_path),
        "benchmarks": {result.label: evaluator.summary_entry(scored)},
    }
    return evaluator.finish(summary, out_dir)
