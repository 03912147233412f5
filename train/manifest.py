"""The run manifest: one JSON file per run that says what ran, on what, from which code, and what came out.

It is rewritten atomically after every change (temp file + rename), so a crash at any moment leaves either the
previous or the next complete version on disk, never a torn one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

FILE = "run_manifest.json"
FORMAT = 1
PACKAGES = (
    "spinegpt",
    "torch",
    "torchvision",
    "ms-swift",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "deepspeed",
    "accelerate",
    "qwen-vl-utils",
    "wandb",
    "pydantic",
    "flash-attn",
    "liger-kernel",
)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(folder: Path) -> dict[str, Any] | None:
    """Commit and dirtiness of the git checkout holding ``folder``; None outside a checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, timeout=20
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def code_root() -> Path:
    """The folder the spinegpt code runs from (a checkout for editable installs)."""
    import spinegpt.train

    return Path(spinegpt.train.__file__).resolve().parent.parent


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "packages": package_versions(),
        "git": git_state(code_root()),
    }


def write(path: Path, data: dict[str, Any]) -> None:
    data["updated_at"] = now()
    write_json_atomic(path, data)


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported manifest format {data.get('format')!r} (expected {FORMAT})")
    return data


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary sibling and a rename: readers see the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
