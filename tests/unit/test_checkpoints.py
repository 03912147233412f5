"""--resume takes the newest *complete* checkpoint: what a kill or a full disk leaves mid-save (a truncated weights
file, an empty trainer state, DeepSpeed states without their `latest` tag) is skipped, saying which and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spinegpt.train import swift_adapter


def _checkpoint(engine: Path, step: int) -> Path:
    folder = engine / f"checkpoint-{step}"
    (folder / f"global_step{step}").mkdir(parents=True)
    save_file({"w": torch.ones(64, 64)}, str(folder / "model.safetensors"))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 9}))
    (folder / "latest").write_text(f"global_step{step}")
    (folder / f"global_step{step}" / "mp_rank_00_model_states.pt").write_bytes(b"states")
    return folder


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:-100]), "truncated"),
        (lambda c: (c / "latest").unlink(), "'latest' tag"),
        (lambda c: (c / "trainer_state.json").write_text(""), "trainer_state.json unreadable"),
        (lambda c: next(c.glob("global_step*/*.pt")).write_bytes(b""), "empty DeepSpeed state"),
    ],
    ids=["truncated weights", "no latest", "empty trainer state", "empty states"],
)
def test_an_incomplete_newest_checkpoint_is_skipped_for_the_previous_one(
    tmp_path: Path, damage: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    complete = _checkpoint(tmp_path, 2)
    newest = _checkpoint(tmp_path, 4)
    assert swift_adapter.resumable_checkpoint(tmp_path) == newest
    damage(newest)  # type: ignore[operator]
    assert swift_adapter.resumable_checkpoint(tmp_path) == complete
    assert "skipping checkpoint-4: " in caplog.text and reason in caplog.text
    damage(complete)  # type: ignore[operator]
    assert swift_adapter.resumable_checkpoint(tmp_path) is None  # nothing complete: the stage starts over
