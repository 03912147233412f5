"""The run manifest (``run_manifest.json``): one file per run that says what ran, on what, from which code, and what
came out. Its schema is :class:`RunManifest`; report, export, model card and sweep read it through that class.

It is rewritten atomically after every change (temp file + rename), so a crash at any moment leaves either the
previous or the next complete version on disk, never a torn one. Only the fields a run has set are written: a
stage that never started has no ``ended_at``, rather than a null one.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from spinegpt.errors import UserError
from spinegpt.files import stable_hash, write_json_atomic
from spinegpt.train.cost_report import CurriculumCost

FILE = "run_manifest.json"
RunStatus = Literal["running", "done", "partial", "failed", "interrupted"]
StageStatus = Literal["pending", "running", "done", "failed", "interrupted"]
EvalStatus = Literal["running", "done", "failed", "interrupted"]
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

__all__ = ["FILE", "RunManifest", "StageRecord", "stable_hash", "write_json_atomic"]


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
    return Path(__file__).resolve().parent.parent


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "packages": package_versions(),
        "git": git_state(code_root()),
    }


class ManifestError(UserError, ValueError):
    """A run manifest that cannot be read; the message names the file."""


class _Record(BaseModel):
    # Unknown keys are kept: a manifest written by a newer spinegpt still reads, and is written back whole.
    model_config = ConfigDict(extra="allow")

    def set(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)


class EvalRecord(_Record):
    """The evaluation after a stage."""

    status: EvalStatus
    dir: str
    started_at: str
    ended_at: str | None = None
    benchmarks: dict[str, Any] | None = None
    """Per benchmark: ``kind``, ``items``, ``unparsed`` and ``scores`` (the evaluation's ``summary.json``)."""
    error: str | None = None
    regressions: list[dict[str, Any]] | None = None
    """A stage's budgeted headline figures against the base model (``train/regression.py``: difference, its paired
    interval, ``flagged``), where a benchmark sets ``max_drop`` and the run evaluated its base model."""


class BaselineRecord(EvalRecord):
    """The curriculum's starting model evaluated before stage 1 (``eval.baseline``): the run's row 0."""

    model: str
    cache_key: str | None = None
    """Its key under ``$SPINEGPT_CACHE/baselines`` (None: the model could not be identified, so it is not cached)."""
    cached: bool = False
    """Reused from the cache rather than evaluated by this run."""


class StageRecord(_Record):
    """One stage of a run: its configuration, what it started from, and what it produced."""

    name: str
    index: int
    dir: str
    status: StageStatus = "pending"
    config: dict[str, Any]
    """The stage as configured (the curriculum's stage block, resolved)."""
    config_sha256: str
    """Hash of what decides the trained weights; a resumed stage must match it."""
    model: str
    starts_from: str
    deepspeed: str | None = None
    zero_stage: int | None = None
    engine_args: list[str]
    command: list[str]
    started_at: str | None = None
    ended_at: str | None = None
    data: dict[str, Any] | None = None
    """The prepared data: path, rows, sha256, the inputs' hashes, and the length audit (``lengths``)."""
    started_from_sha256: str | None = None
    resumed_from: str | None = None
    engine_seconds: float | None = None
    error: str | None = None
    final_checkpoint: str | None = None
    final: str | None = None
    weights_sha256: str | None = None
    global_step: int | None = None
    losses: list[tuple[int, float]] | None = None
    final_loss: float | None = None
    eval: EvalRecord | None = None


class Attempt(_Record):
    """One invocation of ``spinegpt run`` on this run folder."""

    started_at: str
    resume: bool
    python: str | None = None
    platform: str | None = None
    host: str | None = None
    packages: dict[str, str | None] = {}
    git: dict[str, Any] | None = None
    ended_at: str | None = None
    status: RunStatus | None = None
    error: str | None = None


class RunManifest(_Record):
    """``run_manifest.json``."""

    format: int = FORMAT
    name: str
    run_id: str
    """One id for every attempt of this run: the experiment-tracking group of all its stages."""
    curriculum_file: str
    overrides: list[str] = []
    curriculum: dict[str, Any]
    """The resolved curriculum (after ``extends`` and overrides)."""
    output_dir: str
    launch: dict[str, Any]
    world_size: int
    created_at: str
    status: RunStatus
    """``partial``: stopped by ``--until``."""
    attempts: list[Attempt] = []
    stages: list[StageRecord] = []
    baseline: BaselineRecord | None = None
    """The base model's evaluation, where ``eval.baseline`` asks for it."""
    cost: CurriculumCost | None = None
    """What the run was predicted to cost when it first started (``spinegpt plan --cost``: FLOPs, steps, packing,
    GPU-hours per stage), beside what it took (each stage's ``engine_seconds``)."""
    updated_at: str | None = None

    @classmethod
    def read(cls, path: Path) -> RunManifest:
        """The manifest at ``path``; one that is empty, cut short or not a manifest is a :class:`ManifestError`
        naming the file (what a full disk or an editor leaves), never a parser's traceback."""
        try:
            manifest = cls.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ManifestError(f"{path}: not a readable run manifest ({first})") from None
        if manifest.format != FORMAT:
            raise ManifestError(f"{path}: unsupported manifest format {manifest.format!r} (expected {FORMAT})")
        return manifest

    def write(self, path: Path) -> None:
        self.updated_at = now()
        write_json_atomic(path, self.to_json())

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)

    def stage(self, name: str) -> StageRecord:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r} in the run; stages: {', '.join(s.name for s in self.stages)}")
