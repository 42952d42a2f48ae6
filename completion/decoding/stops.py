"""Where a draft ends: the stop rules decoding applies as it goes (and post-processing agrees with)."""

from __future__ import annotations

from collections.abc import Callable

StopRule = Callable[[str], int | None]  # text so far -> cut index where the draft ends, or None


def line_end_stop(text: str) -> int | None:
    """Stop at the first newline that follows real content (a leading newline starts the draft)."""
    seen = False
    for i, ch in enumerate(text):
        if ch == "\n" and seen:
            return i
        if not ch.isspace():
            seen = True
    return None
