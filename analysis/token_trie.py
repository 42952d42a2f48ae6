"""A trie over a tokenizer's vocabulary, to turn allowed identifier continuations into a token mask.

A monitor knows which identifiers may come next (e.g. after `obj.` only obj's attributes). The model
speaks in tokens, so each step needs the set of tokens that keep the text on one of those identifiers:
tokens that are a prefix of a continuation, and tokens that finish a continuation and then leave the
identifier alphabet (`end(`, `end)\n`, ...). Scanning 50k tokens per step would cost milliseconds;
walking a trie along each continuation costs about the total continuation length. Every token is
stored under its longest identifier-character prefix: a node's "terminals" are the tokens spelled
exactly by its path (usually one), and its "exits" are the tokens that continue with a non-identifier
character right after it. Token strings are the decoded text of each id (byte-level BPE and
sentencepiece are decoded byte-exactly); a token that is not valid UTF-8 on its own never takes part.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

_BIG_EXITS = 64  # exit lists longer than this are kept as ready-made bool rows, OR-ed in one call
_MASK_CACHE_SIZE = 64
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_tries: weakref.WeakKeyDictionary[Any, TokenTrie] = weakref.WeakKeyDictionary()
_tries_lock = threading.Lock()


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


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable stand-in char of each byte -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _decode_byte_level(token: str) -> str | None:
    table = _byte_decoder()
    try:
        return bytes(table[c] for c in token).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None


def _decode_metaspace(token: str) -> str | None:
    m = _BYTE_FALLBACK.fullmatch(token)
    if m is None:
        return token.replace("▁", " ")
    try:
        return bytes([int(m.group(1), 16)]).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decoder_kind(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = str(getattr(backend, "decoder", None))
    if "ByteLevel" in text:
        return "byte_level"
    if "Metaspace" in text or "▁" in text:
        return "metaspace"
    return "plain"


def token_strings(tokenizer: Any) -> list[str | None]:
    """The text each token id stands for on its own; None where that is not valid UTF-8."""
    n = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    added = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    kind = _decoder_kind(tokenizer)
    out: list[str | None] = []
    for i, piece in enumerate(pieces):
        if kind == "metaspace" and piece is not None and _BYTE_FALLBACK.fullmatch(piece):
            out.append(_decode_metaspace(piece))
        elif i in added:
            out.append(added[i])
        elif piece is None:
            out.append(None)
        elif kind == "byte_level":
            out.append(_decode_byte_level(piece))
        elif kind == "metaspace":
            out.append(_decode_metaspace(piece))
        else:
            text = tokenizer.decode([i], clean_up_tokenization_spaces=False)
            out.append(None if "\ufffd" in text and "\ufffd" not in piece else text)
    return out


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


def trie_for(tokenizer: Any) -> TokenTrie:
    """The trie of a tokenizer, built on first use and kept as long as the tokenizer lives."""
    with _tries_lock:
        trie = _tries.get(tokenizer)
        if trie is None:
            trie = _tries[tokenizer] = TokenTrie(token_strings(tokenizer))
        return trie


def brute_force_ids(strings: Sequence[str | None], continuations: Iterable[str]) -> list[int]:
    """Reference answer by scanning the whole vocabulary; for tests and benchmarks only."""
    conts = list(continuations)
    out = []
    for token_id, s in enumerate(strings):
        if not s:
            continue
        if any(c.startswith(s) for c in conts) or any(
            len(s) > len(c) and s.startswith(c) and not is_identifier_char(s[len(c)]) for c in conts
        ):
            out.append(token_id)
    return out


def benchmark_mask(trie: TokenTrie, continuation_sets: Sequence[Iterable[str]], repeat: int = 3) -> dict:
    """p50/p95/max seconds per uncached mask call, to check the per-step budget (far under 1 ms)."""
    times = []
    for _ in range(repeat):
        for conts in continuation_sets:
            trie._masks.clear()
            t0 = time.perf_counter()
            trie.mask(conts)
            times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "p50": times[len(times) // 2],
        "p95": times[min(len(times) - 1, int(len(times) * 0.95))],
        "max": times[-1],
        "calls": len(times),
    }
