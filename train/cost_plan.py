"""What a curriculum will cost before it starts (``spinegpt plan --cost``, and the run manifest's ``cost``): each
stage's FLOPs, optimizer steps, packed sequences, GPU-hours and wall time, from the data audit's exact per-row
counts, the model's shape and the launch.

Time is the compute at an MFU -- given (``--mfu``), measured on the same GPU by ``bench/gpu_check.py`` (a
``measured:`` line of ``bench/results/gpu-*.txt``), or assumed (:data:`cost.ASSUMED_MFU_WHY`) -- on the slowest rank
of each micro-step, plus what does not shrink with tokens: ZeRO's collectives, kernel launches, the optimizer step
(:mod:`cost`). That second part is why packing short rows pays: the FLOPs do not change, the micro-steps do.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from spinegpt.data_mixes.audit import RowCounts, StageAudit
from spinegpt.train import cost, deepspeed_configs, memory
from spinegpt.train.cost_report import CostAssumptions, CurriculumCost, MfuSource, StageCost, TimeSplit
from spinegpt.train.plan import Plan, StagePlan

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
"""Where ``bench/gpu_check.py`` writes its measurements, in a checkout of this repository."""
MEASURED_PREFIX = "measured: "
"""A line of ``bench/results/gpu-*.txt`` that starts with this holds one stage's measurement as JSON:
``{"gpu": <a cost.GPUS name>, "stage": ..., "zero_stage": ..., "offload": bool, "mfu": ..., ...}``."""


@dataclass(frozen=True)
class Mfu:
    value: float
    source: MfuSource
    detail: str


@dataclass(frozen=True)
class Measurement:
    gpu: str
    stage: str
    zero_stage: int
    offload: bool
    mfu: float
    file: Path


def measurements(folder: Path = RESULTS) -> list[Measurement]:
    """Every ``measured:`` line of ``gpu-*.txt`` in ``folder`` (a malformed one is skipped with a warning)."""
    found = []
    for path in sorted(folder.glob("gpu-*.txt")) if folder.is_dir() else []:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.startswith(MEASURED_PREFIX):
                continue
            try:
                data = json.loads(line[len(MEASURED_PREFIX) :])
                mfu = float(data["mfu"])
                if not 0 < mfu <= 1:
                    raise ValueError(f"mfu {mfu} not in (0, 1]")
                found.append(
                    Measurement(
                        cost.gpu_named(str(data["gpu"])).name,
                        str(data["stage"]),
                        int(data["zero_stage"]),
                        bool(data["offload"]),
                        mfu,
                        path,
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning(f"{path}:{number}: not a measurement ({exc}); ignored")
    return found


def choose_mfu(
    gpu: cost.Gpu, given: float | None, stage: str, zero_stage: int, offload: bool, found: Sequence[Measurement]
) -> Mfu:
    """The MFU a stage's time is computed at: ``given``; else a measurement on this GPU, of the same stage name,
    else of the same ZeRO setting, else any; else the assumed default."""
    if given is not None:
        return Mfu(given, "given", "--mfu")
    mine = [m for m in found if m.gpu == gpu.name]
    for match in (
        [m for m in mine if m.stage == stage],
        [m for m in mine if (m.zero_stage, m.offload) == (zero_stage, offload)],
        mine,
    ):
        if match:
            m = match[-1]
            return Mfu(m.mfu, "measured", f"{m.file.name}, stage {m.stage} (ZeRO-{m.zero_stage})")
    return Mfu(gpu.default_mfu, "assumed", cost.ASSUMED_MFU_WHY)


@dataclass(frozen=True)
class _Rows:
    """A stage's rows as training sees them: the over-length policy applied."""

    tokens: cost.StageTokens
    dropped: int
    truncated: int
    refused: int


def _apply_policy(rows: RowCounts, max_length: int, policy: str) -> _Rows:
    """``drop``: over-length rows cost nothing; ``truncate``: kept at ``max_length`` tokens, their visual tokens
    kept (the engine's truncation protects them) and the cut taken from the end, where the answers are; ``error``:
    the stage stops at them, so they are left out (and counted)."""
    lengths, images, trained_in = rows.lengths, rows.images, rows.trained
    keep_l: list[int] = []
    keep_i: list[list[int]] = []
    keep_t: list[int] = []
    dropped = truncated = 0
    for k, s in enumerate(lengths):
        t = trained_in[k] if trained_in is not None else 0
        if s > max_length:
            if policy != "truncate":
                dropped += 1
                continue
            truncated += 1
            visual = min(sum(images[k]), max_length)
            t = max(0, t - (s - max_length))
            s = max_length
            picked = _cap(images[k], visual)
        else:
            picked = images[k]
        keep_l.append(s)
        keep_i.append(picked)
        keep_t.append(min(t, s))
    tokens = cost.StageTokens(
        lengths=keep_l,
        image_tokens=[sum(i) for i in keep_i],
        trained_tokens=keep_t if trained_in is not None else None,
        images=keep_i,
    )
    return _Rows(tokens, dropped if policy == "drop" else 0, truncated, dropped if policy == "error" else 0)


