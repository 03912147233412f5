"""Files written so a crash never leaves half of one, and the hashes that identify them."""

from __future__ import annotations

import fcntl
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


class FolderBusy(OSError):
    """Another live process holds the folder's lock; ``holder`` is what it wrote there (host, pid, since)."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path, self.holder = path, holder
        who = f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {holder.get('since', '?')}"
        super().__init__(f"{path.parent} is in use by another process ({who})")


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/<name>``, held until :meth:`release` or the holder's death.

    flock rather than a pid file: the kernel drops the lock when the process dies (kill -9 included), so a crashed
    run never leaves the folder locked, and no pid needs checking on another host. On NFS, Linux forwards flock to the
    server's byte-range locks, so the nodes of a multi-node run see each other's lock on a shared output folder.
    """

    def __init__(self, folder: Path, name: str = ".lock"):
        self.path = folder / name
        self._fd: int | None = None

    def acquire(self, describe: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise FolderBusy(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(describe).encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> dict[str, Any]:
        try:
            data = json.loads(os.pread(fd, 65536, 0) or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
