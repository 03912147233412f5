"""What ``spinegpt plan --cost`` reports and the run manifest keeps (its ``cost``): a curriculum's predicted training
cost, stage by stage. Plain records; :mod:`cost_plan` computes them, :mod:`cost` holds the arithmetic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

MfuSource = Literal["given", "measured", "assumed"]


class _Record(BaseModel):
    # Unknown keys are kept: a manifest written by a newer spinegpt still reads.
    model_config = ConfigDict(extra="allow")


class TimeSplit(_Record):
    """Where a stage's wall time goes, in hours (their sum is ``wall_hours``)."""

    compute: float
    """The slowest rank's compute at each micro-step (the others wait at its collective)."""
    stragglers: float
    """Of ``compute``, the waiting: what the same FLOPs spread evenly would not cost."""
    communication: float
    """Collectives the compute does not hide (ZeRO's reduce-scatter and gathers, host copies under offload)."""
    launch: float
    """Per micro-batch kernel launches and framework time."""
    optimizer: float
    """Optimizer steps (CPU Adam under offload) and ZeRO-1/2's parameter all-gather after each."""


class StageCost(_Record):
    """One stage's predicted cost, from the exact per-row token counts of its data."""

    stage: str
    rows: int
    """Rows that train (after the stage's ``over_length`` policy)."""
    dropped_rows: int = 0
    """Over-length rows the ``drop`` policy removes (they cost nothing)."""
    truncated_rows: int = 0
    """Over-length rows the ``truncate`` policy keeps, counted at ``max_length`` tokens."""
    refused_rows: int = 0
    """Over-length rows under ``over_length: error``: the stage will stop at them; counted as if dropped."""
    max_length: int
    tokens: int
    """Tokens seen in training (text and visual, every epoch)."""
    trained_tokens: int | None
    """Of them, the tokens the loss is computed on (answers and their end-of-turn tokens); None if unknown."""
    images: int
    image_tokens: int
    epochs: float
    """Passes over the data: ``num_train_epochs``, or what ``max_steps`` amounts to."""
    flops: float
    """Model FLOPs (PaLM's convention: matmuls, 2 per multiply-add, no causal halving, no recompute): what an MFU
    divides."""
    flops_with_recompute: float
    """What the GPUs compute, gradient checkpointing's second forward included."""
    flops_terms: dict[str, float]
    """``llm_params`` (6N, or 4N for a frozen language model), ``attention`` (12 L h s^2), ``recompute``,
    ``vision`` (the frozen tower's forward)."""
    micro_batch: int
    grad_accum: int
    packing: bool
    """The stage packs its rows (ms-swift's ``packing``); then steps count packed sequences."""
    padding_free: bool
    steps: int
    """Optimizer steps, as ms-swift's sampler and the Trainer count them."""
    micro_batches: int
    """Forward/backward passes per GPU."""
    tokens_per_step: float
    padding_tokens: int
    """Padding a micro-batch of several rows adds without padding-free (0 at micro-batch 1)."""
    fill: float
    """Mean tokens of a micro-batch over its capacity (``max_length`` x micro-batch): how full steps run."""
    packed_sequences: int
    """With packing at ``max_length`` (the what-if, or what the stage does): ms-swift's packed sequences."""
    packed_sequences_ffd: int
    """The same rows by first-fit decreasing over all rows at once (the reference bound ms-swift's windowed
    least-loaded packing comes within a few percent of)."""
    packed_steps: int
    """Optimizer steps over the packed sequences at the stage's micro-batch and accumulation."""
    packed_fill: float
    packed_tokens_per_step: float
    padding_saved: int
    """Token slots of ``max_length``-sized micro-batches that packing no longer leaves empty: what padding every
    micro-batch to ``max_length`` (static shapes) would compute in vain, unpacked minus packed."""
    gpu: str
    gpus: int
    peak_flops: float
    """Dense bf16 peak of one GPU, FLOP/s."""
    mfu: float
    mfu_source: MfuSource
    mfu_detail: str
    """Where the MFU comes from (the option, the measurement file, or why this assumption)."""
    compute_gpu_hours: float
    """FLOPs / (MFU x peak): the GPU-hours of the compute alone, as if every micro-batch were long."""
    gpu_hours: float
    """The prediction: compute at the MFU on the slowest rank of every micro-step, plus communication, launch
    and optimizer time; times the GPUs."""
    wall_hours: float
    effective_mfu: float
    """Model FLOPs over (wall time x GPUs x peak): what the run would report as its MFU."""
    time: TimeSplit
    packed_gpu_hours: float
    """The same prediction with packing at ``max_length`` (one packed sequence per micro-batch)."""
    packed_wall_hours: float


class CostAssumptions(_Record):
    """What every stage's time rests on besides its data."""

    gpu: str
    gpu_source: Literal["given", "detected", "default"] = "given"
    """``--gpu``; the CUDA device the run found; or the default card, none being found."""
    gpus: int
    nodes: int
    peak_flops: float
    link_bytes_per_s: float
    host_bytes_per_s: float
    memory_bytes_per_s: float
    micro_batch_s: float
    cpu_adam_params_per_s: float
    inter_node_bytes_per_s: float
    seed: int
    """Of the simulated sampler and packing order (the curriculum's)."""


class CurriculumCost(_Record):
    """A curriculum's predicted cost: its stages and what they assume."""

    assumptions: CostAssumptions
    stages: list[StageCost]
    created_at: str | None = None

    @property
    def gpu_hours(self) -> float:
        return sum(s.gpu_hours for s in self.stages)

    @property
    def wall_hours(self) -> float:
        return sum(s.wall_hours for s in self.stages)
