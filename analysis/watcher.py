"""Workspace watcher (watchdog): tells the engine which source files changed on disk or went away.

Which files count is `workspace_files.SourceRules`, the rules the n-gram index walks by. Events are
debounced per path: an editor's save (write a temp file, rename it over the original) reaches the
callbacks as one "changed". Callbacks run on the watcher's own thread; the server forwards them to
the model worker. Top-level ignored directories (`.venv`, `.git`, `node_modules`) are not watched at
all, so a large virtual environment costs no inotify watches.

Nothing is lost silently when the watcher is overwhelmed. The kernel drops inotify events once its
queue (`/proc/sys/fs/inotify/max_queued_events`, 16,384 by default) is full, and watchdog does not
tell the handler; a checkout switching 20,000 files loses a fifth of them. A queue that overflowed
held that many events, all of which are still read, so a burst of at least a quarter of it (counted
before any filtering, since ignored files fill the kernel queue too) is taken as a possible overflow;
so is a burst of more distinct paths than `max_pending`, the watcher's own bound. Either way the
pending paths are dropped and, once the burst has settled, the roots are walked again and compared
with what the watcher last knew of each file (mtime and size, from a walk at start and from every
delivery): changed and new files are delivered as changed, vanished ones as removed. A directory
moved in is walked; one moved or deleted away delivers its known files as removed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from superpie.analysis.defaults import WATCHER_DEBOUNCE_MS
from superpie.analysis.workspace_files import SourceRules, WorkspaceFiles

log = logging.getLogger(__name__)

PathCallback = Callable[[Path], None]
Signature = tuple[int, int]  # (mtime_ns, size) of a file as last delivered or walked

_UNKNOWN: Signature = (-1, -1)  # a known file's signature once its events were dropped: any rescan reports it
_MAX_HOLD_S = 10.0  # a storm that never settles is rescanned this often all the same
_QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")


def saturation_events() -> int:
    """Raw events in one burst after which the kernel queue may have overflowed: a quarter of its size.

    watchdog hands the handler at least one event per kernel event, except that a move's two kernel
    events may arrive as one; a quarter leaves a margin of two on top of that."""
    try:
        return max(1, int(_QUEUE_LIMIT.read_text()) // 4)
    except (OSError, ValueError):
        return 4096


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: WorkspaceWatcher, root: Path) -> None:
        self.watcher, self.root = watcher, root

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.watcher._on_event(event, self.root)


class WorkspaceWatcher:
    """Calls `on_changed(path)` / `on_removed(path)` for source files created, changed, moved or deleted."""

    def __init__(
        self,
        roots: Iterable[str | os.PathLike[str]],
        on_changed: PathCallback,
        on_removed: PathCallback,
        rules: SourceRules | None = None,
        debounce_s: float = WATCHER_DEBOUNCE_MS / 1000,
        *,
        max_pending: int = 10_000,
        saturation: int | None = None,
    ) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.on_changed, self.on_removed = on_changed, on_removed
        self.rules = rules or SourceRules()
        self.files = WorkspaceFiles(self.roots, self.rules)
        self.debounce_s = debounce_s
        self.max_pending = max_pending
        self.saturation = saturation if saturation is not None else saturation_events()
        self.quiet_s = max(0.5, 2 * debounce_s)  # no event for this long: the burst is over
        self.rescans = 0  # how often events were (possibly) lost and the roots walked again
        self._observer = Observer()
        self._pending: dict[Path, float] = {}  # path -> time of its last event
        self._known: dict[Path, Signature] = {}  # the flusher's picture of the source files
        self._gone: dict[Path, float] = {}  # directories deleted or moved away -> time of the event
        self._burst = 0  # raw events since the last quiet gap
        self._last_event = 0.0
        self._rescan_since: float | None = None  # when a rescan became due
        self._cond = threading.Condition()
        self._stopped = False
        self._flusher = threading.Thread(target=self._flush_loop, name="superpie-watcher", daemon=True)

    def start(self) -> None:
        """Watch every root (its top-level ignored directories excluded)."""
        for root in self.roots:
            if root.is_dir():
                self._schedule_root(root)
        self._observer.start()
        self._flusher.start()

    def stop(self) -> None:
        """Stop watching; pending events are dropped."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=2)

    def _schedule_root(self, root: Path) -> None:
        handler = _Handler(self, root)
        self._observer.schedule(handler, str(root), recursive=False)
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.is_symlink() and not self.rules.ignores_dir(child):
                self._observer.schedule(handler, str(child), recursive=True)

    # ---- events (watchdog's thread) -------------------------------------------------------------

    def _on_event(self, event: FileSystemEvent, root: Path) -> None:
        now = time.monotonic()
        with self._cond:
            if now - self._last_event >= self.quiet_s:
                self._burst = 0
            self._last_event = now
            self._burst += 1
            if self._burst == self.saturation:
                self._lost(f"{self._burst} events in one burst", now)
            if event.event_type in ("opened", "closed_no_write"):
                return
            if event.is_directory:
                self._on_dir_event(event, root, now)
            else:
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw:
                        path = Path(os.fsdecode(raw))
                        if self.rules.is_source(path, root):
                            self._pending[path] = now
            if len(self._pending) > self.max_pending:
                self._lost(f"more than {self.max_pending} paths pending", now)
            self._cond.notify()

    def _on_dir_event(self, event: FileSystemEvent, root: Path, now: float) -> None:
        """A directory created or moved in is walked (a new top-level one gets its own watch); one deleted
        or moved away is noted, so the files known under it are checked and delivered as removed."""
        if event.event_type in ("moved", "deleted"):
            self._gone[Path(os.fsdecode(event.src_path))] = now
        if event.event_type not in ("created", "moved"):
            return
        path = Path(os.fsdecode(event.dest_path or event.src_path))
        if not path.is_dir() or not self.rules.is_source_dir(path, root):
            return
        if path.parent == root:
            try:
                self._observer.schedule(_Handler(self, root), str(path), recursive=True)
            except OSError as exc:
                log.warning("cannot watch %s: %s", path, exc)
        for f, _ in WorkspaceFiles([path], self.rules).walk(limit=self.max_pending + 1):
            self._pending[f] = now

    def _lost(self, why: str, now: float) -> None:
        """Events may have been lost: drop what is pending and walk the roots once the burst settles."""
        if self._rescan_since is None:
            log.warning("workspace watcher: %s; the workspace is rescanned once it settles", why)
            self._rescan_since = now
        self._drop_pending()

    def _drop_pending(self) -> None:
        """Leave the pending paths to the rescan, their known state marked unknown: the first walk may have
        recorded a write whose event came after it (under load, watchdog's thread lags), and the rescan
        reports a path only where its state differs from the known one. The path stays known, so a rescan
        that no longer finds it reports it removed. Called with the lock held."""
        for path in self._pending:
            if path in self._known:
                self._known[path] = _UNKNOWN
        self._pending.clear()

    # ---- delivery (the flusher's thread) ---------------------------------------------------------

    def _flush_loop(self) -> None:
        self._walk(deliver=False)  # what the watcher knows of each file before the first event
        while True:
            with self._cond:
                while not self._stopped and not self._ready(time.monotonic()):
                    self._cond.wait(self._wait_s())
                if self._stopped:
                    return
                rescan = self._rescan_since is not None
                if rescan:
                    self._rescan_since, self._burst, due = None, 0, []
                    self._drop_pending()
                    self._gone.clear()
                else:
                    due = self._take_due(time.monotonic())
            if rescan:
                self.rescans += 1
                self._walk(deliver=True)
            for path in due:
                self._deliver(path)

    def _ready(self, now: float) -> bool:
        if self._rescan_since is not None:  # pending paths wait for the rescan, which covers them
            return now - self._last_event >= self.quiet_s or now - self._rescan_since >= _MAX_HOLD_S
        return any(now - t >= self.debounce_s for t in (*self._pending.values(), *self._gone.values()))

    def _wait_s(self) -> float | None:
        if self._rescan_since is not None:
            return self.quiet_s / 4
        return self.debounce_s if self._pending or self._gone else None

    def _take_due(self, now: float) -> list[Path]:
        """The paths whose last event is older than the debounce, and the known files under gone directories."""
        due = [p for p, t in self._pending.items() if now - t >= self.debounce_s]
        for p in due:
            del self._pending[p]
        gone = {d for d, t in self._gone.items() if now - t >= self.debounce_s}
        if gone:
            for d in gone:
                del self._gone[d]
            due += [p for p in self._known if not gone.isdisjoint(p.parents)]
        return list(dict.fromkeys(due))

    def _walk(self, deliver: bool) -> None:
        """Walk the roots; with `deliver`, report every file that differs from what the watcher knew."""
        current = {path: (st.st_mtime_ns, st.st_size) for path, st in self.files.walk()}
        with self._cond:
            if not deliver:  # the first walk, before any delivery; if events were lost meanwhile, the
                if self._rescan_since is None:  # walk may have seen their result: knowing nothing, the
                    self._known.update(current)  # rescan then reports every file
                return
            known = dict(self._known)
        for path in [p for p in known if p not in current] + [p for p, s in current.items() if known.get(p) != s]:
            if self._stopped:
                return
            self._deliver(path)

    def _deliver(self, path: Path) -> None:
        st = self.files.stat(path)  # None when gone, not regular, past the size limit or linked out
        with self._cond:
            if st is None:
                self._known.pop(path, None)
            else:
                self._known[path] = (st.st_mtime_ns, st.st_size)
        try:
            if st is None:
                self.on_removed(path)  # the index should drop it
            else:
                self.on_changed(path)
        except Exception:  # a callback's failure must not end the watcher
            log.exception("workspace watcher callback failed for %s", path)
