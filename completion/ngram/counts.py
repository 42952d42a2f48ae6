"""Token n-gram counts and the interpolated Witten-Bell model read off them.

Shen et al. (2024) keep superposed drafts on track by mixing the LM's log-probs with an n-gram
model's. Smoothing here is interpolated Witten-Bell, recursively down to a uniform distribution over
the vocabulary:

    P(w | h) = (c(h w) + T(h) * P(w | h')) / (c(h) + T(h))      (h' = h without its oldest token)
    P(w | ()) = (c(w) + T(()) / V) / (N + T(()))               (N tokens, T distinct tokens)

where c(h) is the number of tokens seen after h and T(h) the number of distinct ones; a context
never seen contributes nothing (P(w | h) = P(w | h')). Why Witten-Bell rather than Kneser-Ney: it
needs only the counts c(h w) (T and c(h) are read off them), so subtracting one file and adding it
back leaves the model exactly as a rebuild would, and pruning rare n-grams keeps it a proper
distribution; Kneser-Ney's continuation counts are global and go wrong under both. It also behaves
well on the small, sparse counts of one workspace. P sums to 1 over the V token ids.

Memory is bounded: once the number of distinct n-grams of order >= 2 passes `max_ngrams`, the
rarest highest-order ones are dropped (the counts are then approximate; without pruning,
incremental updates equal a rebuild). The counts are not locked here: `NgramIndex` holds the lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

_MAX_VIEWS = 65_536  # cached per-context lookup tables; cleared wholesale past this


@dataclass(frozen=True)
class _View:
    """The continuations of one context as sorted arrays, so many candidates are looked up at once."""

    ids: torch.Tensor  # [K] int64, sorted
    counts: torch.Tensor  # [K] float64
    total: float  # c(h)
    types: float  # T(h)

    @classmethod
    def of(cls, nxt: dict[int, int]) -> _View:
        ids = sorted(nxt)
        counts = [nxt[i] for i in ids]
        return cls(torch.tensor(ids), torch.tensor(counts, dtype=torch.float64), float(sum(counts)), len(ids))

    def lookup(self, cand: torch.Tensor) -> torch.Tensor:
        idx = torch.searchsorted(self.ids, cand).clamp_(max=self.ids.numel() - 1)
        return torch.where(self.ids[idx] == cand, self.counts[idx], 0.0)


def _ngram_counts(tokens: list[int], order: int) -> Counter[tuple[int, ...]]:
    counts: Counter[tuple[int, ...]] = Counter()
    for n in range(2, order + 1):
        counts.update(zip(*(tokens[i:] for i in range(n)), strict=False))
    return counts


class NgramCounts:
    """Counts of n-grams of orders 1..order over token ids below vocab_size, and their smoothed model."""

    def __init__(self, order: int, vocab_size: int, max_ngrams: int) -> None:
        if order < 1 or vocab_size < 1:
            raise ValueError(f"n-gram order and vocab_size must be >= 1 (got {order}, {vocab_size})")
        self.order, self.vocab_size, self.max_ngrams = order, vocab_size, max_ngrams
        self._uni = torch.zeros(vocab_size, dtype=torch.float64)  # [V] unigram counts
        self._uni_total = 0.0
        self._uni_types: float | None = None  # recomputed lazily after a change
        self._next: dict[tuple[int, ...], dict[int, int]] = {}  # context (1..order-1 ids) -> next id -> count
        self._size = 0  # distinct n-grams of order >= 2
        self._views: dict[tuple[int, ...], _View | None] = {}

    # ---- queries -------------------------------------------------------------------------------

    def logprobs(self, context: Sequence[int] | torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Log P(candidate | last order-1 context ids) for a flat tensor of candidate ids (float64)."""
        m = self.order - 1
        tail = context[-m:] if m > 0 else []
        tail = tail.tolist() if isinstance(tail, torch.Tensor) else list(tail)
        p = self._unigram_probs(candidates)
        for k in range(1, len(tail) + 1):
            view = self._view(tuple(tail[-k:]))
            if view is None:  # a longer context ending in an unseen one is unseen too
                break
            p = (view.lookup(candidates) + view.types * p) / (view.total + view.types)
        return p.log()

    def _unigram_probs(self, cand: torch.Tensor) -> torch.Tensor:
        v = self.vocab_size
        if self._uni_total == 0:
            return torch.full(cand.shape, 1.0 / v, dtype=torch.float64)
        if self._uni_types is None:
            self._uni_types = float(torch.count_nonzero(self._uni))
        inside = (cand >= 0) & (cand < v)  # ids past the tokenizer (padded embeddings) were never seen
        counts = torch.where(inside, self._uni[cand.clamp(0, v - 1)], 0.0)
        return (counts + self._uni_types / v) / (self._uni_total + self._uni_types)

    def _view(self, ctx: tuple[int, ...]) -> _View | None:
        try:
            return self._views[ctx]
        except KeyError:
            pass
        nxt = self._next.get(ctx)
        view = None if nxt is None else _View.of(nxt)
        if len(self._views) >= _MAX_VIEWS:
            self._views.clear()
        self._views[ctx] = view
        return view

    def as_dict(self) -> dict[tuple[int, ...], int]:
        """Every n-gram (orders 1..N) with its count."""
        seen = torch.nonzero(self._uni).flatten().tolist()
        out: dict[tuple[int, ...], int] = {(int(i),): int(self._uni[i]) for i in seen}
        for ctx, nxt in self._next.items():
            out.update({ctx + (w,): c for w, c in nxt.items()})
        return out

    @property
    def size(self) -> int:
        """Distinct n-grams of order >= 2: the quantity that `max_ngrams` bounds."""
        return self._size

    # ---- updates -------------------------------------------------------------------------------

    def check(self, tokens: Sequence[int], source: str) -> None:
        """Refuse ids outside the vocabulary before anything is counted (they would corrupt the model)."""
        if tokens and (min(tokens) < 0 or max(tokens) >= self.vocab_size):
            raise ValueError(f"token ids of {source} fall outside the vocabulary of {self.vocab_size}")

    def add(self, tokens: list[int]) -> None:
        """Count a new file's tokens, then prune if past the cap."""
        self._apply(tokens, +1)
        self._maybe_prune()

    def remove(self, tokens: list[int]) -> None:
        """Uncount a file's tokens (n-grams pruned meanwhile are simply absent)."""
        self._apply(tokens, -1)

    def replace(self, old: list[int], new: list[int]) -> None:
        """Recount only the window that differs: n-grams wholly inside the common prefix/suffix cancel."""
        limit = min(len(old), len(new))
        p = 0
        while p < limit and old[p] == new[p]:
            p += 1
        s = 0
        while s < limit - p and old[-1 - s] == new[-1 - s]:
            s += 1
        m = self.order - 1
        lo = max(0, p - m)
        self._apply(old[lo : min(len(old), len(old) - s + m)], -1)
        self._apply(new[lo : min(len(new), len(new) - s + m)], +1)
        self._maybe_prune()

    def _apply(self, tokens: list[int], sign: int) -> None:
        if not tokens:
            return
        ids = torch.tensor(tokens, dtype=torch.long)
        self._uni.index_add_(0, ids, torch.full(ids.shape, float(sign), dtype=torch.float64))
        self._uni_total += sign * len(tokens)
        self._uni_types = None
        for gram, c in _ngram_counts(tokens, self.order).items():
            ctx, w = gram[:-1], gram[-1]
            nxt = self._next.get(ctx)
            if sign > 0:
                if nxt is None:
                    nxt = self._next[ctx] = {}
                old = nxt.get(w, 0)
                self._size += old == 0
                nxt[w] = old + c
            elif nxt is not None and w in nxt:  # absent when pruned
                left = nxt[w] - c
                if left > 0:
                    nxt[w] = left
                else:
                    del nxt[w]
                    self._size -= 1
                    if not nxt:
                        del self._next[ctx]
            self._views.pop(ctx, None)

    def _maybe_prune(self) -> None:
        """Past the cap, drop n-grams seen <= t times, highest order first, t = 1, 2, ... down to 90%."""
        if self._size <= self.max_ngrams:
            return
        target = int(self.max_ngrams * 0.9)
        t = 1
        while True:
            for n in range(self.order, 1, -1):
                for ctx in [c for c in self._next if len(c) == n - 1]:
                    nxt = self._next[ctx]
                    for w in [w for w, c in nxt.items() if c <= t]:
                        del nxt[w]
                        self._size -= 1
                    if not nxt:
                        del self._next[ctx]
                    self._views.pop(ctx, None)
                    if self._size <= target:
                        return
            t += 1

    # ---- arrays, for the disk store ------------------------------------------------------------

    def unigram_array(self) -> np.ndarray:
        """[V] int64 unigram counts."""
        return self._uni.numpy().astype(np.int64)

    def gram_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n-grams of one order >= 2 as rows [G, n] int32, with their counts [G] int64."""
        rows = [ctx + (w,) for ctx, nxt in self._next.items() if len(ctx) == n - 1 for w in nxt]
        grams = np.array(rows, dtype=np.int32).reshape(-1, n)
        return grams, np.array([self._next[r[:-1]][r[-1]] for r in rows], dtype=np.int64)

    def load_arrays(self, unigrams: np.ndarray, grams: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """Take counts saved by `unigram_array` / `gram_arrays` (into empty counts)."""
        if unigrams.shape != (self.vocab_size,):
            raise ValueError(f"unigram counts of shape {unigrams.shape}, expected ({self.vocab_size},)")
        self._uni = torch.from_numpy(unigrams.astype(np.float64))
        self._uni_total = float(self._uni.sum())
        self._uni_types = None
        for rows, counts in grams.values():
            for row, c in zip(rows.tolist(), counts.tolist(), strict=True):
                self._next.setdefault(tuple(row[:-1]), {})[row[-1]] = c
                self._size += 1
