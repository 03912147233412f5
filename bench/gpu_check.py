"""The paper's stages on the one GPU machine this project can get, measured against the memory planner.

    python bench/gpu_check.py --results $OUT                      # on the GPU machine: one command, <= 8 minutes
    python bench/gpu_check.py --dry-run --workdir /tmp/gc         # anywhere: inputs, plan, disk/time budget, wheels
    python bench/gpu_check.py --download-wheels bench/wheels [--present freeze.txt]   # where a registry is reachable

The machine (device tool README): one H200 (~139 GiB), 16 cores, 128 GiB RAM, 64 GiB of disk, Python 3.12 with its
own torch, transformers, accelerate, peft, mpi4py, ninja and nvcc; no registry, so what it lacks comes as wheel files
(at most 64 MiB with the repository); 15 minutes of GPU time in all, at most 10 minutes a command.

What runs: a randomly initialised Qwen2.5-VL with the 7B's full width, vocabulary and vision tower but ``--layers``
decoder layers, trained through ``spinegpt run --nproc 1`` (the one-GPU path users take) by a curriculum that extends
``curricula/spinegpt.yaml``, one stage at a time:

* ``foundation``: stage 1's command at 16,384 tokens, ZeRO-2, without the fused loss;
* ``specialise``: the same with Liger's fused loss (``use_liger_kernel``), from the previous stage's saved weights;
* ``reports``: stage 3's command at 49,152 tokens, ZeRO-3 with CPU offload and the fused loss -- the stage whose
  DeepSpeed config spinegpt changes to keep every parameter gathered (``configs/deepspeed/README.md``), exactly the
  path the paper curriculum's stage 3 takes.

Each stage's rows nearly fill its ``max_length`` (a long answer; a large image with a long answer), counted exactly
by the audit's counter. Per stage: peak allocated and reserved memory (a probe in the rank, ``bench/gpu_probe``)
beside the planner's prediction for the same shape; tokens/s and MFU over the steps after the first (warm-up
excluded); the checkpoint's size. Disk stays in budget: one checkpoint per stage, and the DeepSpeed states of each
stage's checkpoint are removed once it is measured (its weights stay: the next stage starts from them). A time
budget (``--budget-s``, default 8 minutes) is checked before each stage: a stage that would not finish in it is not
started, and the results so far are written after every stage (``--results``), so they come back whatever happens.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DISK_GIB = 64.0
TIME_BUDGET_S = 480.0
WHEELS_MIB = 60.0
"""What the wheel files may take: the carry limit is 64 MiB with the repository."""
RUNTIME_DISTS = HERE / "gpu_runtime_dists.txt"
DEVICE_HAS = ("torch", "transformers", "accelerate", "peft", "mpi4py", "ninja")
"""What the device machine's README says it has (with what they need)."""
DEVICE_TORCH = "2.11"
VISION_7B = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}


@dataclass(frozen=True)
class StageSpec:
    name: str
    max_length: int
    deepspeed: str
    fused_loss: bool


STAGES = (
    StageSpec("foundation", 16384, "zero2", False),
    StageSpec("specialise", 16384, "zero2", True),
    StageSpec("reports", 49152, "zero3_offload", True),
)

# Seconds each phase is expected to take on the H200 machine, for the budget the dry run prints and the run
# enforces (estimates: nothing has been measured on it yet; the run prints what it measures beside them).
EXPECTED_S = {"model": 60.0, "engine start": 60.0, "cpu adam build": 90.0, "save per GB": 0.7, "steps": 20.0}


# -- inputs --------------------------------------------------------------------------------------------------------


def text_config(layers: int) -> dict[str, Any]:
    """Qwen2.5-VL-7B-Instruct's language model (config.json), with ``layers`` decoder layers."""
    from spinegpt.train.memory import PUBLISHED

    shape = PUBLISHED["Qwen/Qwen2.5-VL-7B-Instruct"]
    return {
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "vocab_size": shape.vocab,
        "max_position_embeddings": 128000,
        "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
    }


