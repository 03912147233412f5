"""What a stage will cost before it starts: training FLOPs term by term, packed sequences, optimizer steps, GPU-hours.

Pure arithmetic on the data audit's exact per-row token counts and the model's shape (``ModelShape``); no torch, no
transformers. Every term below is a separate function so that a test can check it by hand.

Notation: ``L`` decoder layers, ``h`` hidden size, ``kv`` key/value width (kv_heads x head_dim), ``I`` MLP width,
``V`` vocabulary, ``s`` a row's length in tokens (text + visual tokens), ``T = sum(s)`` the stage's tokens.

Convention: *model* FLOPs, as in the MFU of PaLM (Chowdhery et al. 2022, arXiv:2204.02311, Appendix B) and
Megatron-LM (Narayanan et al. 2021, arXiv:2104.04473, section 5.1): one multiply-add = 2 FLOPs, only matrix
multiplications count (norms, activations, softmax, rotary, the loss and the optimizer are left out), and the
causal mask is NOT credited with halving attention (flash-attn really skips about half of the masked blocks; the
convention does not, so an MFU measured with this convention is comparable with published ones).

Terms
-----
* ``llm_params``: ``c x (L x P_layer x T + V x h x T_head)`` with ``c = 6`` (forward 2, backward 4: gradients of
  the activations 2 and of the weights 2; Kaplan et al. 2020, arXiv:2001.08361, section 2.1).
  Counted parameters ``N = L x P_layer + V x h``: the weight matrices of each decoder layer,
  ``P_layer = 2h^2 + 2h*kv + 3h*I`` (q and o projections, k and v projections, MLP gate/up/down), and the lm_head
  (``V x h``; a matmul whether or not it is tied to the embeddings). Not counted: the input embedding (a lookup, no
  matmul), biases and norm weights (a few thousand parameters a layer, not matmuls).
  ``T_head``: the tokens the lm_head is applied to. ms-swift 4.6 on transformers 5 turns ``use_logits_to_keep`` on
  by default (swift/trainers/mixin.py:213-225; off under sequence parallelism, swift/trainers/seq2seq_trainer.py:110),
  and with one row per micro-batch it keeps only the positions that predict a trained token plus the last position
  (swift/trainers/mixin.py:1277-1285): ``T_head = sum(min(trained + 1, s))``. Without trained-token counts, or with
  ``logits_to_keep=False``, ``T_head = T`` (an upper bound).
  ``trains_llm=False`` (LoRA, or a frozen LLM under a trainable aligner/vision tower): the backward still flows
  through every layer for the activation gradients but computes no weight gradients, so ``c = 4`` (LoRA's own small
  matrices are not counted). A frozen LLM with nothing trainable upstream trains nothing and is not modelled.
* ``attention``: ``12 x L x h x sum(s^2)`` per stage: per layer and row the forward's two matmuls (Q K^T and
  scores x V) cost ``2 x 2 x s^2 x h`` (with grouped-query attention each of the ``heads`` query heads still takes
  part, ``heads x head_dim = h``), and the backward twice that: PaLM's ``12 x L x H x Q x T`` per token. Attention
  is within each row: with packing (padding-free, flash-attn varlen, the curriculum requires flash-attn for it)
  it stays within the original rows, so this term does NOT change with packing. It needs the backward whenever the
  LLM's backward runs, so it does not depend on ``trains_llm``.
* ``recompute``: gradient checkpointing (transformers' per-decoder-layer checkpointing, which ms-swift enables) runs
  each decoder layer's forward again during the backward: ``2 x L x P_layer x T + 4 x L x h x sum(s^2)``, i.e. 8N
  instead of 6N for the layers. The lm_head and the embedding lie outside the checkpointed layers and are not
  recomputed; the frozen vision tower has no backward, hence nothing to recompute. These are hardware FLOPs, not
  model FLOPs: see ``Flops.model``.
* ``vision``: the frozen vision tower's forward only (ms-swift defaults ``freeze_vit=True, freeze_aligner=True``,
  swift/arguments/tuner_args.py:123-124; with nothing trainable below the LLM no gradient flows into it). Per
  visual token in the LLM's sequence there are ``merge^2 = 4`` patches of 14x14 pixels (x2 frames, the image
  repeated to fill the temporal patch). Per patch ``2 x (depth x P_block + P_embed)`` with
  ``P_block = 4 vh^2 + 3 vh*vi`` (qkv, proj, gate/up/down) and ``P_embed = 3 x 2 x 14^2 x vh`` (the Conv3d patch
  embedding, a matmul per patch); per visual token ``2 x P_merger``, ``P_merger = (4vh)^2 + 4vh x out`` (the
  aligner's MLP works on merged tokens). Attention forward per image of ``n`` patches: ``4 x vh x n^2`` in each
  full-attention block (blocks 7, 15, 23, 31 of the 32-block tower) and ``4 x vh x n x min(W, n)`` in each
  windowed block, ``W = 64`` patches (``window_size`` 112 px = 8x8 patches). The windowed figure is an upper bound:
  exact when the image's sides are multiples of 112 px, partial windows at the edges cost less. When the rows do
  not say how their visual tokens split into images (``StageTokens.images``), each row's tokens are taken as one
  image: an upper bound for the full-attention blocks.

Padding is not counted: ``lengths`` are real tokens (the curriculum runs one row per micro-batch, so there is none).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from spinegpt.train.memory import ModelShape

# Qwen2.5-VL's vision tower: full attention in these blocks, windowed attention of 112 px in the others
# (transformers' Qwen2_5_VLVisionConfig defaults window_size=112, fullatt_block_indexes=(7, 15, 23, 31)).
FULL_ATTENTION_BLOCK_INDEXES = (7, 15, 23, 31)
WINDOW_PIXELS = 112

# ms-swift's PackingDataset packs this many rows at a time (swift/dataset/packing.py:90).
SWIFT_PACKING_BATCH = 1000

# Dense (no structured sparsity) bf16 tensor-core peak, FLOP/s per GPU, from NVIDIA's datasheets, which quote the
# sparse figure: dense is half of it.
PEAK_BF16_DENSE: dict[str, float] = {
    "A100": 312e12,  # A100 datasheet: BF16 Tensor Core 312 TFLOPS (624 with sparsity); SXM and PCIe, 40 and 80 GB
    "A800": 312e12,  # export variant of the A100: same SMs and clocks, only NVLink cut to 400 GB/s
    "H100-SXM": 989e12,  # H100 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity (SXM5)
    "H100-PCIe": 756e12,  # H100 datasheet: 1,513 TFLOPS with sparsity (PCIe)
    "H800": 989e12,  # export variant of the H100 SXM: same tensor cores, NVLink reduced to 400 GB/s
    "H200": 989e12,  # H200 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity (SXM; same GH100 compute)
    "L40S": 362e12,  # L40S datasheet: BF16 Tensor Core 362.05 TFLOPS (733 with sparsity)
}


@dataclass(frozen=True)
class StageTokens:
    """One stage's rows, from the data audit: per row its total tokens (text + visual), the visual tokens among
    them, optionally the trained (answer) tokens, and optionally the visual tokens of each image of the row."""

    lengths: list[int]
    image_tokens: list[int]
    trained_tokens: list[int] | None = None
    images: list[list[int]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", [int(x) for x in self.lengths])
        object.__setattr__(self, "image_tokens", [int(x) for x in self.image_tokens])
        rows = len(self.lengths)
        if len(self.image_tokens) != rows:
            raise ValueError(f"{len(self.image_tokens)} image token counts for {rows} rows")
        for i, (s, v) in enumerate(zip(self.lengths, self.image_tokens, strict=True)):
            if s < 0 or not 0 <= v <= s:
                raise ValueError(f"row {i}: length {s}, image tokens {v}")
        if self.trained_tokens is not None:
            object.__setattr__(self, "trained_tokens", [int(x) for x in self.trained_tokens])
            if len(self.trained_tokens) != rows:
                raise ValueError(f"{len(self.trained_tokens)} trained token counts for {rows} rows")
            for i, (s, t) in enumerate(zip(self.lengths, self.trained_tokens, strict=True)):
                if not 0 <= t <= s:
                    raise ValueError(f"row {i}: length {s}, trained tokens {t}")
        if self.images is not None:
            object.__setattr__(self, "images", [[int(x) for x in row] for row in self.images])
            if len(self.images) != rows:
                raise ValueError(f"images given for {len(self.images)} of {rows} rows")
            for i, (per_image, v) in enumerate(zip(self.images, self.image_tokens, strict=True)):
                if sum(per_image) != v or any(x <= 0 for x in per_image):
                    raise ValueError(f"row {i}: images {per_image} do not add up to its {v} image tokens")

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    @property
    def squared(self) -> int:
        """``sum(s^2)``: what attention grows with."""
        return sum(s * s for s in self.lengths)

    def image_sizes(self) -> list[int]:
        """Visual tokens of every image, all rows together (a row without a split counts as one image)."""
        if self.images is not None:
            return [x for row in self.images for x in row]
        return [v for v in self.image_tokens if v > 0]


@dataclass(frozen=True)
class Flops:
    llm_params: int
    attention: int
    recompute: int
    vision: int

    @property
    def total(self) -> int:
        """What the GPUs compute, recompute included (hardware FLOPs)."""
        return self.llm_params + self.attention + self.recompute + self.vision

    @property
    def model(self) -> int:
        """Model FLOPs, without the recompute: what a PaLM-style MFU divides by."""
        return self.total - self.recompute

    def __add__(self, other: Flops) -> Flops:
        return Flops(
            self.llm_params + other.llm_params,
            self.attention + other.attention,
            self.recompute + other.recompute,
            self.vision + other.vision,
        )


# ---------------------------------------------------------------------------------------------------------------
# Parameter counts (matmul weights only)


def layer_matmul_params(shape: ModelShape) -> int:
    """``P_layer = 2h^2 + 2h*kv + 3h*I``: q, o, k, v projections and the MLP's gate, up and down."""
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    return 2 * h * h + 2 * h * kv + 3 * h * i


