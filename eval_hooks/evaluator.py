"""Evaluate one model on the configured benchmarks and write the results where a stage's outputs live.

For each benchmark: ``<out>/<name>.json`` (every item: prompt, images, model output, parsed answer, gold answer,
correctness or judgment, and the scores) and ``<out>/<name>.md`` (a summary a person reads). ``<out>/summary.json``
collects the scores of all benchmarks and is written last: its presence means the evaluation finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import registry
from spinegpt.eval_hooks.answers import parse_choices
from spinegpt.eval_hooks.benchmark import Record, prompt_for
from spinegpt.eval_hooks.config import BenchmarkConfig, JudgeConfig
from spinegpt.eval_hooks.judge import Judge

from spinegpt.errors import UserError
from spinegpt.files import write_json_atomic
from spinegpt.paths import cache_root

SUMMARY = "summary.json"
Generator = Callable[[Sequence[tuple[str, Sequence[str]]], int], list[str]]
"""(requests, max_new_tokens) -> completions, in order."""


def judge_cache_path() -> Path:
    return cache_root() / "judge-cache.sqlite"


def run_benchmark(
    bench: BenchmarkConfig, generate: Generator, judge: Judge | None, write: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Generate, read the answers, score; ``write`` gets the result once before judging (the multiple-choice
    scores survive a judge that never answers) and once complete."""
    kind = registry.get(bench.kind)
    path = Path(bench.path)
    items = kind.read(path, Path(bench.image_root) if bench.image_root else None)
    if bench.mcq_only:
        items = [i for i in items if i.task != "report"]
    if bench.limit is not None:
        items = items[: bench.limit]
    outputs: dict[str, str] = {}
    for is_report in (False, True):
        group = [i for i in items if (i.task == "report") == is_report]
        if group:
            tokens = bench.report_max_new_tokens if is_report else bench.max_new_tokens
            texts = generate([(prompt_for(i), i.images) for i in group], tokens)
            if len(texts) != len(group):
                raise RuntimeError(f"{bench.label}: {len(texts)} outputs for {len(group)} items")
            outputs.update({i.id: t for i, t in zip(group, texts, strict=True)})
    records: list[Record] = []
    for item in items:
        record: Record = {
            "id": item.id,
            "task": item.task,
            "prompt": prompt_for(item),
            "images": item.images,
            "output": outputs[item.id],
            **({"meta": item.meta} if item.meta else {}),
        }
        if item.is_mcq:
            parsed = parse_choices(
                record["output"], letters="".join(item.options), multi=item.multi, options=item.options
            )
            record.update(
                options=item.options, answer=item.answer, parsed=parsed, correct=bool(parsed) and parsed == item.answer
            )
        records.append(record)
    result = {
        "benchmark": bench.label,
        "kind": bench.kind,
        "path": str(path),
        "items": len(items),
        "unparsed": sum(1 for r in records if r["task"] != "report" and not r["parsed"]),
        "scores": kind.score(items, records, None),
        "records": records,
    }
    if judge is not None and any(i.task == "report" for i in items):
        write({**result, "status": "judging"})
        result["scores"] = kind.score(items, records, judge)
    write(result)
    return result


def markdown(result: dict[str, Any], model: str) -> str:
    lines = [
        f"# {result['benchmark']} ({result['kind']})",
        "",
        f"model: `{model}`  ",
        f"items: {result['items']}, unparsed answers: {result['unparsed']} (scored as wrong)",
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
) -> dict[str, Any]:
    """Run every benchmark on ``model``; write per-benchmark JSON + markdown, then ``summary.json`` last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY).unlink(missing_ok=True)
    judge = Judge(judge_config, cache_path=judge_cache) if judge_config else None
    summary: dict[str, Any] = {"model": model, "benchmarks": {}}
    try:
        for bench in benchmarks:
            print(f"[spinegpt eval] {bench.label}: {bench.path}", flush=True)
            path = out_dir / f"{bench.label}.json"
            result = run_benchmark(bench, generate, judge, lambda r, p=path: write_json_atomic(p, r))
            (out_dir / f"{bench.label}.md").write_text(markdown(result, model))
            summary["benchmarks"][bench.label] = {
                "kind": bench.kind,
                "items": result["items"],
                "unparsed": result["unparsed"],
                "scores": result["scores"],
            }
            print(markdown(result, model), flush=True)
    finally:
        if judge is not None:
            judge.close()
    write_json_atomic(out_dir / SUMMARY, summary)
    unjudged = [
        name for name, b in summary["benchmarks"].items() if (b["scores"].get("report") or {}).get("judged") == 0
    ]
    if unjudged:
        raise EvalError(f"no report of {', '.join(unjudged)} could be judged (every judgment failed; see the records' "
                        f"'judgment' errors in {out_dir}); the multiple-choice scores are written")  # fmt: skip
    return summary


class EvalError(UserError, RuntimeError):
    """An evaluation that ran but could not produce its scores (every report judgment failed)."""
