"""tiktoken reproduces a byte-level BPE tokenizer's counts exactly, and refuses the tokenizers it cannot."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pytest

from spinegpt.data_mixes import bpe

# Characters where tokenizers tend to differ: odd whitespace, case folding, combining marks, NFC compositions
# ('e' + U+0301, '>' + U+0338), CJK, emoji with modifiers, digits of other scripts, apostrophe contractions.
ALPHABET = list(
    "aAsSzZ ſKkİıß'\t\n\r\x0b\x0c\x85\u00a0\u1680\u2000\u2028\u2029\u202f\u205f\u3000\u180e\u200b\ufeff"
    '0123٣१①½éé̸>ﬁ한국어中文日本語🙂👍🏽\u0301\u0338.,;:!?-_()[]{}#@$%^&*+=<>/\\|"~`'
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _reference(tokenizer, texts: list[str]) -> list[int]:  # type: ignore[no-untyped-def]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def test_counts_equal_the_tokenizer_on_hard_text(tokenizer) -> None:  # type: ignore[no-untyped-def]
    counts = bpe.BpeCounts.from_tokenizer(tokenizer)
    rng = random.Random(0)
    texts = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 80))) for _ in range(4000)]
    texts += [bytes(rng.randrange(32, 256) for _ in range(60)).decode("latin-1") for _ in range(500)]
    # Added tokens inside text, a combining mark right after one (NFC must not reach across it), non-NFC text.
    texts += [
        "<|im_start|>user\ne\u0301<|im_end|>\u0338x",
        "a<|image_pad|><|image_pad|>b<tool_call>c</tool_call>",
        unicodedata.normalize("NFD", "Ärztin, Übelkeit, 脊柱, é"),
        "",
    ]
    texts += [Path(__file__).read_text(encoding="utf-8"), Path(bpe.__file__).read_text(encoding="utf-8")]
    assert any(not unicodedata.is_normalized("NFC", t) for t in texts)
    assert counts.count(texts) == _reference(tokenizer, texts)


def test_merges_rank_order_would_not_derive_are_refused(tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Swapping two merges that build on each other makes merges-BPE and rank-BPE disagree: refused, by name."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    merges = spec["model"]["merges"]
    made = {"".join(m): i for i, m in enumerate(merges)}
    # The first merge whose left part is itself a merge's product: put it before that product exists.
    at = next(i for i, (left, _) in enumerate(merges) if made.get(left, len(merges)) < i)
    before = made[merges[at][0]]
    merges.insert(before, merges.pop(at))
    tampered = Tokenizer.from_str(json.dumps(spec))
    with pytest.raises(bpe.NotEquivalent, match="is not what rank order derives"):
        bpe.BpeCounts.from_tokenizer(tampered)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: s["model"].update(byte_fallback=True), "byte_fallback"),
        (lambda s: s.update(normalizer={"type": "NFKC"}), "normalizer"),
        (lambda s: s["added_tokens"][0].update(lstrip=True), "matching rules"),
        (lambda s: s.update(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer"),
    ],
)
def test_other_shapes_are_refused(tokenizer, change, reason: str) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    change(spec)
    with pytest.raises(bpe.NotEquivalent, match=reason):
        bpe.BpeCounts.from_tokenizer(Tokenizer.from_str(json.dumps(spec)))


def test_a_merge_outside_the_byte_alphabet_is_refused_not_a_crash(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """The tokenizers library would not load such a file; a serialised form from elsewhere still gets a reason."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["model"]["merges"].insert(0, ["\u4e2d", "x"])

    class Serialised:
        def to_str(self) -> str:
            return json.dumps(spec)

    with pytest.raises(bpe.NotEquivalent, match="not a pair of byte-level tokens"):
        bpe.BpeCounts.from_tokenizer(Serialised())
