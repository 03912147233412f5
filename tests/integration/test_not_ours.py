"""Only ever remove what the project itself wrote: a build replaces only an earlier build (recognised by its
manifest), never a folder of the user's files, the data root or a run; two builds into one folder do not both
report success; an export never replaces the run it exports."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from spinegpt.data_mixes import build, mixes

from ..conftest import REPO, spinegpt_command


def _build_cli(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        *spinegpt_command(),
        "data",
        "build",
        "stage3_reports",
        "--data-root",
        str(root),
        "--output-dir",
        str(out),
    ]
    return subprocess.run([*command, *extra], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_a_build_never_wipes_a_folder_of_the_users_files(root: Path, tmp_path: Path) -> None:
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    result = _build_cli(root, mine)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not a build" in result.stderr and (mine / "chapter1.tex").read_text() == "years of work"
    # The data root itself, or a folder holding it, is refused as well.
    for target in (root, root.parent):
        refused = _build_cli(root, target)
        assert refused.returncode == 1 and "data root" in refused.stderr, refused.stderr
    assert (root / "SpineMed-450k").exists()


def test_a_build_replaces_an_earlier_build_and_only_it(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "build"
    assert _build_cli(root, out).returncode == 0
    first = json.loads((out / build.MANIFEST).read_text())["key"]
    assert _build_cli(root, out, "--seed", "7").returncode == 0  # other inputs: the old build is replaced
    assert json.loads((out / build.MANIFEST).read_text())["key"] != first
    (out / "notes.txt").write_text("mine")  # now the folder holds something the build did not write
    refused = _build_cli(root, out, "--seed", "8")
    assert refused.returncode == 1 and "notes.txt" in refused.stderr and (out / "notes.txt").exists()


def test_two_builds_into_one_folder_do_not_both_succeed(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "build"
    lock = build.OutputLock(out)
    lock.acquire()
    try:
        busy = _build_cli(root, out)
        assert busy.returncode == 1 and "in use by another process" in busy.stderr
    finally:
        lock.release()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(_build_cli(root, out).returncode)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0 in results and set(results) <= {0, 1}  # one builds; the other waits its turn or is refused
    assert json.loads((out / build.MANIFEST).read_text())["output"]["rows"] > 0


def test_a_run_folder_is_never_a_build_output(root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_manifest.json").write_text("{}")
    with pytest.raises(build.BuildError, match="holds a run"):
        build.build(mixes.load("stage3_reports"), root, run, seed=42)
    assert (run / "run_manifest.json").exists()


def test_an_export_never_replaces_what_it_did_not_export(tmp_path: Path) -> None:
    from spinegpt.train import export

    run = tmp_path / "run"
    stage = run / "stages" / "01-foundation"
    stage.mkdir(parents=True)
    (run / "run_manifest.json").write_text("{}")
    (stage / "DONE.json").write_text("{}")
    for target in (run, stage, run / "exports" / "model"):  # the run, the source, a folder inside the run
        with pytest.raises(export.ExportError, match="nothing was removed"):
            export.export(stage, target, overwrite=True)
    assert (run / "run_manifest.json").exists() and (stage / "DONE.json").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(export.ExportError, match="replaces an earlier export only"):
        export.export(stage, mine, overwrite=True)
    assert (mine / "notes.txt").exists()
    with pytest.raises(export.ExportError, match=r"notes\.txt is a file, not a folder"):
        export.export(stage, mine / "notes.txt" / "model")
