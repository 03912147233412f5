"""A stage's DeepSpeed config: a name from ``configs/deepspeed/`` or a path to a JSON file, and the config the engine
really reads for the stage (:func:`for_stage`: the file, with the changes the stage's other settings need)."""

from __future__ import annotations

import copy
import importlib.resources
import json
from pathlib import Path
from typing import Any

KEEP_GATHERED = 10**10
"""``stage3_param_persistence_threshold`` for a ZeRO-3 stage with the fused loss: above every parameter's size.

Liger's fused linear + cross-entropy reads ``lm_head.weight`` itself instead of calling ``lm_head``, and computes
the weight's gradient during the forward pass. Under ZeRO-3 the weight has been partitioned back to an empty shard
by the time autograd hands that gradient to it, and the backward pass fails with "The size of tensor a (0) must
match the size of tensor b (...)" (Liger-Kernel #1048, LLaMA-Factory #7588, seen with Qwen2.5-VL-7B; not fixed in
liger 0.8.x). A persistence threshold above the largest parameter keeps every parameter gathered, the public
workaround. ZeRO-3 then partitions gradients and optimizer states but not the bf16 weights (2 bytes a parameter on
every GPU, ~16.6 GB for the 7B; the memory planner counts them)."""


def shipped() -> dict[str, Path]:
    """The configs shipped in ``configs/deepspeed/`` (package data ``spinegpt.configs``), by name."""
    folder = importlib.resources.files("spinegpt.configs") / "deepspeed"
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".json")}


def resolve(value: str, base_dir: str | Path | None = None) -> Path:
    """Return the JSON file ``value`` names; a bare name is looked up in ``configs/deepspeed/``, anything with a
    ``/`` or a ``.json`` suffix is a path (relative to ``base_dir``, the curriculum's folder)."""
    if "/" not in value and not value.endswith(".json"):
        known = shipped()
        if value not in known:
            raise ValueError(
                f"unknown DeepSpeed config {value!r}; shipped: {', '.join(sorted(known))} (or a .json path)"
            )
        return known[value]
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise ValueError(f"DeepSpeed config file not found: {path}")
    return path.resolve()


def load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or "zero_optimization" not in data:
        raise ValueError(f"{path}: not a DeepSpeed config (no zero_optimization section)")
    return data


def for_stage(config: dict[str, Any], fused_loss: bool) -> tuple[dict[str, Any], list[str]]:
    """The config the engine reads for a stage, and what was changed from ``config`` and why (nothing, mostly)."""
    zero = config.get("zero_optimization", {})
    threshold = zero.get("stage3_param_persistence_threshold")
    if not (fused_loss and zero.get("stage") == 3) or keeps_weights_gathered(config):
        return config, []
    changed = copy.deepcopy(config)
    changed["zero_optimization"]["stage3_param_persistence_threshold"] = KEEP_GATHERED
    why = (
        f"stage3_param_persistence_threshold {threshold!r} -> {KEEP_GATHERED:.0e}: the fused loss (use_liger_kernel) "
        "reads lm_head.weight outside its module, which ZeRO-3 partitioning breaks in the backward pass "
        "(Liger-Kernel #1048); every parameter stays gathered (configs/deepspeed/README.md)"
    )
    return changed, [why]


def zero_stage(config: dict[str, Any]) -> int:
    return int(config["zero_optimization"].get("stage", 0))


def offloads_optimizer(config: dict[str, Any]) -> bool:
    """Whether the config keeps the optimizer on the CPU (or NVMe): its step then runs as DeepSpeedCPUAdam."""
    device = (config["zero_optimization"].get("offload_optimizer") or {}).get("device")
    return device in ("cpu", "nvme")


def keeps_weights_gathered(config: dict[str, Any]) -> bool:
    """ZeRO-3 with every parameter persistent: whole bf16 weights on every GPU."""
    zero = config["zero_optimization"]
    threshold = zero.get("stage3_param_persistence_threshold")
    return zero.get("stage") == 3 and isinstance(threshold, int | float) and threshold >= KEEP_GATHERED
