"""The workspace file rules and the one safe reader: source files only, read without blocking, bounded, and
never through a link that leaves the workspace; and the one URI-to-path mapping."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from superpie.analysis.workspace_files import SourceRules, WorkspaceFiles, uri_to_path


def write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write(root, "a.py", "a = 1\n")
    write(root, "pkg/b.py", "b = 2\n")
    return root


def files(ws: Path, max_bytes: int = 1000) -> WorkspaceFiles:
    return WorkspaceFiles([ws], SourceRules(max_bytes=max_bytes))


def in_thread(fn, timeout: float = 5.0):
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout)
    return worker, out


def test_a_regular_file_is_read_with_its_stat(ws: Path) -> None:
    src = files(ws).read(ws / "a.py")
    assert src is not None and src.text == "a = 1\n"
    st = (ws / "a.py").stat()
    assert (src.mtime_ns, src.size) == (st.st_mtime_ns, st.st_size)


def test_a_fifo_is_refused_without_blocking(ws: Path) -> None:
    fifo = ws / "fifo.py"
    os.mkfifo(fifo)
    worker, out = in_thread(lambda: files(ws).read(fifo))
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert out == [None]
    assert files(ws).stat(fifo) is None


def test_a_device_behind_a_link_is_refused(ws: Path) -> None:
    (ws / "zero.py").symlink_to("/dev/zero")
    worker, out = in_thread(lambda: files(ws).read(ws / "zero.py"))
    assert not worker.is_alive() and out == [None]
    # even with the device's directory counted as a root, a non-regular file is never read
    worker, out = in_thread(lambda: WorkspaceFiles([ws, Path("/dev")]).read(ws / "zero.py"))
    assert not worker.is_alive() and out == [None]


def test_links_are_followed_inside_the_roots_only(ws: Path, tmp_path: Path) -> None:
    outside = write(tmp_path, "private/secret.py", "secret = 1\n")
    (ws / "leak.py").symlink_to(outside)
    (ws / "pkg" / "alias.py").symlink_to(ws / "a.py")
    (ws / "pkg" / "out").symlink_to(outside.parent, target_is_directory=True)
    wf = files(ws)
    assert wf.read(ws / "leak.py") is None and wf.stat(ws / "leak.py") is None
    assert wf.read(ws / "pkg" / "out" / "secret.py") is None  # a linked directory leads out just the same
    assert wf.read(outside) is None
    src = wf.read(ws / "pkg" / "alias.py")
    assert src is not None and src.text == "a = 1\n"
    assert WorkspaceFiles([ws, outside.parent]).read(ws / "leak.py") is not None  # another root is inside


def test_reads_are_bounded_by_the_size_limit(ws: Path) -> None:
    write(ws, "edge.py", "x" * 1000)
    write(ws, "over.py", "x" * 1001)
    wf = files(ws, max_bytes=1000)
    assert wf.read(ws / "edge.py") is not None
    assert wf.read(ws / "over.py") is None and wf.stat(ws / "over.py") is None


def test_invalid_utf8_is_replaced_not_raised(ws: Path) -> None:
    write(ws, "latin.py", b"s = '\xe9t\xe9'\n")
    src = files(ws).read(ws / "latin.py")
    assert src is not None and src.text == "s = '\ufffdt\ufffd'\n"


def test_directories_and_missing_files_are_not_read(ws: Path) -> None:
    (ws / "dir.py").mkdir()
    wf = files(ws)
    assert wf.read(ws / "dir.py") is None and wf.read(ws / "missing.py") is None
    assert wf.stat(ws / "dir.py") is None and wf.stat(ws / "missing.py") is None


def test_the_walk_yields_source_files_only(ws: Path, tmp_path: Path) -> None:
    for rel in [".git/x.py", "node_modules/m/x.py", "build/x.py", ".venv/lib/x.py", "proj.egg-info/x.py"]:
        write(ws, rel, "skip = 1\n")
    write(ws, "myenv/pyvenv.cfg", "home = /usr\n")
    write(ws, "myenv/lib/x.py", "skip = 1\n")
    write(ws, "notes.txt", "skip = 1\n")
    write(ws, "big.py", "x = 1\n" * 200)
    os.mkfifo(ws / "fifo.py")
    (ws / "zero.py").symlink_to("/dev/zero")
    (ws / "dangling.py").symlink_to(ws / "nowhere.py")
    (ws / "leak.py").symlink_to(write(tmp_path, "secret.py", "s = 1\n"))
    (ws / "alias.py").symlink_to(ws / "a.py")
    walked = [p.relative_to(ws).as_posix() for p, _ in files(ws).walk()]
    assert walked == ["a.py", "alias.py", "pkg/b.py"]
    assert len(list(files(ws).walk(limit=2))) == 2


def test_the_rules_say_which_paths_are_source(ws: Path) -> None:
    write(ws, "env2/pyvenv.cfg", "home = /usr\n")
    rules = SourceRules()
    assert rules.is_source(ws / "pkg" / "b.py", ws)
    assert not rules.is_source(ws / "pkg" / "b.txt", ws)
    assert not rules.is_source(ws / "pkg" / "__pycache__" / "b.py", ws)
    assert not rules.is_source(ws / "env2" / "lib" / "b.py", ws)
    assert not rules.is_source(ws.parent / "elsewhere.py", ws)


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("file:///tmp/a.py", "/tmp/a.py"),
        ("file:///tmp/with%20space/%C3%A9.py", "/tmp/with space/é.py"),
        ("file:///tmp/pct%2541.py", "/tmp/pct%41.py"),  # decoded once, not twice
        ("file://localhost/tmp/a.py", "/tmp/a.py"),
        ("untitled:Untitled-1", None),
        ("mem://a.py", None),
        ("/tmp/a.py", None),
    ],
)
def test_uri_to_path(uri: str, path: str | None) -> None:
    assert uri_to_path(uri) == (None if path is None else Path(path))
