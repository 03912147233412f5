"""The cost model of issue 27 (train/cost.py), checked against hand computations."""

from __future__ import annotations

import random

import pytest

from spinegpt.train import cost
from spinegpt.train.cost import Flops, StageTokens
from spinegpt.train.memory import PUBLISHED, ModelShape

# hidden 64, MLP 128, 2 layers, 4 heads of 16, 2 kv heads (kv width 32), vocabulary 1000; a 2-block vision tower
# of width 32, MLP 64, out 64, patches 14x14 x 2 frames, 2x2 merge.
SMALL = ModelShape(
    hidden=64,
    intermediate=128,
    layers=2,
    heads=4,
    kv_heads=2,
    vocab=1000,
    tie_embeddings=False,
    vision_depth=2,
    vision_hidden=32,
    vision_intermediate=64,
    vision_out=64,
)
# Two rows of 10 and 20 tokens; the second holds one image of 4 visual tokens (16 patches).
ROWS = StageTokens(lengths=[10, 20], image_tokens=[0, 4])


def test_parameter_counts_by_hand() -> None:
    # q 64*64 + o 64*64 + k 64*32 + v 64*32 + gate/up/down 3*64*128 = 4096 + 4096 + 2048 + 2048 + 24576
    assert cost.layer_matmul_params(SMALL) == 36_864
    assert cost.lm_head_params(SMALL) == 64_000  # 1000 x 64
    assert cost.llm_matmul_params(SMALL) == 2 * 36_864 + 64_000
    # Qwen2.5-VL-7B: 2*3584^2 + 2*3584*512 + 3*3584*18944 = 25,690,112 + 3,670,016 + 203,685,888
    shape_7b = PUBLISHED["Qwen/Qwen2.5-VL-7B-Instruct"]
    assert cost.layer_matmul_params(shape_7b) == 233_046_016
    assert cost.default_full_attention_blocks(shape_7b) == 4  # blocks 7, 15, 23, 31
    # vision: block 4*32^2 + 3*32*64 = 4096 + 6144; patch embedding 3*2*14*14*32; merger 128^2 + 128*64
    assert cost.vision_block_params(SMALL) == 10_240
    assert cost.patch_embed_params(SMALL) == 37_632
    assert cost.merger_matmul_params(SMALL) == 24_576


def test_flops_by_hand() -> None:
    got = cost.flops(SMALL, ROWS, gradient_checkpointing=True)
    # T = 10 + 20 = 30 tokens, sum(s^2) = 100 + 400 = 500.
    # llm_params = 6 x (L x P_layer x T + V x h x T) = 6 x (2*36864*30 + 64000*30) = 6 x (2,211,840 + 1,920,000)
    assert got.llm_params == 24_791_040
    # attention = 12 x L x h x sum(s^2) = 12 * 2 * 64 * 500
    assert got.attention == 768_000
    # recompute = 2 x L x P_layer x T + 4 x L x h x sum(s^2) = 4,423,680 + 256,000 (no lm_head)
    assert got.recompute == 4_679_680
    # vision, 4 visual tokens = 16 patches, forward only:
    #   per patch 2 x (2 blocks * 10,240 + 37,632) x 16 = 2 * 58,112 * 16 = 1,859,584
    #   merger 2 x 24,576 x 4 visual tokens                               =   196,608
    #   attention, 2 windowed blocks (none of 7/15/23/31 in a 2-block tower), window min(64, 16) = 16:
    #     2 blocks x 4 x 32 x 16 x 16                                     =    65,536
    assert got.vision == 1_859_584 + 196_608 + 65_536
    assert got.total == 24_791_040 + 768_000 + 4_679_680 + 2_121_728 == 32_360_448
    assert got.model == got.total - 4_679_680

    without = cost.flops(SMALL, ROWS, gradient_checkpointing=False)
    assert without.recompute == 0
    assert without.total == 32_360_448 - 4_679_680
    # LoRA / frozen LLM: backward for activation gradients only, 4 instead of 6; attention keeps its backward
    frozen = cost.flops(SMALL, ROWS, gradient_checkpointing=False, trains_llm=False)
    assert frozen.llm_params == 4 * 4_131_840
    assert frozen.attention == 768_000


