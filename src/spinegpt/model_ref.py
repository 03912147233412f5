"""Where a curriculum's base model comes from: a hub id, a local folder, or a built-in offline model."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

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
    return resolved
