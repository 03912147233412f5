"""What a stage will cost before it starts: training FLOPs term by term, packed sequences, optimizer steps, time.

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
  image: an upper bound for the full-attention blocks. A trained tower (``freeze_vit: false``, :class:`Trains`)
  costs its backward too (x3) and, checkpointed, its forward again (``recompute``); a trained aligner its weight
  gradients (the merger x2, x3 with the tower trained below it).

``lengths`` are real tokens: padding (a micro-batch of several rows without padding-free) is added by the time
model where it happens (:func:`micro_batches`), never by :func:`flops`.

Time
----
FLOPs alone cannot tell a packed run from an unpacked one: packing changes no FLOP. What it changes is the number of
micro-batches, and each costs time that does not shrink with its tokens. So a stage's wall time is, per micro-step,
the compute of the slowest data-parallel rank at ``MFU x peak`` (every micro-step ends in a collective, so the
others wait for it: :func:`micro_batches` deals the samples as ms-swift's sampler does), plus the communication the
compute does not hide, a fixed launch time, and per optimizer step the optimizer and ZeRO-1/2's parameter gather
(:func:`step_costs`: bytes over the card's bandwidths, :class:`Gpu`; the assumptions in :class:`Overheads`). The
MFU is the compute's own (what long rows reach, where the fixed costs vanish): what ``bench/gpu_check.py`` measures.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

from spinegpt.train.memory import ModelShape

# Qwen2.5-VL's vision tower: full attention in these blocks, windowed attention of 112 px in the others
# (transformers' Qwen2_5_VLVisionConfig defaults window_size=112, fullatt_block_indexes=(7, 15, 23, 31)).
FULL_ATTENTION_BLOCK_INDEXES = (7, 15, 23, 31)
WINDOW_PIXELS = 112

# ms-swift's PackingDataset packs this many rows at a time (swift/dataset/packing.py:90).
SWIFT_PACKING_BATCH = 1000


@dataclass(frozen=True)
class Gpu:
    """One kind of card, as far as a stage's time depends on it."""

    name: str
    peak_bf16: float
    """Dense (no structured sparsity) bf16 tensor-core peak, FLOP/s. NVIDIA's datasheets quote the sparse figure
    first: dense is half of it."""
    memory_bytes_per_s: float
    """HBM bandwidth (the datasheet's): what a GPU-side optimizer step is bound by."""
    link_bytes_per_s: float
    """NCCL bus bandwidth among the 8 GPUs of one node (what nccl-tests reports as busbw for large reduce-scatter
    and all-gather messages; roughly 75 % of the one-direction NVLink bandwidth, PCIe's where there is no NVLink)."""
    host_bytes_per_s: float
    """Host <-> device copies (PCIe 4.0 / 5.0 x16, practical): what parameter and optimizer offload move."""
    default_mfu: float = 0.35
    """The MFU assumed when none is given or measured (see :data:`ASSUMED_MFU_WHY`)."""


GPUS: dict[str, Gpu] = {
    # A100 datasheet: BF16 tensor 312 TFLOPS (624 sparse), 2,039 GB/s (80GB SXM), NVLink 600 GB/s both ways.
    "A100-80GB": Gpu("A100-80GB", 312e12, 2.039e12, 230e9, 25e9),
    "A100-40GB": Gpu("A100-40GB", 312e12, 1.555e12, 230e9, 25e9),
    # The export variant of the A100: same SMs and clocks, NVLink cut to 400 GB/s.
    "A800-80GB": Gpu("A800-80GB", 312e12, 2.039e12, 155e9, 25e9),
    # H100 datasheet: BF16 tensor 1,979 TFLOPS sparse (SXM5), 3.35 TB/s, NVLink 900 GB/s; PCIe 1,513, 2.0 TB/s.
    "H100-SXM": Gpu("H100-SXM", 989e12, 3.35e12, 360e9, 50e9),
    "H100-PCIe": Gpu("H100-PCIe", 756e12, 2.0e12, 40e9, 50e9),
    # The export variant of the H100 SXM: same tensor cores, NVLink 400 GB/s.
    "H800": Gpu("H800", 989e12, 3.35e12, 155e9, 50e9),
    # H200 datasheet: the H100's GH100 compute (1,979 TFLOPS sparse) with 4.8 TB/s HBM3e.
    "H200": Gpu("H200", 989e12, 4.8e12, 360e9, 50e9),
    # L40S datasheet: BF16 tensor 362.05 TFLOPS (733 sparse), 864 GB/s, PCIe only.
    "L40S": Gpu("L40S", 362e12, 0.864e12, 20e9, 25e9),
}
DEFAULT_GPU = "A100-80GB"
"""The paper's card (8 x A100 80 GB)."""
PEAK_BF16_DENSE: dict[str, float] = {name: gpu.peak_bf16 for name, gpu in GPUS.items()}
ASSUMED_MFU_WHY = (
    "0.35: LMMs-Engine reports 30-40 % MFU for Qwen2.5-VL-7B image training on A800s with packing, "
    "padding removal and Liger (lmms-engine docs, 'MFU Reference'); ms-swift with DeepSpeed is not a faster stack"
)


