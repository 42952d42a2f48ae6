"""The `Engine`: the one completion engine behind every front door (LSP server, CLI, Python API).

It owns the model, the open documents' caches (`cache.pool`), the workspace n-gram index and the
monitors, and answers a request in three steps: plan it (`plan`), decode it (`decoding.strategies`),
finish it (`finish`: post-processing and ranking). With `model.backend: remote` the drafts come from a
serving engine instead (`backend.remote`), and are finished the same way; when the engine is down and
`model.fallback` is on, the local model answers. It knows no LSP types: positions arrive as
Python string offsets, results leave as `Draft`s. Calls are expected from a single worker thread
(the model is not re-entrant).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache, SyncStats
from superpie.cache.pool import DocumentPool
from superpie.completion.backend.base import EngineDown, EngineRefused
from superpie.completion.backend.remote import NO_SYNC, RemoteBackend
from superpie.completion.carry import Carry, request_key
from superpie.completion.config import EngineConfig
from superpie.completion.constraints.base import ConstraintFactory
from superpie.completion.constraints.vocab import vocabulary
from superpie.completion.decoding.close_call import decode_guarded
from superpie.completion.decoding.proposals import Speculation
from superpie.completion.decoding.speculative import Speculator, tree_limit
from superpie.completion.decoding.strategies import decode
from superpie.completion.decoding.task import Cancelled, DecodeTask, never_cancelled
from superpie.completion.draft import Draft
from superpie.completion.finish import finish
from superpie.completion.model.loading import LoadedModel, ModelLoadError, allowed_cores, load_model
from superpie.completion.model.threads import ThreadGovernor
from superpie.completion.ngram.index import NgramIndex
from superpie.completion.plan import plan_request
from superpie.completion.postprocess.pipeline import MonitorHook
from superpie.completion.request import CompletionRequest, CompletionResult
from superpie.completion.workspace import WorkspaceNgrams

if TYPE_CHECKING:
    from superpie.analysis.jedi_service import JediService
    from superpie.completion.constraints.monitor import MonitorRuntime
    from superpie.completion.context.builder import RepositoryContext

_MB = 1024 * 1024


class Engine:
    """Completion engine: model + per-document caches + decoding; single-threaded by contract.

    `constraint_factory` gives extra constraints every draft starts from; `monitor_hook` judges
    finished drafts for ranking where the built-in monitors (`config.monitors`) are silent.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        lm: LoadedModel | None = None,
        constraint_factory: ConstraintFactory | None = None,
        monitor_hook: MonitorHook | None = None,
    ) -> None:
        self.config = config if config is not None else EngineConfig()
        self.lm = lm
        self.constraint_factory = constraint_factory
        self.monitor_hook = monitor_hook
        self.documents = DocumentPool(self._new_cache, self.config.cache.memory_budget_mb * _MB)
        self.workspace = WorkspaceNgrams(self.config.workspace)
        self._load_lock = threading.Lock()
        self._monitors: MonitorRuntime | None = None  # one jedi project for the workspace, made on first use
        self._context: RepositoryContext | None = None  # repository context (context.enabled), made on first use
        self.speculation = Speculation()  # what speculative decoding learns across requests
        self.carry = Carry()  # the last answer per document, while the user types along it
        # set by a caller that calls `open_step` in idle time (the server's model worker): a new document longer
        # than `cache.open_window` tokens is then opened window-first (cache/opening.py); the CLI and replay
        # have no idle time and encode it whole
        self.idle_worker = False
        # the serving engine the drafts come from (model.backend: remote); None: this process decodes them
        self.remote = RemoteBackend(self.config.model) if self.config.model.backend == "remote" else None
        self.threads: ThreadGovernor | None = None  # set at load when `model.threads` is not

    # ----------------------------------------------------------------- model, configuration

    def ensure_loaded(self) -> float:
        """Load the model (or find the remote engine) if needed; the milliseconds this call spent.

        A remote engine that is down is a `ModelLoadError` naming it, unless `model.fallback` loads the
        local model instead (completions then try the engine first and fall back per request)."""
        remote = self.remote
        if remote is None:
            return self._load_local()
        if remote.ready:
            return 0.0
        try:
            return remote.connect()
        except (EngineDown, EngineRefused) as exc:
            if not self.config.model.fallback:
                state = "is down" if isinstance(exc, EngineDown) else "refused"
                url = self.config.model.url or "(model.url not set)"
                raise ModelLoadError(f"remote engine {url} {state}: {exc}") from None
        return self._load_local()

    def _load_local(self) -> float:
        with self._load_lock:
            if self.lm is not None:
                return 0.0
            t0 = time.perf_counter()
            cfg = self.config.model
            self.lm = load_model(cfg.path, dtype=cfg.dtype, threads=cfg.threads, layout=cfg.layout)
            # not set: follow the machine's load (completion/model/threads.py)
            self.threads = ThreadGovernor(most=allowed_cores()) if cfg.threads is None else None
            return (time.perf_counter() - t0) * 1000

    def warm_up(self) -> float:
        """Build now what the first requests would otherwise pay for; the milliseconds it took.

        The tokenizer's vocabulary with token healing's index and the monitors' identifier trie (about 1.3 s
        for the code model's 151k tokens, built lazily by the first completion and the first monitored one
        before), and jedi's service with its builtins and common stubs loaded when the monitors are on (about
        a second, which jedi's thread would otherwise spend beside the first requests' decoding, slowing it
        through the GIL). The server calls it right after loading, on its worker thread; a one-shot CLI
        completion does not, and builds only what its request needs."""
        t0 = time.perf_counter()
        lm = self.lm
        if lm is not None:
            vocabulary(lm.tokenizer).prepare()
        if self.config.monitors.enabled:
            self.monitor_runtime().prime()
        return (time.perf_counter() - t0) * 1000

    def _adapt_threads(self) -> None:
        """Before model work: the thread count the machine's load leaves room for (`model.threads` unset)."""
        if self.threads is not None:
            self.threads.adapt()

    @property
    def loaded(self) -> bool:
        """Whether the model (or the remote engine) is ready."""
        return self.lm is not None or (self.remote is not None and self.remote.ready)

    @property
    def model_name(self) -> str | None:
        """What answers completions: the local model's name, or the remote engine's model."""
        remote = self.remote
        if remote is not None and remote.info is not None:
            return f"{remote.info.model} ({remote.info.api} at {remote.info.url})"
        return self.lm.name if self.lm is not None else None

    def backend_status(self) -> dict[str, object]:
        """Which backend answers and its state (the remote engine's API, model, last error), for the stats."""
        local: dict[str, object] = {"backend": "local", "loaded": self.lm is not None}
        if self.threads is not None:
            local |= {"threads": self.threads.threads, "thread_changes": self.threads.changes}
        if self.remote is None:
            return local
        return {**self.remote.status(), "fallback": self.config.model.fallback, "local_loaded": self.lm is not None}

    def _model(self) -> LoadedModel:
        self._load_local()
        assert self.lm is not None
        return self.lm

    def reconfigure(self, config: EngineConfig, reset_caches: bool = False) -> None:
        """New settings for the same model; `reset_caches` closes every document built under the old ones."""
        self.config = config
        self.documents.budget_bytes = config.cache.memory_budget_mb * _MB
        self.carry.forget()  # an answer given under the old settings
        if reset_caches:
            for uri, _ in self.documents:
                self.close(uri)

    # ------------------------------------------------------------- documents

    def _new_cache(self) -> DocumentCache:
        lm, ccfg = self._model(), self.config.cache
        reserve = self.config.decoding.max_tokens + 64
        reserve += self.config.context.tokens if self.config.context.enabled else 0  # ahead of the document
        return DocumentCache(
            lm.model,
            lm.tokenizer,
            lm.rope,
            runner=lm.runner,
            mode=ccfg.mode,
            stale_threshold=ccfg.stale_threshold,
            max_tokens=max(64, min(ccfg.context_tokens, lm.context_length - reserve)),
            window_step=ccfg.window_step,
            fim=None if lm.fim is None else lm.fim.markers,
            fim_suffix_tokens=ccfg.fim_suffix_tokens,
            open_window=ccfg.open_window,
            open_chunk=ccfg.open_chunk,
        )

    def sync(
        self, uri: str, text: str, anchor: int | None = None, mode: str | None = None, context: list[int] | None = None
    ) -> SyncStats:
        """Bring the document's cache in step with `text` (call on every edit, in the background); `context`:
        the repository context ids ahead of it (None: keep them).

        A remote backend keeps no local cache (nothing to do) until a fallback has loaded the local model."""
        if self.remote is not None and self.lm is None:
            return NO_SYNC
        self._adapt_threads()
        doc = self.documents.get(uri)
        if doc is None:
            self.warm_monitors(uri, text)
            if self.idle_worker:  # window-first: a request's cursor window when it comes, the rest in idle time
                return self.documents.open(uri, text, anchor=anchor, mode=mode, context=context)
        else:
            self._prefetch_monitors(uri, doc.text, text, anchor)
            if self.config.context.enabled:
                self.repository_context().edited(uri, doc.text, text, anchor)
        return self.documents.sync(uri, text, anchor=anchor, mode=mode, context=context)

    def open_step(self, uri: str) -> bool:
        """Idle time: one step (`cache.open_chunk` tokens) of a document's window-first opening; False when
        nothing was left to do (its cache then equals an exact encode)."""
        self._adapt_threads()
        return self.documents.open_step(uri)

    def close(self, uri: str) -> None:
        """Forget a document and free its KV (the n-gram index goes back to the file on disk)."""
        self.documents.close(uri)
        self.workspace.close(uri)
        self.carry.forget(uri)
        if self._context is not None:
            self._context.closed(uri)

    def refresh_idle(self, uri: str) -> int:
        """Idle time: one step of the exact re-encode of the document's stale tokens (at most `cache.open_chunk`
        tokens, the idle step of openings too); how many it encoded, 0 when nothing was stale."""
        self._adapt_threads()
        return self.documents.refresh(uri, self.config.cache.open_chunk)

    def memory_bytes(self) -> int:
        """KV memory of all open documents."""
        return self.documents.nbytes()

    def workspace_file_changed(self, path: Path) -> None:
        """A workspace file changed on disk (the watcher): re-count it where the n-gram index exists."""
        self.workspace.file_changed(path)
        if self._context is not None:
            self._context.file_changed()

    def workspace_file_removed(self, path: Path) -> None:
        """A workspace file was deleted or moved away."""
        self.workspace.file_removed(path)

    @property
    def ngram(self) -> NgramIndex | None:
        """The workspace n-gram index, once a request needed it (superposed decoding with k > 1)."""
        return self.workspace.index

    # ------------------------------------------------------------ repository context

    def repository_context(self) -> RepositoryContext:
        """The engine's repository context for `config.workspace` (completion/context/), following its changes."""
        from superpie.completion.context.builder import RepositoryContext

        ws = self.config.workspace
        root = None if ws is None else Path(ws).resolve()
        if self._context is None or self._context.root != root:
            self._context = RepositoryContext(ws)
        return self._context

    def _context_ids(self, req: CompletionRequest, lm: LoadedModel) -> list[int]:
        """The context ids to cache ahead of the document for this request ([] when `context.enabled` is off)."""
        cfg = self.config
        if not cfg.context.enabled:
            return []
        budget_s = cfg.monitors.jedi_budget_ms / 1000  # inf in the headless front doors' deterministic mode
        return self.repository_context().ids(lm.tokenizer, req.uri, req.text, req.offset, cfg.context.tokens, budget_s)

    # --------------------------------------------------------------- monitors

    def monitor_runtime(self) -> MonitorRuntime:
        """The engine's jedi-backed monitors for `config.workspace`, following config changes."""
        from superpie.completion.constraints.monitor import MonitorRuntime

        cfg, ws = self.config.monitors, self.config.workspace
        rt = self._monitors
        if rt is not None and rt.root != ws:
            rt.close()
            rt = None
        if rt is None:
            rt = self._monitors = MonitorRuntime(ws, cfg)
        rt.reconfigure(cfg)
        return rt

    def warm_monitors(self, uri: str, text: str) -> None:
        """Let jedi load a document's imports in its own thread (once per document; no model needed)."""
        if self.config.monitors.enabled:
            self.monitor_runtime().warm(uri, text)

    def _prefetch_monitors(self, uri: str, old: str, new: str, anchor: int | None) -> None:
        """An edit: jedi starts on the monitor question at its end while the cache catches up (no wait)."""
        if not self.config.monitors.enabled or old == new:
            return
        from superpie.completion.constraints.monitor import edit_end

        cursor = anchor if anchor is not None else edit_end(old, new)
        if cursor is not None:
            self.monitor_runtime().prefetch(uri, new, cursor)

    @property
    def jedi(self) -> JediService | None:
        """The jedi service behind the monitors, once they ran (its `stats` feed the server's stats)."""
        return None if self._monitors is None else self._monitors.analyzer.jedi

    def shutdown(self) -> None:
        """Stop the monitors' jedi thread (an engine being replaced or a finished CLI run)."""
        if self._monitors is not None:
            self._monitors.close()
            self._monitors = None

    # ------------------------------------------------------------ completion

    def complete(self, req: CompletionRequest, cancelled: Cancelled = never_cancelled) -> CompletionResult:
        """Ranked drafts at the cursor: the rest of the last answer when the user typed along it (`completion.carry`),
        else from the remote engine, else decoded over the document's cached prefix."""
        multiline = req.multiline if req.multiline is not None else self.config.decoding.multiline
        key = request_key(req, multiline)
        carried = self.carry.answer(req, key) if self.config.completion.carry else None
        if carried is not None:
            return carried
        result = self._complete(req, cancelled)
        self.carry.remember(req, key, result)
        return result

    def _complete(self, req: CompletionRequest, cancelled: Cancelled) -> CompletionResult:
        remote = self.remote
        if remote is None:
            return self._complete_local(req, cancelled)
        use_monitors = self.config.monitors.enabled if req.monitors is None else req.monitors
        monitors = self.monitor_runtime() if use_monitors else None
        result = remote.complete(req, self.config, cancelled, self.monitor_hook, monitors)
        if result.empty_reason not in ("engine_down", "engine_error") or not self.config.model.fallback:
            return result
        local = self._complete_local(req, cancelled)
        local.remote = result.remote if result.remote is None else dataclasses.replace(result.remote, fallback=True)
        return local

    def _complete_local(self, req: CompletionRequest, cancelled: Cancelled) -> CompletionResult:
        if not 0 <= req.offset <= len(req.text):
            raise ValueError(f"offset {req.offset} is past the end of the document (length {len(req.text)})")
        if req.drafts is not None and req.drafts < 1:
            raise ValueError(f"drafts must be at least 1 (got {req.drafts})")
        lm = self._model()
        self.sync(req.uri, req.text, anchor=req.offset, context=self._context_ids(req, lm))
        doc = self.documents.get(req.uri)
        assert doc is not None
        pending = doc.take_pending()
        t0 = time.perf_counter()
        use_monitors = self.config.monitors.enabled if req.monitors is None else req.monitors
        monitors = self.monitor_runtime() if use_monitors else None
        plan = plan_request(req, doc.cache, lm, self.config, monitors, self.constraint_factory)
        ngram = None
        if plan.strategy == "superposed" and plan.drafts > 1:
            docs = ((uri, d.text) for uri, d in self.documents)
            ngram = self.workspace.feed(lm, self.config.ngram, docs, self.config.decoding.ngram_debounce_s)
        t_feed = time.perf_counter()
        reserve = plan.drafts * plan.task.max_tokens + 2
        speculate = self.config.decoding.speculate if req.speculate is None else req.speculate
        speculator = None
        if speculate and plan.strategy == "greedy" and lm.speculates:
            limit = tree_limit(lm)
            proposer = self.speculation.proposer(doc.cache.ids, plan.context + 1, self.ngram, lm.vocab_size, limit)
            speculator = Speculator(proposer)
        dcfg, ccfg = self.config.decoding, self.config.cache
        margin = ccfg.close_call_margin if plan.strategy == "greedy" else 0.0  # beam, superposed weigh several drafts
        cache = doc.cache

        def run(task: DecodeTask) -> tuple[list[Draft], float]:  # a close call's refresh rewrites the KV: a new view
            view = CursorView(cache, plan.context, reserve=reserve)
            return decode(lm, view, task, plan.strategy, plan.drafts, dcfg, ngram, cancelled, speculator)

        guarded = decode_guarded(run, plan.task, cache, plan.context, margin, ccfg.close_call_tokens)
        (decoded, verify_ms), close_call_tokens, close_call_ms = guarded.result, guarded.refreshed, guarded.refresh_ms
        t_dec = time.perf_counter()
        stopped = cancelled() or any(d.cancelled for d in decoded)
        completions = [] if stopped else finish(req, plan, decoded, self.config.postprocess, self.monitor_hook)
        t_end = time.perf_counter()
        blank = all(not d.text.strip() for d in decoded)
        empty_reason = None if completions else "stopped" if stopped else "blank" if blank else "cut"
        return CompletionResult(
            completions=completions,
            timings_ms={
                "sync": pending.ms,
                "ngram": (t_feed - t0) * 1000,
                "decode": (t_dec - t0) * 1000,
                "verify": verify_ms,
                "close_call_refresh": close_call_ms,
                "postprocess": (t_end - t_dec) * 1000,
                "monitors": 0.0 if plan.trace is None else plan.trace.overhead_s() * 1000,
                "total": (t_end - t0) * 1000 + pending.ms,
            },
            cache=pending,
            cancelled=stopped,
            strategy=plan.strategy,
            monitors=plan.trace,
            empty_reason=empty_reason,
            speculation=None if speculator is None else speculator.stats,
            close_call_refreshed=close_call_tokens,
        )
