"""Where a curriculum's base model comes from: a hub id, a local folder, or a built-in offline model."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from spinegpt.errors import UserError
from spinegpt.offline import tiny_model

BUILTIN_PREFIX = "builtin:"
BUILTINS = {"tiny-qwen2_5_vl": tiny_model}


def _builtin(ref: str) -> ModuleType:
    name = ref.removeprefix(BUILTIN_PREFIX)
    if name not in BUILTINS:
        raise ValueError(f"unknown built-in model {ref!r}; known: {', '.join(BUILTIN_PREFIX + b for b in BUILTINS)}")
    return BUILTINS[name]


def is_local(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).expanduser().exists()


def resolve(ref: str) -> str:
    """The model argument the engine gets, without side effects (a built-in model may not exist yet)."""
    if ref.startswith(BUILTIN_PREFIX):
        return str(_builtin(ref).default_path())
    if is_local(ref):
        return str(Path(ref).expanduser().resolve())
    return ref  # a hub id, downloaded by the engine


def materialise(ref: str) -> str:
    """Like :func:`resolve`, building a built-in model when it is not cached yet."""
    if ref.startswith(BUILTIN_PREFIX):
        return str(_builtin(ref).ensure())
    resolved = resolve(ref)
    if is_local(ref) and not Path(resolved).is_dir():
        raise FileNotFoundError(f"model folder not found: {resolved}")
    if is_local(ref):
        refuse_custom_code(Path(resolved))
    return resolved


class CustomCodeError(UserError):
    """A model folder that asks to run its own Python code."""


def refuse_custom_code(folder: Path) -> None:
    """ms-swift loads every model with ``trust_remote_code=True`` and offers no argument to turn it off. Qwen2.5-VL
    is native to transformers and needs no code of its own, so a folder whose config maps classes to its own code
    (``auto_map``) is refused here instead of having that code run on every rank."""
    config = folder / "config.json"
    try:
        auto_map = json.loads(config.read_text()).get("auto_map") if config.is_file() else None
    except (OSError, ValueError, AttributeError):
        return  # unreadable configs are reported by the loader, with its own message
    if auto_map:
        raise CustomCodeError(
            f"{config}: declares custom model code (auto_map: {sorted(auto_map)}); the engine would execute it. "
            "Qwen2.5-VL needs none: remove auto_map (and the .py files) or use the original model"
        )
