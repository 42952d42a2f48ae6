"""A hostile or careless workspace (issue 18, items 1, 2 and 5): the n-gram index neither blocks, nor reads
without end, nor copies files from outside the workspace into a cache others could read."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from superpie.completion.config import NgramConfig
from superpie.completion.ngram.index import NgramIndex

VOCAB = 128
SECRET = "QQJJXX = 'ZZQQJJ'\n"  # letters the workspace files never use


def encode(text: str) -> list[int]:
    return [min(ord(c), VOCAB - 1) for c in text]


def build(ws: Path, cache: Path, **config) -> NgramIndex:
    return NgramIndex.build(
        ws, encode, vocab_size=VOCAB, tokenizer_id="chars", config=NgramConfig(**config), cache_dir=cache
    )


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "a.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "pkg" / "b.py").write_text("import os\n")
    return root


def test_a_fifo_named_like_a_source_file_does_not_block_indexing(ws: Path, tmp_path: Path) -> None:
    fifo = ws / "fifo.py"
    os.mkfifo(fifo)
    result: list[NgramIndex] = []
    worker = threading.Thread(target=lambda: result.append(build(ws, tmp_path / "cache", persist=False)), daemon=True)
    worker.start()
    worker.join(timeout=5)
    if worker.is_alive():  # release the blocked open() so the thread ends with the test
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail("indexing blocked on a FIFO named fifo.py")
    assert [Path(f).name for f in result[0].files] == ["a.py", "b.py"]
    assert result[0].update_file(fifo) is False  # the watcher's path: refused too, without blocking


def _run_isolated(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run code in a child with a memory cap, so a reader that never stops fails the test, not the machine."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, preexec_fn=cap
    )


def test_a_source_symlink_to_dev_zero_is_not_read_without_end(ws: Path, tmp_path: Path) -> None:
    (ws / "zero.py").symlink_to("/dev/zero")
    code = f"""
        import json
        from superpie.completion.config import NgramConfig
        from superpie.completion.ngram.index import NgramIndex
        index = NgramIndex.build(
            {str(ws)!r}, lambda s: [min(ord(c), 127) for c in s], vocab_size=128, tokenizer_id="chars",
            config=NgramConfig(persist=False), cache_dir={str(tmp_path / "cache")!r},
        )
        print(json.dumps([index.files, index.update_file({str(ws / "zero.py")!r})]))
    """
    try:
        proc = _run_isolated(code)
    except subprocess.TimeoutExpired:
        pytest.fail("indexing read /dev/zero for a minute")
    assert proc.returncode == 0, proc.stderr[-2000:]
    files, updated = json.loads(proc.stdout)
    assert [Path(f).name for f in files] == ["a.py", "b.py"] and updated is False


def test_a_symlink_out_of_the_workspace_is_not_read_nor_cached(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "private" / "secret.py"
    outside.parent.mkdir()
    outside.write_text(SECRET)
    (ws / "leak.py").symlink_to(outside)
    (ws / "pkg" / "alias.py").symlink_to(ws / "a.py")  # a link that stays inside is followed as before
    index = build(ws, tmp_path / "cache")
    assert sorted(Path(f).name for f in index.files) == ["a.py", "alias.py", "b.py"]
    assert index.update_file(ws / "leak.py") is False  # the watcher's path: refused as well
    assert index.update_file(outside) is False
    secret_ids = set(encode("QJXZ"))
    assert not any(secret_ids & set(gram) for gram in index.counts())
    with np.load(index.cache_path, allow_pickle=False) as z:
        stored = {name: z[name] for name in z.files}
    assert not any("secret" in k or "leak" in k for k in stored["file_keys"].tolist())
    assert not secret_ids & set(stored["file_tokens"].tolist())
    assert not np.any(stored["unigrams"][sorted(secret_ids)])
    for n in range(2, 5):
        assert not secret_ids & set(stored[f"grams{n}"].ravel().tolist())


def test_a_cached_entry_from_a_link_that_now_leaves_the_workspace_is_dropped(ws: Path, tmp_path: Path) -> None:
    inside = ws / "pkg" / "target.py"
    inside.write_text("xs = [1, 2]\n")
    link = ws / "link.py"
    link.symlink_to(inside)
    build(ws, tmp_path / "cache")
    outside = tmp_path / "secret.py"
    outside.write_text(SECRET)
    link.unlink()
    link.symlink_to(outside)
    index = build(ws, tmp_path / "cache")
    assert sorted(Path(f).name for f in index.files) == ["a.py", "b.py", "target.py"]
    assert not any(set(encode("QJXZ")) & set(gram) for gram in index.counts())


def test_cache_files_are_0600_in_0700_directories(ws: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        index = build(ws, tmp_path / "cache" / "ngram")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(index.cache_path) == 0o600
    assert mode(tmp_path / "cache" / "ngram") == 0o700
    assert mode(tmp_path / "cache") == 0o700
    assert [p.name for p in (tmp_path / "cache" / "ngram").iterdir()] == [index.cache_path.name]  # no temp file left
