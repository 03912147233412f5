"""The model card (hub ``README.md``) of an exported SpineGPT checkpoint: hub metadata, how the model was made
(curriculum lineage from the run manifest), SpineBench results in model-index form, intended use and disclaimer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from spinegpt.eval_hooks import registry, scorecard
from spinegpt.train.manifest import RunManifest, StageRecord

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DISCLAIMER = (
    "This model is a research artefact. It is **not** a medical device, has not been clinically validated, and must "
    "not be used to diagnose, treat or triage patients. Its outputs can be wrong, incomplete or outdated, including "
    "when they sound confident. Any clinical use requires review by a qualified physician, local regulatory approval, "
    "and evaluation on the population it would serve."
)


@dataclass
class Source:
    """What an export is made from, as the card describes it."""

    path: Path
    """The checkpoint folder the weights come from."""
    kind: Literal["full", "lora", "zero"]
    run: RunManifest | None = None
    """The run manifest, when the source lies inside a run folder."""
    stage_index: int | None = None
    """Which stage of that run the source belongs to."""
    base_model: str | None = None
    """For LoRA: the model the adapters apply to."""
    notes: list[str] = field(default_factory=list)


def _stages(src: Source) -> list[StageRecord]:
    if not src.run or src.stage_index is None:
        return []
    return [s for s in src.run.stages if s.index <= src.stage_index]


def _base_model(src: Source) -> str | None:
    candidate = src.base_model or (src.run.curriculum.get("model") if src.run else None)
    return candidate if isinstance(candidate, str) and _HUB_ID.match(candidate) else None


def model_index(name: str, stage: StageRecord | None) -> list[dict[str, Any]]:
    """Benchmark results of the exported stage, as the hub's model-index metadata (each benchmark's own metrics)."""
    benches = (stage.eval.benchmarks if stage and stage.eval else None) or {}
    results: list[dict[str, Any]] = []
    for bench_name, bench in benches.items():
        kind = bench.get("kind", bench_name)
        results += registry.get(kind).model_index({"name": bench_name, "type": kind}, bench.get("scores", {}))
    return [{"name": name, "results": results}] if results else []


def intervals(stage: StageRecord | None) -> list[str]:
    """Each benchmark's figures with their 95 % intervals and n, and the protocol they were made under."""
    benches = (stage.eval.benchmarks if stage and stage.eval else None) or {}
    lines = []
    settings: set[str] = set()
    for bench_name, bench in benches.items():
        found = scorecard.read(bench.get("statistics"))
        if found is None:
            continue
        settings.add(f"{found.methods.get('resamples')} resamples, seed {found.methods.get('seed')}")
        figures = "; ".join(f"{m.label} {m.text()} (n {m.n})" for m in found.metrics)
        protocol = (
            f" Evaluation protocol `{str(bench['protocol_sha256'])[:12]}`." if bench.get("protocol_sha256") else ""
        )
        lines.append(f"- {bench_name}, with 95 % confidence intervals: {figures}.{protocol}")
    if lines:
        lines += [
            "",
            "Intervals: Wilson for single accuracies, a percentile bootstrap over items resampled within each part "
            f"({'; '.join(sorted(settings))}) for averages and composite scores. Differences of a few points on a few "
            "hundred items are often within them.",
        ]
    return lines


def _lineage_table(stages: list[StageRecord]) -> str:
    rows = [
        "| # | stage | starts from | data (input sha256) | lr | max length | DeepSpeed | steps | final loss | "
        "weights sha256 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in stages:
        data = s.data or {}
        # The input files' hashes, not the prepared file's: that one holds this machine's absolute image paths.
        sources = ", ".join(f"{i['source']} `{i['sha256'][:12]}`" for i in data.get("inputs", [])) or "?"
        zero = f"ZeRO-{s.zero_stage}" if s.zero_stage is not None else "DDP"
        loss = f"{s.final_loss:.4f}" if isinstance(s.final_loss, float) else "?"
        rows.append(
            f"| {s.index + 1} | {s.name} | {s.starts_from} | {sources} "
            f"({data.get('rows', '?')} rows) | {s.config.get('learning_rate')} | "
            f"{s.config.get('max_length')} | {zero} | {s.global_step if s.global_step is not None else '?'} | {loss} | "
            f"`{str(s.weights_sha256 or '?')[:12]}` |"
        )
    return "\n".join(rows)


def render(src: Source, *, name: str, license: str = "other", datasets: Sequence[str] = ()) -> str:
    stages = _stages(src)
    exported = stages[-1] if stages else None
    metadata: dict[str, Any] = {
        "license": license,
        "language": ["en", "zh"],
        "library_name": "transformers",
        "pipeline_tag": "image-text-to-text",
        "tags": ["medical", "spine", "orthopedics", "spine-surgery", "qwen2.5-vl", "spinegpt"],
    }
    if base := _base_model(src):
        metadata["base_model"] = base
    if datasets:
        metadata["datasets"] = list(datasets)
    index = model_index(name, exported)
    if index:
        metadata["model-index"] = index
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    curriculum = src.run.curriculum if src.run else {}
    git = (src.run.attempts[-1].git if src.run and src.run.attempts else None) or {}
    lines = [
        f"---\n{front}---",
        f"# {name}",
        "",
        "SpineGPT-style spine-surgery assistant: Qwen2.5-VL fine-tuned with a staged curriculum "
        "(general medical → orthopedic → spine → reports and dialogue), trained with the SpineGPT training repository.",
        "",
        "## How it was made",
        "",
    ]
    if stages:
        lines += [
            f"Curriculum `{curriculum.get('name', '?')}` from base model `{curriculum.get('model', '?')}`, "
            f"{src.run.world_size if src.run else '?'} process(es), code commit `{git.get('commit', 'unknown')}`"
            f"{' (with uncommitted changes)' if git.get('dirty') else ''}. Each stage started from the previous "
            "stage's final weights.",
            "",
            _lineage_table(stages),
            "",
            f"Exported from `{src.path.name}` ({src.kind}"
            + (f", LoRA adapters merged into `{src.base_model}`" if src.kind == "lora" else "")
            + (", consolidated from DeepSpeed ZeRO shards" if src.kind == "zero" else "")
            + ").",
        ]
    else:
        lines.append(
            f"Exported from checkpoint `{src.path.name}` ({src.kind}); it lies outside a spinegpt run "
            "folder, so no training lineage is recorded."
        )
    lines += ["", "## Evaluation", ""]
    if index:
        for result in index[0]["results"]:
            metrics = ", ".join(f"{m['name']}: {m['value']}" for m in result["metrics"])
            lines.append(f"- {result['dataset']['name']} — {result['task']['name']}: {metrics}")
        lines += intervals(exported)
    else:
        lines.append("No SpineBench evaluation was recorded for this stage (see `eval:` in the curriculum).")
    lines += [
        "",
        "## Intended use",
        "",
        "Research on medical vision-language models for spine surgery: benchmarking, ablations, and as a starting "
        "point for further fine-tuning on institutional data under appropriate governance.",
        "",
        "## Medical disclaimer",
        "",
        DISCLAIMER,
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        f'model = AutoModelForImageTextToText.from_pretrained("{name}")',
        f'processor = AutoProcessor.from_pretrained("{name}")',
        "```",
        "",
    ]
    return "\n".join(lines)
