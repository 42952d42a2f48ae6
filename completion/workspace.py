"""The engine's view of the workspace beyond the open documents: the n-gram index over its files.

The index is built on first use (superposed decoding's n-gram term), counts open documents' unsaved
text at most once per debounce interval, and follows files changed on disk (the watcher's events).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterable
from pathlib import Path

from superpie.completion.config import NgramConfig
from superpie.completion.model.loading import LoadedModel
from superpie.completion.ngram.index import NgramIndex


class WorkspaceNgrams:
    """The workspace n-gram index and what of each open document it has counted."""

    def __init__(self, root: str | None) -> None:
        self.root = root
        self.index: NgramIndex | None = None
        self._fed: dict[str, tuple[str, float]] = {}  # uri -> (text counted, when)

    def built(self, lm: LoadedModel, config: NgramConfig) -> NgramIndex:
        """The index (built on first use; open documents only without a workspace)."""
        if self.index is None:
            tokenizer = lm.tokenizer

            def encode(s: str) -> list[int]:
                return tokenizer.encode(s, add_special_tokens=False).ids

            tok_id = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]
            if self.root is None:
                cfg = dataclasses.replace(config, persist=False)
                self.index = NgramIndex(".", encode, vocab_size=lm.vocab_size, tokenizer_id=tok_id, config=cfg)
            else:
                self.index = NgramIndex.build(
                    self.root, encode, vocab_size=lm.vocab_size, tokenizer_id=tok_id, config=config
                )
        return self.index

    def feed(
        self, lm: LoadedModel, config: NgramConfig, documents: Iterable[tuple[str, str]], debounce_s: float
    ) -> NgramIndex:
        """Count open documents' text, each at most once per debounce interval (a new one at once)."""
        index = self.built(lm, config)
        now = time.monotonic()
        for uri, text in documents:
            fed = self._fed.get(uri)
            if not text or (fed is not None and (fed[0] == text or now - fed[1] < debounce_s)):
                continue
            index.update_document(uri, text)
            self._fed[uri] = (text, now)
        return index

    def close(self, uri: str) -> None:
        """A document closed: the index goes back to the file on disk."""
        if self._fed.pop(uri, None) is not None and self.index is not None:
            self.index.close_document(uri)

    def file_changed(self, path: Path) -> None:
        """A workspace file changed on disk (ignored until the index exists: it reads the disk then)."""
        if self.index is not None:
            self.index.update_file(path)

    def file_removed(self, path: Path) -> None:
        """A workspace file was deleted or moved away."""
        if self.index is not None:
            self.index.remove_file(path)
