"""Evaluate one model on the configured benchmarks and write the results where a stage's outputs live.

For each benchmark: ``<out>/<name>.json`` (every item: prompt, images, model output, parsed answer, gold answer,
correctness or judgment, and the scores) and ``<out>/<name>.md`` (a summary a person reads). ``<out>/summary.json``
collects the scores of all benchmarks and is written last: its presence means the evaluation finished.

Rows a benchmark's own rules cannot score (``Item.unusable``: an MMMU test answer withheld as "?") are not
generated; they are counted by reason in the result (``unusable``) and its markdown.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spinegpt.errors import UserError
from spinegpt.eval_hooks import registry
from spinegpt.eval_hooks.answers import parse_choices
from spinegpt.eval_hooks.benchmark import BenchmarkError, Item, Record, prompt_for, resolve
from spinegpt.eval_hooks.config import BenchmarkConfig, JudgeConfig
from spinegpt.eval_hooks.extractor import Extractor, Request
from spinegpt.eval_hooks.judge import Judge
from spinegpt.eval_hooks.llm_client import Server
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


def _read_answers(records: list[Record], items: list[Item], extractor: Extractor | None) -> None:
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


def run_benchmark(
    bench: BenchmarkConfig,
    generate: Generator,
    judge: Judge | None,
    write: Callable[[dict[str, Any]], None],
    extractor: Extractor | None = None,
    chunk: int = 32,
) -> dict[str, Any]:
    """Generate, read the answers, score; ``write`` gets the result once before judging (the multiple-choice
    scores survive a judge that never answers) and once complete."""
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
    records: list[Record] = [
        {
            "id": i.id,
            "task": i.task,
            "prompt": prompt_for(i),
            "images": i.images,
            "output": outputs[i.id],
            **({"meta": i.meta} if i.meta else {}),
        }
        for i in items
    ]
    _read_answers(records, items, extractor)
    scores = kind.score(items, records, None)
    answers = _decisions(records)
    result = {
        "benchmark": bench.label,
        "kind": bench.kind,
        "path": str(path),
        "items": len(items),
        "unparsed": answers["unparsed"],
        "answers": answers,
        **({"unusable": unusable} if unusable else {}),
        **({"max_drop": bench.max_drop} if bench.max_drop is not None else {}),
        "scores": scores,
        "records": records,
    }
    if judge is not None and any(i.task == "report" for i in items):
        write({**result, "status": "judging"})
        result["scores"] = kind.score(items, records, judge)
    write(result)
    return result


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
    return "\n".join(lines) + "\n"


def evaluate(
    model: str,
    benchmarks: Sequence[BenchmarkConfig],
    out_dir: Path,
    generate: Generator,
    judge_config: JudgeConfig | None = None,
    judge_cache: Path | None = None,
    extractor_server: tuple[Server, int] | None = None,
) -> dict[str, Any]:
    """Run every benchmark on ``model``; write per-benchmark JSON + markdown, then ``summary.json`` last."""
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
            )
            (out_dir / f"{bench.label}.md").write_text(markdown(result, model))
            optional: dict[str, Any] = {k: result[k] for k in ("unusable", "max_drop") if k in result}
            summary["benchmarks"][bench.label] = {
                "kind": bench.kind,
                "items": result["items"],
                "unparsed": result["unparsed"],
                "answers": result["answers"],
                **optional,
                "scores": result["scores"],
            }
    finally:
        if judge is not None:
            judge.close()
        if extractor is not None:
            extractor.close()
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
