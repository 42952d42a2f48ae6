"""The one place that knows a tokenizer's tokens: their texts, one sorted index over them, and the trie.

Every constraint advances with the same per-token texts (`token_texts`: each id decoded on its own),
so healing, the monitors' masks and the drafts' `advance` agree on how a token is spelled. A text
holding U+FFFD is a token that is not valid UTF-8 on its own (part of a multi-byte character): the
monitors never allow it (`usable` is None there), healing only matches it literally. The
`Vocabulary` is built once per tokenizer (`vocabulary`) and its index and trie on first use, because
a request that neither heals nor monitors should not pay for them.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections.abc import Sequence
from itertools import accumulate

import torch
from tokenizers import Tokenizer

from superpie.analysis.token_trie import TokenTrie

_LAST = "\U0010ffff"  # sorts after every character: prefix + _LAST bounds the texts that start with prefix
_BROKEN = "\ufffd"  # what a token that is not valid UTF-8 on its own decodes to


class _SortedTexts:
    """The non-empty token texts in sorted order: the tokens that start with a string are one run of it.

    The run is found with two bisections, so a mask costs about the run's length, not a vocabulary scan.
    """

    def __init__(self, texts: Sequence[str]) -> None:
        order = sorted((t, i) for i, t in enumerate(texts) if t)
        self.texts = [t for t, _ in order]
        self.ids = [i for _, i in order]
        self.id_tensor = torch.tensor(self.ids, dtype=torch.long)
        self.by_text: dict[str, list[int]] = {}
        for t, i in order:
            self.by_text.setdefault(t, []).append(i)
        # broken[k]: how many of the first k sorted texts hold U+FFFD (a run without any needs no filter)
        self.broken = [0, *accumulate(_BROKEN in t for t in self.texts)]

    def run(self, prefix: str) -> tuple[int, int]:
        """[lo, hi) of the sorted texts that start with prefix."""
        lo = bisect.bisect_left(self.texts, prefix)
        return lo, bisect.bisect_left(self.texts, prefix + _LAST, lo)


class Vocabulary:
    """A tokenizer's token texts with the indexes healing and the monitors query (one per tokenizer)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts: tuple[str, ...] = tuple(texts)  # per id: the token decoded on its own
        self.usable: tuple[str | None, ...] = tuple(None if _BROKEN in t else t for t in self.texts)
        self.size = len(self.texts)
        self._lock = threading.Lock()
        self._sorted: _SortedTexts | None = None
        self._trie: TokenTrie | None = None

    @property
    def index(self) -> _SortedTexts:
        """The sorted texts (built on first use; requests on several threads build it once)."""
        with self._lock:
            if self._sorted is None:
                self._sorted = _SortedTexts(self.texts)
            return self._sorted

    @property
    def trie(self) -> TokenTrie:
        """The identifier trie over the usable texts, for the monitors' masks (built on first use)."""
        with self._lock:
            if self._trie is None:
                self._trie = TokenTrie(self.usable)
            return self._trie

    @property
    def prepared(self) -> bool:
        """Whether the index and the trie are built (`prepare`)."""
        with self._lock:
            return self._sorted is not None and self._trie is not None

    def prepare(self) -> Vocabulary:
        """The vocabulary with its index and trie built, so no timed mask of a request pays for them."""
        _ = self.index, self.trie
        return self

    def healing_mask(self, rem: str) -> torch.Tensor:
        """Bool [size] of the tokens that start with `rem` or are a non-empty proper prefix of it.

        Every non-empty text takes part, U+FFFD or not: healing compares spellings, not identifiers.
        """
        index = self.index
        mask = torch.zeros(self.size, dtype=torch.bool)
        lo, hi = index.run(rem)
        mask[index.id_tensor[lo:hi]] = True
        for cut in range(1, len(rem)):
            ids = index.by_text.get(rem[:cut])
            if ids:
                mask[ids] = True
        return mask

    def starting_with(self, prefix: str) -> list[tuple[str, int]]:
        """(text, id) of every usable token whose text starts with prefix, in text order."""
        index = self.index
        lo, hi = index.run(prefix)
        pairs = zip(index.texts[lo:hi], index.ids[lo:hi], strict=True)
        if index.broken[hi] == index.broken[lo]:
            return list(pairs)
        return [(t, i) for t, i in pairs if _BROKEN not in t]

    def exactly(self, text: str) -> list[int]:
        """Ids of the usable tokens spelled exactly `text`, ascending."""
        if not text or _BROKEN in text:
            return []
        return list(self.index.by_text.get(text, ()))


def _decode_each(tokenizer: Tokenizer) -> tuple[str, ...]:
    """Each token id decoded on its own, special tokens spelled out (the drafts' per-token texts)."""
    return tuple(tokenizer.decode([i], skip_special_tokens=False) for i in range(tokenizer.get_vocab_size()))


@functools.lru_cache(maxsize=4)
def vocabulary(tokenizer: Tokenizer) -> Vocabulary:
    """The vocabulary of a tokenizer, built once and shared by healing, the monitors and decoding."""
    return Vocabulary(_decode_each(tokenizer))


def token_texts(tokenizer: Tokenizer) -> tuple[str, ...]:
    """The text each token id decodes to on its own (the tokenizer's `Vocabulary`, built once)."""
    return vocabulary(tokenizer).texts
