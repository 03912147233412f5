"""Predict each stage's peak GPU memory before it runs, term by term, and say what makes it fit.

    spinegpt plan curricula/spinegpt.yaml --memory --gpus 8 --gpu-mem-gb 80 [--nodes 1]

Terms, per GPU, for world size N = GPUs x nodes and ``s`` tokens per micro-batch sample (``max_length``, divided by
the sequence-parallel size):

* weights: bf16 parameters; whole on every GPU under DDP / ZeRO-1/2, 1/N under ZeRO-3 plus the layers gathered
  for compute (two decoder layers and the embedding), nothing resident with parameter offload;
* gradients: of the trainable parameters; partitioned 1/N under ZeRO-2/3, plus ZeRO-2's communication buckets;
* optimizer: Adam's fp32 master copy, momentum and variance, 12 bytes per trainable parameter (8 when training in
  fp32), partitioned under ZeRO-1/2/3, on the CPU with optimizer offload;
* activations: what a forward pass keeps for the backward pass. Per decoder layer and token,
  bytes·(8.25·h + 2·kv + 4·I) plus 2.2·h·(4 - bytes) for RMSNorm's fp32 upcasts (h hidden, kv key/value width,
  I MLP width) -- counted from the tensors Qwen2.5-VL's layers save (``tests/unit/test_memory.py`` measures them). With
  gradient checkpointing only each layer's input is kept, and one layer is recomputed at a time;
* logits and loss: tokens x vocabulary (151,936 for Qwen) x (bytes + 12): the logits, the fp32 log-softmax kept for
  the backward and its gradients. Tens of GB at 49k tokens -- unless a fused, chunked linear+cross-entropy (Liger)
  computes the loss a chunk of tokens at a time;
* vision encoder: the image patches (4 per visual token) through the vision tower; a frozen tower keeps nothing for
  the backward, so only one block's working set counts;
* runtime: CUDA context, NCCL buffers and allocator fragmentation (2 GiB + 5%).

The architecture comes from the model's own config (a local folder, the offline tiny model, the hub cache) or,
offline, from the published configs of Qwen2.5-VL 3B/7B/32B/72B.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spinegpt import model_ref
from spinegpt.data_mixes.audit import FACTOR, pixel_limits
from spinegpt.offline import tiny_model
from spinegpt.train import deepspeed_configs, swift_adapter
from spinegpt.train.curriculum import Curriculum, Stage

GiB = 1024**3
RUNTIME_FIXED = 2 * GiB
FRAGMENTATION = 0.05


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tie_embeddings: bool
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    vision_out: int
    patch: int = 14
    temporal_patch: int = 2
    merge: int = 2

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def layer_params(self) -> int:
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        attention = h * h + 2 * h * kv + (h + 2 * kv) + h * h  # q, k, v (with biases), o
        return attention + 3 * h * i + 2 * h

    def llm_params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tie_embeddings else 2)
        return self.layers * self.layer_params() + embeddings + self.hidden

    def vision_params(self) -> int:
        vh, vi = self.vision_hidden, self.vision_intermediate
        block = 4 * vh * vh + 4 * vh + 3 * vh * vi + 2 * vi + vh + 2 * vh  # qkv, proj, gate/up/down, 2 norms
        patch_embed = 3 * self.temporal_patch * self.patch**2 * vh
        return self.vision_depth * block + patch_embed + self.merger_params()

    def merger_params(self) -> int:
        """The aligner: LayerNorm, then an MLP from 2x2 merged patches to the language model's width."""
        merged = self.vision_hidden * self.merge**2
        return self.vision_hidden + merged * merged + merged + merged * self.vision_out + self.vision_out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        text = config.get("text_config") or config
        vision = config.get("vision_config") or {}
        return cls(
            hidden=text["hidden_size"],
            intermediate=text["intermediate_size"],
            layers=text["num_hidden_layers"],
            heads=text["num_attention_heads"],
            kv_heads=text.get("num_key_value_heads", text["num_attention_heads"]),
            vocab=int(text.get("vocab_size") or config["vocab_size"]),
            tie_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            vision_depth=vision.get("depth", 0),
            vision_hidden=vision.get("hidden_size", 0),
            vision_intermediate=vision.get("intermediate_size", 0),
            vision_out=vision.get("out_hidden_size", text["hidden_size"]),
            patch=vision.get("patch_size", 14),
            temporal_patch=vision.get("temporal_patch_size", 2),
            merge=vision.get("spatial_merge_size", 2),
        )


