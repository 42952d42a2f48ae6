"""What `superpie.stats` reports: request latency, cache reuse, accepts, monitor fallbacks, memory."""

from __future__ import annotations

import os
from collections import Counter, deque
from dataclasses import dataclass, field

from superpie.completion.request import CompletionResult
from superpie.lsp.scheduler import Outcome, Snapshot

_SAMPLES = 2048  # latencies kept per kind (a sliding window)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def depended_on_a_timeout(result: CompletionResult) -> bool:
    """Whether a monitor question of this answer missed jedi's budget (its draft went on unconstrained)."""
    trace = result.monitors
    return trace is not None and any(state.fell_back for state in trace.fired.values())


def speculation_json(counts: Counter[str]) -> dict[str, float | None]:
    """Speculative decoding's summed counts (`SpeculationStats.counts`) with the share of proposed tokens
    taken and the positions decided per forward (None before any speculative request)."""
    proposed, forwards = counts["proposed"], counts["forwards"]
    return {
        **counts,
        "acceptance": round(counts["accepted"] / proposed, 4) if proposed else None,
        "tokens_per_forward": round(counts["plain_forwards"] / forwards, 4) if forwards else None,
    }


def remote_json(counts: Counter[str]) -> dict[str, float | None]:
    """A serving engine's summed counts with the share of prompt tokens it took from its prefix cache."""
    prompt, requests = counts["prompt_tokens"], counts["requests"]
    return {
        **counts,
        "cached_share": round(counts["cached_tokens"] / prompt, 4) if prompt else None,
        # completion requests to the engine per completion: 1, plus the monitors' re-asked identifiers
        "round_trips_per_request": round(counts["round_trips"] / requests, 3) if requests else None,
    }