def gpu_named(name: str) -> Gpu:
    """A card of :data:`GPUS` by name, case and punctuation aside (``a100`` is the 80 GB A100)."""
    wanted = re.sub(r"[^a-z0-9]", "", name.lower())
    aliases = {"a100": "A100-80GB", "a800": "A800-80GB", "h100": "H100-SXM"}
    for key in GPUS:
        if re.sub(r"[^a-z0-9]", "", key.lower()) == wanted:
            return GPUS[key]
    if wanted in aliases:
        return GPUS[aliases[wanted]]
    raise ValueError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}")


def gpu_of_device(device_name: str) -> Gpu | None:
    """The card behind a CUDA device name (``NVIDIA A100-SXM4-80GB``, ``NVIDIA H200``), if known."""
    name = device_name.upper()
    if "H200" in name:
        return GPUS["H200"]
    if "H800" in name:
        return GPUS["H800"]
    if "H100" in name:
        return GPUS["H100-PCIe" if "PCIE" in name else "H100-SXM"]
    if "A800" in name:
        return GPUS["A800-80GB"]
    if "A100" in name:
        return GPUS["A100-40GB" if "40G" in name else "A100-80GB"]
    if "L40S" in name:
        return GPUS["L40S"]
    return None


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


@dataclass(frozen=True)
class Trains:
    """Which parts of the model a stage trains (ms-swift's ``freeze_llm`` / ``freeze_vit`` / ``freeze_aligner``;
    LoRA leaves the language model's own weights frozen)."""

    llm: bool = True
    vision: bool = False
    aligner: bool = False


def _vision_attention(shape: ModelShape, n: int, window_patches: int, full_blocks: int) -> int:
    """The tower's attention forward on one image of ``n`` patches."""
    per_block = full_blocks * n + (shape.vision_depth - full_blocks) * min(window_patches, n)
    return 4 * shape.vision_hidden * n * per_block


