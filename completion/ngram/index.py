"""Workspace token n-gram model, used to filter the k×V candidates of superposed decoding.

The n-grams come from the workspace itself (files on disk and open editor buffers), tokenized with
the model's own tokenizer, so the filter knows the project's identifiers and idioms. This module ties
files to counts: which files are counted (found and read through `analysis.workspace_files`, the
rules the watcher shares), the open buffers that stand in for their files, and when the index is
loaded from and saved to disk (`store`). The model itself is `counts.NgramCounts`.

Memory is bounded: files over `max_file_bytes` and files past `max_files` are skipped, and the counts
prune themselves past `max_ngrams`. Per file the index keeps only its token ids (4 bytes a token); its
n-grams are recounted from them when it changes, and only in the window around the edited tokens.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from superpie.analysis.workspace_files import SourceRules, WorkspaceFiles, uri_to_path
from superpie.completion.config import NgramConfig
from superpie.completion.ngram import store
from superpie.completion.ngram.counts import NgramCounts
from superpie.completion.ngram.store import FileEntry, StoreKey, default_cache_dir

log = logging.getLogger(__name__)

Encode = Callable[[str], list[int]]

_FROM_BUFFER = -1  # mtime of an entry that came from an editor buffer, not from the disk


class NgramIndex:
    """Token n-gram counts of a workspace, updated per file, queried for many candidates at once."""

    def __init__(
        self,
        workspace_dir: str | os.PathLike[str],
        encode: Encode,
        *,
        vocab_size: int,
        tokenizer_id: str,
        config: NgramConfig = NgramConfig(),
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.workspace = Path(workspace_dir).resolve()
        self.encode = encode
        self.vocab_size = vocab_size
        self.tokenizer_id = tokenizer_id
        self.config = config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        rules = SourceRules(ignored_dirs=config.ignored_dirs, max_bytes=config.max_file_bytes)
        self.sources = WorkspaceFiles([self.workspace], rules)
        self._key = StoreKey(str(self.workspace), tokenizer_id, config.order, vocab_size)
        self._lock = threading.RLock()
        self._loaded = not config.persist
        self._counts = self._new_counts()  # raises for an order or vocab_size below 1
        self._files: dict[str, FileEntry] = {}
        self._open: set[str] = set()

    @classmethod
    def build(
        cls,
        workspace_dir: str | os.PathLike[str],
        encode: Encode,
        *,
        vocab_size: int,
        tokenizer_id: str,
        config: NgramConfig = NgramConfig(),
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> NgramIndex:
        """Index a workspace's source files, reusing the persisted index for files that did not change."""
        index = cls(
            workspace_dir, encode, vocab_size=vocab_size, tokenizer_id=tokenizer_id, config=config,
            cache_dir=cache_dir,
        )  # fmt: skip
        index.refresh()
        if config.persist:
            index.save()
        return index

    def _new_counts(self) -> NgramCounts:
        return NgramCounts(self.config.order, self.vocab_size, self.config.max_ngrams)

    # ---- queries -------------------------------------------------------------------------------

    def logprobs(self, context: Sequence[int], candidates: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Log P(candidate | last order-1 context ids) for many candidates: the decoder's n-gram term."""
        self._ensure_loaded()
        cand = torch.as_tensor(candidates, dtype=torch.long)
        with self._lock:
            lp = self._counts.logprobs(context, cand.reshape(-1))
        return lp.to(torch.float32).reshape(cand.shape)

    def logprobs_batch(self, contexts: Sequence[Sequence[int]], candidates: torch.Tensor) -> torch.Tensor:
        """Per-draft n-gram log-probs: row i scores candidates[i] after contexts[i]; [k, m] -> [k, m]."""
        assert candidates.dim() == 2 and candidates.shape[0] == len(contexts)
        return torch.stack([self.logprobs(c, row) for c, row in zip(contexts, candidates, strict=True)])

    def counts(self) -> dict[tuple[int, ...], int]:
        """Every n-gram (orders 1..N) with its count, so tests and diagnostics can compare indexes."""
        self._ensure_loaded()
        with self._lock:
            return self._counts.as_dict()

    @property
    def num_ngrams(self) -> int:
        """Distinct n-grams of order >= 2: the quantity that `max_ngrams` bounds."""
        self._ensure_loaded()
        return self._counts.size

    @property
    def files(self) -> list[str]:
        """Keys (resolved paths, or URIs of unsaved buffers) of everything counted."""
        self._ensure_loaded()
        return sorted(self._files)

    # ---- updates -------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Bring the index in line with the disk; only files whose mtime or size changed are re-read."""
        self._ensure_loaded()
        seen: set[str] = set()
        changed = 0
        for path, st in self.sources.walk(limit=self.config.max_files):
            key = str(path)
            seen.add(key)
            entry = self._files.get(key)
            if key in self._open or (entry and (entry.mtime_ns, entry.size) == (st.st_mtime_ns, st.st_size)):
                continue
            src = self.sources.read(path)
            if src is not None:
                self._set(key, self.encode(src.text), src.mtime_ns, src.size)
                changed += 1
        with self._lock:
            for key in [k for k in self._files if k not in seen and k not in self._open]:
                self._remove(key)
                changed += 1
        return changed

    def update_file(self, path: str | os.PathLike[str], text: str | None = None) -> bool:
        """Recount one file after it changed on disk (the watcher's hook); False when skipped.

        Without `text` the file is read through the workspace rules: a file that is not a regular file
        inside the workspace within the size limit is forgotten instead.
        """
        self._ensure_loaded()
        p = Path(path).resolve()
        key = str(p)
        if key in self._open:  # the editor's buffer is newer than the disk
            return False
        if text is None:
            src = self.sources.read(p)
            if src is None:
                return self.remove_file(p)
            text, mtime, size = src.text, src.mtime_ns, src.size
        else:
            try:
                st = p.stat()
                mtime, size = st.st_mtime_ns, st.st_size
            except OSError:
                mtime, size = _FROM_BUFFER, -1
        if len(text.encode("utf-8", "replace")) > self.config.max_file_bytes or (
            key not in self._files and len(self._files) >= self.config.max_files
        ):
            self.remove_file(p)
            return False
        self._set(key, self.encode(text), mtime, size)
        return True

    def remove_file(self, path: str | os.PathLike[str]) -> bool:
        """Forget a deleted file's n-grams; False when it was not counted."""
        self._ensure_loaded()
        with self._lock:
            return self._remove(str(Path(path).resolve()))

    def update_document(self, uri: str, text: str) -> None:
        """Count an open editor buffer instead of its file on disk (unsaved edits included)."""
        self._ensure_loaded()
        key = _document_key(uri)
        tokens = self.encode(text)
        with self._lock:
            self._open.add(key)
            self._set(key, tokens, _FROM_BUFFER, len(text))

    def close_document(self, uri: str) -> None:
        """Go back to the file on disk (or forget an unsaved buffer) when the editor closes it."""
        self._ensure_loaded()
        key = _document_key(uri)
        with self._lock:
            self._open.discard(key)
        if uri_to_path(uri) is not None:
            self.update_file(key)  # forgets it when the file is gone or no longer readable
        else:
            with self._lock:
                self._remove(key)

    def _set(self, key: str, tokens: Sequence[int], mtime_ns: int, size: int) -> None:
        new = list(tokens)
        self._counts.check(new, key)
        with self._lock:
            entry = self._files.get(key)
            if entry is None:
                self._counts.add(new)
            else:
                self._counts.replace(entry.tokens.tolist(), new)
            self._files[key] = FileEntry(np.asarray(new, dtype=np.int32), mtime_ns, size)

    def _remove(self, key: str) -> bool:
        entry = self._files.pop(key, None)
        if entry is None:
            return False
        self._counts.remove(entry.tokens.tolist())
        return True

    # ---- persistence ---------------------------------------------------------------------------

    @property
    def cache_path(self) -> Path:
        """The cache file of this workspace and tokenizer (the key keeps other setups from sharing it)."""
        return self.cache_dir / self._key.file_name()

    def save(self) -> Path:
        """Write the index atomically to its private cache file, so the next run skips tokenizing."""
        self._ensure_loaded()
        with self._lock:
            arrays = store.arrays(self._key, self._counts, self._files)
        return store.write(self.cache_path, arrays)

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            path = self.cache_path
            if not path.exists():
                return
            try:
                loaded = store.load(path, self._key, self.config.max_ngrams)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable n-gram cache %s: %s", path, exc)
                return
            if loaded is not None:
                self._counts, self._files = loaded


def _document_key(uri: str) -> str:
    """A buffer's key: its file's resolved path (so it stands in for the file), else the URI itself."""
    path = uri_to_path(uri)
    return str(path.resolve()) if path is not None else uri