def _cap(images: list[int], total: int) -> list[int]:
    out, left = [], total
    for n in images:
        if left <= 0:
            break
        out.append(min(n, left))
        left -= out[-1]
    return out


def pack_rows(lengths: list[int], capacity: int, seed: int, num_proc: int) -> tuple[list[list[int]], int]:
    """ms-swift's packed sequences (row indices) of rows in a seeded shuffled order (ms-swift shuffles the dataset
    before packing), and the first-fit-decreasing count. Rows over ``capacity`` (a ``packing_length`` below
    ``max_length``) get a sequence each, as binpacking gives an item larger than the bin."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    fitting = [i for i in order if lengths[i] <= capacity]
    alone = [[i] for i in order if lengths[i] > capacity]
    shuffled = [lengths[i] for i in fitting]
    bins = [[fitting[j] for j in b] for b in cost.pack_like_swift_bins(shuffled, capacity, num_proc=num_proc)]
    return bins + alone, len(cost.pack_first_fit_decreasing(shuffled, capacity)) + len(alone)


def stage_cost(
    built: Plan,
    stage_plan: StagePlan,
    audit: StageAudit,
    shape: memory.ModelShape,
    gpu: cost.Gpu,
    mfu: float | None = None,
    found: Sequence[Measurement] = (),
    overheads: cost.Overheads | None = None,
) -> StageCost:
    stage, curriculum = stage_plan.stage, built.curriculum
    overheads = overheads or cost.Overheads()
    if audit.rows is None:
        raise ValueError(f"stage {stage.name}: the audit kept no per-row counts")
    rows = _apply_policy(audit.rows, stage.max_length, stage.over_length)
    tokens = rows.tokens
    setting = memory.setting_for(stage, curriculum, built.loaded.base_dir)
    zero: dict[str, Any] = {}
    if stage.deepspeed:
        config = deepspeed_configs.load(deepspeed_configs.resolve(stage.deepspeed, built.loaded.base_dir))
        zero = config.get("zero_optimization") or {}
    par = cost.Parallelism(
        world=built.launch.world_size,
        nodes=built.launch.nnodes,
        zero_stage=setting.zero_stage,
        offload_optimizer=setting.offload_optimizer,
        offload_params=setting.offload_params,
        # DeepSpeed's default: on for ZeRO-3, off below.
        overlap_comm=bool(zero.get("overlap_comm", setting.zero_stage >= 3)),
        sequence_parallel=stage.sequence_parallel_size,
    )
    lora = setting.lora_rank is not None
    trains = cost.Trains(llm=setting.train_llm and not lora, vision=setting.train_vit, aligner=setting.train_aligner)
    # ms-swift computes the lm_head on trained positions only (use_logits_to_keep), except under sequence
    # parallelism or when switched off.
    logits_to_keep = stage.sequence_parallel_size == 1 and stage.engine_args.get("use_logits_to_keep") is not False
    per_row = cost.row_model_flops(shape, tokens, trains=trains, logits_to_keep=logits_to_keep)
    seed = curriculum.seed
    capacity = int(stage.engine_args.get("packing_length") or stage.max_length)
    bins, ffd = pack_rows(tokens.lengths, capacity, seed, int(stage.engine_args.get("packing_num_proc") or 1))
    micro, accum = stage.per_device_train_batch_size, stage.gradient_accumulation_steps
    costs = cost.step_costs(
        par,
        gpu,
        trainable_params=memory.trainable_params(shape, setting),
        params=shape.llm_params() + shape.vision_params(),
        backward_params=shape.llm_params(),
        gradient_checkpointing=stage.gradient_checkpointing,
        overheads=overheads,
    )
    rate = choose_mfu(
        gpu, mfu, stage.name, setting.zero_stage, setting.offload_optimizer or setting.offload_params, found
    )
    schedule = _Schedule(par, micro, accum, stage.num_train_epochs, stage.max_steps, seed)
    # Padding to the longest row of a micro-batch runs through the linear layers (attention is per row).
    padding_per_token = (6 if trains.llm else 4) * shape.layers * cost.layer_matmul_params(shape)
    padded = micro > 1 and not (stage.padding_free or stage.packing)
    configured = schedule.run(
        bins if stage.packing else [[i] for i in range(len(tokens.lengths))],
        per_row,
        tokens.lengths,
        costs,
        rate.value * gpu.peak_bf16,
        padding_per_token if padded else 0.0,
    )
    packed = schedule.run(bins, per_row, tokens.lengths, costs, rate.value * gpu.peak_bf16, 0.0)
    seen = _subset(tokens, configured.rows)
    flops = cost.flops(
        shape, seen, gradient_checkpointing=stage.gradient_checkpointing, trains=trains, logits_to_keep=logits_to_keep
    )
    epochs = configured.epochs
    model_flops = flops.model * epochs
    wall, hours = configured.timing.wall_s, 1 / 3600
    total_tokens = seen.tokens * epochs
    packed_tokens = _subset(tokens, packed.rows).tokens * packed.epochs
    slots = configured.micro_batches * micro * stage.max_length * par.data_parallel
    return StageCost(
        stage=stage.name,
        rows=len(tokens.lengths),
        dropped_rows=rows.dropped,
        truncated_rows=rows.truncated,
        refused_rows=rows.refused,
        max_length=stage.max_length,
        tokens=round(total_tokens),
        trained_tokens=round(sum(seen.trained_tokens) * epochs) if seen.trained_tokens is not None else None,
        images=round(sum(len(i) for i in seen.images or []) * epochs),
        image_tokens=round(sum(seen.image_tokens) * epochs),
        epochs=epochs,
        flops=model_flops,
        flops_with_recompute=flops.total * epochs,
        flops_terms={
            "llm_params": flops.llm_params * epochs,
            "attention": flops.attention * epochs,
            "recompute": flops.recompute * epochs,
            "vision": flops.vision * epochs,
        },
        micro_batch=micro,
        grad_accum=accum,
        packing=stage.packing,
        padding_free=stage.padding_free or stage.packing,
        steps=configured.steps,
        micro_batches=configured.micro_batches,
        tokens_per_step=total_tokens / configured.steps if configured.steps else 0.0,
        padding_tokens=round(configured.padding * epochs) if padded else 0,
        fill=total_tokens / slots if slots else 0.0,
        packed_sequences=len(bins),
        packed_sequences_ffd=ffd,
        packed_steps=packed.steps,
        packed_fill=tokens.tokens / (len(bins) * capacity) if bins else 0.0,
        packed_tokens_per_step=packed_tokens / packed.steps if packed.steps else 0.0,
        padding_saved=(len(tokens.lengths) - len(bins)) * capacity,
        gpu=gpu.name,
        gpus=par.world,
        peak_flops=gpu.peak_bf16,
        mfu=rate.value,
        mfu_source=rate.source,
        mfu_detail=rate.detail,
        compute_gpu_hours=cost.gpu_hours(model_flops, mfu=rate.value, peak_flops=gpu.peak_bf16, gpus=par.world)[0],
        gpu_hours=wall * par.world * hours,
        wall_hours=wall * hours,
        effective_mfu=model_flops / (wall * par.world * gpu.peak_bf16) if wall else 0.0,
        time=TimeSplit(
            compute=configured.timing.compute_s * hours,
            stragglers=(configured.timing.compute_s - configured.timing.balanced_s) * hours,
            communication=configured.timing.communication_s * hours,
            launch=configured.timing.fixed_s * hours,
            optimizer=configured.timing.optimizer_s * hours,
        ),
        packed_gpu_hours=packed.timing.wall_s * par.world * hours,
        packed_wall_hours=packed.timing.wall_s * hours,
    )


@dataclass(frozen=True)
class _Run:
    """A stage trained over some samples (rows, or packed sequences)."""

    timing: cost.Timing
    """All of it (every epoch, or up to ``max_steps``)."""
    steps: int
    micro_batches: int
    """Per GPU."""
    epochs: float
    """Passes over the samples an epoch deals (a fraction of one when ``max_steps`` stops early)."""
    rows: list[int]
    """The rows one epoch trains on (the sampler leaves ``samples % ranks`` out)."""
    padding: int
    """Padding tokens of one epoch, when micro-batches are padded."""


@dataclass(frozen=True)
class _Schedule:
    """The stage's sampler and Trainer: who gets which sample, how many steps."""

    par: cost.Parallelism
    micro: int
    accum: int
    epochs: float
    max_steps: int | None
    seed: int

    def steps(self, samples: int, *, whole: bool = True) -> int:
        return cost.optimizer_steps(
            samples,
            world=self.par.world,
            micro_batch=self.micro,
            grad_accum=self.accum,
            epochs=self.epochs if whole else 1.0,
            max_steps=self.max_steps if whole else None,
            sequence_parallel=self.par.sequence_parallel,
        )

    def run(
        self,
        samples: list[list[int]],
        row_flops: list[float],
        lengths: list[int],
        costs: cost.StepCosts,
        flops_per_s: float,
        padding_per_token: float,
    ) -> _Run:
        ranks, sp = self.par.data_parallel, self.par.sequence_parallel
        if len(samples) < ranks:  # the Trainer would refuse to start: nothing runs
            return _Run(cost.Timing(0, 0, 0, 0, 0), 0, 0, 0.0, [], 0)
        sample_flops = [sum(row_flops[i] for i in rows) / sp for rows in samples]
        sample_lengths = [sum(lengths[i] for i in rows) for rows in samples]
        micro_steps = cost.micro_batches(
            sample_flops,
            ranks=ranks,
            micro_batch=self.micro,
            seed=self.seed,
            lengths=sample_lengths if padding_per_token else None,
            padding_flops_per_token=padding_per_token / sp,
        )
        padding = 0
        if padding_per_token:
            zeros = [0.0] * len(samples)
            pads = cost.micro_batches(
                zeros,
                ranks=ranks,
                micro_batch=self.micro,
                seed=self.seed,
                lengths=sample_lengths,
                padding_flops_per_token=1.0,
            )
            padding = round(sum(sum(step) for step in pads))
        per_epoch, total = self.steps(len(samples), whole=False), self.steps(len(samples))
        one = cost.epoch_time(micro_steps, flops_per_s=flops_per_s, costs=costs, optimizer_steps=per_epoch)
        factor = total / per_epoch if self.max_steps else self.epochs
        rows = [i for k in cost.dealt(len(samples), ranks, self.seed) for i in samples[k]]
        return _Run(one.scaled(factor), total, round(len(micro_steps) * factor), factor, rows, padding)


