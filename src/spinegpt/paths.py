"""Where spinegpt keeps what it builds once and reuses (the offline tiny model, built data mixes, the smoke data
root, the report judge's cache): ``$SPINEGPT_CACHE``, else ``~/.cache/spinegpt``. One rule, read at call time."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("SPINEGPT_CACHE", Path.home() / ".cache" / "spinegpt"))
