"""The project's SQLite cache: damage is set aside, anything else (a lock held by another run, a full or read-only
disk) is a miss, never a reason to move another run's healthy file away."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from spinegpt.sqlite_cache import Cache


def _hold_lock(path: Path) -> sqlite3.Connection:
    """Another run in the middle of a long write: an exclusive lock on the file."""
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


def test_a_lock_held_by_another_run_is_a_miss_and_the_file_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite"
    first = Cache(path, "t", busy_timeout=0.1)
    first.put("k", 1)
    other = _hold_lock(path)
    try:
        assert first.get("k") is None  # a miss while the other run writes
        first.put("k2", 2)  # skipped, not an error
        late = Cache(path, "t", busy_timeout=0.1)  # opened while the lock is held
        late.put("k3", 3)
        assert late.get("k3") == 3  # kept for this run in memory
    finally:
        other.rollback()
        other.close()
    assert "locked" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite"], "a healthy file was set aside"
    assert first.get("k") == 1 and Cache(path, "t").get("k") == 1
    first.close()
    late.close()


def test_a_damaged_file_is_set_aside_under_a_name_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    for _ in range(2):  # twice in the same second: the second must not overwrite the first
        path.write_bytes(b"not a database" * 300)
        cache = Cache(path, "t")
        cache.put("k", 1)
        assert cache.get("k") == 1
        cache.close()
    assert len(list(tmp_path.glob("c.sqlite.damaged-*"))) == 2
