"""The exact token audit of a curriculum: each planned stage's data prepared (mixes built, or reused by hash) and
counted with the model's tokenizer and Qwen2.5-VL's image rule, for ``plan --audit`` and ``data audit``."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from spinegpt.data_mixes import prepare
from spinegpt.data_mixes.audit import Counter, StageAudit, audit_rows, load_tokenizer, pixel_limits
from spinegpt.train import plan
from spinegpt.train.curriculum import LoadedCurriculum

from spinegpt import model_ref


def audit_curriculum(
    loaded: LoadedCurriculum, world_size: int, stages: Sequence[str] | None = None, stream: IO[str] | None = None
) -> list[StageAudit]:
    """Prepare each planned stage's data and count it exactly, for ``world_size`` ranks. Stages the curriculum's
    ``splits`` skip are not counted; restricted ones are counted restricted."""
    cur = loaded.curriculum
    planned = [p.stage for p in plan.build(loaded).stages]
    model_dir = model_ref.materialise(cur.model)
    tokenizer = load_tokenizer(model_dir)
    local = Path(model_dir)
    audits = []
    chosen = [stage for stage in planned if not stages or stage.name in stages]
    prepare.build_mixes([d for stage in chosen for d in stage.data], loaded.base_dir, cur.data_root, cur.seed)
    with tempfile.TemporaryDirectory(prefix="spinegpt-audit-") as tmp:
        for index, stage in enumerate(planned):
            if stages and stage.name not in stages:
                continue
            env = {**cur.env, **os.environ}
            counter = Counter(tokenizer, *pixel_limits(env, local if local.is_dir() else None))
            prepared = prepare.prepare(
                stage.data, loaded.base_dir, Path(tmp) / f"{index:02d}", data_root=cur.data_root, seed=cur.seed
            )
            audits.append(
                audit_rows(
                    stage.name,
                    prepared.path,
                    counter,
                    stage.max_length,
                    plan.global_batch(stage, world_size),
                    stage.num_train_epochs,
                    stage.max_steps,
                    stage.over_length,
                )
            )
            print(f"[spinegpt data] audited {stage.name}: {audits[-1].records:,} records", file=stream or sys.stderr)
    return audits
