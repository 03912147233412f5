"""A full disk, a read-only folder or an output path that is a file: a message naming what could not be written and
what to do, never a traceback; temporaries removed; the run's manifest says the stage failed.

The disk is real: a tmpfs of a few kilobytes mounted in a private mount namespace (``unshare``), so the command
meets ENOSPC and EROFS from the kernel, where the user would."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import REPO, spinegpt_command

_MOUNTED = """
mount -t tmpfs -o "$1" tmpfs "$2" || exit 99
disk=$2
listing=$3
shift 3
"$@"
code=$?
find "$disk" -mindepth 1 -printf '%P\\n' > "$listing" 2>/dev/null
[ -f "$disk/run/run_manifest.json" ] && cp "$disk/run/run_manifest.json" "$(dirname "$listing")/"
exit $code
"""


@pytest.fixture(scope="module")
def namespaces() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare to mount a small real filesystem")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine allows no private mount namespace (unshare -rm: {probe.stderr.decode().strip()})")


def _on_small_disk(
    tmp_path: Path, options: str, *args: str, timeout: float = 600
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``spinegpt ARGS`` with ``DISK`` in them replaced by a tmpfs mounted with ``options``; what it left there."""
    disk = tmp_path / "disk"
    disk.mkdir()
    listing = tmp_path / "left.txt"
    command = [a.replace("DISK", str(disk)) for a in args]
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", _MOUNTED, "sh", options, str(disk), str(listing), *spinegpt_command(), *command],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    assert result.returncode != 99, result.stderr
    left = listing.read_text().split() if listing.exists() else []
    return result, left


def test_a_full_disk_during_a_build_is_a_message_and_leaves_nothing(
    namespaces: None, root: Path, tmp_path: Path
) -> None:
    result, left = _on_small_disk(
        tmp_path, "size=8k", "data", "build", "stage3_reports", "--data-root", str(root), "--output-dir", "DISK/out"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "no space left" in result.stderr and "DISK" not in result.stderr, result.stderr
    assert [name for name in left if not name.endswith(".lock")] == [], left


def test_a_disk_filled_by_a_checkpoint_fails_the_stage_and_says_to_resume(namespaces: None, tmp_path: Path) -> None:
    # 50 MB: the data and the logs fit, the tiny model's first checkpoint (~400 MB with its optimizer) does not.
    result, left = _on_small_disk(
        tmp_path, "size=50m", "run", "curricula/smoke.yaml", "--output-dir", "DISK/run", "--skip-preflight"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "is full" in result.stderr and "--resume" in result.stderr, result.stderr[-2000:]
    assert not [name for name in left if name.endswith(".tmp") or "checkpoint-" in name], left
    recorded = json.loads((tmp_path / "run_manifest.json").read_text())
    assert recorded["status"] == "failed" and recorded["stages"][0]["status"] == "failed", recorded["stages"][0]
    assert "is full" in recorded["stages"][0]["error"] and "removed: checkpoint-" in recorded["stages"][0]["error"]


def test_a_disk_too_full_for_the_runs_own_files_is_a_message(namespaces: None, tmp_path: Path) -> None:
    # 100 kB: the run's progress file is refused while the engine trains its first step.
    result, left = _on_small_disk(
        tmp_path, "size=100k", "run", "curricula/smoke.yaml", "--output-dir", "DISK/run", "--skip-preflight"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "no space left" in result.stderr and "--resume" in result.stderr, result.stderr[-2000:]
    assert "could not be written" in result.stderr, result.stderr[-2000:]
    assert not [name for name in left if name.endswith(".tmp")], left
    json.loads((tmp_path / "run_manifest.json").read_text())  # whatever it could record, never a cut-off file


def test_a_read_only_output_folder_is_a_message(namespaces: None, root: Path, tmp_path: Path) -> None:
    result, _ = _on_small_disk(
        tmp_path, "ro", "data", "build", "stage3_reports", "--data-root", str(root), "--output-dir", "DISK/out"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "read-only" in result.stderr and "/out" in result.stderr, result.stderr


def test_an_output_path_that_is_a_file_is_a_message(tmp_path: Path) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for args in (
        ["run", "curricula/smoke.yaml", "--output-dir", str(taken)],
        ["run", "curricula/smoke.yaml", "--output-dir", str(taken / "run")],
        ["data", "build", "stage3_reports", "--data-root", "builtin:smoke", "--output-dir", str(taken / "out")],
    ):
        result = subprocess.run([*spinegpt_command(), *args], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert result.returncode == 1 and "Traceback" not in result.stderr, (args, result.stderr[-2000:])
        assert str(taken) in result.stderr and "not a folder" in result.stderr, (args, result.stderr[-2000:])
    assert taken.read_text() == "mine"