def _vision_settings(shape: ModelShape, window_patches: int | None, full_blocks: int | None) -> tuple[int, int]:
    window = (WINDOW_PIXELS // shape.patch) ** 2 if window_patches is None else window_patches
    full = default_full_attention_blocks(shape) if full_blocks is None else full_blocks
    if not 0 <= full <= shape.vision_depth:
        raise ValueError(f"{full} full-attention blocks in a {shape.vision_depth}-block tower")
    return window, full


def vision_flops(
    shape: ModelShape,
    tokens: StageTokens,
    *,
    trains: Trains = Trains(),
    window_patches: int | None = None,
    full_attention_blocks: int | None = None,
) -> int:
    """The vision tower's matmuls per patch and per merged token, and its attention per image (see the module
    docstring): forward only when it is frozen (ms-swift's default), x3 for a trained tower (its backward), the
    aligner's x(1 + 1 if it trains + 1 if the tower below it does). ``window_patches`` defaults to
    (112 px / patch)^2 = 64, ``full_attention_blocks`` to the indexes 7, 15, 23, 31 within the tower's depth."""
    blocks, merger = _vision_forward(shape, tokens, window_patches, full_attention_blocks)
    return blocks * (1 + 2 * trains.vision) + merger * (1 + trains.vision + trains.aligner)


def _vision_forward(
    shape: ModelShape, tokens: StageTokens, window_patches: int | None, full_attention_blocks: int | None
) -> tuple[int, int]:
    """(tower blocks with the patch embedding, aligner): the forward FLOPs of each."""
    window, full = _vision_settings(shape, window_patches, full_attention_blocks)
    unit = shape.merge**2
    visual = sum(tokens.image_tokens)
    per_patch = shape.vision_depth * vision_block_params(shape) + patch_embed_params(shape)
    attention = sum(_vision_attention(shape, unit * image, window, full) for image in tokens.image_sizes())
    return 2 * per_patch * unit * visual + attention, 2 * merger_matmul_params(shape) * visual


def flops(
    shape: ModelShape,
    tokens: StageTokens,
    *,
    gradient_checkpointing: bool,
    trains_llm: bool = True,
    trains: Trains | None = None,
    logits_to_keep: bool = True,
    window_patches: int | None = None,
    full_attention_blocks: int | None = None,
) -> Flops:
    """A stage's training FLOPs, term by term, for one pass over ``tokens`` (multiply by the epochs). ``trains``
    (default: the language model alone, ``trains_llm`` saying whether its weights train)."""
    trains = trains or Trains(llm=trains_llm)
    recompute = recompute_flops(shape, tokens) if gradient_checkpointing else 0
    if gradient_checkpointing and trains.vision:  # a trained tower is checkpointed block by block too
        recompute += _vision_forward(shape, tokens, window_patches, full_attention_blocks)[0]
    return Flops(
        llm_params=llm_param_flops(shape, tokens, trains_llm=trains.llm, logits_to_keep=logits_to_keep),
        attention=attention_flops(shape, tokens),
        recompute=recompute,
        vision=vision_flops(
            shape, tokens, trains=trains, window_patches=window_patches, full_attention_blocks=full_attention_blocks
        ),
    )


def row_model_flops(
    shape: ModelShape,
    tokens: StageTokens,
    *,
    trains: Trains = Trains(),
    logits_to_keep: bool = True,
    window_patches: int | None = None,
    full_attention_blocks: int | None = None,
) -> list[float]:
    """Model FLOPs (:attr:`Flops.model`) of each row on its own: what the time of a micro-batch is made of. Their
    sum is :func:`flops`'s ``model`` for the same rows."""
    c = 6 if trains.llm else 4
    layer, head = shape.layers * layer_matmul_params(shape), lm_head_params(shape)
    attention = 12 * shape.layers * shape.hidden
    window, full = _vision_settings(shape, window_patches, full_attention_blocks)
    unit = shape.merge**2
    per_patch = 2 * unit * (shape.vision_depth * vision_block_params(shape) + patch_embed_params(shape))
    merger = 2 * merger_matmul_params(shape)
    block_factor, merger_factor = 1 + 2 * trains.vision, 1 + trains.vision + trains.aligner
    trained = tokens.trained_tokens if logits_to_keep and tokens.trained_tokens is not None else None
    sizes = tokens.images or [[v] if v else [] for v in tokens.image_tokens]
    out: list[float] = []
    for k, (s, v) in enumerate(zip(tokens.lengths, tokens.image_tokens, strict=True)):
        kept = s if trained is None else min(trained[k] + 1, s)
        vision_attention = sum(_vision_attention(shape, unit * image, window, full) for image in sizes[k])
        vision = (per_patch * v + vision_attention) * block_factor + merger * v * merger_factor
        out.append(float(c * (layer * s + head * kept) + attention * s * s + vision))
    return out


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


# ---------------------------------------------------------------------------------------------------------------
# Time: compute at an MFU, plus what does not scale with tokens


@dataclass(frozen=True)
class Parallelism:
    """How a stage spreads over its GPUs, as far as its time depends on it."""

    world: int
    """GPUs (processes) in all."""
    nodes: int = 1
    zero_stage: int = 2
    """DeepSpeed ZeRO stage; 0 = plain data parallelism (DDP)."""
    offload_optimizer: bool = False
    offload_params: bool = False
    overlap_comm: bool = False
    """DeepSpeed's ``overlap_comm``: gradient reduction (and ZeRO-3's gathers) run beside the compute."""
    sequence_parallel: int = 1

    @property
    def data_parallel(self) -> int:
        return max(1, self.world // self.sequence_parallel)


@dataclass(frozen=True)
class Overheads:
    """What a stage costs besides its FLOPs, where no GPU figure decides it (assumptions, stated)."""

    micro_batch_s: float = 0.03
    """Per micro-batch and GPU: launching the ~4,000 kernels of a forward, recompute and backward of 28 decoder
    layers and the 32-block vision tower (~5 us each when the GPU outruns the CPU), the collator and the Trainer's
    Python; nothing of it shrinks with fewer tokens."""
    cpu_adam_params_per_s: float = 3e9
    """DeepSpeed's CPU Adam with optimizer offload, parameters updated per second per node: memory-bound at ~100
    GB/s of a 2-socket server's bandwidth over ~32 bytes per parameter (fp32 weight, gradient, two moments)."""
    inter_node_bytes_per_s: float = 25e9
    """Per GPU between nodes: one 200 Gb/s InfiniBand port per GPU (a DGX A100's 8 x HDR)."""


@dataclass(frozen=True)
class StepCosts:
    """The token-independent parts of a stage's time, per micro-batch and per optimizer step."""

    micro_batch_comm_s: float
    """Collectives of one micro-batch: ZeRO-2's gradient reduce-scatter, ZeRO-3's parameter gathers as well."""
    overlapped: bool
    """Whether that communication runs beside the compute (then only what the compute cannot hide costs time)."""
    micro_batch_fixed_s: float
    step_s: float
    """Per optimizer step: the optimizer itself (on the GPU, or CPU Adam with offload) and the parameter
    all-gather that follows it under ZeRO-1/2."""


def step_costs(
    par: Parallelism,
    gpu: Gpu,
    *,
    trainable_params: float,
    params: float,
    backward_params: float,
    gradient_checkpointing: bool,
    overheads: Overheads = Overheads(),
) -> StepCosts:
    """Communication and optimizer time from bytes over bandwidths (bf16 gradients and parameters, 2 bytes each;
    ring collectives move ``(n-1)/n`` of the data through each GPU's link).

    ``params``: every parameter (ZeRO-3 gathers all of them for the forward); ``backward_params``: those the
    backward passes through (the language model; gathered again for the backward, and for the recompute)."""
    n = par.world
    link = gpu.link_bytes_per_s if par.nodes <= 1 else min(gpu.link_bytes_per_s, overheads.inter_node_bytes_per_s)
    ring = (n - 1) / n / link if n > 1 else 0.0
    grads = 2 * trainable_params
    adam_on_gpu = 32 * trainable_params / n / gpu.memory_bytes_per_s  # fp32 weight, gradient, moments: read+write
    cpu_adam = trainable_params / par.nodes / overheads.cpu_adam_params_per_s
    host = 2 / gpu.host_bytes_per_s  # seconds per parameter copied between host and device, bf16
    if par.zero_stage >= 3:
        gathers = params + backward_params * (2 if gradient_checkpointing else 1)
        comm = 2 * gathers * ring + grads * ring
        if par.offload_params:
            comm += gathers / n * host  # each GPU first copies its shard up from the host, for every gather
        if par.offload_optimizer:
            comm += trainable_params / n * host  # its gradient shard down to the optimizer
        step = cpu_adam if par.offload_optimizer else adam_on_gpu
        if par.offload_optimizer and not par.offload_params:
            step += trainable_params / n * host  # the updated shard back up
        return StepCosts(comm, par.overlap_comm, overheads.micro_batch_s, step)
    if par.zero_stage in (1, 2):
        # ZeRO-2 keeps only its shard of the gradients, so it reduce-scatters after every micro-batch; ZeRO-1
        # accumulates whole gradients and reduces once a step.
        per_micro = grads * ring if par.zero_stage == 2 else 0.0
        step = (grads * ring if par.zero_stage == 1 else 0.0) + 2 * trainable_params * ring  # + the params' gather
        if par.offload_optimizer:
            step += cpu_adam + 2 * trainable_params / n * host
        else:
            step += adam_on_gpu
        return StepCosts(per_micro, par.overlap_comm, overheads.micro_batch_s, step)
    # DDP: one all-reduce of the gradients a step (reduce-scatter + all-gather), the optimizer on every GPU.
    return StepCosts(
        0.0, False, overheads.micro_batch_s, 2 * grads * ring + 32 * trainable_params / gpu.memory_bytes_per_s
    )


def dealt(samples: int, ranks: int, seed: int) -> list[int]:
    """The samples an epoch trains on, in the order ms-swift's ``BatchSamplerShard`` deals them: a seeded
    permutation (Python's, not torch's: the same spread, not the same order) cut to ``samples // ranks`` per rank;
    the last ``samples % ranks`` are never seen."""
    order = list(range(samples))
    random.Random(seed).shuffle(order)
    return order[: samples // ranks * ranks]


def micro_batches(
    sample_flops: Sequence[float],
    *,
    ranks: int,
    micro_batch: int,
    seed: int,
    lengths: Sequence[int] | None = None,
    padding_flops_per_token: float = 0.0,
) -> list[list[float]]:
    """Each micro-step's FLOPs on each data-parallel rank: the samples :func:`dealt`, rank ``r`` taking every
    ``ranks``-th from ``r`` (as ``BatchSamplerShard`` does), ``micro_batch`` at a time.

    ``lengths`` with ``padding_flops_per_token``: a micro-batch of several rows padded to its longest (no
    padding-free): the padding tokens run through the linear layers too."""
    per_rank = len(sample_flops) // ranks
    order = dealt(len(sample_flops), ranks, seed)
    out: list[list[float]] = []
    for start in range(0, per_rank, micro_batch):
        step: list[float] = []
        for r in range(ranks):
            picked = order[r + start * ranks : r + min(start + micro_batch, per_rank) * ranks : ranks]
            total = sum(sample_flops[i] for i in picked)
            if lengths is not None and padding_flops_per_token and len(picked) > 1:
                longest = max(lengths[i] for i in picked)
                total += padding_flops_per_token * sum(longest - lengths[i] for i in picked)
            step.append(total)
        out.append(step)
    return out


@dataclass(frozen=True)
class Timing:
    """One pass over a stage's data (an epoch), in seconds of wall time."""

    compute_s: float
    """The slowest rank's compute at each micro-step, summed: every micro-step ends in a collective, so the
    others wait for it."""
    balanced_s: float
    """The same FLOPs spread evenly over the ranks: ``compute_s - balanced_s`` is the waiting for stragglers."""
    communication_s: float
    """Collectives the compute does not hide."""
    fixed_s: float
    """Per micro-batch launch and framework time."""
    optimizer_s: float

    @property
    def wall_s(self) -> float:
        return self.compute_s + self.communication_s + self.fixed_s + self.optimizer_s

    def scaled(self, factor: float) -> Timing:
        return Timing(*(factor * getattr(self, f.name) for f in fields(self)))


def epoch_time(
    steps: Sequence[Sequence[float]], *, flops_per_s: float, costs: StepCosts, optimizer_steps: int
) -> Timing:
    """Wall time of micro-steps (:func:`micro_batches`) at ``flops_per_s`` per GPU, with ``optimizer_steps`` steps."""
    compute = communication = balanced = 0.0
    ranks = 1
    for step in steps:
        ranks = max(ranks, len(step))
        slowest = max(step) / flops_per_s
        balanced += sum(step) / len(step) / flops_per_s
        compute += slowest
        if costs.overlapped:
            communication += max(0.0, costs.micro_batch_comm_s - slowest)
        else:
            communication += costs.micro_batch_comm_s
    return Timing(
        compute_s=compute,
        balanced_s=balanced,
        communication_s=communication,
        fixed_s=costs.micro_batch_fixed_s * len(steps),
        optimizer_s=costs.step_s * optimizer_steps,
    )
