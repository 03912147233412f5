"""Exact token counts of a byte-level BPE tokenizer (Qwen2.5-VL's, GPT-2's, Llama 3's shape) through tiktoken.

Why not the tokenizer itself: on 2 cores the ``tokenizers`` library encodes ~6 MB of text a second (it builds
offsets and token strings nobody reads here, and splits with a slower regex engine); tiktoken's BPE core encodes
the same text ~4x faster on one core (bench/results/token-counts-*.txt). Counting must stay *exact*, so tiktoken
is only used where it provably gives the tokenizer's own tokens, and :class:`BpeCounts` is built from the
tokenizer's serialised form (no second source of truth):

- the model is plain byte-level BPE (no dropout, byte fallback, unknown token, subword affixes, or
  ``ignore_merges``), the normalizer NFC or none, the pre-tokenizer one regex split then byte-level mapping;
- added tokens are matched as written (not normalised, no strip or single-word rules) and none contains another,
  so matching them is the same in both libraries;
- merges-BPE (the tokenizer: apply the listed merge of lowest index) and rank-BPE (tiktoken: merge the adjacent
  pair whose concatenation has the lowest rank) agree on every word when each merge is exactly what rank-BPE
  derives for its own token (ranks = merge order). :func:`_merges_are_rank_derivable` checks that for every merge,
  once per tokenizer (~2 s, remembered in the cache).

When any of this fails, :meth:`BpeCounts.from_tokenizer` says why and the caller uses the tokenizer itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from spinegpt.paths import cache_root


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level pre-tokenizer's printable stand-in for each byte (GPT-2's table), character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + k): b for k, b in enumerate(others)}


JOIN_LOOKAHEAD = 8
"""Characters past a join's leading whitespace that :meth:`BpeCounts.joins_cleanly` reads."""
# GPT-2's pattern: what a ByteLevel pre-tokenizer with use_regex=True splits by.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class NotEquivalent(Exception):
    """The tokenizer is not of the shape whose counts tiktoken reproduces exactly (the message says why)."""


