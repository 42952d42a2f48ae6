"""A trie over a tokenizer's vocabulary, to turn allowed identifier continuations into a token mask.

A monitor knows which identifiers may come next (e.g. after `obj.` only obj's attributes). The model
speaks in tokens, so each step needs the set of tokens that keep the text on one of those identifiers:
tokens that are a prefix of a continuation, and tokens that finish a continuation and then leave the
identifier alphabet (`end(`, `end)\n`, ...). Scanning 50k tokens per step would cost milliseconds;
walking a trie along each continuation costs about the total continuation length. Every token is
stored under its longest identifier-character prefix: a node's "terminals" are the tokens spelled
exactly by its path (usually one), and its "exits" are the tokens that continue with a non-identifier
character right after it. The trie knows no tokenizer: it is built over the text of each token id
(`completion.constraints.vocab` decodes them); an id whose text is None (not valid UTF-8 on its own)
never takes part.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

_BIG_EXITS = 64  # exit lists longer than this are kept as ready-made bool rows, OR-ed in one call
_MASK_CACHE_SIZE = 64


@lru_cache(maxsize=4096)
def is_identifier_char(c: str) -> bool:
    """Whether a character may continue a Python identifier (str.isidentifier rules)."""
    return ("a" + c).isidentifier()


def identifier_prefix_length(s: str) -> int:
    """Length of the longest prefix of s made of identifier characters."""
    for i, c in enumerate(s):
        if not is_identifier_char(c):
            return i
    return len(s)


@dataclass
class _Node:
    children: dict[str, int]
    terminals: list[int]  # token ids spelled exactly by the path (byte-fallback twins make it several)
    exits: list[int]  # token ids = path + a non-identifier char + anything


class TokenTrie:
    """Identifier-character trie over a vocabulary; answers allowed-token queries for continuations."""

    def __init__(self, strings: Sequence[str | None]):
        self.vocab_size = len(strings)
        self._nodes: list[_Node] = [_Node({}, [], [])]
        for token_id, s in enumerate(strings):
            if s:
                self._insert(token_id, s)
        self._big_exits: dict[int, np.ndarray] = {
            i: self._row(node.exits) for i, node in enumerate(self._nodes) if len(node.exits) > _BIG_EXITS
        }
        self._masks: OrderedDict[tuple[frozenset[str], int], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def _insert(self, token_id: int, s: str) -> None:
        k = identifier_prefix_length(s)
        node = 0
        for c in s[:k]:
            child = self._nodes[node].children.get(c)
            if child is None:
                child = len(self._nodes)
                self._nodes[node].children[c] = child
                self._nodes.append(_Node({}, [], []))
            node = child
        if k == len(s):
            self._nodes[node].terminals.append(token_id)
        else:
            self._nodes[node].exits.append(token_id)

    def _row(self, ids: list[int]) -> np.ndarray:
        row = np.zeros(self.vocab_size, dtype=np.bool_)  # [V]
        row[ids] = True
        return row

    def _walk(self, continuation: str, small: list[int], big: list[np.ndarray]) -> None:
        node = 0
        for c in continuation:
            node = self._nodes[node].children.get(c, -1)
            if node < 0:
                return
            small.extend(self._nodes[node].terminals)
        if node in self._big_exits:
            big.append(self._big_exits[node])
        else:
            small.extend(self._nodes[node].exits)

    def allowed_ids(self, continuations: Iterable[str]) -> list[int]:
        """Sorted token ids that keep the text on one of the continuations (or finish one)."""
        small: list[int] = []
        big: list[np.ndarray] = []
        for continuation in continuations:
            self._walk(continuation, small, big)
        ids = set(small)
        for row in big:
            ids.update(np.flatnonzero(row).tolist())
        return sorted(ids)

    def mask(self, continuations: Iterable[str], size: int | None = None) -> torch.Tensor:
        """Bool mask [size] of allowed token ids; size defaults to the vocabulary (models may pad it).

        Masks are cached per continuation set and shared: treat the result as read-only.
        """
        size = self.vocab_size if size is None else size
        assert size >= self.vocab_size, "mask smaller than the vocabulary"
        key = (frozenset(continuations), size)
        with self._lock:
            hit = self._masks.get(key)
            if hit is not None:
                self._masks.move_to_end(key)
                return hit
        small: list[int] = []
        big: list[np.ndarray] = []
        for continuation in key[0]:
            self._walk(continuation, small, big)
        # built in numpy: torch ops on a vocabulary-sized tensor wake torch's thread pool, which costs
        # milliseconds on a busy machine; numpy stays on this thread (~10 us)
        rows = np.zeros(size, dtype=np.bool_)  # [V]
        for row in big:
            rows[: self.vocab_size] |= row
        if small:
            rows[small] = True
        out = torch.from_numpy(rows)
        with self._lock:
            self._masks[key] = out
            if len(self._masks) > _MASK_CACHE_SIZE:
                self._masks.popitem(last=False)
        return out
