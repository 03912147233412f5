"""The paper's stages on one real GPU, measured against the memory planner.

    python bench/gpu_check.py [--wheels .whl] [--layers 2] [--steps 3]      # on an H100 / H200, <= 25 minutes
    python bench/gpu_check.py --dry-run --workdir /tmp/gc                   # anywhere: build inputs, print the plan

Run it where spinegpt imports (the project's venv, or ``pip install --no-deps -e .`` beside the wheels of what the
GPU machine lacks: ``--wheels`` installs every wheel of that folder into the work folder first).

A randomly initialised Qwen2.5-VL with the 7B's full width, vocabulary and vision tower but ``--layers`` decoder
layers is trained through ``spinegpt run`` on synthetic rows written in the engine's format -- a long-answer text
row, a short row and a row with a large image, their lengths counted exactly -- by a curriculum that extends
``curricula/spinegpt.yaml``: stage 1 at 16,384 tokens (ZeRO-2, bf16) without the fused loss, stage 2 the same with it
(starting from stage 1's saved final weights), stage 3 at 49,152 tokens under ZeRO-3 with CPU offload. Each stage's
peak allocated and reserved memory (a probe in every rank, ``bench/gpu_probe``) is put beside the planner's
prediction for the same shape, with tokens/s, MFU and the checkpoint's size, into
``bench/results/gpu-<device>.txt``. Nothing is downloaded: the tokenizer is the offline tiny model's (the real Qwen
one); ms-swift, DeepSpeed and liger may come as wheel files (``--wheels``), installed into the work folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40": 181.0}
"""Dense bf16 peak of each card, for MFU."""
STAGES = {"foundation": 16384, "specialise": 16384, "reports": 49152}
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
        if item.name not in (
            "config.json",
            "model.safetensors.index.json",
            "spinegpt_recipe.json",
        ) and not item.name.endswith(".safetensors"):
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
    """Three rows at this max_length: a long answer that nearly fills it, a short one, and one with a large image
    (counted exactly by the audit's own counter)."""
    from PIL import Image

    from spinegpt.data_mixes.audit import TokenCounter

    counter = TokenCounter(tokenizer, 56 * 56, 28 * 28 * 16384)
    image = folder / "large.png"
    if not image.exists():
        Image.new("RGB", (2016, 2016), (90, 90, 90)).save(image)  # (2016/28)^2 = 5,184 visual tokens
    sentence = "The sagittal T2 image shows degeneration at L4/L5 with a broad-based protrusion. "

    def row(question: str, answer: str, images: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        }
        if images:
            out["images"] = images
        return out

    unit = counter.count(row("Describe.", sentence * 10)) - counter.count(row("Describe.", ""))
    long = row("Describe the findings in detail.", sentence * int((max_length - 200) * 10 / unit))
    while counter.count(long) > max_length - 64:  # trim to just under max_length
        long["messages"][1]["content"] = long["messages"][1]["content"][: -len(sentence) * 5]
    rows = [long, row("Which level?", "L4/L5."), row("<image>Which level is abnormal?", "L4/L5.", [str(image)])]
    path = folder / f"rows-{max_length}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, [counter.count(r) for r in rows]


def write_curriculum(work: Path, model: Path, rows: dict[int, Path], steps: int) -> Path:
    def stage(name: str, liger: bool) -> str:
        return (
            f"  - name: {name}\n    data: [{{jsonl: '{rows[STAGES[name]]}'}}]\n    max_steps: {steps}\n"
            f"    save_steps: {steps}\n    logging_steps: 1\n    use_liger_kernel: {str(liger).lower()}\n"
            "    gradient_accumulation_steps: 1\n"
        )

    path = work / "gpu-check.yaml"
    path.write_text(
        f"extends: '{REPO / 'curricula' / 'spinegpt.yaml'}'\nname: gpu-check\nmodel: '{model}'\n"
        "report_to: [none]\nstages:\n" + stage("foundation", False) + stage("specialise", True) + stage("reports", True)
    )
    return path


def install_wheels(wheels: Path, site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    found = sorted(str(p) for p in wheels.glob("*.whl"))
    if found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--upgrade",
                "--target",
                str(site),
                *found,
            ],
            check=True,
        )


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def stage_measurements(stage_dir: Path) -> dict[str, Any]:
    """Peak memory (largest rank), run time and checkpoint size of one finished stage folder."""
    probes = [json.loads(p.read_text()) for p in stage_dir.glob("memory-probe-*.json")]
    logs = [json.loads(line) for line in (stage_dir / "engine" / "logging.jsonl").read_text().splitlines() if line]
    runtime = next((r["train_runtime"] for r in reversed(logs) if "train_runtime" in r), None)
    final = (stage_dir / "final").resolve()
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    return {
        "allocated_gib": max((p["allocated"] for p in probes), default=0) / 2**30,
        "reserved_gib": max((p["reserved"] for p in probes), default=0) / 2**30,
        "runtime_s": runtime,
        "checkpoint_gb": size / 1e9,
    }


