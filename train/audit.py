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
from spinegpt.train import cost, cost_plan
from spinegpt.train import plan as planning
from spinegpt.train.curriculum import Stage

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
            audits[-1].optimizer_steps = _optimizer_steps(audits[-1], stage, world_size, cur.seed)
            logger.info(f"audited {stage.name}: {audits[-1].records:,} records")
    return audits


def _optimizer_steps(audit: StageAudit, stage: Stage, world_size: int, seed: int) -> int:
    """The steps the engine will take over the rows the stage's over-length policy keeps (packed sequences when
    the stage packs), as ms-swift's sampler and the Trainer count them; 0 when every rank would be left without a
    sample (the engine would refuse to start)."""
    rows = audit.records - (audit.over_max_length if stage.over_length != "truncate" else 0)
    samples = rows
    if stage.packing and audit.rows is not None:
        capacity = int(stage.engine_args.get("packing_length") or stage.max_length)
        kept = [
            min(n, stage.max_length)
            for n in audit.rows.lengths
            if stage.over_length == "truncate" or n <= stage.max_length
        ]
        samples = len(cost_plan.pack_rows(kept, capacity, seed, int(stage.engine_args.get("packing_num_proc") or 1))[0])
    try:
        return cost.optimizer_steps(
            samples,
            world=world_size,
            micro_batch=stage.per_device_train_batch_size,
            grad_accum=stage.gradient_accumulation_steps,
            epochs=stage.num_train_epochs,
            max_steps=stage.max_steps,
            sequence_parallel=stage.sequence_parallel_size,
        )
    except ValueError as exc:
        logger.warning(f"stage {stage.name}: {exc}")
        return 0