def lm_head_params(shape: ModelShape) -> int:
    return shape.vocab * shape.hidden


def llm_matmul_params(shape: ModelShape) -> int:
    """``N`` of the 6N rule: every decoder layer's weight matrices and the lm_head; no embedding, biases, norms."""
    return shape.layers * layer_matmul_params(shape) + lm_head_params(shape)


def vision_block_params(shape: ModelShape) -> int:
    vh, vi = shape.vision_hidden, shape.vision_intermediate
    return 4 * vh * vh + 3 * vh * vi


def patch_embed_params(shape: ModelShape) -> int:
    return 3 * shape.temporal_patch * shape.patch**2 * shape.vision_hidden


def merger_matmul_params(shape: ModelShape) -> int:
    merged = shape.vision_hidden * shape.merge**2
    return merged * merged + merged * shape.vision_out


# ---------------------------------------------------------------------------------------------------------------
# FLOP terms


def lm_head_tokens(tokens: StageTokens, *, logits_to_keep: bool = True) -> int:
    """Positions the lm_head is applied to: ``sum(min(trained + 1, s))`` under ms-swift's ``logits_to_keep``
    (one row per micro-batch), else every token."""
    if not logits_to_keep or tokens.trained_tokens is None:
        return tokens.tokens
    return sum(min(t + 1, s) for t, s in zip(tokens.trained_tokens, tokens.lengths, strict=True) if s > 0)