def test_lm_head_only_on_kept_logits() -> None:
    rows = StageTokens(lengths=[10, 20], image_tokens=[0, 4], trained_tokens=[3, 5])
    # ms-swift's logits_to_keep: trained + 1 positions per row = 4 + 6 = 10
    assert cost.lm_head_tokens(rows) == 10
    assert cost.llm_param_flops(SMALL, rows) == 6 * (2 * 36_864 * 30 + 64_000 * 10) == 17_111_040
    # every token when it is off
    assert cost.llm_param_flops(SMALL, rows, logits_to_keep=False) == 24_791_040
    # capped at the row's length; a row with nothing trained still keeps its last position
    assert cost.lm_head_tokens(StageTokens([10, 20], [0, 0], [10, 0])) == 10 + 1


def test_vision_attention_full_and_windowed_blocks_by_hand() -> None:
    one_image = StageTokens(lengths=[100], image_tokens=[64])  # 64 visual tokens = 256 patches
    # linear: 2 * 58,112 * 256 + 2 * 24,576 * 64 = 29,753,344 + 3,145,728
    linear = 32_899_072
    # 1 full block: 4 * 32 * 256^2 = 8,388,608; 1 windowed block: 4 * 32 * 256 * 64 = 2,097,152
    assert cost.vision_flops(SMALL, one_image, full_attention_blocks=1) == linear + 8_388_608 + 2_097_152
    # the same tokens as two images of 16 and 48 tokens (64 and 192 patches):
    #   full 4 * 32 * (64^2 + 192^2) = 5,242,880; windowed 4 * 32 * (64*64 + 192*64) = 2,097,152
    two_images = StageTokens(lengths=[100], image_tokens=[64], images=[[16, 48]])
    assert cost.vision_flops(SMALL, two_images, full_attention_blocks=1) == linear + 5_242_880 + 2_097_152
    with pytest.raises(ValueError):
        StageTokens(lengths=[100], image_tokens=[64], images=[[16, 40]])


def test_attention_does_not_change_with_packing() -> None:
    # attention is per original row: the rows' own squares, whatever they are packed into
    assert cost.attention_flops(SMALL, StageTokens([9, 8, 2], [0, 0, 0])) == 12 * 2 * 64 * (81 + 64 + 4)


def test_empty_stage_costs_nothing() -> None:
    empty = StageTokens(lengths=[], image_tokens=[], trained_tokens=[])
    got = cost.flops(SMALL, empty, gradient_checkpointing=True)
    assert got == Flops(0, 0, 0, 0)
    assert got.total == 0
    assert cost.pack_first_fit_decreasing([], 10) == []
    assert cost.pack_like_swift([], 10) == 0
    assert cost.packing([], 10).fill == 0.0
    assert cost.optimizer_steps(0, world=8, micro_batch=1, grad_accum=2) == 0
    assert cost.gpu_hours(0, mfu=0.4, peak_flops=312e12, gpus=8) == (0.0, 0.0)


def test_stage_tokens_are_validated() -> None:
    with pytest.raises(ValueError):
        StageTokens(lengths=[10, 20], image_tokens=[0])
    with pytest.raises(ValueError):
        StageTokens(lengths=[10], image_tokens=[11])
    with pytest.raises(ValueError):
        StageTokens(lengths=[10], image_tokens=[0], trained_tokens=[11])


def test_first_fit_decreasing_by_hand() -> None:
    # sorted 9, 8, 5, 4, 2, 2 into 10: 9 -> A; 8 -> B; 5 -> C; 4 -> C (9); 2 -> B (10); 2 -> D
    lengths = [9, 8, 2, 2, 5, 4]
    assert cost.pack_first_fit_decreasing(lengths, 10) == [[0], [1, 2], [4, 5], [3]]
    # ms-swift's least-loaded fit gets the same bins here
    assert cost.pack_like_swift_bins(lengths, 10) == [[0], [1, 2], [4, 5], [3]]
    p = cost.packing(lengths, 10)
    assert (p.swift, p.first_fit_decreasing, p.sequences) == (4, 4, 4)
    assert p.fill == 30 / 40


def test_swift_least_loaded_fit_differs_from_ffd() -> None:
    lengths = [6, 5, 4, 3, 2]
    # FFD: 6 -> A; 5 -> B; 4 -> A (10); 3 -> B (8); 2 -> B (10): 2 bins
    assert cost.pack_first_fit_decreasing(lengths, 10) == [[0, 2], [1, 3, 4]]
    # least loaded: 6 -> A; 5 -> B; 4 -> B (5 < 6: 9); 3 -> A (6 < 9: 9); 2 -> neither (11): C
    assert cost.pack_like_swift_bins(lengths, 10) == [[0, 3], [1, 2], [4]]
    assert cost.packing(lengths, 10).swift == 3


