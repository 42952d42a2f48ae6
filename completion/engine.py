"""The `Engine`: the one completion engine behind every front door (LSP server, CLI, Python API).

It owns the model, one `DocumentCache` per open document, and the decoding strategies. It knows no
LSP types: positions arrive as Python string offsets, and results leave as plain dataclasses.
Calls are expected from a single worker thread (the model is not re-entrant).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from superpie.cache.cursor import CursorView
from superpie.cache.document import NO_SYNC, DocumentCache, SyncStats
from superpie.completion.config import EngineConfig
from superpie.completion.decoding import DecodedDraft, greedy_decode, line_end_stop
from superpie.completion.model import LoadedModel, load_model


@dataclass(frozen=True)
class CompletionRequest:
    """A completion at `offset` (a Python str index) of `text`, the document's current text."""

    uri: str
    text: str
    offset: int
    max_tokens: int | None = None
    drafts: int | None = None
    strategy: str | None = None
    multiline: bool | None = None


@dataclass(frozen=True)
class Completion:
    """One ranked draft: the text to insert at the cursor and its rank score (higher is better)."""

    text: str
    score: float


@dataclass
class CompletionResult:
    """Ranked drafts plus what they cost."""

    completions: list[Completion]
    timings_ms: dict[str, float]
    cache: SyncStats
    cancelled: bool = False


@dataclass
class _Document:
    cache: DocumentCache
    pending: SyncStats = NO_SYNC  # syncs since the last completion (reported with it)
    text: str = ""


@dataclass
class Engine:
    """Completion engine: model + per-document caches + decoding; single-threaded by contract."""

    config: EngineConfig = field(default_factory=EngineConfig)
    lm: LoadedModel | None = None
    _docs: OrderedDict[str, _Document] = field(default_factory=OrderedDict)
    _load_lock: threading.Lock = field(default_factory=threading.Lock)

    # ----------------------------------------------------------------- model

    def ensure_loaded(self) -> float:
        """Load the model if needed; return the milliseconds this call spent loading."""
        with self._load_lock:
            if self.lm is not None:
                return 0.0
            t0 = time.perf_counter()
            cfg = self.config.model
            self.lm = load_model(cfg.path, dtype=cfg.dtype, threads=cfg.threads)
            return (time.perf_counter() - t0) * 1000

    @property
    def loaded(self) -> bool:
        """Whether the model is ready."""
        return self.lm is not None

    # ------------------------------------------------------------- documents

    def _document(self, uri: str) -> _Document:
        doc = self._docs.get(uri)
        if doc is None:
            self.ensure_loaded()
            lm = self.lm
            ccfg = self.config.cache
            reserve = self.config.decoding.max_tokens + 64
            cache = DocumentCache(
                lm.model,
                lm.tokenizer,
                lm.rope,
                mode=ccfg.mode,
                stale_threshold=ccfg.stale_threshold,
                max_tokens=max(64, min(ccfg.context_tokens, lm.context_length - reserve)),
                window_step=ccfg.window_step,
            )
            doc = self._docs[uri] = _Document(cache)
        self._docs.move_to_end(uri)
        return doc

    def sync(self, uri: str, text: str, anchor: int | None = None, mode: str | None = None) -> SyncStats:
        """Bring the document's cache in step with `text` (call on every edit, in the background)."""
        doc = self._document(uri)
        stats = doc.cache.sync(text, anchor=anchor, mode=mode)
        doc.text = text
        doc.pending = doc.pending + stats if stats.mode != "none" else doc.pending
        self._enforce_budget(keep=uri)
        return stats

    def close(self, uri: str) -> None:
        """Forget a document and free its KV."""
        doc = self._docs.pop(uri, None)
        if doc is not None:
            doc.cache.release()

    def refresh_idle(self, uri: str) -> int:
        """Re-encode the document's stale tokens exactly (idle time); return how many."""
        doc = self._docs.get(uri)
        return doc.cache.refresh() if doc is not None else 0

    def memory_bytes(self) -> int:
        """KV memory of all open documents."""
        return sum(d.cache.nbytes() for d in self._docs.values())

    def _enforce_budget(self, keep: str) -> None:
        budget = self.config.cache.memory_budget_mb * 1024 * 1024
        for uri in list(self._docs):
            if self.memory_bytes() <= budget:
                break
            if uri != keep:
                self._docs[uri].cache.release()

    # ------------------------------------------------------------ completion

    def complete(self, req: CompletionRequest, cancelled: Callable[[], bool] = lambda: False) -> CompletionResult:
        """Ranked drafts at the cursor, decoded over the document's cached prefix."""
        if not 0 <= req.offset <= len(req.text):
            raise ValueError(f"offset {req.offset} is past the end of the document (length {len(req.text)})")
        self.sync(req.uri, req.text, anchor=req.offset)
        doc = self._docs[req.uri]
        pending, doc.pending = doc.pending, NO_SYNC
        t_sync = time.perf_counter()
        dcfg = self.config.decoding
        max_tokens = req.max_tokens if req.max_tokens is not None else dcfg.max_tokens
        multiline = req.multiline if req.multiline is not None else dcfg.multiline
        drafts = self._decode(doc.cache, req.offset, max_tokens, multiline, cancelled)
        t_end = time.perf_counter()
        completions = [Completion(d.text, round(d.mean_logprob, 4)) for d in drafts if d.text.strip()]
        return CompletionResult(
            completions=completions,
            timings_ms={
                "sync": pending.ms,
                "decode": (t_end - t_sync) * 1000,
                "total": (t_end - t_sync) * 1000 + pending.ms,
            },
            cache=pending,
            cancelled=any(d.cancelled for d in drafts),
        )

    def _decode(
        self, cache: DocumentCache, offset: int, max_tokens: int, multiline: bool, cancelled: Callable[[], bool]
    ) -> list[DecodedDraft]:
        lm = self.lm
        split = cache.split_at(offset)
        if split.prefix_len == 0:
            first, context = lm.start_id, 0
        else:
            first, context = cache.ids[split.prefix_len - 1], split.prefix_len - 1
        view = CursorView(cache, context, reserve=max_tokens + 2)
        stop = None if multiline else line_end_stop
        draft = greedy_decode(lm, view, first, max_tokens, typed=split.typed, stop=stop, cancelled=cancelled)
        return [draft]