def report(
    plan: dict[str, Any],
    measured: dict[str, Any],
    tokens: dict[str, int],
    device: str,
    params: float,
    speed: dict[str, Any] | None = None,
) -> str:
    """The results table; with ``speed`` (:func:`cost_model_speed` per stage), measured tokens/s beside the cost
    model's prediction (``spinegpt plan --cost``) and a ``measured:`` line per stage, which ``plan --cost`` reads
    back as the MFU measured on this GPU."""
    peak = peak_tflops(device)
    lines = [
        f"# python bench/gpu_check.py   ({time.strftime('%Y-%m-%d')}, {device})",
        "",
        "| stage | tokens | planner GiB | allocated GiB | reserved GiB | planner / reserved | tokens/s | "
        "predicted tokens/s | measured / predicted | MFU | checkpoint GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    found = []
    for name, predicted in plan.items():
        m = measured[name]
        rate = tokens[name] / m["runtime_s"] if m.get("runtime_s") else float("nan")
        mfu = 6 * params * rate / (peak * 1e12) if peak and rate == rate else float("nan")
        ratio = predicted / m["reserved_gib"] if m["reserved_gib"] else float("nan")
        within = "ok" if abs(ratio - 1) <= 0.15 else "OFF by more than 15%"
        guess, versus = float("nan"), "n/a"
        if speed and name in speed and m.get("runtime_s"):
            s = speed[name]
            guess = s["tokens_per_s"]
            versus = f"{rate / guess:.2f} " + ("(ok)" if abs(rate / guess - 1) <= 0.15 else "(OFF by more than 15%)")
            # The compute's own MFU: the model FLOPs over the time left when the modelled overheads are taken out.
            compute_s = m["runtime_s"] - s["overhead_s"]
            mfu = s["flops"] / (compute_s * s["peak_flops"]) if compute_s > 0 else float("nan")
            if 0 < mfu <= 1:
                found.append({**{k: s[k] for k in ("gpu", "zero_stage", "offload")}, "stage": name, "mfu": mfu})
                found[-1].update(tokens_per_s=rate, predicted_tokens_per_s=guess, date=time.strftime("%Y-%m-%d"))
        lines.append(
            f"| {name} | {STAGES[name]:,} | {predicted:.1f} | {m['allocated_gib']:.1f} | {m['reserved_gib']:.1f} "
            f"| {ratio:.2f} ({within}) | {rate:,.0f} | {guess:,.0f} | {versus} | {mfu:.1%} | {m['checkpoint_gb']:.1f} |"
        )
    if found:
        lines += ["", "MFU: model FLOPs (the cost model's) over the run time less its modelled overheads."]
        lines += [f"measured: {json.dumps(f)}" for f in found]
    return "\n".join(lines) + "\n"


def cost_model_speed(
    stage: Any, curriculum: Any, base_dir: Path, rows: Path, tokenizer: Any, steps: int
) -> dict[str, Any]:
    """What ``spinegpt plan --cost`` predicts for one gpu_check stage on this machine's GPU (A100 80 GB where it is
    none it knows): tokens/s at the assumed MFU, the rows' model FLOPs and the modelled overheads (kernel launches,
    the optimizer step; one GPU has no collectives) of ``steps`` steps of one row each, the rows taken in turn."""
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
    taken = [k % len(per_row) for k in range(steps)]
    flops = sum(per_row[k] for k in taken)
    overhead = steps * (costs.micro_batch_fixed_s + costs.step_s)
    compute = flops / (gpu.default_mfu * gpu.peak_bf16)
    return {
        "gpu": gpu.name,
        "zero_stage": setting.zero_stage,
        "offload": setting.offload_optimizer or setting.offload_params,
        "tokens_per_s": sum(tokens.lengths[k] for k in taken) / (compute + overhead),
        "flops": flops,
        "overhead_s": overhead,
        "peak_flops": gpu.peak_bf16,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the 7B-width model")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per stage")
    parser.add_argument("--wheels", type=Path, help="folder of wheels to install first (ms-swift, deepspeed, liger)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/spinegpt-gpu-check"))
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--dry-run", action="store_true", help="build the inputs and print the plan; train nothing")
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.wheels:
        install_wheels(args.wheels, work / "site")
        env["PYTHONPATH"] = os.pathsep.join([str(work / "site"), env.get("PYTHONPATH", "")])
        sys.path.insert(0, str(work / "site"))
    from transformers import AutoTokenizer

    from spinegpt.train import memory, plan, topology

    model = build_model(work / "model", args.layers, weights=not args.dry_run)
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows, counts = {}, {}
    for length in sorted(set(STAGES.values())):
        rows[length], counts[length] = write_rows(work, tokenizer, length)
        print(f"rows at {length:,} tokens: {counts[length]}", flush=True)
    yaml_path = write_curriculum(work, model, rows, args.steps)
    loaded = plan.load(yaml_path)
    built = plan.build(loaded, work / "run", topology.Launch())
    gpu_gb = 80.0
    if not args.dry_run:
        import torch

        gpu_gb = torch.cuda.get_device_properties(0).total_memory / 2**30 / memory.USABLE
    predicted = {}
    for stage in built.stages:
        r = memory.stage_report(loaded.curriculum, stage.stage, loaded.base_dir, 1, 1, gpu_gb)
        predicted[stage.stage.name] = r["total_gib"]
        print(f"{stage.stage.name}: planner {r['total_gib']:.1f} GiB ({r['verdict']}); {' '.join(stage.command)}")
    speed = {}
    for stage in built.stages:
        rows_file = rows[STAGES[stage.stage.name]]
        speed[stage.stage.name] = cost_model_speed(
            stage.stage, loaded.curriculum, loaded.base_dir, rows_file, tokenizer, args.steps
        )
        s = speed[stage.stage.name]
        print(f"{stage.stage.name}: cost model {s['tokens_per_s']:,.0f} tokens/s on {s['gpu']} at its assumed MFU")
    if args.dry_run:
        return 0
    env.update(
        SPINEGPT_MEMORY_PROBE="1", PYTHONPATH=os.pathsep.join([str(HERE / "gpu_probe"), env.get("PYTHONPATH", "")])
    )
    shutil.rmtree(work / "run", ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "spinegpt.cli",
            "run",
            str(yaml_path),
            "--nproc",
            "1",
            "--output-dir",
            str(work / "run"),
        ],
        env=env,
        check=True,
    )
    measured = {s.stage.name: stage_measurements(s.dir) for s in built.stages}
    shape = memory.model_shape(str(model))
    params = shape.llm_params() + shape.vision_params()
    tokens = {
        name: math.ceil(args.steps * sum(counts[n]) / 3) for name, n in STAGES.items()
    }  # rows cycle: mean x steps
    text = report(predicted, measured, tokens, device_name(), params, speed)
    slug = re.sub(r"[^a-z0-9]+", "-", device_name().lower()).strip("-")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"gpu-{slug}.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
