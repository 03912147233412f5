"""The audit's fast counting is exact: every row's count equals the per-row reference (the chat template applied
to the row, tokenized, plus Qwen2.5-VL's image rule), on the smoke data and on a seeded sample of the paper-scale
synthetic inputs; counts are cached by everything that decides them."""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import data_build
from spinegpt.data_mixes import audit
from spinegpt.data_mixes.stage_data import prepare_sources
from spinegpt.train.curriculum import DataSource


@pytest.fixture(scope="module")
def counter(tiny_model: Path) -> audit.TokenCounter:
    from transformers import AutoTokenizer

    return audit.TokenCounter(AutoTokenizer.from_pretrained(tiny_model), 3136, 50176)


def _reference(counter: audit.TokenCounter, row: dict[str, Any]) -> int:
    return counter.count(row)


def _synthetic_rows(tmp_path: Path) -> list[dict[str, Any]]:
    """A seeded sample of bench/data_build.py's paper-scale inputs (at a small scale), read by the real readers."""
    inputs = tmp_path / "inputs"
    data_build.generate(inputs, scale=0.002, seed=3)
    files = {**data_build.ENGLISH_FILES, "medical_o1": "medical-o1-reasoning-SFT/medical_o1_sft_Chinese.json"}
    found = data_build.engine_rows(inputs, files)
    return [row for rows in found.values() for row in random.Random(1).sample(rows, min(120, len(rows)))]


@pytest.mark.parametrize("path", ["tiktoken", "tokenizer batch"])
def test_batched_counts_equal_the_per_row_reference(counter: audit.TokenCounter, tmp_path: Path, path: str) -> None:
    assert counter.framing is not None  # Qwen's template is learnt, not rendered per row
    assert counter.fast is not None, counter.why_not_fast  # and its BPE is one tiktoken reproduces
    if path == "tokenizer batch":  # what a tokenizer of another shape gets
        counter = copy.copy(counter)
        counter.fast = None
    smoke = prepare_sources([DataSource(smoke=s) for s in ("stage1", "stage2", "stage3")], tmp_path, tmp_path / "s")
    rows = [json.loads(line) for line in smoke.path.read_text().splitlines()]
    rows += _synthetic_rows(tmp_path)
    rows.append(
        {
            "messages": [
                {"role": "system", "content": "你是脊柱外科医生。"},
                {"role": "user", "content": "<image>\n问题？"},
                {"role": "assistant", "content": "答。"},
                {"role": "user", "content": "And <image> this one?"},
                {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nL4/L5\n"},
            ],
            "images": next(r for r in rows if len(r.get("images", [])) == 2)["images"],
        }
    )
    shapes = {
        (
            "system" if r["messages"][0]["role"] == "system" else "plain",
            len(r.get("images", [])) > 0,
            sum(m["role"] == "user" for m in r["messages"]) > 1,
        )
        for r in rows
    }
    # Answers whose first characters could join the prompt's last pre-token (blank lines, spaces before a
    # newline, a combining accent, a contraction): counted whole, not in pieces.
    for opening in ("\n\n a", "  \nb", "\u0301c", "'re d", "\r\ne", "<|im_end|>f", "", "\t"):
        rows.append({"messages": [{"role": "user", "content": "q\n"}, {"role": "assistant", "content": opening}]})
    assert len(rows) > 300 and len(shapes) >= 4  # system prompts, images, multi-turn, their mixes
    counted = counter.count_rows(rows)
    assert counted.lengths == [_reference(counter, r) for r in rows]
    assert counted.trained == [counter.trained_tokens(r) for r in rows]
    assert counted.images == [[counter.image(p) for p in r.get("images") or []] for r in rows]
    assert counter.count_many(rows) == counted.lengths


def test_trained_tokens_are_what_the_engine_trains_on(counter: audit.TokenCounter) -> None:
    """ms-swift's ChatML labels (read in swift/template/base.py): every answer tokenized on its own plus its
    end-of-turn suffix ``<|im_end|>\n`` (2 tokens; an earlier turn's through ``_add_dynamic_eos``); the visual
    tokens of an image inside an answer are not labelled. Checked against the engine itself in
    tests/integration/test_cost_cli.py."""
    row = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "Hello! How are you?"},  # 6 tokens
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "\n\n a1"},  # '\n\n', ' a', '1'
        ]
    }
    assert counter.trained_tokens(row) == (6 + 2) + (3 + 2)
    assert counter.count_rows([row]).trained == [13]
    assert counter.trained_tokens({"messages": [{"role": "user", "content": "q"}]}) == 0


def test_counts_are_cached_by_what_decides_them(
    counter: audit.TokenCounter, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))
    prepared = prepare_sources([DataSource(smoke="stage2")], tmp_path, tmp_path / "p")
    first = audit.counts(prepared.path, counter)
    calls: list[int] = []
    original = audit.TokenCounter.count_rows
    monkeypatch.setattr(
        audit.TokenCounter, "count_rows", lambda self, rows: calls.append(len(rows)) or original(self, rows)
    )
    assert audit.counts(prepared.path, counter) == first and calls == []  # a hit: nothing counted again
    audit.counts(prepared.path, audit.TokenCounter(counter.tokenizer, counter.min_pixels, 12544))  # MAX_PIXELS changed
    assert calls, "another pixel limit must recount"
    calls.clear()
    other = AutoTokenizer.from_pretrained(tiny_model)
    other.chat_template = str(other.chat_template).replace("You are a helpful assistant.", "You are a surgeon.")
    changed = audit.counts(prepared.path, audit.TokenCounter(other, counter.min_pixels, counter.max_pixels))
    assert calls and changed != first  # another chat template: recounted, and the counts differ


