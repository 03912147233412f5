"""A stage's cost from its audited rows (train/cost_plan.py): the over-length policy, empty stages, where the MFU
comes from, the time model's parts adding up."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from spinegpt.data_mixes.audit import RowCounts, StageAudit
from spinegpt.train import cost, cost_plan, curriculum, memory, plan, topology

from ..conftest import CURRICULA, REPO, SMOKE

A100 = cost.GPUS["A100-80GB"]


def _plan(tmp_path: Path, *overrides: str, nproc: int = 1) -> plan.Plan:
    # One epoch of the smoke foundation stage (max_length 1,024, micro-batch 2, no accumulation, ZeRO-2).
    loaded = curriculum.load(SMOKE, ["stages.foundation.max_steps=null", *overrides])
    return plan.build(loaded, tmp_path / "out", topology.Launch(nproc_per_node=nproc))


def _audit(lengths: list[int], images: list[list[int]] | None = None, trained: list[int] | None = None) -> StageAudit:
    rows = RowCounts(lengths, images or [[] for _ in lengths], trained if trained is not None else [1] * len(lengths))
    return StageAudit(
        stage="foundation",
        records=len(lengths),
        total_tokens=sum(lengths),
        percentiles={},
        max_length=1024,
        over_max_length=sum(n > 1024 for n in lengths),
        global_batch=2,
        optimizer_steps=0,
        min_pixels=3136,
        max_pixels=50176,
        rows=rows,
    )


def _cost(built: plan.Plan, audit: StageAudit, **kw: object) -> cost_plan.StageCost:
    shape = memory.model_shape(built.curriculum.model)
    return cost_plan.stage_cost(built, built.stages[0], audit, shape, A100, **kw)  # type: ignore[arg-type]


def test_a_stage_with_no_rows_costs_nothing(tmp_path: Path) -> None:
    got = _cost(_plan(tmp_path), _audit([]))
    assert (got.rows, got.tokens, got.flops, got.steps, got.micro_batches) == (0, 0, 0, 0, 0)
    assert (got.packed_sequences, got.packed_steps, got.gpu_hours, got.wall_hours, got.compute_gpu_hours) == (
        0,
        0,
        0,
        0,
        0,
    )


@pytest.mark.parametrize(
    ("policy", "rows", "tokens", "counted"),
    [
        ("drop", 2, 100 + 200, {"dropped_rows": 1}),
        ("error", 2, 100 + 200, {"refused_rows": 1}),  # the stage will stop at it: not costed, but counted
        ("truncate", 3, 100 + 200 + 1024, {"truncated_rows": 1}),  # kept, cut to max_length
    ],
)
def test_an_over_length_row_is_counted_as_the_policy_says(
    tmp_path: Path, policy: str, rows: int, tokens: int, counted: dict[str, int]
) -> None:
    built = _plan(tmp_path, f"stages.foundation.over_length={policy}")
    # the third row: 5,000 tokens (300 of them one image), its last 1,500 trained
    got = _cost(built, _audit([100, 200, 5000], [[], [16], [300]], [10, 20, 1500]))
    assert (got.rows, got.tokens) == (rows, tokens)
    for key in ("dropped_rows", "refused_rows", "truncated_rows"):
        assert getattr(got, key) == counted.get(key, 0), key
    shape = memory.model_shape(built.curriculum.model)
    if policy == "truncate":
        # right truncation cuts 3,976 tokens off the end: all 1,500 trained ones; the image is kept
        kept = cost.StageTokens([100, 200, 1024], [0, 16, 300], [10, 20, 0], [[], [16], [300]])
        assert (got.trained_tokens, got.image_tokens, got.images) == (30, 316, 2)
    else:  # the over-length row costs nothing
        kept = cost.StageTokens([100, 200], [0, 16], [10, 20], [[], [16]])
        assert (got.trained_tokens, got.image_tokens, got.images) == (30, 16, 1)
    assert got.flops == pytest.approx(cost.flops(shape, kept, gradient_checkpointing=True).model)
    assert got.flops_with_recompute == pytest.approx(cost.flops(shape, kept, gradient_checkpointing=True).total)
    # micro-batch 2, no accumulation, one GPU: every 2 rows a step
    assert got.steps == -(-rows // 2) and got.micro_batches == got.steps
    assert got.packed_sequences == (2 if policy == "truncate" else 1)  # 1,024 fills a sequence of its own


def test_time_adds_up_and_stragglers_are_waiting(tmp_path: Path) -> None:
    built = _plan(tmp_path, "stages.foundation.padding_free=true", "stages.foundation.attn_impl=flash_attn", nproc=2)
    lengths = [20 + (k * 37) % 180 for k in range(400)]  # ~110 tokens a row, ~9 to a packed sequence
    got = _cost(built, _audit(lengths))
    t = got.time
    assert got.wall_hours == pytest.approx(t.compute + t.communication + t.launch + t.optimizer)
    assert got.gpu_hours == pytest.approx(2 * got.wall_hours)
    assert 0 < t.stragglers < t.compute  # two ranks of unequal rows: the shorter waits
    # the compute alone, at the MFU, is what FLOPs / (MFU x peak) says, plus the waiting
    assert t.compute - t.stragglers == pytest.approx(got.compute_gpu_hours / 2, rel=1e-9)
    assert 0 < got.effective_mfu < got.mfu
    assert got.tokens_per_step == pytest.approx(got.tokens / got.steps)
    # packing at max_length: far fewer, fuller micro-batches, the same FLOPs
    assert got.packed_sequences < got.rows / 8 and got.packed_fill > 0.9 > got.fill
    assert got.packed_gpu_hours < got.gpu_hours
    assert got.padding_saved == (got.rows - got.packed_sequences) * 1024


def test_padding_free_micro_batches_carry_no_padding(tmp_path: Path) -> None:
    lengths = [50 + (k * 37) % 900 for k in range(400)]
    padded = _cost(_plan(tmp_path, nproc=2), _audit(lengths))
    free = _cost(
        _plan(tmp_path, "stages.foundation.padding_free=true", "stages.foundation.attn_impl=flash_attn", nproc=2),
        _audit(lengths),
    )
    assert padded.padding_tokens > 0 and free.padding_tokens == 0
    assert free.steps == padded.steps and free.flops == padded.flops
    assert free.time.compute < padded.time.compute  # the padding ran through the linear layers


def test_the_mfu_is_given_measured_or_assumed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "gpu-nvidia-h200.txt").write_text(
        "| table |\n"
        'measured: {"gpu": "H200", "stage": "foundation", "zero_stage": 2, "offload": false, "mfu": 0.41}\n'
        'measured: {"gpu": "H200", "stage": "reports", "zero_stage": 3, "offload": true, "mfu": 0.22}\n'
        'measured: {"gpu": "H200", "mfu": "fast"}\n'
    )
    found = cost_plan.measurements(results)
    assert [(m.stage, m.mfu) for m in found] == [("foundation", 0.41), ("reports", 0.22)]
    assert "gpu-nvidia-h200.txt:4: not a measurement" in caplog.text
    h200 = cost.GPUS["H200"]
    assert cost_plan.choose_mfu(h200, 0.5, "foundation", 2, False, found) == cost_plan.Mfu(0.5, "given", "--mfu")
    by_name = cost_plan.choose_mfu(h200, None, "foundation", 2, False, found)
    assert (by_name.value, by_name.source) == (0.41, "measured") and "gpu-nvidia-h200.txt" in by_name.detail
    by_setting = cost_plan.choose_mfu(h200, None, "my-stage", 3, True, found)
    assert by_setting.value == 0.22  # same ZeRO-3 offload setting
    assumed = cost_plan.choose_mfu(A100, None, "foundation", 2, False, found)  # measured on another card
    assert (assumed.value, assumed.source) == (A100.default_mfu, "assumed") and "LMMs-Engine" in assumed.detail
    with caplog.at_level(logging.WARNING):
        assert cost_plan.measurements(tmp_path / "nowhere") == []


def test_the_curriculum_cost_of_a_plan(tmp_path: Path) -> None:
    built = _plan(tmp_path)
    audits = [_audit([100, 200, 300])]  # only the first stage audited: only it is costed
    got = cost_plan.curriculum_cost(built, audits, gpu=A100, mfu=0.3, results=tmp_path)
    assert [s.stage for s in got.stages] == ["foundation"] and got.stages[0].mfu_source == "given"
    assert got.assumptions.gpu == "A100-80GB" and got.assumptions.gpus == 1 and got.assumptions.seed == 42
    assert got.gpu_hours == got.stages[0].gpu_hours
    text = cost_plan.render(got)
    assert "Cost on 1 x A100-80GB" in text and "foundation: 3 rows" in text and "MFU given: --mfu" in text
    with pytest.raises(ValueError, match="an MFU is a fraction"):
        cost_plan.curriculum_cost(built, audits, gpu=A100, mfu=1.5)


def test_what_gpu_check_writes_is_what_plan_cost_reads(tmp_path: Path) -> None:
    """bench/gpu_check.py's results table puts measured tokens/s beside the cost model's prediction and ends in a
    ``measured:`` line per stage: the MFU of the compute alone (the modelled overheads taken out of the run time)."""
    from bench import gpu_check

    model = {
        "gpu": "H200",
        "zero_stage": 2,
        "offload": False,
        "tokens_per_s": 1000.0,
        "flops_per_step": 4e15,
        "overhead_s": 1.0,
        "peak_flops": 989e12,
    }
    row = {"stage": "foundation", "tokens": 16384, "planner_gib": 55.0, "allocated_gib": 50.0, "reserved_gib": 60.0}
    row |= {"checkpoint_gb": 1.0} | gpu_check.speed_figures(model, 11.0, 12_000)  # a step of 12,000 tokens in 11 s
    text = gpu_check.report([row], "NVIDIA H200", ["disk budget: ..."])
    assert "| 1,091 | 1,000 | 1.09 (ok) |" in text  # measured tokens/s, predicted, their ratio
    (tmp_path / "gpu-nvidia-h200.txt").write_text(text)
    found = cost_plan.measurements(tmp_path)
    assert [(m.gpu, m.stage, m.zero_stage, m.offload) for m in found] == [("H200", "foundation", 2, False)]
    assert found[0].mfu == pytest.approx(4e15 / (10.0 * 989e12))  # the 1 s of overheads taken out


def test_the_throughput_variant_trains_what_the_paper_trains_and_states_its_saving(tmp_path: Path) -> None:
    """Same stages, data, learning rates, lengths and DeepSpeed configs, and the same 16 rows per optimizer step on 8
    GPUs; only how a step's rows reach the GPUs differs. Its header's figures are the committed bench results'."""
    launch = topology.Launch(nproc_per_node=8)
    paper = plan.build(curriculum.load(CURRICULA / "spinegpt.yaml"), tmp_path / "p", launch)
    variant = plan.build(curriculum.load(CURRICULA / "spinegpt_throughput.yaml"), tmp_path / "v", launch)
    assert variant.curriculum.attn_impl == "flash_attn"  # padding-free needs it: no silent sdpa
    for a, b in zip(paper.stages, variant.stages, strict=True):
        assert plan.global_batch(a.stage, 8) == plan.global_batch(b.stage, 8) == 16
        assert b.stage.padding_free and (b.stage.per_device_train_batch_size, b.stage.gradient_accumulation_steps) == (
            2,
            1,
        )
        differ = {"padding_free", "per_device_train_batch_size", "gradient_accumulation_steps"}
        assert a.stage.model_dump(exclude=differ) == b.stage.model_dump(exclude=differ)
    results = (REPO / "bench" / "results" / "cost-paper-scale.txt").read_text()
    totals = {
        name: sum(s["gpu_hours"] for s in cost["stages"])
        for name, cost in json.loads(next(line for line in results.splitlines() if line.startswith("{"))).items()
    }
    header = (CURRICULA / "spinegpt_throughput.yaml").read_text()
    found = re.search(r"(\d+) % of the GPU-hours, ([\d.]+) -> ([\d.]+) GPU-h", header)
    assert found is not None
    before, after = totals["curricula/spinegpt.yaml"], totals["curricula/spinegpt_throughput.yaml"]
    assert (float(found[2]), float(found[3])) == (round(before, 1), round(after, 1))
    assert int(found[1]) == round(100 * (1 - after / before))
