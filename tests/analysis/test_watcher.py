"""The workspace watcher: files written, renamed and deleted on disk reach the callbacks and the n-gram index,
and a burst that overwhelms it (events the kernel dropped, or more than it keeps pending) is rescanned, not lost."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from superpie.analysis.watcher import WorkspaceWatcher
from superpie.analysis.workspace_files import SourceRules
from superpie.completion.config import NgramConfig
from superpie.completion.ngram.index import NgramIndex


class Recorder:
    """Collects callback calls; `wait` blocks until a predicate over them holds."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Path]] = []
        self.cond = threading.Condition()

    def changed(self, path: Path) -> None:
        with self.cond:
            self.events.append(("changed", path))
            self.cond.notify_all()

    def removed(self, path: Path) -> None:
        with self.cond:
            self.events.append(("removed", path))
            self.cond.notify_all()

    def wait_for(self, event: tuple[str, Path], timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: event in self.events, timeout), (event, self.events)

    def wait_all(self, kind: str, paths: set[Path], timeout: float = 30.0) -> None:
        """Until every path was last reported as `kind`; the assertion names how many are missing."""

        def missing() -> set[Path]:
            last = {p: k for k, p in self.events}
            return {p for p in paths if last.get(p) != kind}

        with self.cond:
            self.cond.wait_for(lambda: not missing(), timeout)
            assert not missing(), f"{len(missing())} of {len(paths)} files never reported {kind}"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (tmp_path / "pkg" / "build").mkdir()
    return tmp_path


@pytest.fixture
def watched(workspace: Path):
    rec = Recorder()
    watcher = WorkspaceWatcher([workspace], rec.changed, rec.removed, SourceRules(max_bytes=10_000), debounce_s=0.05)
    watcher.start()
    yield rec
    watcher.stop()


def test_write_rename_delete_reach_the_callbacks(workspace: Path, watched: Recorder) -> None:
    src = workspace / "pkg" / "mod.py"
    src.write_text("def f():\n    return 1\n")
    watched.wait_for(("changed", src))
    dst = workspace / "pkg" / "renamed.py"
    src.rename(dst)
    watched.wait_for(("removed", src))
    watched.wait_for(("changed", dst))
    dst.unlink()
    watched.wait_for(("removed", dst))


def test_ignored_paths_and_big_files_are_not_reported_as_changed(workspace: Path, watched: Recorder) -> None:
    (workspace / ".venv" / "lib" / "site.py").write_text("x = 1\n")
    (workspace / "pkg" / "build" / "gen.py").write_text("x = 1\n")
    (workspace / "notes.txt").write_text("not python\n")
    big = workspace / "big.py"
    big.write_text("x = 1\n" * 5000)
    marker = workspace / "marker.py"
    marker.write_text("y = 2\n")  # written last: once it is reported, the others would have been too
    watched.wait_for(("changed", marker))
    time.sleep(0.2)
    assert [e for e in watched.events if e[1] != marker] == [("removed", big)]  # over the size limit: dropped


def test_new_top_level_directory_is_watched(workspace: Path, watched: Recorder) -> None:
    (workspace / "newpkg").mkdir()
    time.sleep(0.2)  # let the watcher add the directory's watch
    f = workspace / "newpkg" / "a.py"
    f.write_text("z = 3\n")
    watched.wait_for(("changed", f))


def test_watcher_keeps_the_ngram_counts_current(workspace: Path) -> None:
    from tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    index = NgramIndex(
        workspace,
        lambda text: tok.encode(text).ids,
        vocab_size=tok.get_vocab_size(),
        tokenizer_id="tiny",
        config=NgramConfig(order=3, persist=False),
    )
    done = threading.Event()

    def changed(path: Path) -> None:
        index.update_file(path)
        done.set()

    def removed(path: Path) -> None:
        index.remove_file(path)
        done.set()

    def settle(check) -> None:
        deadline = time.monotonic() + 5
        while not check():
            assert time.monotonic() < deadline, index.files
            done.wait(0.05)
            done.clear()

    watcher = WorkspaceWatcher([workspace], changed, removed, debounce_s=0.05)
    watcher.start()
    try:
        src = workspace / "pkg" / "shapes.py"
        src.write_text("class Square:\n    def area(self):\n        return self.side * self.side\n")
        settle(lambda: index.files == [str(src.resolve())] and index.num_ngrams > 0)
        counted = index.num_ngrams
        dst = src.with_name("squares.py")
        src.rename(dst)
        settle(lambda: index.files == [str(dst.resolve())])
        assert index.num_ngrams == counted
        dst.unlink()
        settle(lambda: index.files == [] and index.num_ngrams == 0)
    finally:
        watcher.stop()


