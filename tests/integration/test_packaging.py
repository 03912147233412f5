"""The distribution installs as one `spinegpt.*` namespace from the design's top-level folders, in a normal
(wheel) install as well as the editable one the tests run in."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from ..conftest import REPO


def test_editable_install_maps_top_level_folders() -> None:
    import spinegpt.data_mixes
    import spinegpt.eval_hooks
    import spinegpt.train

    assert Path(spinegpt.train.__file__).parent == REPO / "train"
    assert Path(spinegpt.data_mixes.__file__).parent == REPO / "data_mixes"
    assert Path(spinegpt.eval_hooks.__file__).parent == REPO / "eval_hooks"
    bare = subprocess.run([sys.executable, "-c", "import train"], capture_output=True, text=True, cwd="/")
    assert bare.returncode != 0  # never importable as a bare top-level `train`


def test_wheel_install_imports_and_ships_package_data(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("spinegpt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "spinegpt/cli.py",
        "spinegpt/train/runner.py",
        "spinegpt/data_mixes/prepare.py",
        "spinegpt/eval_hooks/__init__.py",
        "spinegpt/testing/cpu_shims.py",
        "spinegpt/configs/deepspeed/zero3_offload.json",
        "spinegpt/data_mixes/smoke/stage1.jsonl",
        "spinegpt/eval_hooks/tiny/medqa/phrases_no_exclude_test.jsonl",
        "spinegpt/eval_hooks/tiny/vqa_rad/data/test-00000-of-00001-e5bc3d208bb4deeb.parquet",
        "spinegpt/launch/slurm.sbatch",
    ):
        assert expected in names, expected
    assert not any(n.startswith(("train/", "tests/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # The unpacked wheel comes first on sys.path, ahead of the editable install's finder.
    code = (
        "import spinegpt.train.plan, spinegpt.data_mixes.smoke_root as p\n"
        "from spinegpt.train import deepspeed_configs as d\n"
        "from spinegpt.eval_hooks import benchmark as b\n"
        "print(spinegpt.train.plan.__file__); print(sorted(d.shipped())); print(p.smoke_file('stage1'))\n"
        "print(b.builtin('vqa_rad'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)}
    )
    assert result.returncode == 0, result.stderr
    plan_file, shipped, smoke, tiny = result.stdout.splitlines()
    assert plan_file.startswith(str(site))
    assert shipped == "['zero2', 'zero3', 'zero3_offload']"
    assert smoke.startswith(str(site)) and tiny.startswith(str(site))
