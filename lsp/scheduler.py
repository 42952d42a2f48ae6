"""The model worker: the one thread that calls the engine, so the asyncio loop never waits on the model.

Work is taken in priority order: control jobs (load, close, engine swap) in arrival order, then
completion requests (a newer one for a document cancels the older: supersession), then document
syncs (coalesced: a document marked dirty ten times is synced once, to its text at that moment),
then the window-first openings of new documents (one chunk per turn, so a request waits for one chunk
at most: `Engine.open_step`, cache/opening.py), then workspace events, and in idle time the exact
re-encode of stale tokens (one chunk per turn too: `Engine.refresh_idle`). A completion's `CancelToken`
is polled by the decode loop between steps, so `$/cancelRequest` and supersession stop it within one step.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from superpie.completion.config import EngineConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest, CompletionResult

log = logging.getLogger(__name__)

T = TypeVar("T")


class CancelToken:
    """Set when a request is superseded or cancelled; the engine polls it between decode steps."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def cancel(self, reason: str) -> None:
        """Stop the request (first reason wins)."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def __call__(self) -> bool:
        """Whether the request should stop."""
        return self._event.is_set()


@dataclass
class Outcome:
    """How a completion request ended on the worker."""

    result: CompletionResult | None  # None: never decoded (cancelled first, or no model)
    current_cache: bool = False  # the background sync had already brought the cache to this text
    cancelled: str | None = None  # "superseded", "client", ... when stopped
    queued_ms: float = 0.0
    engine_ms: float = 0.0  # wall time of the engine call (its sync of this text, decode, ranking)


@dataclass
class Snapshot:
    """What the worker last published about the engine (read by the loop without touching the engine)."""

    loaded: bool = False
    model: str | None = None
    load_ms: float = 0.0
    load_error: str | None = None
    kv_bytes: int = 0
    documents: int = 0
    opening: int = 0  # documents whose window-first opening is not finished (their KV still grows)
    syncs: int = 0
    sync_ms: float = 0.0
    refreshed_tokens: int = 0
    workspace_events: int = 0
    workspace_coalesced: int = 0  # workspace events replaced in the queue by a newer one for the same file
    stopped_decodes: int = 0  # decodes stopped between steps by a cancel or a newer request
    monitor_questions: int | None = None  # None: the engine runs no monitors
    monitor_fallbacks: int | None = None
    monitor_silenced: dict[str, int] = field(default_factory=dict)  # silent monitors by "monitor.reason"
    backend: dict[str, object] = field(default_factory=dict)  # Engine.backend_status(): local, or the remote engine


@dataclass
class _CompletionJob:
    request: CompletionRequest
    token: CancelToken
    future: Future[Outcome]
    kind: str = ""  # inline | menu
    queued: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple[str, str]:
        """What supersession is keyed on: (document, kind)."""
        return self.request.uri, self.kind


class ModelWorker:
    """Runs every engine call on one thread, in priority order."""

    def __init__(self, engine: Engine, texts: Callable[[str], str | None], idle_refresh_s: float) -> None:
        self.engine = engine
        engine.idle_worker = True  # it runs the window-first openings' steps (`open_step`)
        self.idle_refresh_s = idle_refresh_s
        self.snapshot = Snapshot()
        self._texts = texts  # uri -> the open document's current text (None when closed)
        self._cond = threading.Condition()
        self._control: deque[tuple[Callable[[Engine], Any], Future[Any]]] = deque()
        self._completions: deque[_CompletionJob] = deque()
        self._latest: dict[tuple[str, str], _CompletionJob] = {}
        self._dirty: dict[str, None] = {}  # ordered set
        # workspace events, one per file (a newer event replaces the queued one), in arrival order; none is
        # dropped: a burst larger than any bound (a 20,000-file checkout) must reach the index whole
        self._background: dict[Hashable, Callable[[Engine], Any]] = {}
        self._unkeyed = itertools.count()
        self._stopped = False
        self._last_activity = time.perf_counter()
        self._synced: dict[str, str] = {}  # worker only: uri -> text the engine's cache holds
        self._stale: set[str] = set()  # worker only: documents edited since their last idle refresh
        self._opening: dict[str, None] = {}  # worker only: documents opened window-first, not finished (ordered)
        self._thread = threading.Thread(target=self._run, name="superpie-model", daemon=True)

    # ------------------------------------------------------------ loop side

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what is queued and running, and end the thread."""
        with self._cond:
            self._stopped = True
            for job in self._latest.values():
                job.token.cancel("shutdown")
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def submit(self, fn: Callable[[Engine], T]) -> Future[T]:
        """Run `fn(engine)` before any other queued work; its result or exception lands in the future."""
        future: Future[T] = Future()
        self._put(lambda: self._control.append((fn, future)))
        return future

    def load(self) -> Future[float]:
        """Load the model (milliseconds spent); documents opened meanwhile are synced right after it."""
        return self.submit(self._load)

    def complete(self, request: CompletionRequest, kind: str = "") -> tuple[CancelToken, Future[Outcome]]:
        """Queue a completion; older ones for the same document are superseded.

        An older request is superseded when it is of the same kind, or when the document changed
        since it was made (its answer would be stale). Editors send an inline and a menu request
        side by side for the same text; those two must not cancel each other.
        """
        job = _CompletionJob(request, CancelToken(), Future(), kind)
        with self._cond:
            for key, older in list(self._latest.items()):
                if key[0] == request.uri and (key[1] == kind or older.request.text != request.text):
                    older.token.cancel("superseded")
                    del self._latest[key]
            self._latest[job.key] = job
            self._completions.append(job)
            self._touch()
        return job.token, job.future

    def sync_soon(self, uri: str) -> None:
        """Bring the document's cache to its current text as soon as the worker is free (coalesced)."""
        self._put(lambda: self._dirty.setdefault(uri, None))

    def close(self, uri: str) -> Future[None]:
        """Free the document's cache."""
        return self.submit(lambda engine: self._close(engine, uri))

    def background(self, fn: Callable[[Engine], Any], key: Hashable | None = None) -> None:
        """Run `fn(engine)` when no request or sync is waiting (workspace events).

        A job with the `key` of one still queued (the same file) takes its place: only the newest runs.
        """

        def queue() -> None:
            self.snapshot.workspace_coalesced += key is not None and key in self._background
            self._background[("unkeyed", next(self._unkeyed)) if key is None else key] = fn

        self._put(queue)

    def replace_engine(self, engine: Engine) -> Future[None]:
        """Swap in a new engine (another model); the caller marks open documents for a sync."""
        return self.submit(lambda old: self._replace(old, engine))

    def reconfigure(self, config: EngineConfig, reset_caches: bool) -> Future[None]:
        """New engine settings (same model); `reset_caches` drops every cache built under the old ones."""
        return self.submit(lambda engine: self._reconfigure(engine, config, reset_caches))

    def _put(self, action: Callable[[], object]) -> None:
        with self._cond:
            action()
            self._touch()

    def _touch(self) -> None:
        self._last_activity = time.perf_counter()
        self._cond.notify()

    # ---------------------------------------------------------- worker side

    def _run(self) -> None:
        while (job := self._take()) is not None:
            try:
                job()
            except Exception:  # a job must never end the worker
                log.exception("model worker job failed")
            self._publish()
        _shutdown(self.engine)

    def _take(self) -> Callable[[], None] | None:
        with self._cond:
            while not self._stopped:
                if self._control:
                    fn, future = self._control.popleft()
                    return lambda: self._run_control(fn, future)
                if self._completions:
                    job = self._completions.popleft()
                    return lambda: self._complete(job)
                if self._dirty:
                    uri = next(iter(self._dirty))
                    del self._dirty[uri]
                    return lambda: self._sync(uri)
                if self._opening:
                    uri = next(iter(self._opening))
                    return lambda: self._open_step(uri)
                if self._background:
                    fn = self._background.pop(next(iter(self._background)))
                    return lambda: self._run_background(fn)
                idle_for = time.perf_counter() - self._last_activity
                if self._stale and idle_for >= self.idle_refresh_s:
                    return self._refresh
                self._cond.wait(self.idle_refresh_s - idle_for if self._stale else None)
            return None

    def _run_control(self, fn: Callable[[Engine], T], future: Future[T]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(self.engine))
        except BaseException as exc:
            future.set_exception(exc)

    def _load(self, engine: Engine) -> float:
        try:
            ms = engine.ensure_loaded()
        except Exception as exc:
            self.snapshot.load_error = str(exc)
            raise
        self.snapshot.load_error = None
        try:
            ms += engine.warm_up()  # not on the first requests: the vocabulary's indexes, jedi's service
        except Exception:  # the model is loaded; a request builds these again and reports what fails
            log.warning("warming up after loading the model failed", exc_info=True)
        return ms

    def _usable(self) -> bool:
        return self.engine.loaded or self.snapshot.load_error is None

    def _complete(self, job: _CompletionJob) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        uri = job.request.uri
        queued_ms = (time.perf_counter() - job.queued) * 1000
        try:
            if job.token() or not self._usable():
                job.future.set_result(Outcome(None, cancelled=job.token.reason, queued_ms=queued_ms))
                return
            current = self._synced.get(uri) == job.request.text
            t0 = time.perf_counter()
            result = self.engine.complete(job.request, cancelled=job.token)
            engine_ms = (time.perf_counter() - t0) * 1000
            self.snapshot.stopped_decodes += result.cancelled
            self._after_sync(uri, job.request.text)
            job.future.set_result(Outcome(result, current, job.token.reason, queued_ms, engine_ms))
        except BaseException as exc:
            job.future.set_exception(exc)
        finally:
            with self._cond:
                if self._latest.get(job.key) is job:
                    del self._latest[job.key]

    def _sync(self, uri: str) -> None:
        text = self._texts(uri)
        if text is None or not self._usable() or self._synced.get(uri) == text:
            return
        stats = self.engine.sync(uri, text)
        self.snapshot.syncs += 1
        self.snapshot.sync_ms += stats.ms
        self._after_sync(uri, text)

    def _after_sync(self, uri: str, text: str) -> None:
        if self._texts(uri) is None:  # closed while the worker was busy with it
            self._close(self.engine, uri)
            return
        if uri not in self._synced:  # new: it may have been opened window-first (a short one's first step is a no-op)
            self._opening[uri] = None
        self._synced[uri] = text
        self._stale.add(uri)

    def _open_step(self, uri: str) -> None:
        more = False
        try:
            more = self.engine.open_step(uri)
        finally:  # (a step that fails is not tried again)
            if not more:
                self._opening.pop(uri, None)

    def opening(self, uri: str) -> bool:
        """Whether the document's window-first opening is still being finished (a racy read; for benchmarks)."""
        return uri in self._opening

    def _close(self, engine: Engine, uri: str) -> None:
        engine.close(uri)
        self._synced.pop(uri, None)
        self._stale.discard(uri)
        self._opening.pop(uri, None)

    def _replace(self, old: Engine, new: Engine) -> None:
        for uri in list(self._synced):
            old.close(uri)
        _shutdown(old)
        self._synced.clear()
        self._stale.clear()
        self._opening.clear()
        self.engine = new
        new.idle_worker = True
        self.snapshot.load_error = None

    def _reconfigure(self, engine: Engine, config: EngineConfig, reset_caches: bool) -> None:
        engine.reconfigure(config)
        if reset_caches:
            for uri in list(self._synced):
                self._close(engine, uri)

    def _run_background(self, fn: Callable[[Engine], Any]) -> None:
        fn(self.engine)
        self.snapshot.workspace_events += 1

    def _refresh(self) -> None:
        """One step of a document's idle refresh; while it encoded something, more may be left: the next idle
        turn goes on with it, after any work that came in meanwhile."""
        uri = self._stale.pop()
        done = self.engine.refresh_idle(uri)
        self.snapshot.refreshed_tokens += done
        if done:
            self._stale.add(uri)

    def is_current(self, uri: str, text: str) -> bool:
        """Whether the engine's cache holds exactly `text` for the document (a racy read; for stats)."""
        return self._synced.get(uri) == text

    def _publish(self) -> None:
        engine, snap = self.engine, self.snapshot
        snap.loaded = engine.loaded
        snap.model = engine.model_name
        snap.backend = engine.backend_status()
        snap.load_ms = engine.lm.load_ms if engine.lm is not None else 0.0
        snap.kv_bytes = engine.memory_bytes()
        snap.documents = len(self._synced)
        snap.opening = len(self._opening)
        jedi = engine.jedi  # None until the monitors first ran
        if jedi is not None:
            jedi_stats = jedi.stats_snapshot()
            snap.monitor_questions = jedi_stats.questions
            snap.monitor_fallbacks = jedi_stats.fallbacks
            snap.monitor_silenced = dict(jedi_stats.silenced)


def _shutdown(engine: Engine) -> None:
    """Stop the engine's helper threads (jedi)."""
    try:
        engine.shutdown()
    except Exception:
        log.exception("engine shutdown failed")
