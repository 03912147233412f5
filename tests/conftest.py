"""Shared fixtures of the three tiers: ``unit/`` (in-process, seconds), ``integration/`` (the real command line,
servers and scripts; nothing trains) and ``e2e/`` (the real engine, ms-swift + DeepSpeed over gloo, trains through
the `spinegpt` command: every test there is marked ``slow``)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CURRICULA = REPO / "curricula"
SMOKE = CURRICULA / "smoke.yaml"
TABLE7_ROWS = {
    # row: (stage -> splits it trains on), stages skipped
    "t7_1_base": ({}, ["foundation", "specialise", "reports"]),
    "t7_2_general": ({"foundation": ["general"]}, ["specialise", "reports"]),
    "t7_3_nonspine": ({"foundation": ["non_spine"], "reports": ["non_spine"]}, ["specialise"]),
    "t7_4_spine": ({"specialise": ["spine"], "reports": ["spine"]}, ["foundation"]),
    "t7_5_general_nonspine": ({"foundation": ["general", "non_spine"], "reports": ["non_spine"]}, ["specialise"]),
    "t7_6_full": (
        {"foundation": ["general", "non_spine"], "specialise": ["spine"], "reports": ["non_spine", "spine"]},
        [],
    ),
}


@pytest.fixture(scope="session", autouse=True)
def _cache_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Reuse the Makefile's in-clone caches when set (compiled DeepSpeed ops take ~1 min to build); otherwise keep
    # the test session away from the user's home cache.
    os.environ.setdefault("SPINEGPT_CACHE", str(tmp_path_factory.mktemp("spinegpt-cache")))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tier is the folder: everything under e2e/ trains, so ``-m "not slow"`` leaves it out."""
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if item.path.is_relative_to(e2e):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (``make test`` runs ``-n 2``) the e2e tier is one unit of work, run in order by one worker:
    its tests share session fixtures (the smoke run) and each run already trains on both cores; the other worker
    takes the unit and integration tests (one core each) in the e2e runs' idle time. (xdist's own ``loadgroup``
    cannot do this under pytest 9.2: it renames nodes through an attribute pytest no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "e2e" if nodeid.startswith("tests/e2e/") else nodeid

    return TierScheduling(config, log)


@pytest.fixture(autouse=True)
def _spinegpt_logs_reach_caplog() -> Iterator[None]:
    """A test that runs ``cli.main`` in-process configures spinegpt's logger for a console (its own handler, no
    propagation); put it back so later tests' ``caplog`` sees spinegpt's records."""
    yield
    logger = logging.getLogger("spinegpt")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root in the upstream schemas (the ``builtin:smoke`` one, written into this test module's folder)."""
    from spinegpt.data_mixes import smoke_root

    return smoke_root.write(tmp_path_factory.mktemp("upstream"))


def build_mix(root: Path, out: Path, name: str = "stage1_foundation", seed: int = 42, **kw: Any) -> Any:
    """A shipped mix built from ``root`` into ``out`` (PubMedVision cut to two items unless ``settings`` says)."""
    from spinegpt.data_mixes import build, mixes

    settings = kw.pop("settings", {"pubmedvision.count": 2})
    return build.build(mixes.load(name, settings), root, out, seed=seed, **kw)


def engine_arg(command: list[str], key: str) -> str:
    """The value the engine command gives ``--key``."""
    return command[command.index(f"--{key}") + 1]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from spinegpt.offline import tiny_model as tm

    return tm.ensure()


# A wandb key in the environment of the shared run: it must never reach a file (tests/e2e/test_tracking.py).
WANDB_SECRET = "wandb-key-that-must-never-be-written-0123456789"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The smoke curriculum, as shipped, on 2 processes; the last stage evaluated on a fixture SpineBench, every
    stage tracked by wandb (offline, with a key in the environment) and tensorboard. One run serves the training,
    export, tracking and report tests: each such run costs about two minutes on 2 cores."""
    from .bench_fixtures import write_spinebench

    root = tmp_path_factory.mktemp("smoke")
    bench = write_spinebench(root / "bench")
    out = root / "run"
    spec = f"{{kind: spinebench, path: '{bench}', max_new_tokens: 8, report_max_new_tokens: 8}}"
    evaluation = f"stages.reports.eval={{benchmarks: [{spec}]}}"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_API_KEY": WANDB_SECRET}
    args = ["curricula/smoke.yaml", evaluation, "report_to=[wandb, tensorboard]", "--nproc", "2"]
    result = run_spinegpt("run", *args, "--output-dir", str(out), env=env)
    return out, json.loads((out / "run_manifest.json").read_text()), result.stderr


@pytest.fixture(scope="session")
def one_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke curriculum in one process, as a user with one GPU runs it, every stage kind once: a LoRA first
    stage under ZeRO-3 (the adapters merged by the engine), then the shipped ZeRO-2 and ZeRO-3-with-CPU-offload
    stages, a step or two each; no evaluation (tested on the runs that are about it)."""
    out = tmp_path_factory.mktemp("one-process") / "run"
    overrides = [
        "eval=null",
        "stages.foundation.tuner_type=lora",
        "stages.foundation.lora_rank=4",
        "stages.foundation.deepspeed=zero3",
        "stages.foundation.max_steps=2",
        "stages.specialise.max_steps=1",
        "stages.reports.max_steps=1",
    ]
    run_spinegpt("run", "curricula/smoke.yaml", *overrides, "--nproc", "1", "--output-dir", str(out))
    return out


def spinegpt_command() -> list[str]:
    """The installed console script, next to this interpreter: the entry point users run."""
    script = Path(sys.executable).with_name("spinegpt")
    if not script.exists():
        raise RuntimeError(f"console script not installed at {script}: run `make setup`")
    return [str(script)]


def run_spinegpt(
    *args: str, check: bool = True, timeout: float = 900, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*spinegpt_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        **kwargs,  # type: ignore[call-overload]
    )
    if check and result.returncode != 0:
        raise AssertionError(f"spinegpt {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def run_until_then_kill(args: list[str], marker: Path, log: Path, timeout: float = 600) -> None:
    """Start `spinegpt ARGS` in its own process group, wait until ``marker`` exists, then SIGKILL the whole group
    (runner, launcher and every rank), as a crash or a preempted job would."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [*spinegpt_command(), *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            assert process.poll() is None, f"exited {process.returncode} before {marker}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no {marker} after {timeout}s"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
