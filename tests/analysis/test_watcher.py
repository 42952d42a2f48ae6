"""The workspace watcher: files written, renamed and deleted on disk reach the callbacks and the n-gram index."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from superpie.analysis.watcher import WatchFilter, WorkspaceWatcher
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
    watcher = WorkspaceWatcher([workspace], rec.changed, rec.removed, WatchFilter(max_bytes=10_000), debounce_s=0.05)
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
