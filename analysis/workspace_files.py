"""Which workspace files are source files worth reading, and the one way they are read.

The n-gram index and the workspace watcher share these rules, so a file the watcher reports is one the
index would have found by walking, and both read it the same way. A workspace is untrusted input: a
named pipe called `x.py` must not block the reader, a link to `/dev/zero` must not be read without
end, and a link that leads out of the workspace must not carry another directory's files into the
index (and from there into its cache on disk). So a file is read only when

- its real path (links resolved) lies inside one of the workspace roots,
- it was opened without blocking (`O_NONBLOCK`, the last component not followed) and `fstat` on the
  opened descriptor says it is a regular file no larger than the limit,
- and the read itself stops one byte past the limit (a file that grows meanwhile is refused).

Text is decoded as UTF-8 with replacement characters, so a stray Latin-1 byte never fails indexing.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

IGNORED_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", "__pycache__", "node_modules", "build", "dist", "venv", ".venv",
        "env", ".env", ".tox", ".nox", ".eggs", "site-packages", ".mypy_cache", ".pytest_cache",
        ".ruff_cache", ".ipynb_checkpoints",
    }
)  # fmt: skip
SOURCE_SUFFIXES = (".py",)
MAX_SOURCE_BYTES = 1_000_000

# O_NONBLOCK keeps open() of a FIFO from waiting for a writer; O_NOFOLLOW refuses a link swapped in
# after the real path was checked. Both are absent on Windows, where neither hazard applies the same way.
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)  # fmt: skip
_CHUNK = 1 << 16


@dataclass(frozen=True)
class SourceRules:
    """Which files under a workspace root are source files: by suffix, directory and size."""

    suffixes: tuple[str, ...] = SOURCE_SUFFIXES
    ignored_dirs: frozenset[str] = IGNORED_DIRS
    max_bytes: int = MAX_SOURCE_BYTES

    def ignores_dir(self, path: Path) -> bool:
        """Whether a directory is skipped (VCS, virtual environments under any name, build output, caches)."""
        name = path.name
        return name in self.ignored_dirs or name.endswith(".egg-info") or (path / "pyvenv.cfg").exists()

    def is_source_name(self, name: str) -> bool:
        """Whether a file name has a source suffix."""
        return name.endswith(self.suffixes)

    def is_source_dir(self, path: Path, root: Path) -> bool:
        """Whether a directory lies under `root` with no ignored directory on the way down to it (itself included)."""
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            return False
        d = root
        for part in parts:
            d = d / part
            if self.ignores_dir(d):
                return False
        return True

    def is_source(self, path: Path, root: Path) -> bool:
        """Whether a path under `root` is a source file by name and place (its size is checked on reading)."""
        return self.is_source_name(path.name) and self.is_source_dir(path.parent, root)


@dataclass(frozen=True)
class SourceText:
    """A source file's text with the `fstat` of the descriptor it was read from."""

    text: str
    mtime_ns: int
    size: int


class WorkspaceFiles:
    """The source files under a set of workspace roots: walked, checked and read safely."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]], rules: SourceRules | None = None) -> None:
        self.roots: list[Path] = []
        for root in sorted({Path(r).resolve() for r in roots}, key=lambda p: len(p.parts)):
            if not any(root.is_relative_to(outer) for outer in self.roots):  # else it would be walked twice
                self.roots.append(root)
        self.rules = rules or SourceRules()
        self._real_roots = [os.path.realpath(r) for r in self.roots]

    def contains(self, path: str | os.PathLike[str]) -> bool:
        """Whether a path, links resolved, lies inside one of the roots."""
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self._real_roots)

    def stat(self, path: str | os.PathLike[str]) -> os.stat_result | None:
        """The stat of a file worth reading (regular, within the roots and the size limit), else None.

        Cheap enough for a walk: no file is opened. `read` checks again on the descriptor it opens.
        """
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                if not self.contains(path):
                    return None
                st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size > self.rules.max_bytes:
            return None
        return st

    def read(self, path: str | os.PathLike[str]) -> SourceText | None:
        """A source file's text, or None when it is not a regular file inside the roots within the limit."""
        real = os.path.realpath(path)
        if not self.contains(real):
            log.debug("not reading %s: it resolves outside the workspace roots", path)
            return None
        limit = self.rules.max_bytes
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except OSError as exc:
            log.debug("not reading %s: %s", path, exc)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                log.debug("not reading %s: not a regular file within %d bytes", path, limit)
                return None
            data = _read_at_most(fd, limit + 1)
        except OSError as exc:
            log.debug("not reading %s: %s", path, exc)
            return None
        finally:
            os.close(fd)
        if len(data) > limit:
            log.debug("not reading %s: it grew past %d bytes", path, limit)
            return None
        return SourceText(data.decode("utf-8", errors="replace"), st.st_mtime_ns, st.st_size)

    def walk(self, limit: int | None = None) -> Iterator[tuple[Path, os.stat_result]]:
        """Every source file under the roots with its stat, in a stable order; at most `limit` of them.

        Ignored directories are not entered, linked directories are not followed (as the watcher does
        not watch them), and a file must pass `stat` (regular, inside the roots, within the limit).
        """
        found = 0
        for root in self.roots:
            for dirpath, dirs, names in os.walk(root):
                base = Path(dirpath)
                dirs[:] = sorted(d for d in dirs if not self.rules.ignores_dir(base / d))
                for name in sorted(names):
                    if not self.rules.is_source_name(name):
                        continue
                    path = base / name
                    st = self.stat(path)
                    if st is None:
                        continue
                    yield path, st
                    found += 1
                    if limit is not None and found >= limit:
                        return


def _read_at_most(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = os.read(fd, min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def uri_to_path(uri: str) -> Path | None:
    """The file a document URI names: a Path for `file:` URIs, None for any other scheme (unsaved buffers).

    The path is decoded once (`%2541` is the file `%41`); a host other than localhost becomes a UNC path
    as the editors' own conversion does.
    """
    from urllib.request import url2pathname  # not at import: http.client and email, on `superpie serve`'s start-up path

    parsed = urlparse(uri)
    if parsed.scheme != "file" or not parsed.path:
        return None
    if parsed.netloc and parsed.netloc != "localhost":
        return Path(url2pathname(f"//{parsed.netloc}{parsed.path}"))
    return Path(url2pathname(parsed.path))