def build_model(folder: Path, layers: int, weights: bool) -> Path:
    """The model folder: the tiny model's tokenizer, processor and chat template (the real Qwen ones), a 7B-width
    config, and (``weights``) random bf16 weights made on the GPU."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from spinegpt.offline import tiny_model

    tiny = tiny_model.ensure()
    folder.mkdir(parents=True, exist_ok=True)
    for item in tiny.iterdir():
        if item.name not in ("config.json", "model.safetensors.index.json", "spinegpt_recipe.json") and not (
            item.name.endswith(".safetensors")
        ):
            shutil.copy2(item, folder / item.name)
    config_file = folder / "processor_config.json"
    processor = json.loads(config_file.read_text())
    for part in ("image_processor", "video_processor"):  # Qwen2.5-VL's own pixel limits, not the tiny model's
        if isinstance(processor.get(part), dict):
            processor[part]["size"] = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}
    config_file.write_text(json.dumps(processor, indent=2))
    tiny_config = json.loads((tiny / "config.json").read_text())
    # The special token ids are the tiny model's: the same Qwen vocabulary.
    ids = {
        k: tiny_config[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config(layers),
        vision_config=dict(VISION_7B),
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        tie_word_embeddings=False,
        **ids,
    )
    if not weights:
        config.save_pretrained(folder)
        return folder
    import torch

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


def write_rows(folder: Path, tokenizer: Any, max_length: int) -> tuple[Path, list[int]]:
    """Two rows that nearly fill ``max_length``: a long answer, and a large image (5,184 visual tokens) with a long
    answer. Every step then trains about ``max_length`` tokens, whichever row it draws (tokens/s needs no guess at
    the data order)."""
    from PIL import Image

    from spinegpt.data_mixes.audit import TokenCounter

    counter = TokenCounter(tokenizer, 56 * 56, 28 * 28 * 16384)
    image = folder / "large.png"
    if not image.exists():
        Image.new("RGB", (2016, 2016), (90, 90, 90)).save(image)  # (2016/28)^2 = 5,184 visual tokens
    sentence = "The sagittal T2 image shows degeneration at L4/L5 with a broad-based protrusion. "

    def row(question: str, repeats: int, images: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": sentence * repeats}]
        }
        if images:
            out["images"] = images
        return out

    def filled(question: str, images: list[str] | None = None) -> dict[str, Any]:
        unit = counter.count(row(question, 11, images)) - counter.count(row(question, 1, images))  # per 10 sentences
        repeats = max(1, int((max_length - counter.count(row(question, 0, images))) * 10 / unit))
        while repeats > 1 and counter.count(row(question, repeats, images)) > max_length - 64:
            repeats -= 1
        return row(question, repeats, images)

    rows = [filled("Describe the findings in detail."), filled("<image>Describe this image.", [str(image)])]
    path = folder / f"rows-{max_length}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, [counter.count(r) for r in rows]


def write_curriculum(work: Path, model: Path, rows: dict[int, Path], steps: int) -> Path:
    def stage(spec: StageSpec) -> str:
        return (
            f"  - name: {spec.name}\n    data: [{{jsonl: '{rows[spec.max_length]}'}}]\n"
            f"    max_length: {spec.max_length}\n    deepspeed: {spec.deepspeed}\n    max_steps: {steps}\n"
            f"    save_steps: {steps}\n    save_total_limit: 1\n    logging_steps: 1\n    warmup_ratio: 0.0\n"
            f"    use_liger_kernel: {str(spec.fused_loss).lower()}\n    gradient_accumulation_steps: 1\n"
        )

    path = work / "gpu-check.yaml"
    path.write_text(
        f"extends: '{REPO / 'curricula' / 'spinegpt.yaml'}'\nname: gpu-check\nmodel: '{model}'\n"
        "report_to: [none]\nstages:\n" + "".join(stage(s) for s in STAGES)
    )
    return path


# -- budgets -------------------------------------------------------------------------------------------------------


def disk_plan(model_gb: float, checkpoint_gb: dict[str, float], weights_gb: float) -> list[tuple[str, float]]:
    """GB on disk after each step of the run: the model; each stage's checkpoint while it is written (weights and
    DeepSpeed states); then only its weights once measured (the next stage starts from them)."""
    kept = model_gb
    plan = [("model", kept)]
    for spec in STAGES:
        plan.append((f"{spec.name} checkpoint written", kept + checkpoint_gb[spec.name]))
        kept += weights_gb
        plan.append((f"{spec.name} measured, DeepSpeed states removed", kept))
    return plan


def time_plan(checkpoint_gb: dict[str, float]) -> list[tuple[str, float]]:
    plan = [("model built on the GPU", EXPECTED_S["model"])]
    for spec in STAGES:
        seconds = (
            EXPECTED_S["engine start"] + EXPECTED_S["steps"] + EXPECTED_S["save per GB"] * checkpoint_gb[spec.name]
        )
        if spec.deepspeed.endswith("offload") and spec is next(s for s in STAGES if s.deepspeed.endswith("offload")):
            seconds += EXPECTED_S["cpu adam build"]
        plan.append((spec.name, seconds))
    return plan


# -- wheels --------------------------------------------------------------------------------------------------------


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names: set[str]) -> set[str]:
    """The installed distributions ``names`` need, recursively (their requirements as installed here)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [_normal(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": "", "python_version": "3.12"}):
                todo.append(_normal(requirement.name))
    return seen


def _pinned(name: str) -> str:
    """A requirement for ``name``: the version installed here, else spinegpt's own range for it (the gpu extra's
    liger-kernel, which a CPU machine does not install)."""
    from packaging.requirements import Requirement

    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        for text in importlib.metadata.requires("spinegpt") or []:
            requirement = Requirement(text)
            if _normal(requirement.name) == name:
                return f"{name}{requirement.specifier}"
        raise


def needed_wheels(present: dict[str, str | None]) -> list[str]:
    """Requirements for what a run imports (measured: ``gpu_runtime_dists.txt``) that the GPU machine lacks, at
    the versions this project pins; torchvision at the release that matches the machine's own torch."""
    imported = {_normal(line.split()[0]) for line in RUNTIME_DISTS.read_text().splitlines() if line and line[0] != "#"}
    missing = sorted(imported - _closure(set(present)) - {"spinegpt", "setuptools"})
    torch = present.get("torch")
    # torchvision 0.N pairs with torch 2.(N - 15): a build for another torch fails to import (torchvision::nms).
    matching = f"torchvision==0.{int(torch.split('.')[1]) + 15}.*" if torch else None
    return [matching if name == "torchvision" and matching else _pinned(name) for name in missing]


def present_on_device(freeze: Path | None) -> dict[str, str | None]:
    """The GPU machine's distributions and versions: its ``pip list --format=freeze`` when given, else what its
    README says (torch 2.11)."""
    if freeze is None:
        return {**dict.fromkeys(DEVICE_HAS), "torch": DEVICE_TORCH}
    pairs = (line.split("==", 1) for line in freeze.read_text().splitlines() if "==" in line)
    return {_normal(name): version for name, version in pairs}


def download_wheels(dest: Path, wanted: list[str]) -> float:
    """Wheels for CPython 3.12 / manylinux x86_64, one version each (sdist-only ones built here); MiB in all."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    platform = [
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "--abi",
        "cp312",
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    platform += ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "any"]
    for spec in wanted:
        got = subprocess.run(
            [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", *platform, "-d", str(dest), spec],
            capture_output=True,
            text=True,
        )
        if got.returncode != 0:  # no wheel published (DeepSpeed ships an sdist): build a pure-Python one here
            env = {**os.environ, "DS_BUILD_OPS": "0"}
            subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(dest), spec], check=True, env=env)
    return sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20


# -- measuring -----------------------------------------------------------------------------------------------------


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def step_seconds(stage_dir: Path) -> float | None:
    """Seconds per optimizer step after the first (its warm-up: allocator, kernels, the first all-gather). ms-swift
    logs ``train_speed(s/it)`` as the mean since the start, so step k ended at k x speed_k."""
    logs = [json.loads(line) for line in (stage_dir / "engine" / "logging.jsonl").read_text().splitlines() if line]
    ends = {}
    for record in logs:
        step, _, _ = str(record.get("global_step/max_steps", "")).partition("/")
        if step.isdigit() and "train_speed(s/it)" in record:
            ends[int(step)] = int(step) * float(record["train_speed(s/it)"])
    if len(ends) < 2:
        return None
    first, last = min(ends), max(ends)
    return (ends[last] - ends[first]) / (last - first)


def measure(stage_dir: Path) -> dict[str, Any]:
    """Peak memory, seconds per step and checkpoint size of one finished stage folder."""
    probes = [json.loads(p.read_text()) for p in stage_dir.glob("memory-probe-*.json")]
    final = (stage_dir / "final").resolve()
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    return {
        "allocated_gib": max((p["allocated"] for p in probes), default=0) / 2**30,
        "reserved_gib": max((p["reserved"] for p in probes), default=0) / 2**30,
        "step_s": step_seconds(stage_dir),
        "checkpoint_gb": size / 1e9,
    }


def prune(stage_dir: Path) -> None:
    """Remove the DeepSpeed states of the stage's checkpoint (tens of GB), keeping its weights: the next stage
    starts from them and the stage stays done."""
    for states in (stage_dir / "final").resolve().glob("global_step*"):
        shutil.rmtree(states)


def cost_model_speed(stage: Any, curriculum: Any, base_dir: Path, rows: Path, tokenizer: Any) -> dict[str, Any]:
    """What ``spinegpt plan --cost`` predicts for one step of this stage on this machine's GPU (A100 80 GB where it
    knows none): the rows' mean model FLOPs (attention and recompute counted), the modelled overheads of a step
    (kernel launches, the optimizer step; one GPU has no collectives) and the tokens/s at the assumed MFU."""
    from spinegpt.data_mixes.audit import TokenCounter, row_counts
    from spinegpt.train import cost, cost_plan, memory

    gpu = cost_plan.local_gpu() or cost.GPUS[cost.DEFAULT_GPU]
    shape = memory.model_shape(str(curriculum.model))
    setting = memory.setting_for(stage, curriculum, base_dir)
    counted = row_counts(rows, TokenCounter(tokenizer, 56 * 56, 28 * 28 * 16384))
    tokens = cost.StageTokens(counted.lengths, counted.image_tokens, counted.trained, counted.images)
    per_row = cost.row_model_flops(shape, tokens)
    costs = cost.step_costs(
        cost.Parallelism(
            world=1,
            zero_stage=setting.zero_stage,
            offload_optimizer=setting.offload_optimizer,
            offload_params=setting.offload_params,
        ),
        gpu,
        trainable_params=memory.trainable_params(shape, setting),
        params=shape.llm_params() + shape.vision_params(),
        backward_params=shape.llm_params(),
        gradient_checkpointing=stage.gradient_checkpointing,
    )
    flops = sum(per_row) / len(per_row)  # every step draws one of the rows, all about max_length long
    overhead = costs.micro_batch_fixed_s + costs.step_s
    step_s = flops / (gpu.default_mfu * gpu.peak_bf16) + overhead
    return {
        "gpu": gpu.name,
        "zero_stage": setting.zero_stage,
        "offload": setting.offload_optimizer or setting.offload_params,
        "tokens_per_s": sum(tokens.lengths) / len(tokens.lengths) / step_s,
        "flops_per_step": flops,
        "overhead_s": overhead,
        "peak_flops": gpu.peak_bf16,
    }


def speed_figures(model: dict[str, Any], step_s: float | None, tokens_per_step: float) -> dict[str, Any]:
    """A stage's measured speed beside the cost model's (:func:`cost_model_speed`): tokens/s, and the MFU of the
    compute alone -- the model's FLOPs per step over the step time less the overheads the model puts in it."""
    seconds = step_s or float("nan")
    compute_s = seconds - model["overhead_s"]
    return {
        **{k: model[k] for k in ("gpu", "zero_stage", "offload")},
        "tokens_per_s": tokens_per_step / seconds,
        "predicted_tokens_per_s": model["tokens_per_s"],
        "mfu": model["flops_per_step"] / (compute_s * model["peak_flops"]) if compute_s > 0 else float("nan"),
    }


def report(rows: list[dict[str, Any]], device: str, budget: list[str]) -> str:
    lines = [
        f"# python bench/gpu_check.py   ({time.strftime('%Y-%m-%d')}, {device})",
        "",
        "| stage | tokens | planner GiB | allocated GiB | reserved GiB | planner / reserved | tokens/s | "
        "predicted tokens/s | measured / predicted | MFU | checkpoint GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    measured = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['stage']} | {r['tokens']:,} | {r['planner_gib']:.1f} | {r['error']} |||||||| ")
            continue
        ratio = r["planner_gib"] / r["reserved_gib"] if r["reserved_gib"] else float("nan")
        within = "ok" if abs(ratio - 1) <= 0.15 else "OFF by more than 15%"
        versus = r["tokens_per_s"] / r["predicted_tokens_per_s"]
        close = "ok" if abs(versus - 1) <= 0.15 else "OFF by more than 15%"
        if 0 < r["mfu"] <= 1:  # what `spinegpt plan --cost` reads back as the MFU measured on this GPU
            keys = ("gpu", "zero_stage", "offload", "stage", "mfu", "tokens_per_s", "predicted_tokens_per_s")
            measured.append({k: r[k] for k in keys} | {"date": time.strftime("%Y-%m-%d")})
        lines.append(
            f"| {r['stage']} | {r['tokens']:,} | {r['planner_gib']:.1f} | {r['allocated_gib']:.1f} | "
            f"{r['reserved_gib']:.1f} | {ratio:.2f} ({within}) | {r['tokens_per_s']:,.0f} | "
            f"{r['predicted_tokens_per_s']:,.0f} | {versus:.2f} ({close}) | {r['mfu']:.1%} | {r['checkpoint_gb']:.1f} |"
        )
    if measured:
        lines += ["", "MFU: the cost model's FLOPs per step (attention and recompute counted) over the step time"]
        lines += ["less its modelled overheads, steps after the first."]
        lines += [f"measured: {json.dumps(m)}" for m in measured]
    return "\n".join([*lines, "", *budget]) + "\n"


# -- main ----------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the 7B-width model")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per stage (the first is warm-up)")
    parser.add_argument("--wheels", type=Path, help="folder of wheels to install first (what the machine lacks)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "spinegpt-gpu-check")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where gpu-<device>.txt is written")
    parser.add_argument("--budget-s", type=float, default=TIME_BUDGET_S, help="wall-clock budget of the run")
    parser.add_argument("--dry-run", action="store_true", help="build the inputs and print the plan; train nothing")
    parser.add_argument("--download-wheels", type=Path, metavar="DIR", help="download the wheels the machine lacks")
    parser.add_argument("--present", type=Path, help="the GPU machine's `pip list --format=freeze`, for the wheels")
    args = parser.parse_args()
    started = time.monotonic()
    wanted = needed_wheels(present_on_device(args.present))
    if args.download_wheels:
        mib = download_wheels(args.download_wheels, wanted)
        print(f"{len(wanted)} wheel(s), {mib:.1f} MiB in {args.download_wheels} (limit {WHEELS_MIB:g} MiB)")
        return 0 if mib <= WHEELS_MIB else 1
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.wheels:
        site = work / "site"
        found = sorted(str(p) for p in args.wheels.glob("*.whl"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), *found],
            check=True,
        )
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
        sys.path.insert(0, str(site))
    from transformers import AutoTokenizer

    from spinegpt.train import memory, plan, topology

    model = build_model(work / "model", args.layers, weights=not args.dry_run)
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows, counts = {}, {}
    for length in sorted({s.max_length for s in STAGES}):
        rows[length], counts[length] = write_rows(work, tokenizer, length)
        print(f"rows at {length:,} tokens: {counts[length]}", flush=True)
    yaml_path = write_curriculum(work, model, rows, args.steps)
    loaded = plan.load(yaml_path)
    built = plan.build(loaded, work / "run", topology.Launch())
    gpu_gb = 80.0
    if not args.dry_run:
        import torch

        gpu_gb = torch.cuda.get_device_properties(0).total_memory / 2**30 / memory.USABLE
    shape = memory.model_shape(str(model))
    predicted, checkpoint_gb = {}, {}
    for stage in built.stages:
        r = memory.stage_report(loaded.curriculum, stage.stage, loaded.base_dir, 1, 1, gpu_gb)
        predicted[stage.stage.name] = r["total_gib"]
        checkpoint_gb[stage.stage.name] = r["checkpoint_gb"]
        print(f"{stage.stage.name}: planner {r['total_gib']:.1f} GiB ({r['verdict']}); {' '.join(stage.command)}")
    speed = {}
    for stage in built.stages:
        speed[stage.stage.name] = cost_model_speed(
            stage.stage, loaded.curriculum, loaded.base_dir, rows[stage.stage.max_length], tokenizer
        )
        s = speed[stage.stage.name]
        print(f"{stage.stage.name}: cost model {s['tokens_per_s']:,.0f} tokens/s on {s['gpu']} at its assumed MFU")
    weights_gb = (shape.llm_params() + shape.vision_params()) * 2 / 1e9
    disk = disk_plan(weights_gb, checkpoint_gb, weights_gb)
    peak_disk = max(gb for _, gb in disk)
    expected = time_plan(checkpoint_gb)
    budget = [
        f"disk budget: peak {peak_disk:.1f} GB of {DISK_GIB * 2**30 / 1e9:.0f} GB ({DISK_GIB:g} GiB): "
        + "; ".join(f"{what} {gb:.1f}" for what, gb in disk),
        f"time budget: {sum(s for _, s in expected):.0f} s expected of {args.budget_s:.0f} s (estimates: "
        + "; ".join(f"{what} {s:.0f} s" for what, s in expected)
        + ")",
        f"wheels the machine lacks ({len(wanted)}; they must fit {WHEELS_MIB:g} MiB): " + ", ".join(wanted),
    ]
    print("\n".join(budget), flush=True)
    if peak_disk > DISK_GIB * 2**30 / 1e9:
        print("the disk budget does not hold: fewer --layers", file=sys.stderr)
        return 1
    if args.dry_run:
        return 0
    env.update(
        SPINEGPT_MEMORY_PROBE="1", PYTHONPATH=os.pathsep.join([str(HERE / "gpu_probe"), env.get("PYTHONPATH", "")])
    )
    shutil.rmtree(work / "run", ignore_errors=True)
    slug = re.sub(r"[^a-z0-9]+", "-", device_name().lower()).strip("-")
    args.results.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for stage, (_, seconds) in zip(built.stages, expected[1:], strict=True):
        name, length = stage.stage.name, stage.stage.max_length
        row: dict[str, Any] = {"stage": name, "tokens": length, "planner_gib": predicted[name]}
        results.append(row)
        if time.monotonic() - started + seconds > args.budget_s:
            row["error"] = f"not started: {seconds:.0f} s expected, {args.budget_s:.0f} s budget spent"
            break
        command = [sys.executable, "-m", "spinegpt.cli", "run", str(yaml_path), "--nproc", "1"]
        command += ["--output-dir", str(work / "run"), "--until", name, "--skip-preflight"]
        command += ["--resume"] if stage.index else []
        if subprocess.run(command, env=env).returncode != 0:
            row["error"] = f"failed: see {stage.dir / 'engine.log'}"
            break
        row.update(measure(stage.dir))
        row.update(speed_figures(speed[name], row["step_s"], sum(counts[length]) / len(counts[length])))
        prune(stage.dir)
        (args.results / f"gpu-{slug}.txt").write_text(report(results, device_name(), budget))
    text = report(results, device_name(), budget)
    (args.results / f"gpu-{slug}.txt").write_text(text)
    print(text)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
