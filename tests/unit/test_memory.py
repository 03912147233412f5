"""The per-stage GPU memory planner: terms by hand, monotonicity, the paper's curriculum, and its activation term
against what the tiny model really keeps for the backward pass on CPU."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spinegpt.train import curriculum, memory
from spinegpt.train.memory import GiB, ModelShape, Setting

from ..conftest import CURRICULA

SHAPE = ModelShape(
    hidden=1000,
    intermediate=4000,
    layers=10,
    heads=10,
    kv_heads=2,
    vocab=50_000,
    tie_embeddings=False,
    vision_depth=2,
    vision_hidden=100,
    vision_intermediate=400,
    vision_out=1000,
)
BASE = Setting(
    max_length=2048,
    micro_batch=1,
    gradient_checkpointing=True,
    fused_loss=False,
    sequence_parallel=1,
    zero_stage=2,
    offload_optimizer=False,
    offload_params=False,
    dtype_bytes=2,
    train_llm=True,
    train_vit=False,
    train_aligner=False,
    lora_rank=None,
    attention_quadratic=False,
    image_tokens=256,
    reduce_bucket=5e8,
    allgather_bucket=5e8,
)


def test_parameter_counts_match_the_published_models() -> None:
    seven = memory.PUBLISHED["Qwen/Qwen2.5-VL-7B-Instruct"]
    assert (seven.llm_params() + seven.vision_params()) / 1e9 == pytest.approx(8.29, abs=0.01)  # "8.29B"
    assert seven.vision_params() / 1e9 == pytest.approx(0.68, abs=0.01)


def test_terms_by_hand() -> None:
    result = memory.estimate(SHAPE, BASE, gpus=8, nodes=1, gpu_mem_gb=80)
    kv = 2 * 100
    layer_params = 1000 * 1000 + 2 * 1000 * kv + (1000 + 2 * kv) + 1000 * 1000 + 3 * 1000 * 4000 + 2 * 1000
    llm = 10 * layer_params + 2 * 50_000 * 1000 + 1000
    assert SHAPE.llm_params() == llm
    total = llm + SHAPE.vision_params()
    terms = result.terms
    assert terms["weights"] == total * 2  # ZeRO-2: whole bf16 weights on every GPU
    # 1/8 of the bf16 grads and of their fp32 copy + comm buckets (the reduce bucket capped at the trainable
    # parameters, double-buffered)
    assert terms["gradients"] == llm * 2 / 8 + llm * 4 / 8 + (2 * min(5e8, llm) + min(5e8, total)) * 2
    assert terms["optimizer"] == llm * 12 / 8  # fp32 master + Adam m, v, partitioned
    per_token_layer = 2 * (8.25 * 1000 + 2 * kv + 4 * 4000) + 2.2 * 1000 * 2
    assert terms["activations"] == pytest.approx(10 * 2048 * 1000 * 2 + 2048 * per_token_layer + 3 * 2048 * 1000 * 2)
    assert terms["logits_and_loss"] == 2048 * 50_000 * (2 + 12)
    assert terms["runtime"] == pytest.approx(2 * GiB + 0.05 * sum(v for k, v in terms.items() if k != "runtime"))
    assert result.total == pytest.approx(sum(terms.values()))


def test_zero3_offload_and_fused_loss_terms() -> None:
    s = replace(BASE, zero_stage=3, offload_optimizer=True, offload_params=True, fused_loss=True)
    terms = memory.estimate(SHAPE, s, gpus=8, nodes=1, gpu_mem_gb=80).terms
    assert terms["optimizer"] == 0
    assert terms["weights"] == (2 * SHAPE.layer_params() + 50_000 * 1000) * 2  # only the gathered working set
    # 2048 tokens in ceil(50000 / 1000) = 50 chunks -> 41 tokens -> a power-of-two chunk of 64 tokens; and the
    # lm_head weight's gradient (vocab x hidden, bf16), computed in the forward pass and held for the backward
    assert terms["logits_and_loss"] == 64 * 50_000 * 8.0 + 50_000 * 1000 * 2
    gathered = memory.estimate(SHAPE, replace(s, weights_gathered=True), gpus=8, nodes=1, gpu_mem_gb=80).terms
    assert gathered["weights"] == (SHAPE.llm_params() + SHAPE.vision_params()) * 2  # every parameter kept gathered


SEVEN = memory.PUBLISHED["Qwen/Qwen2.5-VL-7B-Instruct"]


@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_model_states_are_never_below_deepspeeds_own_estimator(gpus: int, nodes: int) -> None:
    """DeepSpeed's estimate_*_model_states_mem_needs for the same trainable / total parameters and world size is a
    floor: the planner's weights + gradients + optimizer may not be below it."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    total = SEVEN.llm_params() + SEVEN.vision_params()
    for train_vit in (False, True):
        setting = replace(BASE, max_length=16384, train_vit=train_vit, train_aligner=train_vit)
        trainable = memory.trainable_params(SEVEN, setting)
        # The estimators take every parameter as trainable: the frozen ones add their 16-bit weights only.
        frozen = 2 * (total - trainable)
        for zero in (2, 3):
            terms = memory.estimate(SEVEN, replace(setting, zero_stage=zero), gpus, nodes, 80).terms
            states = terms["weights"] + terms["gradients"] + terms["optimizer"]
            if zero == 2:
                _, floor = estimate_zero2_model_states_mem_needs(trainable, gpus, nodes, cpu_offload=False)
                floor += frozen
            else:
                largest = SEVEN.vocab * SEVEN.hidden  # the embedding (and lm_head): the biggest layer
                _, floor, _ = estimate_zero3_model_states_mem_needs(
                    trainable, largest, gpus, nodes, cpu_offload=False, cpu_offload_params=False
                )
                floor += frozen / (gpus * nodes)
            assert states >= floor, (zero, train_vit, states / GiB, floor / GiB)


