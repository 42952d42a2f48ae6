"""The n-gram index on disk: one `.npz` file per workspace and tokenizer, private to its user.

A restart then skips tokenizing the workspace: only files whose mtime or size changed are read again.
The file holds the workspace's tokens, so it is written 0600 in directories created 0700 (another
user on the machine must not read a private repository through the cache), atomically (a temporary
file renamed over the old one), and read back with pickles refused.

Format 1, one array each: `meta` (JSON: format, workspace, tokenizer, order, vocabulary size; a cache
whose meta differs is ignored), `unigrams` [V] int64, per file `file_keys`, `file_mtime`, `file_size`
and its tokens as `file_tokens` sliced by `file_offsets`, and per order n >= 2 `grams{n}` [G, n] int32
with `counts{n}` [G] int64.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

from superpie.completion.ngram.counts import NgramCounts

FORMAT = 1
_FILE_MODE = 0o600
_DIR_MODE = 0o700


@dataclass
class FileEntry:
    """What the index keeps of one counted file: its token ids and the stat they were read at."""

    tokens: np.ndarray  # [T] int32
    mtime_ns: int
    size: int


@dataclass(frozen=True)
class StoreKey:
    """What a cache file belongs to; a file written for another key is never loaded."""

    workspace: str
    tokenizer_id: str
    order: int
    vocab_size: int

    def meta(self) -> dict[str, object]:
        """The JSON header saved with the arrays and compared on loading."""
        return {
            "format": FORMAT, "workspace": self.workspace, "tokenizer_id": self.tokenizer_id,
            "order": self.order, "vocab_size": self.vocab_size,
        }  # fmt: skip

    def file_name(self) -> str:
        """A name derived from the key, so other workspaces and tokenizers do not share a file."""
        parts = [self.workspace, self.tokenizer_id, str(self.order), str(self.vocab_size)]
        return f"{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:24]}.npz"


def default_cache_dir() -> Path:
    """Where n-gram indexes persist between runs, so a restart does not re-tokenize the workspace."""
    return Path(platformdirs.user_cache_dir("superpie")) / "ngram"


def arrays(key: StoreKey, counts: NgramCounts, files: Mapping[str, FileEntry]) -> dict[str, np.ndarray]:
    """The arrays of one cache file (taken while the index is locked; `write` runs after)."""
    keys = sorted(files)
    entries = [files[k] for k in keys]
    out: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps(key.meta())),
        "unigrams": counts.unigram_array(),
        "file_keys": np.array(keys, dtype=str),
        "file_mtime": np.array([e.mtime_ns for e in entries], dtype=np.int64),
        "file_size": np.array([e.size for e in entries], dtype=np.int64),
        "file_offsets": np.cumsum([0] + [len(e.tokens) for e in entries], dtype=np.int64),
        "file_tokens": np.concatenate([e.tokens for e in entries] or [np.zeros(0, np.int32)]),
    }
    for n in range(2, key.order + 1):
        out[f"grams{n}"], out[f"counts{n}"] = counts.gram_arrays(n)
    return out


def write(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write a cache file atomically, 0600, creating its directory 0700."""
    private_dir(path.parent, tighten=path.parent == default_cache_dir())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)  # whatever the umask
            payload: dict[str, Any] = dict(arrays)  # (typed loosely: numpy's stub reads a key as its own flag)
            np.savez(f, **payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load(path: Path, key: StoreKey, max_ngrams: int) -> tuple[NgramCounts, dict[str, FileEntry]] | None:
    """The counts and files saved for `key`, or None when the file was written for another key.

    Raises OSError, ValueError or KeyError for a missing, corrupt or truncated file.
    """
    with np.load(path, allow_pickle=False) as z:
        if json.loads(str(z["meta"])) != key.meta():
            return None
        counts = NgramCounts(key.order, key.vocab_size, max_ngrams)
        grams = {n: (z[f"grams{n}"], z[f"counts{n}"]) for n in range(2, key.order + 1)}
        counts.load_arrays(z["unigrams"], grams)
        offsets = z["file_offsets"].tolist()
        tokens = z["file_tokens"]
        keys, mtimes, sizes = z["file_keys"].tolist(), z["file_mtime"].tolist(), z["file_size"].tolist()
        files = {
            k: FileEntry(tokens[offsets[i] : offsets[i + 1]].copy(), mtimes[i], sizes[i]) for i, k in enumerate(keys)
        }
    return counts, files


def private_dir(path: Path, *, tighten: bool = False) -> None:
    """Create `path` and any missing parents 0700; with `tighten`, also take group and other access
    away from an existing `path` (the default cache directory, which earlier versions made 0755)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, _DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, _DIR_MODE)  # whatever the umask
    if tighten and not missing:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
            os.chmod(path, _DIR_MODE)
