"""What a close reading of the pinned stack (ms-swift 4.6, DeepSpeed 0.19, liger 0.8, flash-attn) predicts, decided
before the engine starts instead of failing in it: attention that cannot serve packing, a flash-attn build that does
not load, the fused loss under ZeRO-3, sequence-parallel sizes ms-swift cannot split."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from spinegpt.train import deepspeed_configs, plan, preflight, runner, swift_adapter, topology
from spinegpt.train.errors import RunError

from ..conftest import CURRICULA, SMOKE, engine_arg

EIGHT = topology.Launch(nproc_per_node=8)


def _paper(tmp_path: Path, *overrides: str) -> plan.Plan:
    return plan.build(plan.load(CURRICULA / "spinegpt.yaml", overrides), tmp_path / "run", EIGHT)


def test_packing_with_attention_that_cannot_serve_it_is_refused_naming_the_stage(tmp_path: Path) -> None:
    # attn_impl auto passes the schema; on a node without flash-attn it resolves to sdpa, which ms-swift refuses
    # for packing only when the engine starts.
    built = _paper(tmp_path, "stages.specialise.packing=true")
    check = preflight.check_attention(built)
    assert check.status == "FAIL" and "specialise (packing: attention sdpa)" in check.detail
    assert "flash-attn" in check.fix and "packing" in check.fix
    assert preflight.check_attention(_paper(tmp_path)).ok


def test_flash_attention_counts_only_when_its_compiled_extension_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers' check finds the package; a build for another torch then fails at the first attention call."""
    found = importlib.machinery.ModuleSpec("flash_attn", None)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: found if name == "flash_attn" else real_find_spec(name, *a)
    )
    swift_adapter.flash_attention.cache_clear()
    try:
        usable, why = swift_adapter.flash_attention()
        assert not usable and "compiled extension does not load" in why
        assert swift_adapter.attention("auto")[0] == "sdpa"
        monkeypatch.setitem(sys.modules, "flash_attn_2_cuda", types.ModuleType("flash_attn_2_cuda"))
        swift_adapter.flash_attention.cache_clear()
        assert swift_adapter.flash_attention()[0] and swift_adapter.attention("auto")[0] == "flash_attn"
    finally:
        swift_adapter.flash_attention.cache_clear()


def test_the_fused_loss_under_zero3_keeps_every_parameter_gathered(tmp_path: Path) -> None:
    built = _paper(tmp_path)
    first, last = built.stages[0], built.stages[2]
    assert first.deepspeed == first.deepspeed_source and not first.deepspeed_changes  # ZeRO-2: as shipped
    assert last.deepspeed == last.dir / plan.DEEPSPEED and "Liger-Kernel #1048" in last.deepspeed_changes[0]
    assert last.deepspeed_config is not None and deepspeed_configs.keeps_weights_gathered(last.deepspeed_config)
    assert engine_arg(last.command, "deepspeed") == str(last.dir / plan.DEEPSPEED)
    assert last.deepspeed_source is not None and "auto" in last.deepspeed_source.read_text()  # shipped file intact
    unfused = _paper(tmp_path, "stages.reports.use_liger_kernel=false").stages[2]
    assert unfused.deepspeed == unfused.deepspeed_source  # no fused loss: nothing to change


def test_the_run_writes_the_changed_config_before_the_engine_reads_it(tmp_path: Path, tiny_model: Path) -> None:
    overrides = ["stages.foundation.deepspeed=zero3", "stages.foundation.use_liger_kernel=true"]
    built = plan.build(plan.load(SMOKE, overrides), tmp_path / "run", topology.Launch())
    seen: list[dict[str, Any]] = []

    def engine(command: list[str], env: dict[str, str], *rest: Any) -> int:
        seen.append(json.loads(Path(engine_arg(command, "deepspeed")).read_text()))
        return 1

    with pytest.raises(RunError):
        runner.Runner(built, engine=engine).run()
    assert seen and deepspeed_configs.keeps_weights_gathered(seen[0])


def test_sequence_parallel_sizes_ms_swift_cannot_split_are_refused(tmp_path: Path) -> None:
    ring = preflight.check_parallelism(_paper(tmp_path, "stages.foundation.sequence_parallel_size=8"))
    assert ring.status == "FAIL" and "a ring over 2" in ring.detail and "[2, 4]" in ring.detail
    ulysses = preflight.check_parallelism(_paper(tmp_path, "stages.foundation.sequence_parallel_size=4"))
    assert ulysses.status == "warn" and "fused loss is off" in ulysses.detail
    uneven = preflight.check_parallelism(_paper(tmp_path, "stages.foundation.sequence_parallel_size=3"))
    assert uneven.status == "FAIL" and "does not divide 8 ranks" in uneven.detail


def test_preflight_compares_torchs_cuda_with_the_drivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    built = _paper(tmp_path)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(preflight, "_driver_cuda", lambda: "12.4")
    old = preflight.check_cuda(built)
    assert old.status == "FAIL" and "driver supports CUDA 12.4" in old.detail and "cu126" in old.fix
    monkeypatch.setattr(preflight, "_driver_cuda", lambda: "13.1")
    assert preflight.check_cuda(built).status == "ok"
    monkeypatch.setattr(torch.version, "cuda", None)
    cpu = preflight.check_cuda(built)
    assert cpu.status == "FAIL" and "CPU build" in cpu.detail
    assert preflight.check_cuda(plan.build(plan.load(SMOKE), tmp_path / "s")).ok  # the smoke run needs no GPU
