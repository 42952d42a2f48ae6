"""The model worker opens a new long document window-first (cache/opening.py), on a tiny seeded model.

A request for a document the worker has not seen syncs only the window before its cursor; the worker
then finishes the document in idle steps, after which its cache equals an exact encode. With
`cache.open_window` 0 the request encodes the whole document first, as before.
"""

from __future__ import annotations

import threading
import time

import torch
from test_open_window import CURSOR, LONG
from tiny import tiny_model

from superpie.cache.document import DocumentCache
from superpie.completion.config import EngineConfig
from superpie.completion.config.fields import replaced
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest
from superpie.lsp.scheduler import ModelWorker

WINDOW = 48


def engine(open_window: int) -> Engine:
    config = EngineConfig()
    for path, value in (
        ("cache.open_window", open_window),
        ("cache.open_chunk", 32),
        ("monitors.enabled", False),
        ("decoding.max_tokens", 4),
    ):
        config = replaced(config, path, value)
    return Engine(config, lm=tiny_model())


def exact(text: str) -> DocumentCache:
    lm = tiny_model()
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="full", runner=lm.runner)
    doc.sync(text)
    return doc


def first_request(open_window: int) -> tuple[ModelWorker, int]:
    """didOpen and a request queued together (the request runs first); the tokens its sync encoded."""
    texts = {"a": LONG}
    worker = ModelWorker(engine(open_window), texts.get, idle_refresh_s=60.0)
    worker.start()
    gate = threading.Event()
    worker.submit(lambda e: gate.wait(5))  # hold the worker while both queue up
    worker.sync_soon("a")
    _, future = worker.complete(CompletionRequest("a", LONG, CURSOR))
    gate.set()
    outcome = future.result(60)
    assert outcome.result is not None and not outcome.result.cancelled
    return worker, outcome.result.cache.encoded


def test_the_first_request_encodes_its_window_and_idle_steps_finish_the_document_exactly() -> None:
    worker, encoded = first_request(WINDOW)
    reference = exact(LONG)
    assert encoded <= WINDOW + 16 < reference.length
    deadline = time.monotonic() + 60
    while worker.opening("a"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    worker.submit(lambda e: None).result(5)  # a barrier
    pooled = worker.engine.documents.get("a")
    worker.stop()
    assert pooled is not None
    doc = pooled.cache
    assert doc.opening is None and doc.ids == reference.ids and doc.stale_count == 0
    for (k, v), (rk, rv) in zip(
        doc.store.truncate_view(doc.length), reference.store.truncate_view(reference.length), strict=True
    ):
        torch.testing.assert_close(k, rk, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(v, rv, atol=1e-4, rtol=1e-4)


def test_with_open_window_off_the_first_request_encodes_the_whole_document() -> None:
    worker, encoded = first_request(0)
    worker.stop()
    assert encoded == exact(LONG).length