def test_swift_packs_1000_rows_at_a_time() -> None:
    lengths = [6] * 1000 + [4] * 1000
    # FFD over all rows: every 6 meets a 4
    assert len(cost.pack_first_fit_decreasing(lengths, 10)) == 1000
    # ms-swift: the first 1000 rows are packed alone (1000 bins of one 6); the last bin is carried over and meets
    # the 4s: 6 + 4, then the 999 remaining 4s in pairs (500 bins). 999 + 1 + 500
    bins = cost.pack_like_swift_bins(lengths, 10)
    assert len(bins) == 1500
    assert bins[999] == [999, 1000]
    assert sorted(i for b in bins for i in b) == list(range(2000))


def test_swift_packing_matches_the_binpacking_library() -> None:
    binpacking = pytest.importorskip("binpacking")  # ms-swift's dependency, what it really calls

    def reference(lengths: list[int], capacity: int) -> list[list[int]]:
        # ms-swift's loop (swift/dataset/packing.py:161-176) written out with the library's packer
        out: list[list[int]] = []
        carried: list[tuple[int, int]] = []
        for start in range(0, len(lengths), 1000):
            items = carried + [(i, lengths[i]) for i in range(start, min(start + 1000, len(lengths)))]
            bins = binpacking.to_constant_volume(items, capacity, weight_pos=1)
            carried = bins.pop() if start + 1000 < len(lengths) else []
            out += [[i for i, _ in b] for b in bins]
        return out

    rng = random.Random(27)
    for n, capacity in [(37, 100), (2345, 1000), (1000, 50)]:
        lengths = [rng.randint(1, capacity) for _ in range(n)]
        assert cost.pack_like_swift_bins(lengths, capacity) == reference(lengths, capacity)


def test_swift_packing_workers_and_sequential_strategy() -> None:
    # packing_num_proc=3 on 2500 rows: contiguous chunks at linspace(0, 2500, 4) = 0, 833, 1666, 2500
    assert cost._swift_chunks(2500, 3) == [(0, 833), (833, 1666), (1666, 2500)]
    assert cost._swift_chunks(999, 4) == [(0, 999)]  # at most ceil(rows / 1000) workers
    lengths = [3] * 2500
    three = cost.pack_like_swift_bins(lengths, 10, num_proc=3)
    assert len(three) == 278 + 278 + 278  # each chunk's 833 or 834 threes, 3 to a bin: ceil(833/3) = ceil(834/3)
    # next-fit in order: 5+5 (full) | 3 (8 does not fit) | 8+2 (full)
    assert cost.pack_like_swift_bins([5, 5, 3, 8, 2], 10, strategy="sequential") == [[0, 1], [2], [3, 4]]


def test_over_length_rows_are_an_error() -> None:
    with pytest.raises(ValueError, match="over the packing length"):
        cost.pack_first_fit_decreasing([5, 11], 10)
    with pytest.raises(ValueError, match="over the packing length"):
        cost.pack_like_swift([5, 11], 10)


def test_optimizer_steps_by_hand() -> None:
    # 1000 rows on 8 GPUs: 125 each, 125 micro-batches of 1, accumulation 2 -> ceil(125 / 2) = 63
    assert cost.optimizer_steps(1000, world=8, micro_batch=1, grad_accum=2) == 63
    # 1001 rows: ms-swift gives each rank 1001 // 8 = 125, the extra row is never seen
    assert cost.optimizer_steps(1001, world=8, micro_batch=1, grad_accum=2) == 63
    # 10 rows on 4 GPUs: 2 each -> 1 step (not ceil(10 / 8) = 2)
    assert cost.optimizer_steps(10, world=4, micro_batch=1, grad_accum=2) == 1
    # partial last micro-batch and partial last step: 103 rows on 2 GPUs, micro 4, accumulation 3:
    # 51 per rank -> ceil(51 / 4) = 13 micro-batches -> ceil(13 / 3) = 5 steps an epoch
    assert cost.optimizer_steps(103, world=2, micro_batch=4, grad_accum=3) == 5
    # fractional epochs: ceil(1.5 * 5) = 8, ceil(0.1 * 5) = 1; 2 epochs = 10
    assert cost.optimizer_steps(103, world=2, micro_batch=4, grad_accum=3, epochs=1.5) == 8
    assert cost.optimizer_steps(103, world=2, micro_batch=4, grad_accum=3, epochs=0.1) == 1
    assert cost.optimizer_steps(103, world=2, micro_batch=4, grad_accum=3, epochs=2) == 10
    # fewer micro-batches than the accumulation still make one step
    assert cost.optimizer_steps(1, world=1, micro_batch=1, grad_accum=4) == 1
    # max_steps wins
    assert cost.optimizer_steps(103, world=2, micro_batch=4, grad_accum=3, max_steps=7) == 7
    # sequence parallel 2 on 8 GPUs: 4 data-parallel ranks, rounded up: ceil(10 / 4) = 3 -> ceil(3 / 2) = 2
    assert cost.optimizer_steps(10, world=8, micro_batch=1, grad_accum=2, sequence_parallel=2) == 2
    # fewer rows than ranks: every rank gets none and the Trainer cannot start
    with pytest.raises(ValueError, match="leaves each rank none"):
        cost.optimizer_steps(3, world=4, micro_batch=1, grad_accum=1)


