"""`--until HH:MM`: when a long benchmark run stops starting new sites, shared by the benchmarks that take it."""

from __future__ import annotations

import time


def past(until: str | None, started: float) -> bool:
    """Whether `until` (HH:MM UTC) has come: its first occurrence after `started` (a time.time()), so a run
    started before midnight stops at 00:50 of the next day, not at once."""
    if not until:
        return False
    hours, minutes = (int(x) for x in until.split(":"))
    day = started - started % 86400
    deadline = day + hours * 3600 + minutes * 60
    return time.time() >= (deadline if deadline > started else deadline + 86400)
