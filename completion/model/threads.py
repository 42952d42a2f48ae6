"""How many threads the model's forwards use: every allowed core while the other processes leave them idle,
one fewer as soon as they do not.

Why adaptive: on a 2-core machine a second decode thread made the code model's keystroke p50 427 ms instead
of 564-597 ms while nothing else ran, but beside one busy process a 2-thread decode step took 627 ms against
about 70 ms with one (OpenMP ends every op at a barrier that waits for the thread the scheduler put aside;
benchmarks/RESULTS.md, "threads" and the `auto` q4 section). A fixed count must pick one of the two. So
before each piece of model work (`ThreadGovernor.adapt`) the governor reads how much CPU the *other*
processes used since it last looked (/proc/stat minus this process's own time) and leaves them the cores
they are using.

Where /proc/stat cannot be read (not Linux), it keeps the fixed count `model.default_threads` gives.
The thread count can change floating-point sums, so the deterministic front doors fix it instead
(lsp/replay.py `deterministic_config`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

_PROC_STAT = Path("/proc/stat")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MIN_WINDOW_S = 0.2  # shortest span a load reading averages over


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds the whole machine was busy, CPU seconds this process used, and when (monotonic seconds)."""

    machine_busy: float
    own: float
    at: float


def read_sample() -> CpuSample | None:
    """The machine's busy time from /proc/stat's `cpu` line (user, nice, system, irq, softirq, steal: idle and
    iowait are not busy), this process's from `os.times`; None where /proc/stat is missing or unreadable."""
    try:
        line = _PROC_STAT.read_text().split("\n", 1)[0]
    except OSError:
        return None
    fields = line.split()
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    times = os.times()
    busy = (user + nice + system + irq + softirq + steal) / _TICKS
    return CpuSample(busy, times.user + times.system, time.monotonic())


class ThreadGovernor:
    """Sets torch's thread count before model work: `most` while the other processes leave that many cores
    idle, fewer (at least `least`) when they use them."""

    def __init__(
        self,
        most: int,
        least: int = 1,
        sample: Callable[[], CpuSample | None] = read_sample,
        apply: Callable[[int], None] = torch.set_num_threads,
        slack: float = 0.25,
    ) -> None:
        """`slack`: cores' worth of the others' use ignored (a shell, the editor's idle ticks)."""
        self.most, self.least = max(1, most), max(1, min(least, most))
        self._sample, self._apply, self.slack = sample, apply, slack
        self._last = sample()
        self.threads = self.least  # until a look at the load says more are free
        self.changes = 0  # how often the count changed (the server's stats)
        apply(self.threads)

    def others_busy(self) -> float | None:
        """Cores the other processes kept busy since the last look (None: unknown, or too soon to tell: the
        kernel counts in ticks of 10 ms, so a look is only taken `MIN_WINDOW_S` after the last)."""
        now = self._sample()
        last = self._last
        if now is None or last is None:
            self._last = now
            return None
        if now.at - last.at < MIN_WINDOW_S:
            return None
        self._last = now
        others = (now.machine_busy - last.machine_busy) - (now.own - last.own)
        return max(0.0, others / (now.at - last.at))

    def adapt(self) -> int:
        """Choose and set the thread count for the model work about to run; returns it."""
        busy = self.others_busy()
        if busy is None:
            return self.threads
        free = self.most - max(0.0, busy - self.slack)  # whole cores nobody else uses
        threads = max(self.least, min(self.most, int(free)))
        if threads != self.threads:
            self.threads, self.changes = threads, self.changes + 1
            self._apply(threads)
        return threads