def _subset(tokens: cost.StageTokens, rows: list[int]) -> cost.StageTokens:
    return cost.StageTokens(
        lengths=[tokens.lengths[i] for i in rows],
        image_tokens=[tokens.image_tokens[i] for i in rows],
        trained_tokens=[tokens.trained_tokens[i] for i in rows] if tokens.trained_tokens is not None else None,
        images=[tokens.images[i] for i in rows] if tokens.images is not None else None,
    )


def local_gpu() -> cost.Gpu | None:
    """The card of this machine's first GPU, if it is one :data:`cost.GPUS` knows. Asked of ``nvidia-smi``, not
    torch: a CUDA context opened here would hold memory on GPU 0 for the whole run."""
    try:
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return cost.gpu_of_device(found[0]) if found else None


def curriculum_cost(
    built: Plan,
    audits: Sequence[StageAudit],
    *,
    gpu: cost.Gpu,
    gpu_source: Literal["given", "detected", "default"] = "given",
    mfu: float | None = None,
    results: Path = RESULTS,
    overheads: cost.Overheads | None = None,
    shape: memory.ModelShape | None = None,
) -> CurriculumCost:
    """The cost of every audited stage of ``built`` (``audits`` from :func:`spinegpt.train.audit.audit_curriculum`);
    ``shape``: another architecture than the curriculum's model (a benchmark counting with the tiny model's
    tokenizer, the real Qwen one, costs the 7B)."""
    overheads = overheads or cost.Overheads()
    if mfu is not None and not 0 < mfu <= 1:
        raise ValueError(f"--mfu {mfu}: an MFU is a fraction in (0, 1]")
    shape = shape or memory.model_shape(built.curriculum.model)
    found = measurements(results)
    by_name = {a.stage: a for a in audits}
    stages = [
        stage_cost(built, s, by_name[s.stage.name], shape, gpu, mfu, found, overheads)
        for s in built.stages
        if s.stage.name in by_name
    ]
    launch = built.launch
    return CurriculumCost(
        assumptions=CostAssumptions(
            gpu=gpu.name,
            gpu_source=gpu_source,
            gpus=launch.world_size,
            nodes=launch.nnodes,
            peak_flops=gpu.peak_bf16,
            link_bytes_per_s=gpu.link_bytes_per_s,
            host_bytes_per_s=gpu.host_bytes_per_s,
            memory_bytes_per_s=gpu.memory_bytes_per_s,
            micro_batch_s=overheads.micro_batch_s,
            cpu_adam_params_per_s=overheads.cpu_adam_params_per_s,
            inter_node_bytes_per_s=overheads.inter_node_bytes_per_s,
            seed=built.curriculum.seed,
        ),
        stages=stages,
    )


