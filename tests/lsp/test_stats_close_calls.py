"""`superpie.stats` counts the answers whose greedy decoding met a close call over stale KV, and the stale
tokens those re-encoded (`cache.close_call_margin`, completion/engine.py)."""

from __future__ import annotations

from superpie.cache.stats import NO_SYNC
from superpie.completion.request import CompletionResult
from superpie.lsp.scheduler import Outcome, Snapshot
from superpie.lsp.stats import ServerStats


def test_the_server_stats_count_close_calls_and_their_tokens() -> None:
    stats = ServerStats()
    for refreshed in (0, 40, 0, 12):
        stats.record("inline", 5.0, Outcome(CompletionResult([], {}, NO_SYNC, close_call_refreshed=refreshed)))
    cache = stats.to_json(Snapshot(), budget_mb=64, open_documents=0)["cache"]
    assert isinstance(cache, dict) and cache["close_calls"] == 2 and cache["close_call_tokens"] == 52