def _published(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, tie: bool) -> ModelShape:
    return ModelShape(hidden, inter, layers, heads, kv, vocab, tie, 32, 1280, 3420, hidden)


# Qwen2.5-VL-*-Instruct config.json values, for planning without network access.
PUBLISHED = {
    "Qwen/Qwen2.5-VL-3B-Instruct": _published(2048, 11008, 36, 16, 2, 151936, True),
    "Qwen/Qwen2.5-VL-7B-Instruct": _published(3584, 18944, 28, 28, 4, 152064, False),
    "Qwen/Qwen2.5-VL-32B-Instruct": _published(5120, 27648, 64, 40, 8, 152064, False),
    "Qwen/Qwen2.5-VL-72B-Instruct": _published(8192, 29568, 80, 64, 8, 152064, False),
}


def model_shape(ref: str) -> ModelShape:
    """The architecture of ``ref`` from its own config, wherever that can be read without side effects."""
    if ref.startswith(model_ref.BUILTIN_PREFIX):
        return ModelShape.from_config(
            {
                "text_config": tiny_model.TEXT_CONFIG,
                "vision_config": tiny_model.VISION_CONFIG,
                "tie_word_embeddings": False,
            }
        )
    resolved = model_ref.resolve(ref)
    config_path = Path(resolved) / "config.json"
    if not config_path.is_file():
        from huggingface_hub import try_to_load_from_cache

        # An id the hub client rejects (HFValidationError is a ValueError) simply is not in the cache.
        with contextlib.suppress(ValueError, OSError):
            cached = try_to_load_from_cache(ref, "config.json")
            config_path = Path(cached) if isinstance(cached, str) else config_path
    if config_path.is_file():
        return ModelShape.from_config(json.loads(config_path.read_text()))
    key = ref.split("@")[0]
    if key in PUBLISHED:
        return PUBLISHED[key]
    raise ValueError(
        f"cannot read the architecture of {ref!r}: no local config.json, not in the hub cache, "
        f"and not one of {', '.join(PUBLISHED)}"
    )


@dataclass(frozen=True)
class Setting:
    """What the estimate depends on, for one stage; the fixes are variations of it."""

    max_length: int
    micro_batch: int
    gradient_checkpointing: bool
    fused_loss: bool
    sequence_parallel: int
    zero_stage: int
    offload_optimizer: bool
    offload_params: bool
    dtype_bytes: int
    train_llm: bool
    train_vit: bool
    train_aligner: bool
    lora_rank: int | None
    attention_quadratic: bool
    image_tokens: int
    reduce_bucket: float = 0.0
    allgather_bucket: float = 0.0
    weights_gathered: bool = False
    """ZeRO-3 keeping every parameter gathered (``deepspeed_configs.KEEP_GATHERED``: the fused loss needs it)."""
    ring_attention: bool = False
    """Sequence parallelism beyond the KV heads (ring attention) can run: padding-free with flash attention."""


@dataclass
class Estimate:
    terms: dict[str, float]
    """Bytes per GPU, by term."""
    cpu_bytes_per_node: float
    setting: Setting
    capacity: float
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.terms.values())

    @property
    def headroom(self) -> float:
        return self.capacity - self.total

    @property
    def verdict(self) -> str:
        """``fits`` with a margin to spare, ``tight`` within the margin (one long row away from out-of-memory, and a
        seeded resume replays that row), ``does not fit``."""
        if self.headroom < 0:
            return "does not fit"
        return "fits" if self.headroom >= MARGIN * self.capacity else "tight"

    @property
    def fits(self) -> bool:
        return self.verdict != "does not fit"


