"""The project's SQLite caches (image verdicts, judge and extractor replies, teacher replies): key -> JSON value,
opened so that a damaged file never blocks a run.

A cache is only ever a shortcut. A damaged file (a kill mid-write on a network disk, a bad copy: SQLite says
"corrupt" or "not a database", or its quick_check fails) is moved aside with a warning and the cache starts afresh.
Anything else SQLite refuses (a lock another run holds past the wait, a full or read-only disk) says nothing about
the file, which another run may be using: that read is a miss and that write is skipped, with a warning, and a
cache that cannot be opened at all lives in memory for this process. A value is handed back only through the
caller's check, which treats a wrong one as a miss. SQLite itself has no "open or start over": this is that.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz_0123456789")


class _Damaged(sqlite3.DatabaseError):
    """quick_check's verdict on a file SQLite could open."""


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    # Only these say the file itself is bad; "locked", "disk is full", "readonly database" and I/O errors are
    # OperationalErrors (DatabaseError's subclass) about the moment, not the file.
    code = getattr(exc, "sqlite_errorcode", None)
    damaged = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return isinstance(exc, _Damaged) or (code is not None and code & 0xFF in damaged)


class Cache:
    """``key -> JSON value`` in one table of an SQLite file; safe to share between the threads of one process, and
    between processes (SQLite's own locking; a writer waits up to ``busy_timeout`` seconds, then misses)."""

    def __init__(self, path: Path, table: str, busy_timeout: float = 30.0):
        if not table or not set(table) <= _NAME_CHARS:
            raise ValueError(f"table name {table!r}: lowercase letters, digits and _ only")
        self.path, self.table, self.busy_timeout = path, table, busy_timeout
        self._lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                return self._connect(str(self.path))
            except sqlite3.DatabaseError as exc:
                if not _is_damage(exc):
                    raise
                self._set_aside(exc)
                return self._connect(str(self.path))
        except (OSError, sqlite3.DatabaseError) as exc:
            logger.warning(f"cache {self.path} cannot be used ({exc}); this process keeps its entries in memory")
            return self._connect(":memory:")

    def _connect(self, where: str) -> sqlite3.Connection:
        db = sqlite3.connect(where, check_same_thread=False, timeout=self.busy_timeout)
        try:
            # quick_check reads every page once: milliseconds for a cache of this size, and the one way to learn
            # that a file is damaged before a query halfway through a run says so.
            verdict = db.execute("PRAGMA quick_check").fetchone()
            if verdict is None or verdict[0] != "ok":
                raise _Damaged(f"quick_check: {verdict[0] if verdict else 'no answer'}")
            db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _set_aside(self, exc: Exception) -> None:
        # the pid too: two processes finding the same damage in the same second must not overwrite each other's copy
        stem = f"{self.path.name}.damaged-{int(time.time())}-{os.getpid()}"
        aside = self.path.with_name(stem)
        for n in itertools.count(1):  # and one process setting aside twice in a second keeps both
            if not aside.exists():
                break
            aside = self.path.with_name(f"{stem}-{n}")
        for suffix in ("", "-journal", "-wal", "-shm"):
            part = self.path.with_name(self.path.name + suffix)
            if part.exists():
                part.rename(aside.with_name(aside.name + suffix))
        logger.warning(f"cache {self.path} is damaged ({exc}); kept as {aside.name}, started afresh")

    def _guarded(self, action: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            try:
                return action(self._db)
            except sqlite3.DatabaseError as exc:
                if not _is_damage(exc):  # busy, full, read-only: this read misses, this write is skipped
                    logger.warning(f"cache {self.path} ({self.table}): {exc}; went on without it")
                    return None
                self._db.close()  # damage found mid-run (another process's bad write)
                try:
                    self._set_aside(exc)
                except OSError as why:
                    logger.warning(f"cache {self.path}: could not set the damaged file aside ({why})")
                self._db = self._open()
                return None

    def get(self, key: str, check: Callable[[Any], bool] = lambda value: True) -> Any:
        """The value stored under ``key``, or None when there is none or it fails ``check`` (checked the way a fresh
        value would be; a failing one is dropped with a warning and recomputed by the caller)."""
        row = self._guarded(lambda db: db.execute(f"SELECT value FROM {self.table} WHERE key = ?", (key,)).fetchone())
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except (TypeError, ValueError):
            value = _INVALID
        if value is _INVALID or not check(value):
            logger.warning(f"cache {self.path} ({self.table}): the entry {key[:16]} fails its check; recomputed")
            self.delete([key])
            return None
        return value

    def put(self, key: str, value: Any) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        rows = [(key, json.dumps(value, ensure_ascii=False)) for key, value in items]

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?)", rows)

        self._guarded(write)

    def delete(self, keys: Iterable[str]) -> None:
        gone = [(key,) for key in keys]

        def remove(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(f"DELETE FROM {self.table} WHERE key = ?", gone)

        self._guarded(remove)

    def close(self) -> None:
        with self._lock:
            self._db.close()


_INVALID = object()