def _lossy(watcher: WorkspaceWatcher, lost: Callable[[str], bool]) -> None:
    """Drop every event of some files before the watcher sees it, as the kernel does once its queue is full."""
    deliver = watcher._on_event

    def on_event(event, root: Path) -> None:
        if not any(raw and lost(os.fsdecode(raw)) for raw in (event.src_path, getattr(event, "dest_path", ""))):
            deliver(event, root)

    watcher._on_event = on_event  # type: ignore[method-assign]


def test_events_lost_in_a_burst_are_recovered_by_a_rescan(workspace: Path) -> None:
    keep = workspace / "pkg" / "keep.py"
    keep.write_text("untouched = 1\n")  # known from the start: a rescan must not report it
    rec = Recorder()
    watcher = WorkspaceWatcher([workspace], rec.changed, rec.removed, debounce_s=0.05)
    watcher.saturation = 1000  # a burst this long may have overflowed the kernel queue (16,384 by default)
    _lossy(watcher, lambda path: path.endswith(("0.py", "5.py")))  # a fifth of the files: no event at all
    watcher.start()
    try:
        time.sleep(0.3)  # the watcher's first walk, before the burst
        burst = {workspace / "pkg" / f"f{i}.py" for i in range(2000)}
        for path in sorted(burst):
            path.write_text(f"x = {path.stem}\n")
        rec.wait_all("changed", burst)
        for path in burst:
            path.unlink()
        rec.wait_all("removed", burst)
        assert watcher.rescans >= 2
        assert keep not in {p for _, p in rec.events}
    finally:
        watcher.stop()


def test_a_burst_past_the_pending_bound_is_rescanned(workspace: Path) -> None:
    rec = Recorder()
    watcher = WorkspaceWatcher([workspace], rec.changed, rec.removed, debounce_s=0.05, max_pending=100)
    watcher.start()
    try:
        burst = {workspace / "pkg" / f"g{i}.py" for i in range(1000)}
        for path in sorted(burst):
            path.write_text("y = 1\n")
        rec.wait_all("changed", burst)
        assert watcher.rescans >= 1
    finally:
        watcher.stop()


def test_events_dropped_by_a_lost_burst_are_reported_even_where_the_first_walk_saw_their_writes(
    workspace: Path,
) -> None:
    """Under load the first walk can record a file's new state before watchdog hands over the write's event;
    when a burst then drops that event, the rescan must still report the file (and a removed one as removed)."""
    rec = Recorder()
    watcher = WorkspaceWatcher([workspace], rec.changed, rec.removed, debounce_s=0.05, max_pending=100)
    new, gone = workspace / "pkg" / "new.py", workspace / "pkg" / "gone.py"
    gone.write_text("x = 1\n")
    new.write_text("y = 1\n")  # written before the first walk, its event not yet handed over
    watcher._walk(deliver=False)
    gone.unlink()
    with watcher._cond:  # the two events arrive, then the burst overflows
        watcher._pending[new] = watcher._pending[gone] = time.monotonic()
        watcher._lost("test", time.monotonic())
    watcher._walk(deliver=True)  # the rescan
    assert set(rec.events) == {("changed", new), ("removed", gone)}


def test_a_directory_moved_out_of_the_workspace_reports_its_files_removed(workspace: Path, tmp_path: Path) -> None:
    sub = workspace / "pkg" / "sub"
    sub.mkdir()
    files = {sub / f"m{i}.py" for i in range(3)}
    for path in files:
        path.write_text("z = 1\n")
    rec = Recorder()
    watcher = WorkspaceWatcher([workspace], rec.changed, rec.removed, debounce_s=0.05)
    watcher.start()
    try:
        time.sleep(0.3)
        sub.rename(tmp_path.parent / f"{tmp_path.name}-moved-away")
        rec.wait_all("removed", files, timeout=5)
    finally:
        watcher.stop()