@dataclass(frozen=True)
class BpeCounts:
    """Plain data (picklable into worker processes): the ranks, split pattern and added tokens of one tokenizer."""

    ranks: dict[bytes, int]
    pattern: str
    added: tuple[str, ...]
    nfc: bool

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> BpeCounts:
        """Built from a ``transformers`` fast tokenizer or a ``tokenizers.Tokenizer``; raises :class:`NotEquivalent`."""
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not hasattr(backend, "to_str"):
            raise NotEquivalent("not a fast (Rust) tokenizer")
        serialised = backend.to_str()
        spec = json.loads(serialised)
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            raise NotEquivalent(f"model type {model.get('type')!r}, not BPE")
        for key, plain in (
            ("dropout", None),
            ("unk_token", None),
            ("byte_fallback", False),
            ("ignore_merges", False),
            ("continuing_subword_prefix", ""),
            ("end_of_word_suffix", ""),
        ):
            if model.get(key) not in (plain, None):
                raise NotEquivalent(f"BPE {key}={model.get(key)!r}")
        normalizer = spec.get("normalizer")
        if normalizer not in (None, {"type": "NFC"}):
            raise NotEquivalent(f"normalizer {normalizer!r}")
        pattern = _pattern(spec.get("pre_tokenizer"))
        added = [token for token in spec.get("added_tokens") or []]
        for token in added:
            if token.get("normalized") or token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
                raise NotEquivalent(f"added token {token['content']!r} has matching rules tiktoken lacks")
        contents = [token["content"] for token in added]
        for a in contents:
            if any(a != b and a in b for b in contents):
                raise NotEquivalent(f"added token {a!r} is part of another one")
        alphabet = _byte_level_alphabet()
        vocab = model.get("vocab") or {}
        if any(char not in vocab for char in alphabet):
            raise NotEquivalent("the vocabulary lacks some of the 256 byte tokens")
        ranks = {bytes([b]): vocab[char] for char, b in alphabet.items()}
        merges: list[tuple[bytes, bytes]] = []
        for index, merge in enumerate(model.get("merges") or []):
            try:
                left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
                pair = (bytes(alphabet[c] for c in left), bytes(alphabet[c] for c in right))
            except (KeyError, ValueError, TypeError):
                raise NotEquivalent(f"merge {merge!r} is not a pair of byte-level tokens") from None
            token = pair[0] + pair[1]
            if token in ranks:
                raise NotEquivalent(f"two merges make {token!r}")
            # Ranks follow the merge order, whatever the ids: a count needs the priorities, not the ids.
            ranks[token] = len(alphabet) + index
            merges.append(pair)
        _check_merges_once(hashlib.sha256(serialised.encode()).hexdigest(), merges, ranks)
        return cls(ranks, pattern, tuple(contents), normalizer is not None)

    @cached_property
    def _encoding(self) -> Any:
        import tiktoken

        # Added tokens get ids past the ranks; only their count matters.
        top = max(self.ranks.values()) + 1
        specials = {text: top + k for k, text in enumerate(self.added)}
        return tiktoken.Encoding(
            "spinegpt-count", pat_str=self.pattern, mergeable_ranks=self.ranks, special_tokens=specials
        )

    @cached_property
    def _added(self) -> re.Pattern[str] | None:
        return re.compile("|".join(map(re.escape, sorted(self.added, key=len, reverse=True)))) if self.added else None

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, as the tokenizer gives them with ``add_special_tokens=False``."""
        encoding = self._encoding
        found = []
        for text in texts:
            if not self.nfc or unicodedata.is_normalized("NFC", text):
                found.append(len(encoding.encode(text, allowed_special="all")))
                continue
            # Added tokens are matched before normalisation (NFC could change one's neighbour: '>' + U+0338 is
            # one character), so normalise only the text between them.
            pieces = self._added.split(text) if self._added else [text]
            found.append(
                len(pieces)
                - 1
                + sum(len(encoding.encode_ordinary(unicodedata.normalize("NFC", piece))) for piece in pieces)
            )
        return found

    def joins_cleanly(self, left: str, right: str) -> bool:
        """True when ``count(left + right) == count(left) + count(right)`` is certain: no pre-token (the split
        pattern's match), no added token and no NFC composition spans the join. False means "not certain"."""
        return self.joiner(left)(right)

    def joiner(self, left: str) -> Callable[[str], bool]:
        """:meth:`joins_cleanly` of ``left`` with any text, its work on ``left`` done once: a row can then be counted
        in pieces (its prompt, each answer) and both its length and its trained tokens come from one encoding.

        Only the end of ``left`` after its last added token matters (tiktoken splits at added tokens first), and of
        the right side its leading whitespace and the few characters after it (:data:`JOIN_LOOKAHEAD`): the split
        pattern is applied to the tail and that head, and the join is clean when one of its matches ends exactly
        there. Patterns without look-behind whose alternatives look at most that far past a join (GPT-2's, Qwen's,
        Llama 3's: a contraction is 3 characters) decide the join on these characters alone; for any other the
        audit's spot check against the tokenizer is the guard. Verdicts are remembered per (tail, head): answers
        open with few distinct heads."""
        ends = [at + len(token) for token in self.added if (at := left.rfind(token)) >= 0]
        tail = left[max(ends) :] if ends else left
        # The rest of every added token that the tail ends with the beginning of: such a token would span the join.
        rests = tuple(t[k:] for t in self.added for k in range(1, len(t)) if tail.endswith(t[:k]))
        added, space, verdicts = self.added, self._space, self._joins

        def joins(right: str) -> bool:
            if not right:
                return True
            if rests and right.startswith(rests):
                return False
            if not tail or right.startswith(added):
                return True  # the join is at an added token, where tiktoken splits anyway
            whitespace = space.match(right)
            head = right[: (whitespace.end() if whitespace else 0) + JOIN_LOOKAHEAD]
            known = verdicts.get((tail, head))
            if known is None:
                known = self._join_verdict(tail, head)
                if len(verdicts) < 100_000:
                    verdicts[(tail, head)] = known
            return known

        return joins

    def _join_verdict(self, tail: str, head: str) -> bool:
        if self.nfc:
            first = head[0]
            if unicodedata.combining(first) or 0x1100 <= ord(first) <= 0x11FF:
                return False  # a combining mark or a Hangul jamo may attach to the character before it
            if unicodedata.normalize("NFC", tail[-1] + first) != tail[-1] + unicodedata.normalize("NFC", first):
                return False
            tail, head = unicodedata.normalize("NFC", tail), unicodedata.normalize("NFC", head)
        return any(match.end() == len(tail) for match in self._split.finditer(tail + head))

    @cached_property
    def _split(self) -> Any:
        import regex  # the split pattern uses \p{..} classes, which the standard re lacks

        return regex.compile(self.pattern)

    @cached_property
    def _space(self) -> Any:
        import regex

        return regex.compile(r"\s+")  # the split pattern's own reading of whitespace

    @cached_property
    def _joins(self) -> dict[tuple[str, str], bool]:
        return {}

    def __getstate__(self) -> dict[str, Any]:  # the cached tiktoken encoding is rebuilt in a worker, not pickled
        return {key: getattr(self, key) for key in ("ranks", "pattern", "added", "nfc")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)


def _pattern(pre_tokenizer: dict[str, Any] | None) -> str:
    steps = (pre_tokenizer or {}).get("pretokenizers") if (pre_tokenizer or {}).get("type") == "Sequence" else None
    steps = steps if steps is not None else [pre_tokenizer or {}]
    if len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True):
        if steps[0].get("add_prefix_space"):
            raise NotEquivalent("ByteLevel add_prefix_space")
        return GPT2_PATTERN
    if (
        len(steps) == 2
        and steps[0].get("type") == "Split"
        and "Regex" in (steps[0].get("pattern") or {})
        and steps[0].get("behavior") == "Isolated"
        and not steps[0].get("invert")
        and steps[1].get("type") == "ByteLevel"
        and not steps[1].get("use_regex", True)
        and not steps[1].get("add_prefix_space")
    ):
        return str(steps[0]["pattern"]["Regex"])
    raise NotEquivalent(f"pre-tokenizer {json.dumps(pre_tokenizer)[:200]}")


def _check_merges_once(key: str, merges: list[tuple[bytes, bytes]], ranks: dict[bytes, int]) -> None:
    marker = cache_root() / "bpe-rank-derivable" / key
    if marker.is_file():
        return
    bad = _merges_are_rank_derivable(merges, ranks)
    if bad is not None:
        raise NotEquivalent(f"merge {bad!r} is not what rank order derives for its token")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _merges_are_rank_derivable(
    merges: list[tuple[bytes, bytes]], ranks: dict[bytes, int]
) -> tuple[bytes, bytes] | None:
    """The first merge that rank-BPE would not make, or None. For each token: run rank-BPE on its bytes with the
    ranks below its own until two parts are left; they must be the listed merge. (Written here: neither library
    exposes this check; tiktoken's converters assume it.)"""
    for left, right in merges:
        token = left + right
        limit = ranks[token]
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, at = limit, -1
            for i in range(len(parts) - 1):
                rank = ranks.get(parts[i] + parts[i + 1], limit)
                if rank < best:
                    best, at = rank, i
            if at < 0:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        if parts != [left, right]:
            return left, right
    return None