USABLE = 79.15 / 80
"""What a card sold as N GB reports to CUDA, per GB: an 80 GB A100 or H100 shows about 79.1 GiB."""
CPU_BUFFER_FACTOR = 1.5
"""DeepSpeed's estimate_zero3_model_states_mem_needs: pinned buffers on top of the offloaded states."""
MARGIN = 0.08
"""Headroom below which a plan is ``tight``: the estimate's own error and the longest row's spread."""


def usable_capacity(nominal_gb: float) -> float:
    """Bytes a program can actually allocate on a card sold as ``nominal_gb`` GB."""
    return nominal_gb * USABLE * GiB


def _bucket(zero: dict[str, Any], key: str, default: float) -> float:
    value = zero.get(key, default)
    return float(value) if isinstance(value, int | float) else default


def setting_for(stage: Stage, curriculum: Curriculum, base_dir: Path) -> Setting:
    zero_stage, offload_opt, offload_param, reduce_bucket, allgather_bucket = 0, False, False, 0.0, 0.0
    gathered = False
    if stage.deepspeed:
        named = deepspeed_configs.load(deepspeed_configs.resolve(stage.deepspeed, base_dir))
        config, _ = deepspeed_configs.for_stage(named, fused_loss=stage.use_liger_kernel)  # as the engine reads it
        gathered = deepspeed_configs.keeps_weights_gathered(config)
        zero = config.get("zero_optimization", {})
        zero_stage = int(zero.get("stage", 0))
        offload_opt = (zero.get("offload_optimizer") or {}).get("device") in ("cpu", "nvme")
        offload_param = (zero.get("offload_param") or {}).get("device") in ("cpu", "nvme")
        reduce_bucket = _bucket(zero, "reduce_bucket_size", 5e8)
        allgather_bucket = _bucket(zero, "allgather_bucket_size", 5e8)
    # The pixel limits the engine will resize images with (the shell's MAX_PIXELS wins over the curriculum's env,
    # as it does for the engine): one image's visual tokens at most.
    model_dir = Path(model_ref.resolve(curriculum.model))
    has_config = (model_dir / "preprocessor_config.json").is_file()
    _, max_pixels = pixel_limits({**curriculum.env, **os.environ}, model_dir if has_config else None)
    attn = stage.attn_impl or curriculum.attn_impl
    return Setting(
        max_length=stage.max_length,
        micro_batch=stage.per_device_train_batch_size,
        gradient_checkpointing=stage.gradient_checkpointing,
        fused_loss=stage.use_liger_kernel,
        sequence_parallel=stage.sequence_parallel_size,
        zero_stage=zero_stage,
        offload_optimizer=offload_opt,
        offload_params=offload_param,
        dtype_bytes={"bfloat16": 2, "float16": 2, "float32": 4}[curriculum.torch_dtype],
        train_llm=not stage.freeze_llm,
        train_vit=not stage.freeze_vit,
        train_aligner=not stage.freeze_aligner,
        lora_rank=stage.lora_rank if stage.tuner_type == "lora" else None,
        attention_quadratic=attn == "eager",
        image_tokens=min(stage.max_length, max_pixels // FACTOR**2),
        reduce_bucket=reduce_bucket,
        allgather_bucket=allgather_bucket,
        weights_gathered=gathered,
        ring_attention=(stage.padding_free or stage.packing) and swift_adapter.attention(attn)[0] == "flash_attn",
    )


def layer_activation_bytes(
    tokens: float, hidden: int, kv: int, intermediate: int, heads: int, b: int, quadratic: bool
) -> float:
    """What one decoder layer keeps for the backward pass over ``tokens`` tokens (no checkpointing)."""
    per_token = b * (8.25 * hidden + 2 * kv + 4 * intermediate) + 2.2 * hidden * (4 - b)
    scores = heads * tokens * tokens * (b + 4) if quadratic else 0.0  # eager attention keeps the s x s weights
    return tokens * per_token + scores


def trainable_params(shape: ModelShape, s: Setting) -> float:
    if s.lora_rank is not None:
        h, kv, i, r = shape.hidden, shape.kv_dim, shape.intermediate, s.lora_rank
        per_layer = r * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h))  # q, o, k, v, gate, up, down
        return shape.layers * per_layer
    params = shape.llm_params() if s.train_llm else 0
    if s.train_vit:
        params += shape.vision_params() - shape.merger_params()
    if s.train_aligner:
        params += shape.merger_params()
    return float(params)


