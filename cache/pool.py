"""The open documents' caches under one memory budget: least recently used first to lose its KV.

Every open document keeps its `DocumentCache`; together their KV may hold at most `budget_bytes`.
After a sync, the least recently used documents (never the one just synced) release their KV until
the pool fits; a released document stays open and is re-encoded on its next sync.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from superpie.cache.document import NO_SYNC, DocumentCache, SyncStats


@dataclass
class PooledDocument:
    """One open document: its cache, its last synced text, and the syncs not yet reported."""

    cache: DocumentCache
    text: str = ""
    pending: SyncStats = NO_SYNC  # syncs since the last completion (reported with it)

    def take_pending(self) -> SyncStats:
        """The syncs since the last call (a completion reports what it waited for)."""
        pending, self.pending = self.pending, NO_SYNC
        return pending


class DocumentPool:
    """Per-URI document caches, most recently used last, held within a memory budget."""

    def __init__(self, make_cache: Callable[[], DocumentCache], budget_bytes: int) -> None:
        self._make_cache = make_cache
        self.budget_bytes = budget_bytes
        self._docs: OrderedDict[str, PooledDocument] = OrderedDict()

    def __contains__(self, uri: object) -> bool:
        return uri in self._docs

    def __iter__(self) -> Iterator[tuple[str, PooledDocument]]:
        return iter(list(self._docs.items()))

    def get(self, uri: str) -> PooledDocument | None:
        """The open document, or None (does not count as a use)."""
        return self._docs.get(uri)

    def sync(
        self, uri: str, text: str, anchor: int | None = None, mode: str | None = None, context: list[int] | None = None
    ) -> SyncStats:
        """Bring the document's cache in step with `text` (opening it if new), then fit the budget; `context`:
        repository context ids ahead of the document (None: keep them)."""
        doc = self._docs.get(uri)
        if doc is None:
            doc = self._docs[uri] = PooledDocument(self._make_cache())
        self._docs.move_to_end(uri)
        stats = doc.cache.sync(text, anchor=anchor, mode=mode, context=context)
        doc.text = text
        if stats.mode != "none":
            doc.pending = doc.pending + stats
        self._fit(keep=uri)
        return stats

    def open(
        self, uri: str, text: str, anchor: int | None = None, mode: str | None = None, context: list[int] | None = None
    ) -> SyncStats:
        """A document the editor just opened: `sync`, but a new long one is opened window-first (its cache
        `defer`s it, cache/opening.py); the caller finishes it with `open_step` in idle time."""
        if uri not in self._docs:
            doc = self._docs[uri] = PooledDocument(self._make_cache())
            doc.cache.defer(text)
        return self.sync(uri, text, anchor=anchor, mode=mode, context=context)

    def open_step(self, uri: str) -> bool:
        """One idle step of a document's window-first opening; False when it had nothing left (or is closed)."""
        doc = self._docs.get(uri)
        if doc is None or not doc.cache.open_step():
            return False
        self._fit(keep=uri)
        return True

    def close(self, uri: str) -> bool:
        """Forget a document and free its KV; False if it was not open."""
        doc = self._docs.pop(uri, None)
        if doc is None:
            return False
        doc.cache.release()
        return True

    def clear(self) -> None:
        """Close every document (the caches were built for another model or configuration)."""
        for uri in list(self._docs):
            self.close(uri)

    def refresh(self, uri: str, limit: int | None = None) -> int:
        """Re-encode a document's stale tokens exactly (idle time), at most `limit` of them; how many."""
        doc = self._docs.get(uri)
        return doc.cache.refresh(limit) if doc is not None else 0

    def nbytes(self) -> int:
        """KV bytes of every open document."""
        return sum(d.cache.nbytes() for d in self._docs.values())

    def _fit(self, keep: str) -> None:
        for uri, doc in list(self._docs.items()):
            if self.nbytes() <= self.budget_bytes:
                break
            if uri != keep:
                doc.cache.release()