def rss_bytes() -> int | None:
    """Resident memory of this process (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class ServerStats:
    """Counters kept on the loop thread (the watcher's counters are plain ints bumped from its thread)."""

    latency_ms: dict[str, deque[float]] = field(default_factory=dict)
    parts_ms: dict[str, deque[float]] = field(default_factory=dict)  # where the latency went
    requests: Counter[str] = field(default_factory=Counter)
    # every empty answer, by why: not_open, not_ready, no_model, superseded, shutdown (never decoded),
    # stopped (cancelled while decoding), blank (the model ended at once), cut (post-processing kept nothing)
    empty: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    from_current_cache: int = 0
    carried: int = 0  # answered with the rest of the shown suggestion, typed along (completion/carry.py)
    reused_tokens: int = 0
    encoded_tokens: int = 0
    accepts: Counter[str] = field(default_factory=Counter)
    workspace_changed: int = 0
    workspace_removed: int = 0
    bad_changes: int = 0
    framing_problems: int = 0  # malformed frames, unreadable or oversized input (`framing`)
    dropped_notifications: int = 0  # notifications whose params could not be read (the protocol's count)
    unversioned_changes: int = 0  # didChange with `"version": null` (applied)
    after_jedi_timeout: int = 0  # answers in which a monitor's jedi question missed its budget
    close_calls: int = 0  # answers whose greedy decoding met a close call over stale KV and was redone exact
    close_call_tokens: int = 0  # stale tokens those re-encoded
    speculation: Counter[str] = field(default_factory=Counter)  # speculative decoding's counts, summed
    # a serving engine's answers (model.backend remote): requests, HTTP requests, prompt and cached tokens, fallbacks
    remote: Counter[str] = field(default_factory=Counter)
    load_error: str | None = None  # set once the user was told (so the stats never say it first)

    def record(self, kind: str, ms: float, outcome: Outcome) -> None:
        """Count one answered request."""
        self.latency_ms.setdefault(kind, deque(maxlen=_SAMPLES)).append(ms)
        for part, value in (("queued", outcome.queued_ms), ("engine", outcome.engine_ms)):
            self.parts_ms.setdefault(part, deque(maxlen=_SAMPLES)).append(value)
        self.answered += 1
        self.from_current_cache += outcome.current_cache
        if outcome.result is not None:
            self.reused_tokens += outcome.result.cache.reused
            self.encoded_tokens += outcome.result.cache.encoded
            self.carried += outcome.result.carried
            self.close_calls += outcome.result.close_call_refreshed > 0
            self.close_call_tokens += outcome.result.close_call_refreshed
            self.after_jedi_timeout += depended_on_a_timeout(outcome.result)
            remote = outcome.result.remote
            if remote is not None:
                self.remote.update(
                    requests=1,
                    http_requests=remote.http_requests,
                    prompt_tokens=remote.prompt_tokens or 0,
                    cached_tokens=remote.cached_tokens or 0,
                    fallbacks=int(remote.fallback),
                    round_trips=remote.round_trips,
                    monitor_corrected=remote.monitor_corrected,
                    monitor_cut=remote.monitor_cut,
                )
            if outcome.result.speculation is not None:
                self.speculation.update(outcome.result.speculation.counts())

    def to_json(self, snap: Snapshot, budget_mb: int, open_documents: int) -> dict[str, object]:
        """The `superpie.stats` answer."""
        every = [ms for samples in self.latency_ms.values() for ms in samples]
        tokens = self.reused_tokens + self.encoded_tokens
        return {
            "latency_ms": {
                kind: _summary(list(samples)) for kind, samples in {"all": every, **self.latency_ms}.items()
            },
            "latency_parts_ms": {part: _summary(list(samples)) for part, samples in self.parts_ms.items()},
            "requests": {**self.requests, "stopped_decodes": snap.stopped_decodes},
            "empty": dict(self.empty),
            "cache": {
                "answered": self.answered,
                "current_share": self.from_current_cache / self.answered if self.answered else None,
                "carried": self.carried,
                "reuse_share": self.reused_tokens / tokens if tokens else None,
                "syncs": snap.syncs,
                "sync_ms": round(snap.sync_ms, 1),
                "refreshed_tokens": snap.refreshed_tokens,
                "close_calls": self.close_calls,
                "close_call_tokens": self.close_call_tokens,
            },
            "monitors": {
                "questions": snap.monitor_questions,
                "fallbacks": snap.monitor_fallbacks,
                "silenced": snap.monitor_silenced,  # monitors that did not constrain, by why (analysis.monitors)
            },
            # answers a faster (or slower) machine could have given differently: the headless front doors
            # wait instead (their deterministic mode)
            "timing": {
                "answers_after_jedi_timeout": self.after_jedi_timeout,
                "empty_while_loading": self.requests["not_ready"],
            },
            "memory": {"kv_bytes": snap.kv_bytes, "budget_mb": budget_mb, "rss_bytes": rss_bytes()},
            "accepts": dict(self.accepts),
            "speculation": speculation_json(self.speculation),
            "workspace": {
                "changed": self.workspace_changed,
                "removed": self.workspace_removed,
                "applied": snap.workspace_events,
                "coalesced": snap.workspace_coalesced,  # replaced while queued by a newer event for the file
            },
            "protocol": {
                "framing_problems": self.framing_problems,
                "dropped_notifications": self.dropped_notifications,
            },
            "documents": {
                "open": open_documents,
                "cached": snap.documents,
                "opening": snap.opening,
                "bad_changes": self.bad_changes,
                "unversioned_changes": self.unversioned_changes,
            },
            "model": {
                "name": snap.model,
                "loaded": snap.loaded,
                "load_ms": round(snap.load_ms),
                "error": self.load_error,
                "backend": snap.backend,  # which backend answers; for a serving engine its API, model and state
                "remote": remote_json(self.remote),
            },
        }


def _summary(samples: list[float]) -> dict[str, float | int | None]:
    p50, p95 = percentile(samples, 50), percentile(samples, 95)
    return {
        "count": len(samples),
        "p50": round(p50, 1) if p50 is not None else None,
        "p95": round(p95, 1) if p95 is not None else None,
    }
