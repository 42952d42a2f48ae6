"""Reference answers and timing for the token trie: only tests use them, so they live with the tests."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from superpie.analysis.token_trie import TokenTrie, is_identifier_char


def brute_force_ids(strings: Sequence[str | None], continuations: Iterable[str]) -> list[int]:
    """Reference answer by scanning the whole vocabulary."""
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