def estimate(shape: ModelShape, s: Setting, gpus: int, nodes: int, gpu_mem_gb: float) -> Estimate:
    world = gpus * nodes
    b = s.dtype_bytes
    total_params = shape.llm_params() + shape.vision_params()
    trainable = trainable_params(shape, s)
    notes: list[str] = []

    if s.zero_stage < 3 or s.weights_gathered:
        weights = float(total_params * b)
    else:
        working = (2 * shape.layer_params() + shape.vocab * shape.hidden) * b
        weights = (0.0 if s.offload_params else total_params * b / world) + working

    gradients = trainable * b / world if s.zero_stage >= 2 else trainable * b
    if s.zero_stage >= 1 and b < 4 and not s.offload_optimizer:
        # The optimizer steps on fp32 gradients: DeepSpeed keeps an fp32 copy of its gradient partition beside the
        # 16-bit one (the "4_grads_32bit" of its own estimate_zero2_model_states_mem_needs).
        gradients += 4 * trainable / world
    if s.zero_stage in (1, 2):
        # DeepSpeed's stage-1/2 optimizer allocates its communication buckets (the reduce bucket twice when it
        # overlaps communication); a bucket never holds more than the parameters there are.
        gradients += (2 * min(s.reduce_bucket, trainable) + min(s.allgather_bucket, total_params)) * b
    optimizer_per_param = 12 if b < 4 else 8
    optimizer_total = trainable * optimizer_per_param
    optimizer = optimizer_total  # DDP: every rank steps every parameter
    if s.zero_stage >= 1:
        optimizer = 0.0 if s.offload_optimizer else optimizer_total / world

    tokens = s.max_length / s.sequence_parallel * s.micro_batch
    layer = layer_activation_bytes(
        tokens,
        shape.hidden,
        shape.kv_dim,
        shape.intermediate,
        shape.heads // s.sequence_parallel,
        b,
        s.attention_quadratic,
    )
    edges = 3 * tokens * shape.hidden * b  # embeddings out, final norm, lm_head input
    if s.gradient_checkpointing:
        activations = shape.layers * tokens * shape.hidden * b + layer + edges
    else:
        activations = shape.layers * layer + edges

    # ms-swift computes the loss itself, unfused, under sequence parallelism (its Seq2SeqTrainer drops the labels
    # Liger's forward would fuse): each rank then holds the logits of its share of the tokens.
    fused = s.fused_loss and s.sequence_parallel == 1
    if s.fused_loss and not fused:
        notes.append("sequence parallelism turns the fused loss off (ms-swift): the logits are materialised")
    if fused:
        chunks = math.ceil(shape.vocab / shape.hidden)
        chunk = 2 ** math.ceil(math.log2(max(1.0, tokens / chunks)))
        # A chunk's logits and their gradient in fp32, and the lm_head weight's gradient, which the fused loss
        # computes during the forward pass and holds until the backward pass hands it over.
        logits = chunk * shape.vocab * 8.0 + shape.vocab * shape.hidden * b
    else:
        logits = tokens * shape.vocab * (b + 12.0)

    patches = s.image_tokens * shape.merge**2 * s.micro_batch / s.sequence_parallel
    vision_layer = layer_activation_bytes(
        patches, shape.vision_hidden, shape.vision_hidden, shape.vision_intermediate, 16, b, False
    )
    if s.train_vit:
        depth_term = (
            shape.vision_depth * patches * shape.vision_hidden * b + vision_layer
            if s.gradient_checkpointing
            else shape.vision_depth * vision_layer
        )
        vision = depth_term
    else:
        vision = vision_layer  # forward working set of one block; nothing is kept for the backward

    terms = {
        "weights": weights,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": activations,
        "logits_and_loss": logits,
        "vision_encoder": vision,
    }
    terms["runtime"] = RUNTIME_FIXED + FRAGMENTATION * sum(terms.values())
    ranks_per_node = gpus
    cpu = 0.0
    if s.offload_optimizer:
        # Adam's states, plus the fp32 gradients DeepSpeedCPUAdam steps on (4 bytes a trainable parameter), plus
        # the pinned staging buffers DeepSpeed's own estimator allows for (x1.5): about 2x the states alone.
        cpu += (optimizer_total + 4 * trainable) * CPU_BUFFER_FACTOR / world * ranks_per_node
    if s.offload_params:
        cpu += total_params * b / world * ranks_per_node
    if s.attention_quadratic:
        notes.append("eager attention keeps s x s attention weights per head: use flash_attn or sdpa")
    return Estimate(terms, cpu, s, usable_capacity(gpu_mem_gb), notes)


