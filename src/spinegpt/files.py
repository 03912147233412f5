"""Files written so a crash never leaves half of one, and the hashes that identify them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary sibling and a rename: readers see the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-able object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def first_of(problems: list[str], limit: int = 20, indent: str = "  ") -> str:
    """The first ``limit`` problems, one per line, and how many more there are: an error a person can read even
    when a file has thousands of bad rows."""
    shown = "\n".join(f"{indent}{p}" for p in problems[:limit])
    more = f"\n{indent}... and {len(problems) - limit} more" if len(problems) > limit else ""
    return shown + more
