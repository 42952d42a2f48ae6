"""Workspace watcher (watchdog): tells the engine which source files changed on disk or went away.

Events are filtered (VCS dirs, virtual environments, build output, caches, files over a size limit,
non-Python files) and debounced per path: an editor's save (write a temp file, rename it over the
original) reaches the callbacks as one "changed". Callbacks run on the watcher's own thread; the
server forwards them to the model worker. Top-level ignored directories (`.venv`, `.git`,
`node_modules`) are not watched at all, so a large virtual environment costs no inotify watches.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from superpie.analysis.workspace_files import IGNORED_DIRS

log = logging.getLogger(__name__)

PathCallback = Callable[[Path], None]


@dataclass(frozen=True)
class WatchFilter:
    """Which files under a workspace root the watcher reports."""

    suffixes: tuple[str, ...] = (".py", ".pyi")
    ignored_dirs: frozenset[str] = IGNORED_DIRS
    max_bytes: int = 1_000_000

    def ignores_dir(self, path: Path) -> bool:
        """Whether a directory is skipped (VCS, venv, build output, caches)."""
        name = path.name
        return name in self.ignored_dirs or name.endswith(".egg-info") or (path / "pyvenv.cfg").exists()

    def watches(self, path: Path, root: Path) -> bool:
        """Whether a file is one the engine indexes (its size is checked when the event is delivered)."""
        if path.suffix not in self.suffixes:
            return False
        try:
            parts = path.relative_to(root).parts[:-1]
        except ValueError:
            return False
        d = root
        for part in parts:
            d = d / part
            if self.ignores_dir(d):
                return False
        return True


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
        filter: WatchFilter | None = None,
        debounce_s: float = 0.2,
    ) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.on_changed, self.on_removed = on_changed, on_removed
        self.filter = filter or WatchFilter()
        self.debounce_s = debounce_s
        self._observer = Observer()
        self._pending: dict[Path, float] = {}  # path -> time of its last event
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
            if child.is_dir() and not child.is_symlink() and not self.filter.ignores_dir(child):
                self._observer.schedule(handler, str(child), recursive=True)

    def _on_event(self, event: FileSystemEvent, root: Path) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if event.is_directory:
            self._on_dir_event(event, root)
            return
        now = time.monotonic()
        with self._cond:
            for raw in paths:
                if raw:
                    path = Path(os.fsdecode(raw))
                    if self.filter.watches(path, root):
                        self._pending[path] = now
            self._cond.notify()

    def _on_dir_event(self, event: FileSystemEvent, root: Path) -> None:
        """A new top-level directory gets its own watch; a moved-in one is scanned."""
        if event.event_type not in ("created", "moved"):
            return
        path = Path(os.fsdecode(event.dest_path or event.src_path))
        if path.parent == root and path.is_dir() and not self.filter.ignores_dir(path):
            try:
                self._observer.schedule(_Handler(self, root), str(path), recursive=True)
            except OSError as exc:
                log.warning("cannot watch %s: %s", path, exc)
            now = time.monotonic()
            with self._cond:
                for f in path.rglob("*"):
                    if f.is_file() and self.filter.watches(f, root):
                        self._pending[f] = now
                self._cond.notify()

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._due():
                    self._cond.wait(self.debounce_s if self._pending else None)
                if self._stopped:
                    return
                now = time.monotonic()
                due = [p for p, t in self._pending.items() if now - t >= self.debounce_s]
                for p in due:
                    del self._pending[p]
            for path in due:
                self._deliver(path)

    def _due(self) -> bool:
        now = time.monotonic()
        return any(now - t >= self.debounce_s for t in self._pending.values())

    def _deliver(self, path: Path) -> None:
        try:
            size = path.stat().st_size if path.is_file() else None
        except OSError:
            size = None
        try:
            if size is None or size > self.filter.max_bytes:
                self.on_removed(path)  # gone, or grew past the limit: the index should drop it
            else:
                self.on_changed(path)
        except Exception:  # a callback's failure must not end the watcher
            log.exception("workspace watcher callback failed for %s", path)