def llm_param_flops(
    shape: ModelShape, tokens: StageTokens, *, trains_llm: bool = True, logits_to_keep: bool = True
) -> int:
    """``c x (L x P_layer x T + V x h x T_head)``, ``c = 6`` when the LLM's weights train, 4 when only activation
    gradients flow back through it."""
    c = 6 if trains_llm else 4
    layers = shape.layers * layer_matmul_params(shape) * tokens.tokens
    head = lm_head_params(shape) * lm_head_tokens(tokens, logits_to_keep=logits_to_keep)
    return c * (layers + head)


def attention_flops(shape: ModelShape, tokens: StageTokens) -> int:
    """``12 x L x h x sum(s^2)``: forward (2 matmuls x 2 FLOPs x s^2 x h per layer) plus a backward of twice that;
    within each row, packed or not; no causal halving."""
    return 12 * shape.layers * shape.hidden * tokens.squared


def recompute_flops(shape: ModelShape, tokens: StageTokens) -> int:
    """Gradient checkpointing's second forward of the decoder layers: ``2 x L x P_layer x T + 4 x L x h x sum(s^2)``
    (the lm_head is outside the checkpointed layers and is not recomputed)."""
    layers = 2 * shape.layers * layer_matmul_params(shape) * tokens.tokens
    return layers + 4 * shape.layers * shape.hidden * tokens.squared


