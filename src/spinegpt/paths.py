"""Where spinegpt keeps what it builds once and reuses (the offline tiny model, built data mixes, the smoke data
root, token counts, the judge's cache): ``$SPINEGPT_CACHE``; else, when the code runs from a clone of this
repository (an editable install), ``<clone>/.cache/spinegpt``, so `spinegpt` run directly finds what `make` built;
else ``~/.cache/spinegpt``. DeepSpeed's compiled ops follow the same rule (``TORCH_EXTENSIONS_DIR``). Read at call
time, never at import."""

from __future__ import annotations

import os
from pathlib import Path


def checkout() -> Path | None:
    """The clone this code runs from, if it runs from one (not from an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    project = root / "pyproject.toml"
    try:
        return root if project.is_file() and 'name = "spinegpt"' in project.read_text() else None
    except OSError:
        return None


def cache_root() -> Path:
    configured = os.environ.get("SPINEGPT_CACHE")
    if configured:
        return Path(configured)
    clone = checkout()
    return clone / ".cache" / "spinegpt" if clone else Path.home() / ".cache" / "spinegpt"


def torch_extensions() -> Path | None:
    """Where DeepSpeed's JIT-compiled ops go when ``TORCH_EXTENSIONS_DIR`` is unset: the clone's ``.cache`` (the
    first CPU-Adam build takes minutes; the Makefile's runs compile there too). None outside a clone: torch's own
    default (``~/.cache/torch_extensions``)."""
    clone = checkout()
    return clone / ".cache" / "torch_extensions" if clone else None