FIXES = (
    (
        "gradient checkpointing",
        lambda s: not s.gradient_checkpointing,
        lambda s: replace(s, gradient_checkpointing=True),
        "gradient_checkpointing: true",
    ),
    (
        "fused chunked loss",
        lambda s: not s.fused_loss,
        lambda s: replace(s, fused_loss=True),
        "use_liger_kernel: true (gpu extra)",
    ),
    (
        "micro-batch 1",
        lambda s: s.micro_batch > 1,
        lambda s: replace(s, micro_batch=1),
        "per_device_train_batch_size: 1 (raise gradient_accumulation_steps to keep the global batch)",
    ),
    (
        "CPU offload",
        lambda s: not (s.offload_optimizer and s.offload_params),
        lambda s: replace(s, zero_stage=3, offload_optimizer=True, offload_params=True),
        "deepspeed: zero3_offload",
    ),
)


def fixes(shape: ModelShape, s: Setting, gpus: int, nodes: int, gpu_mem_gb: float) -> list[tuple[str, str, float]]:
    """The cheapest changes, applied in order until the stage fits: (name, curriculum setting, new total)."""
    applied: list[tuple[str, str, float]] = []
    current = s
    if estimate(shape, current, gpus, nodes, gpu_mem_gb).fits:
        return applied
    for name, applies, change, how in FIXES:
        if applies(current):
            current = change(current)
            result = estimate(shape, current, gpus, nodes, gpu_mem_gb)
            applied.append((name, how, result.total))
            if result.fits:
                return applied
    for sp in sequence_parallel_sizes(shape, gpus * nodes, current.ring_attention):
        if sp <= current.sequence_parallel:
            continue
        current = replace(current, sequence_parallel=sp)
        result = estimate(shape, current, gpus, nodes, gpu_mem_gb)
        applied.append((f"sequence parallel {sp}", f"sequence_parallel_size: {sp}", result.total))
        if result.fits:
            return applied
    applied.append(("none fits", "more GPUs, a shorter max_length, or a smaller model", float("nan")))
    return applied


def sequence_parallel_split(shape: ModelShape, size: int) -> tuple[int, int]:
    """How ms-swift splits ``sequence_parallel_size``: Ulysses over gcd(KV heads, size) ranks, ring attention over
    the rest (``swift/sequence_parallel``). Qwen2.5-VL-7B has 4 KV heads: 2 and 4 are Ulysses, 8 needs a ring."""
    ulysses = math.gcd(shape.kv_heads, size)
    return ulysses, size // ulysses