def default_full_attention_blocks(shape: ModelShape) -> int:
    """How many of Qwen2.5-VL's full-attention block indexes the tower has (4 of 32 blocks for every size)."""
    return sum(1 for i in FULL_ATTENTION_BLOCK_INDEXES if i < shape.vision_depth)


def vision_flops(
    shape: ModelShape,
    tokens: StageTokens,
    *,
    window_patches: int | None = None,
    full_attention_blocks: int | None = None,
) -> int:
    """The frozen vision tower's forward: its matmuls per patch and per merged token, and its attention per image
    (see the module docstring). ``window_patches`` defaults to (112 px / patch)^2 = 64, ``full_attention_blocks``
    to the indexes 7, 15, 23, 31 that lie within the tower's depth."""
    if window_patches is None:
        window_patches = (WINDOW_PIXELS // shape.patch) ** 2
    if full_attention_blocks is None:
        full_attention_blocks = default_full_attention_blocks(shape)
    if not 0 <= full_attention_blocks <= shape.vision_depth:
        raise ValueError(f"{full_attention_blocks} full-attention blocks in a {shape.vision_depth}-block tower")
    unit = shape.merge**2
    visual = sum(tokens.image_tokens)
    patches = unit * visual
    per_patch = shape.vision_depth * vision_block_params(shape) + patch_embed_params(shape)
    linear = 2 * per_patch * patches + 2 * merger_matmul_params(shape) * visual
    windowed_blocks = shape.vision_depth - full_attention_blocks
    attention = 0
    for image in tokens.image_sizes():
        n = unit * image
        per_block = full_attention_blocks * n + windowed_blocks * min(window_patches, n)
        attention += 4 * shape.vision_hidden * n * per_block
    return linear + attention


def flops(
    shape: ModelShape,
    tokens: StageTokens,
    *,
    gradient_checkpointing: bool,
    trains_llm: bool = True,
    logits_to_keep: bool = True,
    window_patches: int | None = None,
    full_attention_blocks: int | None = None,
) -> Flops:
    """A stage's training FLOPs, term by term, for one pass over ``tokens`` (multiply by the epochs)."""
    return Flops(
        llm_params=llm_param_flops(shape, tokens, trains_llm=trains_llm, logits_to_keep=logits_to_keep),
        attention=attention_flops(shape, tokens),
        recompute=recompute_flops(shape, tokens) if gradient_checkpointing else 0,
        vision=vision_flops(shape, tokens, window_patches=window_patches, full_attention_blocks=full_attention_blocks),
    )


# ---------------------------------------------------------------------------------------------------------------
# Packing


def _check_capacity(lengths: Sequence[int], capacity: int) -> None:
    if capacity <= 0:
        raise ValueError(f"capacity {capacity}")
    for i, n in enumerate(lengths):
        if n < 0 or n > capacity:
            raise ValueError(
                f"row {i} has {n} tokens, over the packing length {capacity}: drop or truncate over-length rows "
                "by the stage's policy first"
            )


def pack_first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing over all rows at once: the reference (at most 11/9 OPT + 6/9 bins). Returns row indices
    per bin, bins in the order they were opened. O(n log n) with a segment tree over the bins' free space."""
    _check_capacity(lengths, capacity)
    n = len(lengths)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: -lengths[i])
    size = 1
    while size < n:
        size *= 2
    # Leaves: free space of bin j; bins not yet opened are empty (free = capacity), so the leftmost leaf that fits
    # is either an open bin or the next one to open. Leaves past n can never be used.
    free = [-1] * (2 * size)
    for j in range(n):
        free[size + j] = capacity
    for node in range(size - 1, 0, -1):
        free[node] = max(free[2 * node], free[2 * node + 1])
    bins: list[list[int]] = []
    for i in order:
        need = lengths[i]
        node = 1
        while node < size:
            node = 2 * node if free[2 * node] >= need else 2 * node + 1
        j = node - size
        if j == len(bins):
            bins.append([])
        bins[j].append(i)
        free[node] -= need
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return bins


