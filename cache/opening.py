"""Opening a long document window-first: the cursor's window now, the rest of the file in idle time.

Encoding a whole newly opened file before its first suggestion costs one prefill of the whole file
(seconds for a few thousand tokens with the code model). A suggestion needs the tokens just before the
cursor most; the rest of the file can follow. An `Opening` records which characters of the text are
not encoded yet ("gaps", char spans of the current text); the document cache (cache/document.py)
caches its usual layout (the text, or the FIM layout) less the tokens that lie inside a gap, and
follows that shorter sequence with the usual diff and PIE machinery:

- a sync with a cursor (`expose`) takes the `window` tokens before the cursor (and `after` tokens
  after it: the FIM layout's suffix) out of the gaps, so they are encoded at once, attending to the
  part of the file already encoded and not to the gaps;
- in idle time (`advance`) the first `chunk` tokens still in a gap are taken out of it, from the start
  of the layout on: PIE encodes them as an inserted hunk (attending to everything before them, which is
  exact) and moves what is behind them by a key rotation;
- an edit (`follow`) moves the gaps with the text: an edit inside a gap only changes what will be
  encoded later; an edit that touches encoded text is encoded now, as any edit (a PIE hunk).

Every cached token behind the first gap never saw the gap's tokens: it is stale in PIE's sense and is
counted so (the document cache marks it). Once no gap is left, the stale tokens are re-encoded exactly,
a chunk at a time, from the first one on; the cache then equals an exact encode of the layout.

Positions stay "KV index = position", as everywhere in the cache: while the head of the file is a gap,
the window sits at smaller positions than in the whole file. RoPE attention depends on position
differences only, so the window's keys and queries relate to each other as they would at their final
positions, and the insertions in front of them rotate their keys to those positions like any edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from superpie.cache.diff import common_prefix, common_suffix

Offsets = list[tuple[int, int]]
Span = tuple[int, int]


@dataclass
class Opening:
    """The char spans of a document's text not encoded yet, and how much to encode around a cursor."""

    window: int  # tokens before a cursor encoded at once
    after: int = 0  # tokens after a cursor encoded with them (the FIM layout's suffix)
    gaps: list[Span] = field(default_factory=list)  # sorted, disjoint [lo, hi) char spans of the text
    anchor: int | None = None  # the last cursor a sync named (idle steps keep the window where it was)

    @classmethod
    def deferred(cls, text: str, window: int, after: int = 0) -> Opening:
        """An opening with nothing encoded yet: the whole text is one gap."""
        return cls(window, after, [(0, len(text))] if text else [])

    def copy(self) -> Opening:
        """An independent copy (a cloned document cache)."""
        return Opening(self.window, self.after, list(self.gaps), self.anchor)

    def leave_out(
        self, old: str, text: str, cursor: int | None, ids: list[int], offsets: Offsets
    ) -> tuple[list[int], Offsets, int | None]:
        """A sync from `old` to `text`: the gaps follow the edit, a named `cursor`'s window comes out of them;
        returns the layout (`ids`, `offsets`) less the tokens still in a gap, and the index of the first
        one left out (None: none is)."""
        if old:  # (before the first sync the gaps are already of `text`)
            self.follow(old, text)
        if cursor is not None:
            self.expose_cursor(offsets, cursor)
        hidden = self.hidden(offsets)
        cut = first_hidden(hidden)
        if cut is None:
            return ids, offsets, None
        keep = [i for i, h in enumerate(hidden) if not h]
        return [ids[i] for i in keep], [offsets[i] for i in keep], cut

    def follow(self, old: str, new: str) -> None:
        """Move the gaps through the edit that turned `old` into `new` (one changed span, found by the
        common prefix and suffix). The edit's new text is taken out of the gaps unless the edit lies
        strictly inside one: a touched boundary is encoded now, an edit within deferred text stays deferred."""
        if old == new:
            return
        p = common_prefix(old, new)
        s = common_suffix(old, new, floor=p)
        q, q_new = len(old) - s, len(new) - s  # old [p, q) became new [p, q_new)
        delta = q_new - q
        moved: list[Span] = []
        for lo, hi in self.gaps:
            if lo < p and q < hi:  # the edit is inside the gap: still deferred
                moved.append((lo, hi + delta))
                continue
            lo2 = lo if lo < p else lo + delta if lo >= q else q_new
            hi2 = hi if hi <= p else hi + delta if hi >= q else p
            if lo2 < hi2:
                moved.append((lo2, hi2))
        self.gaps = moved

    def expose(self, lo: int, hi: int) -> None:
        """Take the chars [lo, hi) out of the gaps (they are encoded by the next sync)."""
        kept: list[Span] = []
        for g_lo, g_hi in self.gaps:
            if g_lo < lo:
                kept.append((g_lo, min(g_hi, lo)))
            if g_hi > hi:
                kept.append((max(g_lo, hi), g_hi))
        self.gaps = [(a, b) for a, b in kept if a < b]

    def expose_cursor(self, offsets: Offsets, cursor: int) -> None:
        """Take the `window` tokens of the layout before `cursor` and the `after` tokens from it out of the gaps.

        `offsets`: the char spans of the whole layout (gaps included; markers are empty spans)."""
        self.anchor = cursor
        if not self.gaps or not offsets:
            return
        at = sum(1 for s, _ in offsets if s < cursor)  # tokens before the cursor (the one it is inside, too)
        # The first token in layout order at or after the cursor: `at` too where spans only grow, but the
        # FIM layout's middle (cache/fim.py) comes after the suffix, though it is text before the cursor.
        after = next((i for i, (s, _) in enumerate(offsets) if s >= cursor), len(offsets))
        lo_tok = max(0, at - self.window)
        hi_tok = min(len(offsets), after + self.after)
        lo = min(offsets[lo_tok][0], cursor)
        hi = max([cursor, *(e for _, e in offsets[lo_tok:hi_tok])])
        self.expose(lo, hi)

    def hidden(self, offsets: Offsets) -> list[bool]:
        """Per layout token: whether it lies inside a gap (not encoded yet). Empty spans (markers, the
        repository context) never do; a token across a gap's edge is encoded."""
        gaps = self.gaps
        return [s < e and any(lo <= s and e <= hi for lo, hi in gaps) for s, e in offsets]

    def advance(self, offsets: Offsets, chunk: int) -> int:
        """Take the next `chunk` hidden tokens of the layout out of the gaps (idle time); how many.

        Gaps that hide no token of the layout (text outside the window the cache holds) are dropped:
        the window's own moves encode such text when it comes into view."""
        hidden = [i for i, h in enumerate(self.hidden(offsets)) if h]
        if not hidden:
            self.gaps = []
            return 0
        taken = hidden[:chunk]
        self.expose(offsets[taken[0]][0], offsets[taken[-1]][1])
        if len(taken) == len(hidden):
            self.gaps = []
        return len(taken)


def first_hidden(hidden: list[bool]) -> int | None:
    """Index of the first hidden token, or None."""
    for i, h in enumerate(hidden):
        if h:
            return i
    return None