def test_sequence_parallel_is_offered_as_ms_swift_can_run_it() -> None:
    """Qwen2.5-VL-7B has 4 KV heads: ms-swift splits 2 and 4 as Ulysses; 8 needs a ring, which needs padding_free
    with flash attention. Under sequence parallelism the fused loss is off (ms-swift computes the loss itself)."""
    assert memory.sequence_parallel_split(SEVEN, 4) == (4, 1) and memory.sequence_parallel_split(SEVEN, 8) == (4, 2)
    assert memory.sequence_parallel_sizes(SEVEN, 8, ring_attention=False) == [2, 4]
    assert memory.sequence_parallel_sizes(SEVEN, 8, ring_attention=True) == [2, 4, 8]
    fused = replace(BASE, max_length=49152, fused_loss=True)
    one = memory.estimate(SEVEN, fused, 8, 1, 80)
    two = memory.estimate(SEVEN, replace(fused, sequence_parallel=2), 8, 1, 80)
    assert two.terms["logits_and_loss"] == 49152 / 2 * SEVEN.vocab * (2 + 12)  # materialised for half the tokens
    assert two.terms["logits_and_loss"] > one.terms["logits_and_loss"] and any("fused loss off" in n for n in two.notes)
    for fix in memory.fixes(SEVEN, replace(BASE, max_length=400_000, zero_stage=3), 8, 1, 80):
        assert fix[0] != "sequence parallel 8"  # never offered without ring attention


@pytest.mark.parametrize("field", ["max_length", "zero_stage", "gpus"])
def test_monotone(field: str) -> None:
    def total(**kw: int) -> float:
        gpus = kw.pop("gpus", 8)
        return memory.estimate(SHAPE, replace(BASE, **kw), gpus=gpus, nodes=1, gpu_mem_gb=80).total

    if field == "max_length":
        values = [total(max_length=n) for n in (1024, 4096, 16384, 49152)]
        assert values == sorted(values) and len(set(values)) == 4
    elif field == "zero_stage":
        values = [total(zero_stage=z) for z in (0, 1, 2, 3)]
        assert values == sorted(values, reverse=True) and len(set(values)) == 4
    else:
        values = [total(gpus=g) for g in (1, 2, 4, 8)]
        assert values == sorted(values, reverse=True) and len(set(values)) == 4


def test_paper_curriculum_fits_on_8_a100_and_says_why_stage3_needs_the_fused_loss() -> None:
    loaded = curriculum.load(CURRICULA / "spinegpt.yaml")
    c = loaded.curriculum
    reports = [memory.stage_report(c, s, loaded.base_dir, 8, 1, 80) for s in c.stages]
    assert all(r["fits"] for r in reports), [(r["stage"], r["total_gib"]) for r in reports]
    assert reports[2]["assumes"]["zero_stage"] == 3 and reports[2]["cpu_offload_gib_per_node"] > 50
    unfused = curriculum.load(CURRICULA / "spinegpt.yaml", ["stages.reports.use_liger_kernel=false"])
    stage3 = memory.stage_report(unfused.curriculum, unfused.curriculum.stages[2], loaded.base_dir, 8, 1, 80)
    assert not stage3["fits"] and stage3["terms_gib"]["logits_and_loss"] > 50  # tens of GB of logits at 49k
    assert stage3["fixes"][0]["setting"].startswith("use_liger_kernel: true") and stage3["fixes"][0]["total_gib"] < 80


def _saved_activation_bytes(model: object, length: int, checkpointing: bool) -> int:
    """Bytes of the tensors the language model's decoder keeps for the backward pass (parameters excluded)."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}  # type: ignore[attr-defined]
    seen: dict[int, int] = {}
    state = {"on": False}
    text_model = model.model.language_model  # type: ignore[attr-defined]
    hooks = [
        text_model.register_forward_pre_hook(lambda *a: state.__setitem__("on", True)),
        text_model.register_forward_hook(lambda *a: state.__setitem__("on", False)),
    ]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if state["on"] and storage.data_ptr() not in params and t.is_floating_point():
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[attr-defined]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=torch.randint(0, 1000, (1, length)))  # type: ignore[operator]
    finally:
        for hook in hooks:
            hook.remove()
    return sum(seen.values())


@pytest.mark.parametrize("length", [512, 2048])
def test_activation_term_matches_what_the_tiny_model_keeps(tiny_model: object, length: int) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model, attn_implementation="sdpa", dtype=torch.float32)
    model.train()
    measured = _saved_activation_bytes(model, length, checkpointing=False)
    shape = memory.model_shape("builtin:tiny-qwen2_5_vl")
    setting = replace(BASE, max_length=length, gradient_checkpointing=False, dtype_bytes=4)
    predicted = memory.estimate(shape, setting, gpus=1, nodes=1, gpu_mem_gb=80).terms["activations"]
    assert predicted == pytest.approx(measured, rel=0.25), (predicted, measured)
