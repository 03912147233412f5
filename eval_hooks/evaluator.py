"""Evaluate one model on the configured benchmarks and write the results where a stage's outputs live.

For each benchmark: ``<out>/<name>.json`` (every item: prompt, images, model output, parsed answer, gold answer,
correctness or judgment; the scores, their intervals and breakdowns (``statistics``), and the ``protocol`` that
made them) and ``<out>/<name>.md`` (a summary a person reads). ``<out>/summary.json`` collects the scores of all
benchmarks and is written last: its presence means the evaluation finished.

Generating and scoring are separate steps (:func:`score_records`), so ``rescore.py`` can score recorded outputs again
without a model.

Rows a benchmark's own rules cannot score (``Item.unusable``: an MMMU test answer withheld as "?") are not
generated; they are counted by reason in the result (``unusable``), its markdown and its protocol.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from spinegpt.errors import UserError
from spinegpt.eval_hooks import protocol, registry, scorecard
from spinegpt.eval_hooks.answers import parse_choices
from spinegpt.eval_hooks.benchmark import Benchmark, BenchmarkError, Grader, Item, Record, prompt_for, resolve
from spinegpt.eval_hooks.config import BenchmarkConfig, JudgeConfig, StatisticsConfig
from spinegpt.eval_hooks.extractor import Extractor, Request
from spinegpt.eval_hooks.judge import Judge
from spinegpt.eval_hooks.llm_client import Outcome, Server
from spinegpt.eval_hooks.protocol import EvalProtocol, GenerationSpec
from spinegpt.files import write_json_atomic
from spinegpt.paths import cache_root
from spinegpt.progress import Progress

logger = logging.getLogger(__name__)

SUMMARY = "summary.json"
DECISION_PATHS = ("rule", "llm", "unparsed")
"""How a multiple-choice answer was read: by the rules, by the LLM extractor, or not at all (scored wrong)."""
Generator = Callable[[Sequence[tuple[str, Sequence[str]]], int], list[str]]
"""(requests, max_new_tokens) -> completions, in order."""


def judge_cache_path() -> Path:
    return cache_root() / "judge-cache.sqlite"


def _generate(label: str, generate: Generator, items: list[Item], max_new_tokens: int, chunk: int) -> list[str]:
    """Completions for ``items`` in chunks, with progress after each (574 items on a 7B model take a while)."""
    progress = Progress(label, len(items), unit="answers", log=logger)
    texts: list[str] = []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        out = generate([(prompt_for(i), i.images) for i in part], max_new_tokens)
        if len(out) != len(part):
            raise RuntimeError(f"{label}: {len(out)} outputs for {len(part)} items")
        texts += out
        progress.advance(len(part))
    progress.close()
    return texts


class AnswerReader(Protocol):
    """What answer reading asks of the LLM extractor (``extractor.Extractor``, or recorded readings on a re-score)."""

    def extract_many(self, requests: Sequence[Request]) -> list[Outcome[list[str]]]: ...


def _read_answers(records: list[Record], items: list[Item], extractor: AnswerReader | None) -> None:
    """Each multiple-choice record's letters and the path that decided them: ``rule`` (answers.py), ``llm`` (the
    extractor, for what the rules left) or ``unparsed``. Free-text items are read by their benchmark's ``score``,
    which records the same ``decided_by``."""
    mcq = [(i, r) for i, r in zip(items, records, strict=True) if i.is_mcq]
    for item, record in mcq:
        parsed = parse_choices(record["output"], letters="".join(item.options), multi=item.multi, options=item.options)
        record.update(
            options=item.options, answer=item.answer, parsed=parsed, decided_by="rule" if parsed else "unparsed"
        )
    left = [(i, r) for i, r in mcq if not r["parsed"]]
    if extractor is not None and left:
        requests = [Request(i.question, i.options, r["output"], i.multi) for i, r in left]
        for (_, record), outcome in zip(left, extractor.extract_many(requests), strict=True):
            record["extractor"] = {
                "letters": outcome.value,
                "attempts": outcome.attempts,
                "cached": outcome.cached,
                "errors": outcome.errors,
            }
            if outcome.value:
                record.update(parsed=outcome.value, decided_by="llm")
    for item, record in mcq:
        record["correct"] = bool(record["parsed"]) and record["parsed"] == item.answer


def _decisions(records: list[Record]) -> dict[str, int]:
    """How the answers were read, counted over every record that was read (reports are judged, not read)."""
    read = [r for r in records if "decided_by" in r]
    counts = {path: sum(r["decided_by"] == path for r in read) for path in DECISION_PATHS}
    counts["llm_failed"] = sum(1 for r in read if r.get("extractor") and r["extractor"]["letters"] is None)
    return counts


def record_for(item: Item, output: str) -> Record:
    """An answered item as generated: what re-scoring needs besides the output (question, options come with the
    answer reading, ``multi``, the report's reference, a free-text item's accepted answers, the item's labels)."""
    record: Record = {
        "id": item.id,
        "task": item.task,
        "question": item.question,
        "prompt": prompt_for(item),
        "images": item.images,
        "output": output,
    }
    if item.is_mcq:
        record["multi"] = item.multi
    if item.answer_texts:
        record["answer_texts"] = item.answer_texts
    if item.reference is not None:
        record["reference"] = item.reference
    if item.meta:
        record["meta"] = item.meta
    return record


def run_benchmark(
    bench: BenchmarkConfig,
    generate: Generator,
    judge: Judge | None,
    write: Callable[[dict[str, Any]], None],
    extractor: Extractor | None = None,
    chunk: int = 32,
    *,
    model: str = "",
    engine: GenerationSpec | None = None,
    statistics: StatisticsConfig | None = None,
) -> dict[str, Any]:
    """Generate, read the answers, score; ``write`` gets the result once before judging (the multiple-choice
    scores survive a judge that never answers) and once complete. ``engine``: the generation settings the protocol
    records (None: not recorded, e.g. a stand-in generator)."""
    kind = registry.get(bench.kind)
    path = resolve(bench.path, Path.cwd())
    read = kind.read(path, Path(bench.image_root) if bench.image_root else None, bench.columns)
    unusable = dict(Counter(i.unusable for i in read if i.unusable))
    items = [i for i in read if not i.unusable]
    if not items:
        reasons = "; ".join(f"{n} x {why}" for why, n in unusable.items())
        raise BenchmarkError(f"{path}: no item can be scored by the benchmark's rules ({reasons})")
    if unusable:
        logger.warning(
            f"{bench.label}: {sum(unusable.values())} row(s) cannot be scored and are counted apart: {unusable}"
        )
    if bench.mcq_only:
        items = [i for i in items if i.task != "report"]
    if bench.limit is not None:
        items = items[: bench.limit]
    outputs: dict[str, str] = {}
    for is_report in (False, True):
        group = [i for i in items if (i.task == "report") == is_report]
        if group:
            tokens = bench.report_max_new_tokens if is_report else bench.max_new_tokens
            label = f"{bench.label} {'reports' if is_report else 'answers'}"
            outputs.update(zip((i.id for i in group), _generate(label, generate, group, tokens, chunk), strict=True))
    records = [record_for(i, outputs[i.id]) for i in items]
    settings = statistics or StatisticsConfig()
    made = protocol.build(
        bench,
        items,
        engine=engine,
        judge=judge.config if judge is not None else None,
        extractor_model=extractor.server.model if extractor is not None else None,
        statistics=settings,
        unusable=sum(unusable.values()),
    )
    head: dict[str, Any] = {"benchmark": bench.label, "kind": bench.kind, "path": str(path), "model": model}
    if unusable:
        head["unusable"] = unusable
    if bench.max_drop is not None:
        head["max_drop"] = bench.max_drop
    return score_records(kind, head, items, records, made, settings, write, judge=judge, extractor=extractor)


def score_records(
    kind: Benchmark,
    head: dict[str, Any],
    items: list[Item],
    records: list[Record],
    made: EvalProtocol,
    settings: StatisticsConfig,
    write: Callable[[dict[str, Any]], None],
    *,
    judge: Grader | None,
    extractor: AnswerReader | None,
) -> dict[str, Any]:
    """Read the answers, score, compute intervals and breakdowns; ``head``: the result's identifying fields (and
    what the result carries beside its scores: ``unusable``, ``max_drop``)."""
    _read_answers(records, items, extractor)
    scores = kind.score(items, records, None)  # free-text items are read here, recording their decided_by
    answers = _decisions(records)
    result = {
        **head,
        "items": len(items),
        "unparsed": answers["unparsed"],
        "answers": answers,
        "scores": scores,
        "statistics": None,
        "protocol": made.model_dump(mode="json"),
        "protocol_sha256": made.sha256,
        "records": records,
    }
    result["statistics"] = _statistics(kind, records, settings)
    if judge is not None and any(i.task == "report" for i in items):
        write({**result, "status": "judging"})
        result["scores"] = kind.score(items, records, judge)
        result["statistics"] = _statistics(kind, records, settings)
    write(result)
    return result


def _statistics(kind: Benchmark, records: list[Record], settings: StatisticsConfig) -> dict[str, Any]:
    return scorecard.compute(kind.item_scores(records), settings).model_dump(mode="json")


def answers_line(answers: dict[str, int]) -> str:
    """How the multiple-choice answers were read, for people: rule / LLM extractor / unparsed."""
    failed = f" ({answers['llm_failed']} extractor failure(s))" if answers.get("llm_failed") else ""
    return (
        f"answers read by rule: {answers.get('rule', 0)}, by the LLM extractor: {answers.get('llm', 0)}, "
        f"unparsed: {answers.get('unparsed', 0)}{failed}"
    )


def unusable_line(unusable: dict[str, int]) -> str:
    return ", ".join(f"{n} ({why})" for why, n in unusable.items())


def _write_result(path: Path, result: dict[str, Any]) -> None:
    write_json_atomic(path, result)


def markdown(result: dict[str, Any], model: str) -> str:
    lines = [
        f"# {result['benchmark']} ({result['kind']})",
        "",
        f"model: `{model}`  ",
        f"items: {result['items']}, unparsed answers: {result['unparsed']} (scored as wrong)  ",
        answers_line(result.get("answers", {})) + "  ",
        *(
            [f"rows not scorable by the benchmark's rules (not generated): {unusable_line(result['unusable'])}  "]
            if result.get("unusable")
            else []
        ),
        "",
        *registry.get(result["kind"]).markdown(result["scores"]),
    ]
    if (stats := scorecard.read(result.get("statistics"))) is not None:
        lines += ["", *scorecard.markdown(stats)]
    if (made := protocol.read(result.get("protocol"))) is not None:
        lines += ["", *protocol_markdown(made)]
    return "\n".join(lines) + "\n"


def protocol_markdown(made: EvalProtocol) -> list[str]:
    """What decided the numbers, in a few lines."""
    b, g, a, j = made.benchmark, made.generation, made.answers, made.judge
    lines = [
        "### Protocol",
        "",
        f"protocol `{made.sha256[:12]}` (sha256 of the locked settings; `spinegpt compare` refuses results whose "
        "protocols differ)  ",
        f"benchmark: {b.kind}, file sha256 `{b.sha256[:12]}`, {b.items} items"
        + (f" (first {b.limit})" if b.limit else "")
        + (" (multiple choice only)" if b.mcq_only else "")
        + (f", {b.unusable} row(s) the benchmark's rules cannot score left out" if b.unusable else "")
        + (f", columns {', '.join(f'{k}: {v}' for k, v in b.columns.items())}" if b.columns else "")
        + f"; prompt template `{made.prompt.template_sha256[:12]}`, prompts `{made.prompt.prompts_sha256[:12]}`  ",
    ]
    if g is None:
        lines.append("generation: not recorded (re-scored from a result written before protocols)  ")
    else:
        budgets = ", ".join(f"{k} {v}" for k, v in g.max_new_tokens.items())
        pixels = f"max_pixels {g.max_pixels or 'default'}, min_pixels {g.min_pixels or 'default'}"
        lines.append(
            f"generation: {g.engine} {g.backend}, {g.model_type} / {g.template}, {g.torch_dtype}, {g.attn_impl}, "
            f"{g.decoding} (temperature {g.temperature:g}, seed {g.seed}), max new tokens {budgets}, {pixels}, "
            f"batch {g.batch_size}  "
        )
    extractor = f"LLM extractor {a.extractor.model} v{a.extractor.version}" if a.extractor else "no LLM extractor"
    lines.append(f"answers: rules v{a.rules_version}, {extractor}  ")
    if j is not None:
        lines.append(
            f"judge: {j.model} (temperature {j.temperature:g}), rubric v{j.rubric_version} `{j.rubric_sha256[:12]}`  "
        )
    s = made.statistics
    lines.append(
        f"statistics: v{s.stats_version}, {s.resamples} resamples, seed {s.seed}, groups under {s.min_group_n} pooled"
    )
    return lines


def evaluate(
    model: str,
    benchmarks: Sequence[BenchmarkConfig],
    out_dir: Path,
    generate: Generator,
    judge_config: JudgeConfig | None = None,
    judge_cache: Path | None = None,
    extractor_server: tuple[Server, int] | None = None,
    *,
    engine: GenerationSpec | None = None,
    statistics: StatisticsConfig | None = None,
) -> dict[str, Any]:
    """Run every benchmark on ``model``; write per-benchmark JSON + markdown, then ``summary.json`` last.
    ``engine``: the generation settings recorded in each result's protocol."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY).unlink(missing_ok=True)
    judge = Judge(judge_config, cache_path=judge_cache) if judge_config else None
    extractor = None
    if extractor_server is not None:
        extractor = Extractor(extractor_server[0], extractor_server[1], cache_path=judge_cache)
    summary: dict[str, Any] = {"model": model, "benchmarks": {}}
    try:
        for bench in benchmarks:
            logger.info(f"{bench.label}: {bench.path}")
            result = run_benchmark(
                bench,
                generate,
                judge,
                functools.partial(_write_result, out_dir / f"{bench.label}.json"),
                extractor=extractor,
                model=model,
                engine=engine,
                statistics=statistics,
            )
            (out_dir / f"{bench.label}.md").write_text(markdown(result, model))
            summary["benchmarks"][bench.label] = summary_entry(result)
    finally:
        if judge is not None:
            judge.close()
        if extractor is not None:
            extractor.close()
    return finish(summary, out_dir)


def summary_entry(result: dict[str, Any]) -> dict[str, Any]:
    """One benchmark in ``summary.json`` (and so in the run manifest)."""
    return {
        "kind": result["kind"],
        "items": result["items"],
        "unparsed": result["unparsed"],
        "answers": result["answers"],
        **{k: result[k] for k in ("unusable", "max_drop") if k in result},
        "scores": result["scores"],
        "statistics": result.get("statistics"),
        "protocol_sha256": result.get("protocol_sha256"),
    }


def finish(summary: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write ``summary.json``; an evaluation none of whose reports could be judged then fails."""
    write_json_atomic(out_dir / SUMMARY, summary)
    unjudged = [
        name for name, b in summary["benchmarks"].items() if (b["scores"].get("report") or {}).get("judged") == 0
    ]
    if unjudged:
        raise EvalError(
            f"no report of {', '.join(unjudged)} could be judged (every judgment failed; see the records' "
            f"'judgment' errors in {out_dir}); the multiple-choice scores are written"
        )
    return summary


class EvalError(UserError, RuntimeError):
    """An evaluation that ran but could not produce its scores (every report judgment failed)."""