def sequence_parallel_sizes(shape: ModelShape, world: int, ring_attention: bool) -> list[int]:
    """The sequence-parallel sizes that can run: dividing the world size, and within the KV heads unless ring
    attention can run (padding-free with flash attention; ms-swift refuses a ring under sdpa)."""
    return [
        size
        for size in range(2, world + 1)
        if world % size == 0 and (ring_attention or sequence_parallel_split(shape, size)[1] == 1)
    ]


def checkpoint_bytes(shape: ModelShape, s: Setting) -> float:
    """One saved checkpoint: the weights in the training precision, plus (full fine-tuning with ZeRO) the fp32
    master weights and Adam's two moments of every trainable parameter, 12 bytes each -- about 110 GB for a 7B."""
    weights = (shape.llm_params() + shape.vision_params()) * s.dtype_bytes
    trainable = trainable_params(shape, s)
    optimizer = trainable * (12 if s.dtype_bytes < 4 else 8)
    return weights + optimizer


def stage_report(
    curriculum: Curriculum, stage: Stage, base_dir: Path, gpus: int, nodes: int, gpu_mem_gb: float
) -> dict[str, Any]:
    shape = model_shape(curriculum.model)
    setting = setting_for(stage, curriculum, base_dir)
    result = estimate(shape, setting, gpus, nodes, gpu_mem_gb)
    return {
        "stage": stage.name,
        "terms_gib": {k: round(v / GiB, 2) for k, v in result.terms.items()},
        "total_gib": round(result.total / GiB, 2),
        "nominal_gb": gpu_mem_gb,
        "capacity_gib": round(result.capacity / GiB, 2),
        "headroom_gib": round(result.headroom / GiB, 2),
        "verdict": result.verdict,
        "fits": result.fits,
        "checkpoint_gb": round(checkpoint_bytes(shape, setting) / 1e9, 1),
        "cpu_offload_gib_per_node": round(result.cpu_bytes_per_node / GiB, 1),
        "fixes": [
            {"fix": n, "setting": how, "total_gib": round(t / GiB, 2)}
            for n, how, t in fixes(shape, setting, gpus, nodes, gpu_mem_gb)
        ],
        "notes": result.notes,
        "assumes": {
            "tokens_per_sample": setting.max_length,
            "micro_batch": setting.micro_batch,
            "image_tokens": setting.image_tokens,
            "zero_stage": setting.zero_stage,
            "params_b": round((shape.llm_params() + shape.vision_params()) / 1e9, 2),
            "trainable_b": round(trainable_params(shape, setting) / 1e9, 3),
        },
    }


def render(reports: list[dict[str, Any]], gpus: int, nodes: int) -> str:
    lines = [f"memory per GPU ({gpus} GPU(s) x {nodes} node(s)):"]
    for r in reports:
        verdict = {"fits": "fits", "tight": "TIGHT", "does not fit": "DOES NOT FIT"}[r["verdict"]]
        lines.append(
            f"  {r['stage']}: {r['total_gib']:.1f} GiB of {r['capacity_gib']:.1f} usable ({r['nominal_gb']:g} GB card)"
            f" -> {verdict}, {r['headroom_gib']:+.1f} GiB to spare"
        )
        lines.append("    " + ", ".join(f"{k} {v:.1f}" for k, v in r["terms_gib"].items()))
        if r["cpu_offload_gib_per_node"]:
            lines.append(f"    CPU memory for offloaded states: {r['cpu_offload_gib_per_node']:.0f} GiB per node")
        for fix in r["fixes"]:
            after = "" if math.isnan(fix["total_gib"]) else f" -> {fix['total_gib']:.1f} GiB"
            lines.append(f"    fix: {fix['fix']} ({fix['setting']}){after}")
        for note in r["notes"]:
            lines.append(f"    note: {note}")
    return "\n".join(lines)
