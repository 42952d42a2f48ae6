"""Greedy decoding over stale KV, guarded by a margin: the one rule the engine and the benchmarks share.

PIE leaves the KV behind an edit computed on the text before it (stale). Its choices that differ from an
exact re-encode's are near-ties (benchmarks/RESULTS.md, fim_pie and pie_history), so a request decodes with
`DecodeTask.stale_margin` set while the cursor reads stale tokens; the first choice closer than that raises
`StaleCloseCall` (decoding/task.py, `check_margin`), and then the stale tokens before the cursor are
re-encoded exactly and the request decodes again, unguarded. Too many stale tokens to re-encode inside a
request (`cache.close_call_tokens`): no guard, PIE as it stands (idle time refreshes them).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from superpie.cache.document import DocumentCache
from superpie.completion.decoding.task import DecodeTask, StaleCloseCall

T = TypeVar("T")


def stale_margin(cache: DocumentCache, reads: int, margin: float, cap: int) -> float:
    """The margin to decode with when the cursor reads the first `reads` tokens of `cache`: `margin` when
    between 1 and `cap` of them are stale, else 0 (nothing stale, or more than a request may re-encode)."""
    if margin <= 0:
        return 0.0
    stale = cache.refreshable_stale(reads)
    return margin if 0 < stale <= cap else 0.0


@dataclass(frozen=True)
class Guarded(Generic[T]):
    """What a guarded decode returns: the decoder's result, and the exact refresh a close call cost."""

    result: T
    refreshed: int  # stale tokens re-encoded after a close call (0: none was met, or no guard)
    refresh_ms: float


def decode_guarded(
    run: Callable[[DecodeTask], T], task: DecodeTask, cache: DocumentCache, reads: int, margin: float, cap: int
) -> Guarded[T]:
    """`run(task)` with the stale margin where it applies; on a close call, refresh what the cursor reads and
    `run(task)` again. `run` must build its cursor view itself (a refresh rewrites the KV under it)."""
    guard = stale_margin(cache, reads, margin, cap)
    if guard <= 0:
        return Guarded(run(task), 0, 0.0)
    try:
        return Guarded(run(dataclasses.replace(task, stale_margin=guard)), 0, 0.0)
    except StaleCloseCall:
        t0 = time.perf_counter()
        refreshed = cache.refresh_before(reads)
        ms = (time.perf_counter() - t0) * 1000
        return Guarded(run(task), refreshed, ms)
