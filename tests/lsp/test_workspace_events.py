"""Issue 18 (the soak's "watcher events lost: 0"): workspace events reach the engine, however many come at once.

The watcher hands every changed or removed file to the model worker, which applies them when no
request or sync waits. A burst (a checkout switching 20,000 files, the watcher's rescan after an
overflow) arrives faster than the engine indexes; the worker's queue dropped the oldest past 10,000,
so the n-gram index silently missed files the watcher had seen. The queue now keeps one job per path
(the newest event for a file is the one that matters) and drops none.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from test_units import FakeEngine

from superpie.lsp.scheduler import ModelWorker


class Engine(FakeEngine):
    """The fake engine of the worker's tests, with what the worker's snapshot reads of any engine."""

    model_name = None

    def backend_status(self) -> dict[str, object]:
        return {}


def busy_worker() -> tuple[ModelWorker, threading.Event]:
    """A started worker held inside a job until the returned event is set."""
    worker = ModelWorker(Engine(), {}.get, idle_refresh_s=60.0)
    gate = threading.Event()
    worker.submit(lambda engine: gate.wait(60))
    worker.start()
    return worker, gate


def settle(worker: ModelWorker, expected: int, timeout: float = 60.0) -> None:
    """Wait until the worker has applied `expected` workspace events, or applies no more for a second."""
    deadline, last, still = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline and worker.snapshot.workspace_events < expected:
        if worker.snapshot.workspace_events != last:
            last, still = worker.snapshot.workspace_events, time.monotonic()
        elif time.monotonic() - still > 1.0:
            return
        time.sleep(0.01)


def test_a_burst_of_workspace_events_is_applied_whole() -> None:
    worker, gate = busy_worker()
    applied: list[int] = []
    for i in range(20_000):
        worker.background(lambda engine, i=i: applied.append(i))
    gate.set()
    settle(worker, 20_000)
    worker.stop()
    assert len(applied) == 20_000, f"{20_000 - len(applied)} workspace events never reached the engine"
    assert applied == sorted(applied)  # in the order they came


def test_the_newest_event_for_a_file_replaces_a_queued_one() -> None:
    worker, gate = busy_worker()
    applied: list[tuple[str, str]] = []
    a, b = Path("/ws/a.py"), Path("/ws/b.py")
    worker.background(lambda engine: applied.append(("changed", "a")), key=a)
    worker.background(lambda engine: applied.append(("changed", "b")), key=b)
    worker.background(lambda engine: applied.append(("removed", "a")), key=a)
    gate.set()
    settle(worker, 2)
    worker.stop()
    assert applied == [("removed", "a"), ("changed", "b")]
    assert worker.snapshot.workspace_coalesced == 1
