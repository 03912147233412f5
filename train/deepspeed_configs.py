"""Resolve a stage's ``deepspeed`` setting: a name from ``configs/deepspeed/`` or a path to a JSON file."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any


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


def zero_stage(path: Path) -> int:
    return int(load(path)["zero_optimization"].get("stage", 0))


def offloads_optimizer(path: Path) -> bool:
    """Whether the config keeps the optimizer on the CPU (or NVMe): its step then runs as DeepSpeedCPUAdam."""
    device = (load(path)["zero_optimization"].get("offload_optimizer") or {}).get("device")
    return device in ("cpu", "nvme")
