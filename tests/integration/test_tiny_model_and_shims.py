from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spinegpt.testing import cpu_shims


def test_tiny_model_loads_and_trains_a_step(tiny_model: Path) -> None:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from spinegpt.offline import smoke_images as smoke_data

    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    processor = AutoProcessor.from_pretrained(tiny_model)
    n_params = sum(p.numel() for p in model.parameters())
    assert 15e6 < n_params < 25e6
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>", "<|im_end|>"]) == [151655, 151652, 151645]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which level?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>Which level?" in prompt
    image: Image.Image = smoke_data.render("mri-sagittal-L4.png")
    batch = processor(text=[prompt], images=[image], return_tensors="pt")
    assert int((batch["input_ids"] == 151655).sum()) == 16  # 112x112 -> (112/28)^2 visual tokens
    out = model(**batch, labels=batch["input_ids"])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.lm_head.weight.grad is not None


def test_tiny_model_is_cached_and_deterministic(tiny_model: Path, tmp_path: Path) -> None:
    from spinegpt.offline import tiny_model as tm
    from spinegpt.train import weights

    assert tm.ensure() == tiny_model  # second call reuses
    other = tm.ensure(tmp_path / "again")
    assert weights.weights_sha256(other) == weights.weights_sha256(tiny_model)
    assert json.loads((other / "spinegpt_recipe.json").read_text())["seed"] == tm.SEED


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


@pytest.mark.skipif(not cpu_shims.pth_path().exists(), reason="cpu shims not installed in this environment (CUDA host)")
def test_shims_make_torchvision_import_in_fresh_processes() -> None:
    ok = _python("import torchvision, torchvision.transforms; print('ok')")
    assert ok.returncode == 0 and "ok" in ok.stdout, ok.stderr
    # Prove the fix is what makes it work: with the hook disabled the registry's CUDA torchvision fails.
    broken = _python("import torchvision", SPINEGPT_NO_CPU_SHIMS="1")
    assert broken.returncode != 0 and "torchvision::nms" in broken.stderr


def test_accelerate_falls_back_to_gloo_only_for_multi_process() -> None:
    code = (
        "from accelerate.state import PartialState, DistributedType\n"
        "print(PartialState._prepare_backend(object.__new__(PartialState))[1] == DistributedType.MULTI_CPU)\n"
    )
    multi = _python(code, WORLD_SIZE="2", LOCAL_RANK="0")
    single = _python(code, WORLD_SIZE="1")
    assert multi.stdout.strip() == "True", multi.stderr
    assert single.stdout.strip() == "False", single.stderr


def test_shims_do_nothing_where_cuda_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import accelerate.state as state

    monkeypatch.setattr(cpu_shims, "_cuda_available", lambda: True)
    before = state.PartialState._prepare_backend
    monkeypatch.setattr(state.PartialState, "_prepare_backend", before)
    assert cpu_shims.patch_accelerate_backend(state) is False
    assert state.PartialState._prepare_backend is before
    assert cpu_shims.declare_torchvision_ops() is False
    assert cpu_shims.install() is None
