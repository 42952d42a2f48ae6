"""The `Engine`: the one completion engine behind every front door (LSP server, CLI, Python API).

It owns the model, one `DocumentCache` per open document, and the decoding strategies. It knows no
LSP types: positions arrive as Python string offsets, and results leave as plain dataclasses.
Calls are expected from a single worker thread (the model is not re-entrant).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from superpie.cache.cursor import CursorView
from superpie.cache.document import NO_SYNC, DocumentCache, SyncStats
from superpie.completion.config import EngineConfig
from superpie.completion.constraints.base import ConstraintContext, ConstraintFactory, TokenConstraint
from superpie.completion.decoding.beam import beam_decode
from superpie.completion.decoding.greedy import chain_decode
from superpie.completion.decoding.stops import line_end_stop
from superpie.completion.decoding.superposed import superposed_decode
from superpie.completion.decoding.task import Cancelled, DecodedDraft, DecodeTask, never_cancelled, task_constraints
from superpie.completion.decoding.verify import verify
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel, load_model
from superpie.completion.ngram.index import NgramIndex
from superpie.completion.postprocess.pipeline import DraftContext, MonitorHook, postprocess

if TYPE_CHECKING:
    from superpie.analysis.jedi_service import JediService
    from superpie.completion.constraints.monitor import MonitorRuntime, MonitorTrace, MonitorVerdict

_NGRAM_TAIL = 8  # prefix tokens handed to the n-gram model as the drafts' first context


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
    monitors: bool | None = None  # None: the configuration's `monitors.enabled`


@dataclass(frozen=True)
class Completion:
    """One ranked draft: the text to insert at the cursor and its rank score (higher is better)."""

    text: str
    score: float
    constrained: bool = False  # a constraint (healing, a monitor) steered this draft's tokens
    monitor: MonitorVerdict | None = None  # which monitors fired, fallbacks, identifiers checked; None: off


@dataclass
class CompletionResult:
    """Ranked drafts plus what they cost."""

    completions: list[Completion]
    timings_ms: dict[str, float]
    cache: SyncStats
    cancelled: bool = False
    strategy: str = "greedy"
    monitors: MonitorTrace | None = None  # what the monitors did (firings, jedi and mask times); None: off


@dataclass
class _Document:
    cache: DocumentCache
    pending: SyncStats = NO_SYNC  # syncs since the last completion (reported with it)
    text: str = ""
    fed_text: str | None = None  # the text the n-gram index last counted for this document
    fed_at: float = 0.0


@dataclass(frozen=True)
class _Plan:
    """One request, resolved against the configuration."""

    task: DecodeTask
    context: int  # prefix tokens the view sees before `task.first_input` is re-fed
    drafts: int
    strategy: str
    multiline: bool
    trace: MonitorTrace | None = None  # the monitors' record of this request (None: monitors off)


@dataclass
class Engine:
    """Completion engine: model + per-document caches + decoding; single-threaded by contract.

    `constraint_factory` (monitors) gives the constraints every draft starts from; `monitor_hook`
    judges finished drafts for ranking. Both are optional extra hooks; the built-in monitors
    (`config.monitors`: jedi + the token trie, `monitor_constraint`) act through the same two paths.
    """

    config: EngineConfig = field(default_factory=EngineConfig)
    lm: LoadedModel | None = None
    constraint_factory: ConstraintFactory | None = None
    monitor_hook: MonitorHook | None = None
    ngram: NgramIndex | None = None  # built lazily by the first request that needs it
    _docs: OrderedDict[str, _Document] = field(default_factory=OrderedDict)
    _load_lock: threading.Lock = field(default_factory=threading.Lock)
    _monitors: MonitorRuntime | None = None  # one jedi project for the workspace, made on first use

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
        if uri not in self._docs:
            self.warm_monitors(uri, text)
        else:
            self._prefetch_monitors(uri, self._docs[uri].text, text, anchor)
        doc = self._document(uri)
        stats = doc.cache.sync(text, anchor=anchor, mode=mode)
        doc.text = text
        doc.pending = doc.pending + stats if stats.mode != "none" else doc.pending
        self._enforce_budget(keep=uri)
        return stats

    def close(self, uri: str) -> None:
        """Forget a document and free its KV (the n-gram index goes back to the file on disk)."""
        doc = self._docs.pop(uri, None)
        if doc is not None:
            doc.cache.release()
            if doc.fed_text is not None and self.ngram is not None:
                self.ngram.close_document(uri)

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

    # ---------------------------------------------------------------- n-grams

    def ngram_index(self) -> NgramIndex:
        """The workspace n-gram index (built on first use; open documents only without a workspace)."""
        if self.ngram is None:
            self.ensure_loaded()
            lm = self.lm
            tokenizer = lm.tokenizer

            def encode(s: str) -> list[int]:
                return tokenizer.encode(s, add_special_tokens=False).ids

            tok_id = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]
            cfg, ws = self.config.ngram, self.config.workspace
            if ws is None:
                cfg = dataclasses.replace(cfg, persist=False)
                self.ngram = NgramIndex(".", encode, vocab_size=lm.vocab_size, tokenizer_id=tok_id, config=cfg)
            else:
                self.ngram = NgramIndex.build(ws, encode, vocab_size=lm.vocab_size, tokenizer_id=tok_id, config=cfg)
        return self.ngram

    def _feed_ngram(self) -> None:
        """Count open documents' unsaved text, each at most once per debounce interval (not per sync)."""
        index = self.ngram_index()
        now = time.monotonic()
        debounce = self.config.decoding.ngram_debounce_s
        for uri, doc in self._docs.items():
            if doc.text == doc.fed_text or not doc.text:  # a document first fed is counted at once
                continue
            if doc.fed_text is None or now - doc.fed_at >= debounce:
                index.update_document(uri, doc.text)
                doc.fed_text, doc.fed_at = doc.text, now

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
        """Ranked drafts at the cursor, decoded over the document's cached prefix."""
        if not 0 <= req.offset <= len(req.text):
            raise ValueError(f"offset {req.offset} is past the end of the document (length {len(req.text)})")
        if req.drafts is not None and req.drafts < 1:
            raise ValueError(f"drafts must be at least 1 (got {req.drafts})")
        self.sync(req.uri, req.text, anchor=req.offset)
        doc = self._docs[req.uri]
        pending, doc.pending = doc.pending, NO_SYNC
        t0 = time.perf_counter()
        plan = self._plan(req, doc.cache)
        if plan.strategy == "superposed" and plan.drafts > 1:
            self._feed_ngram()
        t_feed = time.perf_counter()
        decoded, verify_ms = self._decode(doc.cache, plan, cancelled)
        t_dec = time.perf_counter()
        stopped = cancelled() or any(d.cancelled for d in decoded)
        completions = [] if stopped else self._rank(req, plan, decoded)
        t_end = time.perf_counter()
        decode_ms = (t_dec - t0) * 1000
        return CompletionResult(
            completions=completions,
            timings_ms={
                "sync": pending.ms,
                "ngram": (t_feed - t0) * 1000,
                "decode": decode_ms,
                "verify": verify_ms,
                "postprocess": (t_end - t_dec) * 1000,
                "monitors": 0.0 if plan.trace is None else plan.trace.overhead_s() * 1000,
                "total": (t_end - t0) * 1000 + pending.ms,
            },
            cache=pending,
            cancelled=stopped,
            strategy=plan.strategy,
            monitors=plan.trace,
        )

    def _plan(self, req: CompletionRequest, cache: DocumentCache) -> _Plan:
        dcfg = self.config.decoding
        drafts = req.drafts if req.drafts is not None else dcfg.drafts
        strategy = dcfg.strategy_for(drafts, req.strategy)
        max_tokens = req.max_tokens if req.max_tokens is not None else dcfg.max_tokens
        multiline = req.multiline if req.multiline is not None else dcfg.multiline
        split = cache.split_at(req.offset)
        n = split.prefix_len
        first = cache.ids[n - 1] if n > 0 else self.lm.start_id
        before, after = req.text[: req.offset - len(split.typed)], req.text[req.offset :]
        extra: tuple[TokenConstraint, ...] = ()
        trace = None
        if self.config.monitors.enabled if req.monitors is None else req.monitors:
            monitor = self.monitor_runtime().start(req.uri, before, split.typed, after, self.lm.tokenizer)
            extra, trace = (monitor,), monitor.trace
        if self.constraint_factory is not None:
            extra += tuple(self.constraint_factory(ConstraintContext(req.uri, before, split.typed, after)))
        task = DecodeTask(
            first_input=first,
            max_tokens=max_tokens,
            typed=split.typed,
            stop=None if multiline else line_end_stop,
            constraints=task_constraints(self.lm, split.typed, extra),
            prefix_tail=tuple(cache.ids[max(0, n - _NGRAM_TAIL) : n]),
        )
        return _Plan(task, max(0, n - 1), drafts, strategy, multiline, trace)

    def _decode(self, cache: DocumentCache, plan: _Plan, cancelled: Cancelled) -> tuple[list[DecodedDraft], float]:
        """Run the plan's strategy; returns the drafts and the milliseconds spent verifying."""
        lm, task, k = self.lm, plan.task, plan.drafts
        view = CursorView(cache, plan.context, reserve=k * task.max_tokens + 2)
        if plan.strategy == "beam":
            return beam_decode(lm, view, task, k, cancelled, self.config.decoding.beam_patience), 0.0
        if plan.strategy == "superposed":
            ngram = self.ngram_index() if k > 1 else None
            out = superposed_decode(lm, view, task, k, self.config.decoding.superposed, ngram, cancelled)
            vcfg = self.config.decoding.verify
            if not vcfg.enabled or k == 1 or cancelled() or any(d.cancelled for d in out.drafts):
                return out.drafts, 0.0
            t0 = time.perf_counter()
            drafts = verify(lm, view, task, out.drafts, vcfg, trunk=out.trunk)
            return drafts, (time.perf_counter() - t0) * 1000
        return self._independent(view, task, k, cancelled), 0.0

    def _independent(self, view: CursorView, task: DecodeTask, k: int, cancelled: Cancelled) -> list[DecodedDraft]:
        """k chain decodes: the greedy draft, then k-1 sampled ones (seeded, so results repeat)."""
        gen = torch.Generator().manual_seed(0)
        temp = self.config.decoding.sample_temperature
        out = []
        for i in range(k):
            view.rewind(0)
            draft = chain_decode(self.lm, view, task, cancelled, 0.0 if i == 0 else temp, gen)
            out.append(dataclasses.replace(draft, greedy=i == 0))
            if out[-1].cancelled:
                break
        return out

    def _rank(self, req: CompletionRequest, plan: _Plan, decoded: list[DecodedDraft]) -> list[Completion]:
        """Post-process (stop rules, suffix de-dup, brackets, indentation), rank, merge; best k first."""
        drafts = [
            Draft(
                d.text,
                logprob=d.logprob,
                tokens=d.ids,
                token_logprobs=d.token_logprobs,
                token_ends=d.token_ends,
                greedy=d.greedy,
                finished=d.finished,
                id=i,
            )
            for i, d in enumerate(decoded)
        ]
        context = DraftContext.at(req.text, req.offset, plan.multiline)
        ranked = postprocess(drafts, context, self.config.postprocess, self._monitor_hook(plan))
        ranked = _drop_unfinished_prefixes(ranked, decoded)
        verdict = _verdict(plan)
        return [
            Completion(d.text, round(d.score, 4), decoded[d.id].constraint_active, verdict(d.text))
            for d in ranked[: plan.drafts]
        ]

    def _monitor_hook(self, plan: _Plan) -> MonitorHook | None:
        """The monitor verdict for ranking: the built-in monitors' trace, else (or where silent) the hook."""
        trace, hook = plan.trace, self.monitor_hook
        if trace is None:
            return hook

        def judge(draft: Draft, context: DraftContext) -> float | None:
            score = trace.verdict(plan.task.typed + draft.text).score
            return score if score is not None or hook is None else hook(draft, context)

        return judge


def _verdict(plan: _Plan) -> Callable[[str], MonitorVerdict | None]:
    """Per final draft text, what the monitors said (None without monitors)."""
    trace = plan.trace
    if trace is None:
        return lambda text: None
    return lambda text: trace.verdict(plan.task.typed + text)


def _drop_unfinished_prefixes(ranked: list[Draft], decoded: list[DecodedDraft]) -> list[Draft]:
    """Drop a draft that stopped early (cut by verification, out of tokens) where another draft goes on."""
    texts = [d.text for d in ranked]
    return [
        d
        for d in ranked
        if decoded[d.id].finished or not any(t != d.text and t.startswith(d.text.rstrip()) for t in texts)
    ]