def test_a_damaged_count_cache_is_counted_again_never_trusted(
    counter: audit.TokenCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache entry is checked as a fresh count would be (one entry per row, non-negative integers, trained tokens
    within the row); one that fails is discarded with a warning, never a wrong figure or a traceback."""
    import json

    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))
    prepared = prepare_sources([DataSource(smoke="stage2")], tmp_path, tmp_path / "p")
    first = audit.row_counts(prepared.path, counter)
    (entry,) = (tmp_path / "cache" / "token-counts").rglob("*.json")
    good = json.loads(entry.read_text())
    damaged = {
        "a row short": {**good, "lengths": good["lengths"][:-1], "images": good["images"][:-1]},
        "all short alike": {k: v[:-1] for k, v in good.items()},
        "a string": {**good, "lengths": ["12", *good["lengths"][1:]]},
        "a negative": {**good, "lengths": [-5, *good["lengths"][1:]]},
        "a float": {**good, "lengths": [1.5, *good["lengths"][1:]]},
        "a boolean": {**good, "lengths": [True, *good["lengths"][1:]]},
        "more trained than there is": {**good, "trained": [good["lengths"][0] + 1, *good["trained"][1:]]},
        "images not lists": {**good, "images": [7, *good["images"][1:]]},
        "not an object": [1, 2, 3],
    }
    for what, data in damaged.items():
        entry.write_text(json.dumps(data))
        caplog.clear()
        again = audit.row_counts(prepared.path, counter)
        assert again == first, what
        assert "token-count cache" in caplog.text and "counted again" in caplog.text, what


def test_parts_counted_by_processes_equal_the_serial_count(
    counter: audit.TokenCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))
    prepared = prepare_sources([DataSource(smoke=s) for s in ("stage1", "stage2")], tmp_path, tmp_path / "p")
    serial = audit.counts(prepared.path, counter, workers=1)
    (tmp_path / "cache").rename(tmp_path / "cache-serial")
    monkeypatch.setattr(audit, "PARALLEL_MIN_BYTES", 0)
    assert audit.counts(prepared.path, counter, workers=3) == serial


def test_a_fast_count_that_disagrees_with_the_tokenizer_is_caught_and_recounted(
    counter: audit.TokenCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The regex engines are the one part the equivalence proof cannot cover: a sample guards it."""
    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))
    prepared = prepare_sources([DataSource(smoke="stage2")], tmp_path, tmp_path / "p")
    rows = [json.loads(line) for line in prepared.path.read_text().splitlines()]
    counter = copy.copy(counter)
    assert counter.fast is not None
    wrong = copy.copy(counter.fast)
    original = wrong.count_rows

    def off_by_one(batch: list[dict[str, Any]], field: str) -> audit.RowCounts:
        found = original(batch)
        setattr(found, field, [n + 1 for n in getattr(found, field)])
        return found

    for field, message in (("lengths", "tiktoken's count"), ("trained", "tiktoken's trained tokens")):
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # counted afresh each time
        counter = copy.copy(counter)
        wrong.count_rows = lambda batch, field=field: off_by_one(batch, field)  # type: ignore[method-assign]
        counter.fast = wrong
        found = audit.row_counts(prepared.path, counter)
        assert found.lengths == [counter.count(r) for r in rows]
        assert found.trained == [counter.trained_tokens(r) for r in rows]
        assert counter.fast is None  # the tokenizer counted the file again
        assert f"{prepared.path}:1: {message}" in caplog.text


def test_image_sizes_from_headers_equal_pillows(tmp_path: Path) -> None:
    """The fast header reader against Pillow on the formats and JPEG variants hospital exports carry."""
    from PIL import Image

    written = []
    for k, (mode, suffix, options) in enumerate(
        [
            ("RGB", ".png", {}),
            ("L", ".png", {"optimize": True}),
            ("RGBA", ".PNG", {}),
            ("I;16", ".png", {}),
            ("RGB", ".jpg", {}),
            ("RGB", ".jpeg", {"progressive": True}),
            ("CMYK", ".jpg", {}),
            ("L", ".jpg", {"exif": Image.Exif()}),
            ("RGB", ".webp", {}),
            ("P", ".gif", {}),
            ("RGB", ".bmp", {}),
            ("RGB", ".tiff", {}),
        ]
    ):
        path = tmp_path / f"{k}{suffix}"
        Image.new(mode, (37 + 13 * k, 211 - 7 * k)).save(path, **options)
        written.append(path)
    for path in written:
        with Image.open(path) as image:
            assert audit.image_size(path) == image.size, path
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 5)
    with pytest.raises(OSError):  # Pillow's own error, not a wrong size
        audit.image_size(broken)
