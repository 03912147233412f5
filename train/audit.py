"""The exact token audit of a curriculum: each planned stage's data prepared (mixes built, or reused by hash) and
counted with the model's tokenizer and Qwen2.5-VL's image rule, for ``plan --audit`` and ``data audit``."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from spinegpt import model_ref
from spinegpt.data_mixes.audit import StageAudit, TokenCounter, audit_rows, load_tokenizer, pixel_limits
from spinegpt.train import plan as planning

logger = logging.getLogger(__name__)


def audit_curriculum(built: planning.Plan, world_size: int, stages: Sequence[str] | None = None) -> list[StageAudit]:
    """Prepare each planned stage's data and count it exactly, for ``world_size`` ranks. Stages the curriculum's
    ``splits`` skip are not counted; restricted ones are counted restricted."""
    cur = built.curriculum
    chosen = [s.stage for s in built.stages if not stages or s.stage.name in stages]
    model_dir = model_ref.materialise(cur.model)
    tokenizer = load_tokenizer(model_dir)
    local = Path(model_dir)
    built.data.build([d for stage in chosen for d in stage.data])
    audits = []
    with tempfile.TemporaryDirectory(prefix="spinegpt-audit-") as tmp:
        for index, stage in enumerate(chosen):
            counter = TokenCounter(
                tokenizer, *pixel_limits({**cur.env, **os.environ}, local if local.is_dir() else None)
            )
            prepared = built.data.prepare(stage.data, Path(tmp) / f"{index:02d}")
            audits.append(
                audit_rows(
                    stage.name,
                    prepared.path,
                    counter,
                    stage.max_length,
                    planning.global_batch(stage, world_size),
                    stage.num_train_epochs,
                    stage.max_steps,
                    stage.over_length,
                )
            )
            logger.info(f"audited {stage.name}: {audits[-1].records:,} records")
    return audits
