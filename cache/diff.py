"""Token-level diff of the cached ids against the ids of the new text.

An edit changes a few tokens, but BPE merges mean the changed tokens are not always the ones the
user touched, so the diff runs on token ids, not characters. Common prefix and suffix are stripped
first (cheap, and the whole answer for a single edit); only the middle goes through difflib, which
splits a multi-place edit into several hunks.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass


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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a: Sequence[int], b: Sequence[int], floor: int) -> int:
    n = min(len(a), len(b)) - floor
    i = 0
    while i < n and a[len(a) - 1 - i] == b[len(b) - 1 - i]:
        i += 1
    return i


def diff_ids(old: Sequence[int], new: Sequence[int], max_hunks: int = 16) -> list[Hunk]:
    """Return the hunks that turn `old` into `new`, in order; at most `max_hunks` (merged beyond)."""
    head = _common_prefix(old, new)
    tail = _common_suffix(old, new, head)
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
