"""Token-level diff of the cached ids against the ids of the new text.

An edit changes a few tokens, but BPE merges mean the changed tokens are not always the ones the
user touched, so the diff runs on token ids, not characters. Common prefix and suffix are stripped
first (cheap, and the whole answer for a single edit); only the middle goes through difflib, which
splits a multi-place edit into several hunks.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
_BLOCK = 1024  # the largest block `_agreeing` compares at once (bounds the bisection of the last one)
_SHORT = 32  # sequences up to this long are compared item by item


@dataclass(frozen=True)
class Hunk:
    """Old ids [old_start, old_end) were replaced by new ids [new_start, new_end)."""

    old_start: int
    old_end: int
    new_start: int
    new_end: int

    @property
    def delta(self) -> int:
        """Position shift this hunk applies to every token behind it."""
        return (self.new_end - self.new_start) - (self.old_end - self.old_start)


def common_prefix(a: Sequence[T], b: Sequence[T]) -> int:
    """How many leading items two sequences share: token ids here and in decoding, characters of two texts.

    The one common-prefix helper of the project (cache/ and completion/ both use it).
    """
    n = min(len(a), len(b))
    if n <= _SHORT:  # drafts: a plain loop is cheaper than setting up block comparisons
        i = 0
        while i < n and a[i] == b[i]:
            i += 1
        return i
    a, b = _comparable(a, b)
    return _agreeing(n, lambda i, j: a[i:j] == b[i:j])


def common_suffix(a: Sequence[T], b: Sequence[T], floor: int = 0) -> int:
    """How many trailing items two sequences share, at most min(len) - floor (so it cannot overlap a prefix)."""
    a, b = _comparable(a, b)
    la, lb = len(a), len(b)
    return _agreeing(min(la, lb) - floor, lambda i, j: a[la - j : la - i] == b[lb - j : lb - i])


def _comparable(a: Sequence[T], b: Sequence[T]) -> tuple[Sequence[T], Sequence[T]]:
    """a and b as sequences whose slices compare item by item (a list's slice never equals a tuple's)."""
    if type(a) is type(b) and isinstance(a, str | list | tuple):
        return a, b
    return tuple(a), tuple(b)


def _agreeing(n: int, same: Callable[[int, int], bool]) -> int:
    """The largest k <= n such that items [0, k) agree, given `same(i, j)`: items [i, j) agree.

    Blocks are compared by slice equality (a C loop, memcmp for strings) instead of item by item in
    Python: blocks double from 8 items up to 1024 while they agree, then the first block that does
    not is bisected. A short answer costs a few small slices, a long one about one pass.
    """
    i, step = 0, 8
    while i < n:
        j = min(n, i + step)
        if not same(i, j):
            lo, hi = i, j - 1  # items [i, lo) agree; the first disagreement lies before j
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if same(i, mid):
                    lo = mid
                else:
                    hi = mid - 1
            return lo
        i, step = j, min(2 * step, _BLOCK)
    return max(n, 0)


def diff_ids(old: Sequence[int], new: Sequence[int], max_hunks: int = 16) -> list[Hunk]:
    """Return the hunks that turn `old` into `new`, in order; at most `max_hunks` (merged beyond)."""
    head = common_prefix(old, new)
    tail = common_suffix(old, new, head)
    old_mid = old[head : len(old) - tail]
    new_mid = new[head : len(new) - tail]
    if not old_mid and not new_mid:
        return []
    if not old_mid or not new_mid:
        return [Hunk(head, head + len(old_mid), head, head + len(new_mid))]
    matcher = difflib.SequenceMatcher(a=list(old_mid), b=list(new_mid), autojunk=False)
    hunks = [
        Hunk(head + i1, head + i2, head + j1, head + j2)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]
    return _merge_excess(hunks, max_hunks)


def _merge_excess(hunks: list[Hunk], max_hunks: int) -> list[Hunk]:
    """Merge the closest neighbours until at most `max_hunks` remain (bounds per-hunk overhead)."""
    while len(hunks) > max_hunks:
        gaps = [hunks[i + 1].old_start - hunks[i].old_end for i in range(len(hunks) - 1)]
        i = gaps.index(min(gaps))
        a, b = hunks[i], hunks[i + 1]
        hunks[i : i + 2] = [Hunk(a.old_start, b.old_end, a.new_start, b.new_end)]
    return hunks
