"""Issue 18 item 7: jedi never reads or parses a huge module, a FIFO or a link to /dev/zero.

`import huge` then `huge.` used to make jedi read and parse the whole module (200 MB: 2.5 GB); a
FIFO named like a module would block jedi's thread for good (every later question falling back).
Now each is read as an empty module: jedi answers at once, knowing no names there, and goes on
answering the next question.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from superpie.analysis.jedi_service import JediService, bounded_read
from superpie.analysis.workspace_files import MAX_SOURCE_BYTES


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    line = "value_%07d = %d  # a long generated module\n"
    with (tmp_path / "huge.py").open("w") as f:
        for i in range(600_000):  # ~30 MB
            f.write(line % (i, i))
    (tmp_path / "small.py").write_text("def helper():\n    return 1\n\nCONSTANT = 2\n")
    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "zero.py").symlink_to("/dev/zero")
    return tmp_path


def ask(jedi: JediService, workspace: Path, module: str) -> tuple[tuple[str, ...], bool, float]:
    code = f"import {module}\n{module}."
    t0 = time.perf_counter()
    answer = jedi.completions(str(workspace / "main.py"), code, len(code), budget_s=60)
    return answer.names, answer.fell_back, time.perf_counter() - t0


def test_a_huge_module_a_fifo_and_dev_zero_read_as_empty(workspace: Path) -> None:
    jedi = JediService(workspace)
    rss = psutil.Process().memory_info().rss
    try:
        for module in ("huge", "pipe", "zero"):
            names, fell_back, seconds = ask(jedi, workspace, module)
            assert not fell_back and seconds < 20, (module, seconds)
            assert not [n for n in names if n.startswith("value_")]
        names, fell_back, _ = ask(jedi, workspace, "small")  # jedi is free and still answers
        assert not fell_back and {"helper", "CONSTANT"} <= set(names)
        assert psutil.Process().memory_info().rss - rss < 300 * 2**20
    finally:
        jedi.close()


def test_bounded_read(workspace: Path) -> None:
    assert bounded_read(workspace / "small.py").startswith(b"def helper")
    assert bounded_read(workspace / "huge.py") == b""
    assert bounded_read(workspace / "pipe.py") == b"" and bounded_read(workspace / "zero.py") == b""
    assert bounded_read(workspace / "small.py", limit=10) == b""
    assert MAX_SOURCE_BYTES < (workspace / "huge.py").stat().st_size
    with pytest.raises(FileNotFoundError):
        bounded_read(workspace / "missing.py")
