"""Files written so a crash never leaves half of one, and the hashes that identify them."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary sibling and a rename: readers see the old file or the new one, never a part.
    A failed write (a full disk) removes the temporary and names ``path`` in the error."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None or exc.filename == str(tmp):
            exc.filename = str(path)  # the file the user knows, not its temporary
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder this process writes into, or None: it or a folder above it is a
    file, or the nearest existing folder is read-only or not writable. Asked before a command starts, so the
    answer is a message, not an OSError halfway through."""
    path = path.absolute()
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        return f"{existing} is on a read-only file system" if read_only else f"{existing} is not writable by you"
    return None


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