def test_gpu_hours() -> None:
    peak = cost.PEAK_BF16_DENSE["H100-SXM"]
    assert peak == 989e12
    # one hour of 8 GPUs at half their peak
    gpu_h, wall_h = cost.gpu_hours(peak * 0.5 * 8 * 3600, mfu=0.5, peak_flops=peak, gpus=8)
    assert gpu_h == pytest.approx(8.0)
    assert wall_h == pytest.approx(1.0)
    assert cost.PEAK_BF16_DENSE["A100-80GB"] == cost.PEAK_BF16_DENSE["A800-80GB"] == 312e12
    assert cost.PEAK_BF16_DENSE["L40S"] == 362e12
    with pytest.raises(ValueError):
        cost.gpu_hours(1e18, mfu=0.0, peak_flops=peak, gpus=8)


def test_gpus_by_name_and_by_device() -> None:
    assert cost.gpu_named("a100") is cost.GPUS["A100-80GB"] is cost.gpu_named("A100_80gb")
    assert cost.gpu_named("h200").peak_bf16 == 989e12
    with pytest.raises(ValueError, match="unknown GPU 'V100'; known: A100-80GB"):
        cost.gpu_named("V100")
    assert cost.gpu_of_device("NVIDIA A100-SXM4-40GB") is cost.GPUS["A100-40GB"]
    assert cost.gpu_of_device("NVIDIA H100 PCIe") is cost.GPUS["H100-PCIe"]
    assert cost.gpu_of_device("NVIDIA H200") is cost.GPUS["H200"]
    assert cost.gpu_of_device("Tesla T4") is None


def test_a_trained_vision_tower_costs_its_backward_and_recompute() -> None:
    one_image = StageTokens(lengths=[100], image_tokens=[64])
    blocks = 2 * 58_112 * 256 + (8_388_608 + 2_097_152)  # the tower's forward (1 full + 1 windowed block)
    merger = 2 * 24_576 * 64
    frozen = cost.vision_flops(SMALL, one_image, full_attention_blocks=1)
    assert frozen == blocks + merger
    # aligner trains: its weight gradients (x2); tower trains too: the tower's backward (x3) and the aligner's
    # activation gradients (x3)
    assert cost.vision_flops(SMALL, one_image, trains=cost.Trains(aligner=True), full_attention_blocks=1) == (
        blocks + 2 * merger
    )
    both = cost.Trains(vision=True, aligner=True)
    assert cost.vision_flops(SMALL, one_image, trains=both, full_attention_blocks=1) == 3 * blocks + 3 * merger
    checkpointed = cost.flops(SMALL, one_image, gradient_checkpointing=True, trains=both, full_attention_blocks=1)
    plain = cost.flops(SMALL, one_image, gradient_checkpointing=True, full_attention_blocks=1)
    assert checkpointed.recompute - plain.recompute == blocks  # the tower's forward again


def test_per_row_flops_add_up_to_the_stage_total() -> None:
    rows = StageTokens(
        lengths=[10, 20, 300], image_tokens=[0, 4, 64], trained_tokens=[3, 5, 0], images=[[], [4], [16, 48]]
    )
    for trains in (cost.Trains(), cost.Trains(llm=False, aligner=True), cost.Trains(vision=True)):
        per_row = cost.row_model_flops(SMALL, rows, trains=trains)
        total = cost.flops(SMALL, rows, gradient_checkpointing=True, trains=trains).model
        assert sum(per_row) == pytest.approx(total, rel=1e-12)
        # a row's own share: row 1 alone
        alone = StageTokens([20], [4], [5], [[4]])
        assert per_row[1] == pytest.approx(cost.flops(SMALL, alone, gradient_checkpointing=False, trains=trains).model)


