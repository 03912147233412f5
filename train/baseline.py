"""The base model as row 0: a curriculum's starting model evaluated once, so every stage's change (and any
forgetting) is measured against it.

Evaluating a 7B model on SpineBench takes a while and gives the same result every time for the same model and
settings, so it is cached under ``$SPINEGPT_CACHE/baselines/<key>/`` and copied into the run (``baseline/eval/``):
a resumed run, another run from the same model, and a sweep's untrained row (Table 7, row 1) reuse it. The key
holds what decides the result: the model's identity (the sha256 of its weights for a folder or built-in model, the
cached hub revision for a hub id), the evaluation job (benchmarks, their files' sha256, generation and judge
settings), the pixel limits of the environment and this code's protocol fingerprint (prompt template, answer
rules, rubric, statistics). A model that cannot be identified (a hub id not downloaded yet, a ModelScope id) is
evaluated and cached once it can be.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt import model_ref, proc
from spinegpt.eval_hooks import launch as eval_launch
from spinegpt.eval_hooks import protocol, registry
from spinegpt.eval_hooks.benchmark import content_sha256
from spinegpt.eval_hooks.config import EvalJob
from spinegpt.files import stable_hash
from spinegpt.paths import cache_root
from spinegpt.train import environment, weights
from spinegpt.train.curriculum import Curriculum

logger = logging.getLogger(__name__)
CACHE_DIR = "baselines"


@dataclass(frozen=True)
class Baseline:
    summary: dict[str, Any]
    """The evaluation's ``summary.json``."""
    cached: bool
    """Copied from the cache, not evaluated now."""
    key: str | None
    """Its cache key (None: not cached, the model could not be identified)."""


def model_identity(curriculum: Curriculum, model: str) -> dict[str, str] | None:
    """What makes this model this model: its weights' hash (a folder), or its hub revision as cached (a hub id);
    None where neither is known."""
    folder = Path(model)
    if folder.is_dir():
        return {"weights_sha256": weights.weights_sha256(folder)}
    if curriculum.hub != "huggingface":
        return None  # ModelScope's cache layout is not read here: evaluated every time
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, "config.json")
    except (ValueError, OSError):  # an id the hub client rejects is not in the cache
        return None
    if not isinstance(found, str):
        return None
    # <cache>/models--org--name/snapshots/<commit>/config.json: the commit is the revision evaluated.
    return {"hub_id": model, "revision": Path(found).parent.name}


def cache_key(identity: dict[str, str], job: EvalJob, env: dict[str, str]) -> str:
    # A benchmark's regression budget (max_drop) is read from the stages' evaluations, never the base model's: it
    # decides nothing here, and another budget reuses the same evaluation.
    benchmarks = [b.model_dump(mode="json", exclude={"max_drop"}) for b in job.benchmarks]
    return stable_hash(
        {
            "model": identity,
            "job": {**job.model_dump(mode="json"), "benchmarks": benchmarks},
            "files": {b.label: content_sha256(registry.get(b.kind), Path(b.path)) for b in job.benchmarks},
            "pixels": {key: env.get(key) for key in environment.PIXEL_ENV},
            "code": protocol.code_fingerprint(),
        }
    )


def _copy(source: Path, target: Path) -> None:
    """``source``'s files into ``target`` (emptied first), through a temporary sibling and a rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)


def evaluate(
    curriculum: Curriculum,
    job: EvalJob,
    out_dir: Path,
    log: Path,
    python: str | None = None,
    engine: Callable[..., int] = proc.run,
) -> Baseline:
    """The starting model of ``curriculum`` evaluated as ``job`` says, into ``out_dir``: from the cache where it
    was evaluated before, else in a process of its own (then cached)."""
    model = model_ref.materialise(curriculum.model)
    env = environment.process_env(curriculum)
    identity = model_identity(curriculum, model)
    key = cache_key(identity, job, env) if identity else None
    stored = cache_root() / CACHE_DIR / key if key else None
    if stored is not None and (stored / eval_launch.SUMMARY).is_file():
        logger.info(f"base model {curriculum.model}: evaluation reused from the cache ({stored})")
        _copy(stored, out_dir)
        return Baseline(eval_launch.read_summary(out_dir), cached=True, key=key)
    logger.info(f"base model {curriculum.model}: evaluating on {', '.join(b.label for b in job.benchmarks)}")
    summary = eval_launch.run(model, job, out_dir, env, log, python=python, engine=engine)
    if identity is None and (identity := model_identity(curriculum, model)) is not None:
        key = cache_key(identity, job, env)  # a hub model the evaluation has just downloaded
    if key is not None:
        target = cache_root() / CACHE_DIR / key
        if not (target / eval_launch.SUMMARY).is_file():
            _copy(out_dir, target)
    return Baseline(summary, cached=False, key=key)