def _si(value: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _hours(h: float) -> str:
    if h >= 1:
        return f"{h:,.1f} h"
    return f"{h * 60:,.1f} min" if h * 60 >= 1 else f"{h * 3600:,.2g} s"


def _gpu_hours(h: float) -> str:
    return f"{h:,.1f} GPU-h" if h >= 1 else f"{h * 3600:,.3g} GPU-s"


def render(costs: CurriculumCost) -> str:
    """The cost, stage by stage, as ``spinegpt plan --cost`` prints it."""
    a = costs.assumptions
    lines = [
        f"Cost on {a.gpus} x {a.gpu} ({a.peak_flops / 1e12:,.0f} TFLOP/s dense bf16 each; "
        f"{a.link_bytes_per_s / 1e9:,.0f} GB/s between GPUs, {a.micro_batch_s * 1e3:.0f} ms launch per micro-batch)"
    ]
    for s in costs.stages:
        trained = f", {_si(s.trained_tokens)} trained" if s.trained_tokens is not None else ""
        lost = [
            f"{n:,} {what}"
            for n, what in (
                (s.dropped_rows, "dropped"),
                (s.truncated_rows, "truncated"),
                (s.refused_rows, "over max_length: the stage will stop"),
            )
            if n
        ]
        terms = ", ".join(f"{k} {_si(v)}" for k, v in s.flops_terms.items())
        batch = f"{s.micro_batch} x {s.grad_accum} accumulation x {s.gpus} GPU(s)"
        t = s.time
        lines += [
            f"  {s.stage}: {s.rows:,} rows" + (f" ({', '.join(lost)})" if lost else "") + f", {_si(s.tokens)} tokens "
            f"seen{trained}, {s.images:,} images ({_si(s.image_tokens)} visual tokens)"
            + (f", {s.epochs:.3g} epoch(s)" if s.epochs != 1 else ""),
            f"    FLOPs    : {_si(s.flops)} model ({terms}); {_si(s.flops_with_recompute)} with recompute",
            f"    steps    : {s.steps:,} optimizer steps ({batch}"
            + (", packed" if s.packing else ", padding-free" if s.padding_free and s.micro_batch > 1 else "")
            + f"), {s.micro_batches:,} micro-batches per GPU, {_si(s.tokens_per_step)} tokens a step, "
            f"micro-batches {s.fill:.1%} full"
            + (f", {_si(s.padding_tokens)} padding tokens" if s.padding_tokens else ""),
            f"    packing  : {s.packed_sequences:,} sequences at {s.max_length:,} (ms-swift's packing; first-fit "
            f"decreasing {s.packed_sequences_ffd:,}), {s.packed_fill:.1%} full, {s.packed_steps:,} steps of "
            f"{_si(s.packed_tokens_per_step)} tokens; {_si(s.padding_saved)} empty token slots saved",
            f"    time     : {_gpu_hours(s.gpu_hours)}, {_hours(s.wall_hours)} wall at MFU {s.mfu:.2f} "
            f"({s.mfu_source}) -> {s.effective_mfu:.1%} effective; compute {_hours(t.compute)} "
            f"(stragglers {_hours(t.stragglers)}), "
            f"communication {_hours(t.communication)}, launch {_hours(t.launch)}, optimizer {_hours(t.optimizer)}",
            f"    compare  : FLOPs / (MFU x peak) alone {_gpu_hours(s.compute_gpu_hours)}; packed at max_length "
            f"{_gpu_hours(s.packed_gpu_hours)} ({_hours(s.packed_wall_hours)} wall)",
        ]
    lines.append(
        f"  total: {_gpu_hours(costs.gpu_hours)}, {_hours(costs.wall_hours)} wall; packed at max_length "
        f"{_gpu_hours(sum(s.packed_gpu_hours for s in costs.stages))}"
    )
    sources = {(s.mfu_source, s.mfu_detail) for s in costs.stages}
    for source, detail in sorted(sources):
        lines.append(f"  MFU {source}: {detail}")
    return "\n".join(lines)
