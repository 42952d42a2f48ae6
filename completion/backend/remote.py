"""The remote backend: k drafts from a serving engine, finished by the same post-processing and ranking.

`RemoteBackend` finds out at start-up which API the engine speaks (`model.api`: llama.cpp's server if
`/props` answers, else the OpenAI-compatible `/v1/models`), lays the prompt out for the engine's prefix
cache (`prompt.layout`), asks for all k drafts in one request, and turns the answer into `Draft`s that
`finish.finish_drafts` ranks as it ranks local ones. It never raises for an engine that is down or
failing: the result is empty with `empty_reason` "engine_down" or "engine_error" and `remote.error`
says why, so the front door answers at once and the `Engine` can fall back to the local model.
Only the prompt window (`model.prompt_chars` before the cursor, `model.suffix_chars` after it) leaves
the machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from superpie.cache.document import SyncStats
from superpie.completion.backend.base import (
    EngineClient,
    EngineDown,
    EngineDraft,
    EngineInfo,
    EngineRefused,
    EngineReply,
    EngineRequest,
)
from superpie.completion.backend.http import HttpSettings, HttpTransport, RequestCancelled
from superpie.completion.backend.llamacpp import LlamaCppClient
from superpie.completion.backend.monitored import RemoteMonitors
from superpie.completion.backend.openai import OpenAIClient
from superpie.completion.backend.prompt import layout
from superpie.completion.config import EngineConfig, ModelConfig
from superpie.completion.decoding.task import Cancelled, never_cancelled
from superpie.completion.draft import Draft
from superpie.completion.finish import finish_drafts
from superpie.completion.postprocess.pipeline import MonitorHook
from superpie.completion.request import CompletionRequest, CompletionResult

if TYPE_CHECKING:
    from superpie.completion.constraints.monitor import MonitorRuntime, MonitorTrace

NO_SYNC = SyncStats(mode="none", reused=0, encoded=0, rotated=0, refreshed=0, hunks=0, ms=0.0)


@dataclass(frozen=True)
class RemoteStats:
    """What one request cost on the engine, for the stats and the benchmarks."""

    api: str | None  # "llama.cpp" | "openai"; None: never detected (the engine was down)
    endpoint: str | None  # the path that answered
    model: str | None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens from the engine's prefix cache, where it reports them
    http_requests: int = 0  # sent for this completion, retries included (and detection, the first time)
    round_trips: int = 0  # completion requests to the engine: one for the drafts, plus the monitors' below
    monitor_requests: int = 0  # extra requests that re-spelled a monitored identifier (and what followed it)
    monitor_corrected: int = 0  # identifiers the engine spelled again under a monitor's grammar or regex
    monitor_cut: int = 0  # drafts cut before a ruled-out identifier (no bound left, or no way to constrain)
    error: str | None = None  # why there are no drafts (engine down, refused, cancelled)
    fallback: bool = False  # the local model answered instead


class RemoteBackend:
    """Completions from a serving engine over HTTP (`model.backend: remote`)."""

    def __init__(self, config: ModelConfig, environ: Mapping[str, str] = os.environ) -> None:
        """A URL that is missing or not http(s) is reported by `connect` (a load error), never raised here:
        the language server builds its engine from the editor's options and must keep running."""
        key = environ.get(config.api_key_env) if config.api_key_env else None
        settings = HttpSettings(
            url=config.url or "",
            connect_timeout_s=config.connect_timeout_ms / 1000,
            read_timeout_s=config.read_timeout_ms / 1000,
            retries=config.retries,
            api_key=key or None,
        )
        self.config = config
        self.http: HttpTransport | None = None
        self.error: str | None = None  # the last failure, until a request succeeds
        try:
            self.http = HttpTransport(settings)
        except ValueError as exc:
            self.error = "model.url must be set when model.backend is remote" if not config.url else str(exc)
        self.client: EngineClient | None = None
        self.info: EngineInfo | None = None

    @property
    def ready(self) -> bool:
        """Whether detection found the engine."""
        return self.info is not None

    def connect(self) -> float:
        """Detect the engine's API and model; the milliseconds it took. EngineDown / EngineRefused when not."""
        t0 = time.perf_counter()
        if self.http is None:
            raise EngineRefused(str(self.error))
        candidates: list[EngineClient] = []
        if self.config.api in ("auto", "llama.cpp"):
            candidates.append(LlamaCppClient(self.http))
        if self.config.api in ("auto", "openai"):
            candidates.append(OpenAIClient(self.http, self.config.name))
        problems = []
        for client in candidates:
            try:
                self.info, self.client = client.detect(), client
                self.error = None
                return (time.perf_counter() - t0) * 1000
            except EngineRefused as exc:  # not this API: try the next
                problems.append(f"{client.api}: {exc}")
            except EngineDown as exc:
                self.error = f"engine down: {exc}"
                raise
        self.error = "; ".join(problems)
        raise EngineRefused(f"{self.config.url} speaks none of the APIs tried ({self.error})")

    def status(self) -> dict[str, object]:
        """The backend as the stats show it."""
        info = self.info
        return {
            "backend": "remote",
            "url": self.config.url,
            "api": None if info is None else info.api,
            "model": None if info is None else info.model,
            "features": [] if info is None else list(info.features),
            "state": "up" if info is not None and self.error is None else "down" if self.error else "unknown",
            "error": self.error,
        }

    def complete(
        self,
        req: CompletionRequest,
        config: EngineConfig,
        cancelled: Cancelled = never_cancelled,
        hook: MonitorHook | None = None,
        monitors: MonitorRuntime | None = None,
    ) -> CompletionResult:
        """Ranked drafts from the engine; an empty result with the reason when it is down or failing.

        With `monitors`, every draft's monitored identifiers are checked and re-asked (`monitored`)."""
        if not 0 <= req.offset <= len(req.text):
            raise ValueError(f"offset {req.offset} is past the end of the document (length {len(req.text)})")
        if req.drafts is not None and req.drafts < 1:
            raise ValueError(f"drafts must be at least 1 (got {req.drafts})")
        t0 = time.perf_counter()
        sent = self._sent()
        k = req.drafts if req.drafts is not None else config.completion.drafts
        multiline = req.multiline if req.multiline is not None else config.decoding.multiline
        prompt = layout(req.text, req.offset, self.config.prompt_chars, self.config.suffix_chars)
        request = EngineRequest(
            prompt=prompt,
            drafts=k,
            max_tokens=req.max_tokens if req.max_tokens is not None else config.decoding.max_tokens,
            # one line: the engine stops at its end, unless the cursor's line is blank so far (the draft's
            # first real line may follow a newline: post-processing moves it up, as for local drafts)
            stop=("\n",) if not multiline and prompt.line.strip() else (),
            temperature=0.0 if k == 1 else config.decoding.sample_temperature,
        )
        reply: EngineReply | None = None
        reason: str | None = None
        trace: MonitorTrace | None = None
        walk: RemoteMonitors | None = None
        drafts: list[EngineDraft] = []
        trips = 0
        try:
            if self.client is None:
                self.connect()
            assert self.client is not None
            if monitors is not None:  # jedi works on the cursor's question while the engine decodes
                monitors.prefetch(req.uri, req.text, req.offset)
            trips += 1
            reply = self.client.complete(request, cancelled)
            drafts = list(reply.drafts)
            if monitors is not None:
                walk, trace = self._monitors(monitors, req)
                drafts = walk.check(request, reply.drafts, cancelled)
            self.error = None
        except RequestCancelled as exc:
            reason, error, reply = "stopped", str(exc), None
        except EngineDown as exc:
            reason, error, reply = "engine_down", f"engine down: {exc}", None
            self.error = error
        except EngineRefused as exc:
            reason, error, reply = "engine_error", str(exc), None
            self.error = error
        t_dec = time.perf_counter()
        info = self.info
        stats = RemoteStats(
            api=None if info is None else info.api,
            endpoint=None if reply is None else reply.endpoint,
            model=None if info is None else info.model,
            prompt_tokens=None if reply is None else reply.prompt_tokens,
            cached_tokens=None if reply is None else reply.cached_tokens,
            http_requests=self._sent() - sent,
            round_trips=trips + (0 if walk is None else walk.requests),
            monitor_requests=0 if walk is None else walk.requests,
            monitor_corrected=0 if walk is None else walk.corrected,
            monitor_cut=0 if walk is None else walk.cut,
            error=None if reply is not None else error,
        )
        completions: list[Draft] = []
        if reply is not None:
            decoded = [_draft(d, i, greedy=request.temperature <= 0) for i, d in enumerate(drafts)]
            completions = finish_drafts(
                req, decoded, config.postprocess, multiline=multiline, k=k, trace=trace, hook=hook
            )
            if not completions:
                reason = "blank" if all(not d.text.strip() for d in decoded) else "cut"
        t_end = time.perf_counter()
        return CompletionResult(
            completions=completions,
            timings_ms={
                "sync": 0.0,
                "decode": (t_dec - t0) * 1000,
                "postprocess": (t_end - t_dec) * 1000,
                "total": (t_end - t0) * 1000,
            },
            cache=NO_SYNC,
            cancelled=reason == "stopped",
            strategy="remote",
            monitors=trace,
            empty_reason=reason,
            remote=stats,
        )

    def _monitors(self, runtime: MonitorRuntime, req: CompletionRequest) -> tuple[RemoteMonitors, MonitorTrace]:
        """The walk of this request's drafts through the engine's monitors, and the trace it fills."""
        from superpie.analysis.workspace_files import uri_to_path
        from superpie.completion.constraints.monitor import MonitorTrace

        monitors = runtime.analyzer.monitors(uri_to_path(req.uri), req.text[req.offset :])
        trace = MonitorTrace(runtime.analyzer.jedi.stats)
        assert self.client is not None
        walk = RemoteMonitors(self.client, monitors, trace, req.text[: req.offset], self.config.monitor_requests)
        return walk, trace

    def _sent(self) -> int:
        return 0 if self.http is None else self.http.requests


def _draft(d: EngineDraft, index: int, greedy: bool) -> Draft:
    """A `Draft` with the engine's tokens where their texts spell the draft (so post-processing's cuts keep them)."""
    spelled = bool(d.token_texts) and "".join(d.token_texts) == d.text
    ends: list[int] = []
    for piece in d.token_texts if spelled else ():
        ends.append((ends[-1] if ends else 0) + len(piece))
    logprobs = d.token_logprobs if spelled else ()
    return Draft(
        text=d.text,
        tokens=d.token_ids if spelled and len(d.token_ids) == len(ends) else (),
        logprob=sum(logprobs) if logprobs else None,
        finished=d.finished,
        token_logprobs=logprobs,
        token_ends=tuple(ends),
        token_constrained=d.token_constrained if len(d.token_constrained) == len(ends) else (False,) * len(ends),
        greedy=greedy,
        id=index,
    )