def _least_loaded_fit(items: list[tuple[int, int]], capacity: int) -> list[list[tuple[int, int]]]:
    """What ``binpacking.to_constant_volume`` (2.0.1) computes: items by decreasing length (stable, so ties keep
    their order), each into the least-loaded open bin it fits in -- lowest index among equals -- or a new bin.
    The least-loaded bin is the only candidate worth checking: if it cannot take the item, no bin can."""
    ordered = sorted(items, key=lambda item: -item[1])
    bins: list[list[tuple[int, int]]] = []
    loads: list[tuple[int, int]] = []  # heap of (load, bin index)
    for item in ordered:
        if loads and loads[0][0] + item[1] <= capacity:
            load, b = heapq.heappop(loads)
            heapq.heappush(loads, (load + item[1], b))
        else:
            b = len(bins)
            bins.append([])
            heapq.heappush(loads, (item[1], b))
        bins[b].append(item)
    return bins


def _swift_chunks(n: int, num_proc: int) -> list[tuple[int, int]]:
    """ms-swift's contiguous split of the rows over its packing workers (numpy linspace, truncated)."""
    procs = min(num_proc, math.ceil(n / SWIFT_PACKING_BATCH))
    if procs <= 0:
        return []
    step = n / procs
    bounds = [int(j * step) for j in range(procs)] + [n]
    return list(itertools.pairwise(bounds))


def pack_like_swift_bins(
    lengths: Sequence[int],
    capacity: int,
    *,
    num_proc: int = 1,
    strategy: Literal["binpack", "sequential"] = "binpack",
) -> list[list[int]]:
    """The packed sequences (row indices) that ms-swift 4.6's ``PackingDataset`` builds, reimplemented: rows in
    batches of 1,000 in dataset order, each batch packed by least-loaded-fit decreasing together with the last bin
    of the previous batch (carried over, repacked), the final batch's bins all kept. ``strategy="sequential"`` is
    its order-keeping next-fit. ``num_proc`` is ``packing_num_proc`` (contiguous chunks packed independently).
    See /work/notes/packing.md for the source, line by line."""
    _check_capacity(lengths, capacity)
    if strategy not in ("binpack", "sequential"):
        raise ValueError(f"packing strategy {strategy!r}")
    out: list[list[int]] = []
    for start, stop in _swift_chunks(len(lengths), num_proc):
        if strategy == "sequential":
            cur: list[int] = []
            cur_len = 0
            for i in range(start, stop):
                if cur and cur_len + lengths[i] > capacity:
                    out.append(cur)
                    cur, cur_len = [], 0
                cur.append(i)
                cur_len += lengths[i]
                if cur_len >= capacity:
                    out.append(cur)
                    cur, cur_len = [], 0
            if cur:
                out.append(cur)
            continue
        carried: list[tuple[int, int]] = []
        for batch_start in range(start, stop, SWIFT_PACKING_BATCH):
            batch_stop = min(batch_start + SWIFT_PACKING_BATCH, stop)
            items = carried + [(i, lengths[i]) for i in range(batch_start, batch_stop)]
            bins = _least_loaded_fit(items, capacity)
            carried = bins.pop() if batch_stop < stop and bins else []  # the last bin is repacked with the next
            out.extend([i for i, _ in b] for b in bins)
    return out


def pack_like_swift(
    lengths: Sequence[int],
    capacity: int,
    *,
    num_proc: int = 1,
    strategy: Literal["binpack", "sequential"] = "binpack",
) -> int:
    """How many packed sequences ms-swift will train on (``len(PackingDataset)``)."""
    return len(pack_like_swift_bins(lengths, capacity, num_proc=num_proc, strategy=strategy))


