"""Evaluate one model on the configured benchmarks and write the results where a stage's outputs live.

    spinegpt eval MODEL --benchmark spinebench --data spinebench.jsonl [--judge-url URL --judge-model M]

For each benchmark: ``<out>/<name>.json`` (every item: prompt, images, model output, parsed answer, gold answer,
correctness or judgment, and the scores) and ``<out>/<name>.md`` (a summary a person reads). ``<out>/summary.json``
collects the scores of all benchmarks and is written last: its presence means the evaluation finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import benchmarks, spinebench, spinebench_mm25
from spinegpt.eval_hooks.answers import parse_choices
from spinegpt.eval_hooks.judge import Judge, JudgeConfig
from spinegpt.train.manifest import write_json_atomic

SUMMARY = "summary.json"
Generator = Callable[[Sequence[tuple[str, Sequence[str]]], int], list[str]]
"""(requests, max_new_tokens) -> completions, in order."""


@dataclass(frozen=True)
class BenchmarkRun:
    name: str
    kind: str
    path: Path
    image_root: Path | None = None
    limit: int | None = None
    max_new_tokens: int = 1024
    report_max_new_tokens: int = 2048
    mcq_only: bool = False
    """Leave report items out (an ablation table scores multiple-choice accuracy only)."""


def _score_spinebench(
    items: list[benchmarks.Item], records: list[dict[str, Any]], judge: Judge | None
) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    parts: dict[str, tuple[float, int]] = {}
    for task, part in (("text_mcq", "text"), ("image_mcq", "image")):
        chosen = [r for r in records if r["task"] == task]
        if chosen:
            result = spinebench.mcq_result([r["parsed"] for r in chosen], [r["answer"] for r in chosen])
            scores[part] = {
                "accuracy": result.accuracy,
                "n": result.total,
                "correct": result.correct,
                "unparsed": result.unparsed,
            }
            parts[part] = (result.accuracy, result.total)
    if "text" in parts and "image" in parts:
        scores["mcq_average"] = spinebench.mcq_average(parts["text"], parts["image"])
    reports = [(i, r) for i, r in zip(items, records, strict=True) if i.task == "report"]
    if reports:
        report: dict[str, Any] = {"n": len(reports)}
        if judge is None:
            report["status"] = "not judged: no judge configured (--judge-url / eval.judge)"
        else:
            judgments = judge.judge_many([(i.question, r["output"], i.reference) for i, r in reports])
            for (_, record), judgment in zip(reports, judgments, strict=True):
                record["judgment"] = judgment.to_json()
                if judgment.scores:
                    record["report_score"] = spinebench.report_score(judgment.scores)
            judged = [j.scores for j in judgments if j.scores]
            report.update(judged=len(judged), failed=len(judgments) - len(judged))
            if judged:
                dims = spinebench.mean_dimensions(judged)
                report.update(
                    dimensions=dims, sections=spinebench.section_scores(dims), score=spinebench.report_score(dims)
                )
                parts["report"] = (report["score"], len(judged))
        scores["report"] = report
    try:
        scores["overall"] = spinebench.overall_score(parts)
    except ValueError as exc:
        scores["overall"] = None
        scores["overall_missing"] = str(exc)
    return scores


def _score_mm25(records: list[dict[str, Any]]) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    diagnosis = [r for r in records if r["task"] == "diagnosis"]
    if diagnosis:
        scores["diagnosis"] = {
            "accuracy": spinebench_mm25.diagnosis_accuracy(
                [set(r["parsed"]) for r in diagnosis], [set(r["answer"]) for r in diagnosis]
            ),
            "n": len(diagnosis),
            "unparsed": sum(not r["parsed"] for r in diagnosis),
        }
    localisation = [r for r in records if r["task"] == "localisation"]
    if localisation:
        scores["localisation"] = {
            **spinebench_mm25.localisation_scores(
                [set(r["parsed"]) for r in localisation], [set(r["answer"]) for r in localisation]
            ),
            "n": len(localisation),
            "unparsed": sum(not r["parsed"] for r in localisation),
        }
    return scores


def run_benchmark(bench: BenchmarkRun, generate: Generator, judge: Judge | None) -> dict[str, Any]:
    items = benchmarks.read(bench.kind, bench.path, bench.image_root)
    if bench.mcq_only:
        items = [i for i in items if i.task != "report"]
    if bench.limit is not None:
        items = items[: bench.limit]
    outputs: dict[str, str] = {}
    for is_report in (False, True):
        group = [i for i in items if (i.task == "report") == is_report]
        if group:
            tokens = bench.report_max_new_tokens if is_report else bench.max_new_tokens
            texts = generate([(benchmarks.prompt_for(i), i.images) for i in group], tokens)
            if len(texts) != len(group):
                raise RuntimeError(f"{bench.name}: {len(texts)} outputs for {len(group)} items")
            outputs.update({i.id: t for i, t in zip(group, texts, strict=True)})
    records = []
    for item in items:
        record: dict[str, Any] = {
            "id": item.id,
            "task": item.task,
            "prompt": benchmarks.prompt_for(item),
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
    scores = _score_spinebench(items, records, judge) if bench.kind == "spinebench" else _score_mm25(records)
    return {
        "benchmark": bench.name,
        "kind": bench.kind,
        "path": str(bench.path),
        "items": len(items),
        "unparsed": sum(1 for r in records if r["task"] != "report" and not r["parsed"]),
        "scores": scores,
        "records": records,
    }


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown(result: dict[str, Any], model: str) -> str:
    scores = result["scores"]
    lines = [
        f"# {result['benchmark']} ({result['kind']})",
        "",
        f"model: `{model}`  ",
        f"items: {result['items']}, unparsed answers: {result['unparsed']} (scored as wrong)",
        "",
    ]
    if result["kind"] == "spinebench":
        lines += ["| part | n | score |", "|---|---|---|"]
        for part in ("text", "image"):
            if part in scores:
                s = scores[part]
                lines.append(f"| {part} MCQ accuracy (%) | {s['n']} | {_fmt(s['accuracy'])} |")
        if "mcq_average" in scores:
            lines.append(
                f"| MCQ average (%) | {scores['text']['n'] + scores['image']['n']} | {_fmt(scores['mcq_average'])} |"
            )
        report = scores.get("report")
        if report:
            if "score" in report:
                sections = ", ".join(f"{k} {v:.2f}" for k, v in report["sections"].items())
                lines.append(f"| report (0-100) | {report['judged']} | {_fmt(report['score'])} ({sections}) |")
            else:
                lines.append(f"| report | {report['n']} | {report.get('status', 'no judged report')} |")
            if report.get("failed"):
                lines.append(f"| report judgments failed | {report['failed']} | not scored |")
        lines.append(f"| overall | | {_fmt(scores['overall']) if scores['overall'] is not None else 'n/a'} |")
        if scores.get("overall_missing"):
            lines += ["", f"overall not computed: {scores['overall_missing']}"]
    else:
        lines += ["| task | n | accuracy | precision | recall |", "|---|---|---|---|---|"]
        if "diagnosis" in scores:
            lines.append(f"| diagnosis | {scores['diagnosis']['n']} | {_fmt(scores['diagnosis']['accuracy'])} | | |")
        if "localisation" in scores:
            s = scores["localisation"]
            lines.append(
                f"| localisation | {s['n']} | {_fmt(s['accuracy'])} | {_fmt(s['precision'])} | {_fmt(s['recall'])} |"
            )
    return "\n".join(lines) + "\n"


def evaluate(
    model: str,
    runs: Sequence[BenchmarkRun],
    out_dir: Path,
    generate: Generator,
    judge_config: JudgeConfig | None = None,
) -> dict[str, Any]:
    """Run every benchmark on ``model``; write per-benchmark JSON + markdown, then ``summary.json`` last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY).unlink(missing_ok=True)
    judge = Judge(judge_config) if judge_config else None
    summary: dict[str, Any] = {"model": model, "benchmarks": {}}
    try:
        for bench in runs:
            print(f"[spinegpt eval] {bench.name}: {bench.path}", flush=True)
            result = run_benchmark(bench, generate, judge)
            write_json_atomic(out_dir / f"{bench.name}.json", result)
            (out_dir / f"{bench.name}.md").write_text(markdown(result, model))
            summary["benchmarks"][bench.name] = {
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
    return summary


@dataclass(frozen=True)
class EvalSettings:
    """A resolved evaluation: what ``spinegpt plan`` shows and the runner hands to ``spinegpt eval --config``."""

    runs: list[BenchmarkRun]
    judge: JudgeConfig | None
    model_type: str = "qwen2_5_vl"
    template: str = "qwen2_5_vl"
    torch_dtype: str = "bfloat16"
    attn_impl: str = "sdpa"
    backend: str = "auto"
    batch_size: int = 8

    def to_json(self) -> dict[str, Any]:
        judge = None
        if self.judge is not None:
            judge = {k: v for k, v in vars(self.judge).items() if k != "cache_path"}
        return {
            "benchmarks": [
                {**vars(r), "path": str(r.path), "image_root": str(r.image_root) if r.image_root else None}
                for r in self.runs
            ],
            "judge": judge,
            "model_type": self.model_type,
            "template": self.template,
            "torch_dtype": self.torch_dtype,
            "attn_impl": self.attn_impl,
            "backend": self.backend,
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], cache_path: Path | None = None) -> EvalSettings:
        runs = [
            BenchmarkRun(
                **{**b, "path": Path(b["path"]), "image_root": Path(b["image_root"]) if b.get("image_root") else None}
            )
            for b in data["benchmarks"]
        ]
        judge = JudgeConfig(**data["judge"], cache_path=cache_path) if data.get("judge") else None
        rest = {
            k: data[k]
            for k in ("model_type", "template", "torch_dtype", "attn_impl", "backend", "batch_size")
            if k in data
        }
        return cls(runs=runs, judge=judge, **rest)


def judge_cache_path() -> Path:
    from spinegpt.paths import cache_root

    return cache_root() / "judge-cache.sqlite"
