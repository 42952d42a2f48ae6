"""What a document cache reports: the work one sync did (`SyncStats`), where a cursor falls (`CursorSplit`).

Plain values in a module of their own, so the front doors and the request types can name them without
the cache's machinery (cache/document.py re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncStats:
    """What one `sync` did: how many tokens it kept, encoded and rotated, and how long it took."""

    mode: str  # the mode actually applied ("none" when nothing changed)
    reused: int  # tokens before the first hunk, kept untouched
    encoded: int  # tokens run through the model
    rotated: int  # tokens kept behind a hunk, moved by a key rotation (pie)
    refreshed: int  # stale tokens re-encoded exactly because the threshold was passed
    hunks: int
    ms: float

    def __add__(self, other: SyncStats) -> SyncStats:
        """Sum two syncs (the work done between two completions)."""
        return SyncStats(
            mode=other.mode if other.mode != "none" else self.mode,
            reused=other.reused,
            encoded=self.encoded + other.encoded,
            rotated=self.rotated + other.rotated,
            refreshed=self.refreshed + other.refreshed,
            hunks=self.hunks + other.hunks,
            ms=self.ms + other.ms,
        )


NO_SYNC = SyncStats("none", 0, 0, 0, 0, 0, 0.0)


@dataclass(frozen=True)
class CursorSplit:
    """Where a cursor falls in the cached tokens."""

    prefix_len: int  # cached tokens wholly before the cursor
    typed: str  # characters between the last such token's end and the cursor (token healing)