def test_communication_and_optimizer_time_by_hand() -> None:
    a100 = cost.GPUS["A100-80GB"]
    p = 7e9  # trainable parameters
    zero2 = cost.step_costs(
        cost.Parallelism(world=8, zero_stage=2),
        a100,
        trainable_params=p,
        params=8e9,
        backward_params=7.5e9,
        gradient_checkpointing=True,
    )
    ring = 7 / 8 / 230e9  # seconds per byte through each GPU's link, 8 GPUs in a ring
    # ZeRO-2: the bf16 gradients reduce-scattered after every micro-batch, not overlapped (the shipped config)
    assert zero2.micro_batch_comm_s == pytest.approx(2 * p * ring) and not zero2.overlapped
    # a step: the parameters' all-gather, and Adam on this GPU's eighth (32 bytes a parameter through HBM)
    assert zero2.step_s == pytest.approx(2 * p * ring + 32 * p / 8 / 2.039e12)
    assert zero2.micro_batch_fixed_s == cost.Overheads().micro_batch_s
    offload = cost.step_costs(
        cost.Parallelism(world=8, zero_stage=3, offload_optimizer=True, offload_params=True, overlap_comm=True),
        a100,
        trainable_params=p,
        params=8e9,
        backward_params=7.5e9,
        gradient_checkpointing=True,
    )
    gathered = 8e9 + 2 * 7.5e9  # forward, recompute, backward
    host = 2 / 25e9
    expected = 2 * gathered * ring + 2 * p * ring + gathered / 8 * host + p / 8 * host
    assert offload.micro_batch_comm_s == pytest.approx(expected) and offload.overlapped
    assert offload.step_s == pytest.approx(p / 3e9)  # CPU Adam, one node
    alone = cost.step_costs(
        cost.Parallelism(world=1, zero_stage=2),
        a100,
        trainable_params=p,
        params=8e9,
        backward_params=7.5e9,
        gradient_checkpointing=True,
    )
    assert alone.micro_batch_comm_s == 0 and alone.step_s == pytest.approx(32 * p / 2.039e12)
    two_nodes = cost.step_costs(
        cost.Parallelism(world=16, nodes=2, zero_stage=2),
        a100,
        trainable_params=p,
        params=8e9,
        backward_params=7.5e9,
        gradient_checkpointing=True,
    )
    assert two_nodes.micro_batch_comm_s == pytest.approx(2 * p * 15 / 16 / 25e9)  # the slower link sets the pace


def test_samples_are_dealt_as_the_sampler_deals_them() -> None:
    order = cost.dealt(7, 2, seed=3)
    assert len(order) == 6 and len(set(order)) == 6  # 7 // 2 per rank: one sample is never seen
    flops = [1.0, 10.0, 100.0, 1000.0, 1e4, 1e5, 1e6]
    steps = cost.micro_batches(flops, ranks=2, micro_batch=2, seed=3)
    # rank r takes order[r], order[r + 2], order[r + 4]; two at a time: steps of (2, 1) samples per rank
    assert steps == [
        [flops[order[0]] + flops[order[2]], flops[order[1]] + flops[order[3]]],
        [flops[order[4]], flops[order[5]]],
    ]
    # padded to the longest of the micro-batch: (longest - own) padding tokens each
    lengths = [5, 1, 2, 3, 4, 6, 7]
    padded = cost.micro_batches([0.0] * 7, ranks=2, micro_batch=2, seed=3, lengths=lengths, padding_flops_per_token=1)
    first = [order[0], order[2]]
    assert padded[0][0] == 2 * max(lengths[i] for i in first) - sum(lengths[i] for i in first)
    assert padded[1] == [0.0, 0.0]  # one row alone: nothing to pad


def test_epoch_time_by_hand() -> None:
    steps = [[2.0, 1.0], [1.0, 1.0]]
    apart = cost.StepCosts(micro_batch_comm_s=0.5, overlapped=False, micro_batch_fixed_s=0.1, step_s=3.0)
    t = cost.epoch_time(steps, flops_per_s=1.0, costs=apart, optimizer_steps=1)
    assert (t.compute_s, t.balanced_s, t.communication_s, t.fixed_s, t.optimizer_s) == (3.0, 2.5, 1.0, 0.2, 3.0)
    assert t.wall_s == pytest.approx(7.2)
    # overlapped: only what the slowest rank's compute cannot hide (0.5 - 2 < 0; 1.5 - 1 = 0.5)
    beside = cost.StepCosts(micro_batch_comm_s=1.5, overlapped=True, micro_batch_fixed_s=0.0, step_s=0.0)
    assert cost.epoch_time(steps, flops_per_s=1.0, costs=beside, optimizer_steps=1).communication_s == 0.5
    assert t.scaled(2).wall_s == pytest.approx(14.4)