@dataclass(frozen=True)
class Packing:
    capacity: int
    rows: int
    swift: int
    """Packed sequences ms-swift will produce: what the run uses."""
    first_fit_decreasing: int
    """The reference: first-fit decreasing over all rows at once."""
    tokens: int

    @property
    def sequences(self) -> int:
        return self.swift

    @property
    def fill(self) -> float:
        """Mean fraction of the packing length used by a packed sequence."""
        return self.tokens / (self.swift * self.capacity) if self.swift else 0.0


def packing(
    lengths: Sequence[int],
    capacity: int,
    *,
    num_proc: int = 1,
    strategy: Literal["binpack", "sequential"] = "binpack",
) -> Packing:
    return Packing(
        capacity=capacity,
        rows=len(lengths),
        swift=pack_like_swift(lengths, capacity, num_proc=num_proc, strategy=strategy),
        first_fit_decreasing=len(pack_first_fit_decreasing(lengths, capacity)),
        tokens=sum(lengths),
    )


# ---------------------------------------------------------------------------------------------------------------
# Optimizer steps and time


def optimizer_steps(
    samples: int,
    *,
    world: int,
    micro_batch: int,
    grad_accum: int,
    epochs: float = 1.0,
    max_steps: int | None = None,
    sequence_parallel: int = 1,
) -> int:
    """Optimizer steps the run takes, as ms-swift 4.6's sampler and transformers 5.19's Trainer compute them.
    ``samples``: rows, or packed sequences under packing; ``world``: all processes (GPUs x nodes).

    * per-rank samples: ms-swift's ``BatchSamplerShard`` gives each rank ``samples // world`` (the remainder is never
      seen; swift/dataloader/shard.py:24); under sequence parallelism its ``SequenceParallelSampler`` rounds up over
      the ``world // sequence_parallel`` data-parallel ranks (swift/sequence_parallel/utils.py:125-127);
    * micro-batches per epoch: ``ceil(per_rank / micro_batch)``, the last one partial (``dataloader_drop_last``
      is False by default; shard.py:73-77);
    * steps per epoch: ``max(ceil(batches / grad_accum), 1)``, the last step accumulating fewer micro-batches
      (transformers/trainer.py:2497-2501, 1855-1857);
    * ``max_steps`` > 0 wins; otherwise ``ceil(epochs x steps_per_epoch)`` (trainer.py:2503-2504).

    No samples: 0 steps. Fewer samples than data-parallel ranks: the Trainer would refuse (an empty dataloader with
    no max_steps raises), and so does this."""
    if world < 1 or micro_batch < 1 or grad_accum < 1 or sequence_parallel < 1 or epochs < 0:
        raise ValueError(
            f"world {world}, micro_batch {micro_batch}, grad_accum {grad_accum}, "
            f"sequence_parallel {sequence_parallel}, epochs {epochs}"
        )
    if samples < 0:
        raise ValueError(f"{samples} samples")
    if samples == 0:
        return 0
    if sequence_parallel > 1:
        if world % sequence_parallel:
            raise ValueError(f"sequence_parallel {sequence_parallel} does not divide world {world}")
        per_rank = math.ceil(samples / (world // sequence_parallel))
    else:
        per_rank = samples // world
    batches = math.ceil(per_rank / micro_batch)
    if batches == 0:
        raise ValueError(f"{samples} samples over {world} ranks leaves each rank none: the Trainer cannot start")
    if max_steps is not None and max_steps > 0:
        return max_steps
    per_epoch = max(math.ceil(batches / grad_accum), 1)
    return math.ceil(epochs * per_epoch)


def gpu_hours(total_flops: float, *, mfu: float, peak_flops: float, gpus: int) -> tuple[float, float]:
    """``(GPU-hours, wall-clock hours)`` at a utilisation ``mfu`` of ``peak_flops`` per GPU.

    Pair the utilisation with the matching FLOPs: a model FLOPs utilisation (PaLM's MFU, what papers report) with
    ``Flops.model``; a hardware FLOPs utilisation (recompute included) with ``Flops.total``."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu {mfu} not in (0, 1]")
    if peak_flops <= 0 or gpus < 1 or total_flops < 0:
        raise ValueError(f"peak_flops {peak_flops}, gpus {gpus}, total_flops {total_flops}")
    wall_hours = total_flops / (mfu * peak_flops * gpus) / 3600
    return wall_hours * gpus, wall_hours
