"""Monitor-guided decoding as a per-draft `TokenConstraint`: jedi's names become token masks.

`analysis.monitors` says, for the text before a position, which identifiers may come next (after
`obj.` only obj's attributes, ...) as an immutable `MonitorState`. `MonitorConstraint` carries one
draft's text and state: `mask` turns the state into a bool mask over the vocabulary through the token
trie, `advance` moves the state along the emitted token, and looks for a new trigger once the
identifier is finished (so `a.b().c` fires again at each dot). Being a value, it is shared by the
drafts of superposed and beam decoding until they diverge. A jedi timeout, an empty answer or one
that is not positive (a silent state: jedi knows only `object`'s names, a `__getattr__` object, see
`analysis.monitors`) leaves the draft unconstrained. What the monitors did in one request is kept in
a `MonitorTrace` shared by its drafts: the states where they fired (for the per-draft verdict used in
ranking and reporting) and the time spent in masks and in jedi.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from superpie.analysis.jedi_service import JediStats
from superpie.analysis.monitors import Analyzer, AnalyzerConfig, MonitorSet, MonitorState, mask_for
from superpie.analysis.token_trie import identifier_prefix_length
from superpie.analysis.workspace_files import uri_to_path
from superpie.cache.diff import common_prefix, common_suffix
from superpie.completion.config import MonitorConfig
from superpie.completion.constraints.base import SpanConstraint
from superpie.completion.constraints.vocab import Vocabulary, vocabulary

_ATTRIBUTE = re.compile(r"\.\s*([^\W\d]\w*)")


def pending_mask(vocab: Vocabulary, pending: str, continuations: set[str], size: int) -> torch.Tensor:
    """Bool [size] of the tokens that first spell `pending` (typed before the cursor) and then stay valid.

    A token either is a proper prefix of `pending` (the typed characters go on in the next token), or
    spells all of it and then a prefix of a continuation, or a whole continuation and a non-identifier
    character. Used only for the cursor's first token, when healing backed up over typed characters
    (`obj.` with the dot in the token before the cursor, or `obj.ap` inside a word).
    """
    prefixes = {c[:i] for c in continuations for i in range(len(c) + 1)}
    ok: list[int] = [i for n in range(1, len(pending)) for i in vocab.exactly(pending[:n])]
    for text, token in vocab.starting_with(pending):
        rest = text[len(pending) :]
        k = identifier_prefix_length(rest)
        if (rest in prefixes) if k == len(rest) else (rest[:k] in continuations):
            ok.append(token)
    rows = np.zeros(size, dtype=np.bool_)  # [V]; numpy: no torch thread pool for a vocabulary-sized op
    rows[ok] = True
    return torch.from_numpy(rows)


def analyzer_config(config: MonitorConfig) -> AnalyzerConfig:
    """The analysis slice of the monitor configuration."""
    return AnalyzerConfig(
        budget_ms=config.jedi_budget_ms,
        dereference=config.dereference,
        imports=config.imports,
        keyword_arguments=config.keyword_arguments,
        names_in_scope=config.names_in_scope,
    )


def edit_end(old: str, new: str) -> int | None:
    """Where the change from old to new ends in new (a likely cursor); None when nothing changed.

    The common prefix is taken first and the common suffix may not overlap it, so an ambiguous
    insertion (`a.` -> `a.b.`) ends as late as possible, where typing leaves the cursor.
    """
    if old == new:
        return None
    return len(new) - common_suffix(old, new, common_prefix(old, new))


@dataclass(frozen=True)
class MonitorVerdict:
    """What the monitors said about one finished draft."""

    fired: tuple[str, ...] = ()  # monitors that fired (not silent) while the draft was spelled, first firing first
    fell_back: bool = False  # some jedi question missed its budget: that part was not constrained
    checked: int = 0  # identifiers spelled where a constraining monitor had names
    valid: int = 0  # ... of which were among those names

    @property
    def score(self) -> float | None:
        """Share of checked identifiers that were valid (None when none was checked), for ranking."""
        return self.valid / self.checked if self.checked else None

    def to_json(self) -> dict[str, object]:
        """The per-completion `monitor` object of the CLI's JSON output."""
        return {"fired": list(self.fired), "fell_back": self.fell_back, "checked": self.checked, "valid": self.valid}


@dataclass
class MonitorTrace:
    """What the monitors did during one request; appended to by every draft's constraint."""

    jedi: JediStats | None = None  # the analyzer's live counters, to tell a jedi question from a cheap check
    fired: dict[str, MonitorState] = field(default_factory=dict)  # draft text at the firing -> state
    mask_s: list[float] = field(default_factory=list)  # per masked token: seconds to build its mask
    jedi_s: list[float] = field(default_factory=list)  # per jedi question (cache misses): seconds decoding waited
    trigger_s: list[float] = field(default_factory=list)  # per trigger check (jedi included)
    prior_s: float = 0.0  # seconds spent finding the document's attribute names (the lookahead's prior)
    _attributes: frozenset[str] | None = field(default=None, repr=False)

    def attributes_used(self, document: str) -> frozenset[str]:
        """Names spelled after a dot in the document before the cursor (found once per request)."""
        if self._attributes is None:
            t0 = time.perf_counter()
            self._attributes = frozenset(_ATTRIBUTE.findall(document))
            self.prior_s += time.perf_counter() - t0
        return self._attributes

    def trigger(self, monitors: MonitorSet, text: str, key: str) -> MonitorState | None:
        """Ask the monitors at the end of text; remember a firing under the draft text `key`."""
        asked = self._questions()
        t0 = time.perf_counter()
        state = monitors.trigger(text)
        dt = time.perf_counter() - t0
        self.trigger_s.append(dt)
        if self._questions() != asked:
            self.jedi_s.append(dt)
        if state is not None:
            self.fired.setdefault(key, state)
        return state

    def _questions(self) -> int:
        """jedi questions that were not answered from its cache (those are what decoding waits for)."""
        return -1 if self.jedi is None else self.jedi.questions - self.jedi.cache_hits

    def overhead_s(self) -> float:
        """Seconds the monitors added to this request (trigger checks, jedi waits, mask building)."""
        return sum(self.trigger_s) + sum(self.mask_s) + self.prior_s

    def verdict(self, text: str) -> MonitorVerdict:
        """The verdict on a draft whose text from the token boundary (typed characters included) is `text`."""
        fired: list[str] = []
        fell_back = False
        checked = valid = 0
        for key, state in sorted(self.fired.items(), key=lambda kv: len(kv[0])):
            if not text.startswith(key) or state.silent:
                continue  # a silent monitor did not take part in this draft
            if state.monitor not in fired:
                fired.append(state.monitor)
            fell_back = fell_back or state.fell_back
            if state.fell_back or not state.constrains:
                continue
            rest = text[len(key) :]
            n = identifier_prefix_length(rest)
            name = state.typed + rest[:n]
            if not name:
                continue
            checked += 1
            finished = n < len(rest)
            valid += name in state.candidates if finished else any(c.startswith(name) for c in state.candidates)
        return MonitorVerdict(tuple(fired), fell_back, checked, valid)


@dataclass(frozen=True)
class MonitorConstraint(SpanConstraint):
    """One draft under monitors: its text so far and the active monitor state (None: free)."""

    monitors: MonitorSet = field(repr=False, compare=False)
    vocabulary: Vocabulary = field(repr=False, compare=False)  # the tokenizer's, shared with healing
    trace: MonitorTrace = field(repr=False, compare=False)
    text: str = field(repr=False)  # the document up to the token boundary + what the draft spelled
    start: int  # where the draft starts in `text` (the token boundary before the cursor)
    pending: str = ""  # typed characters before the cursor that the draft has not spelled again yet
    state: MonitorState | None = None  # the monitor state at the cursor (or after the draft's text)
    lookahead: int = 0  # beam width over each constrained identifier (`lookahead_width`); 0: greedy
    prior: float = 0.0  # log-prob bonus in the lookahead for a name already used after a dot in the document

    @classmethod
    def at(
        cls,
        monitors: MonitorSet,
        tokenizer: Tokenizer,
        trace: MonitorTrace,
        text_before: str,
        typed: str = "",
        lookahead: int = 0,
        prior: float = 0.0,
    ) -> MonitorConstraint:
        """The constraint of a cursor: text_before ends at the token boundary, typed lies between it and the cursor."""
        state = trace.trigger(monitors, text_before + typed, typed)
        vocab = vocabulary(tokenizer).prepare()  # built before any mask is timed, as the trace reports masks
        return cls(monitors, vocab, trace, text_before, len(text_before), typed, state, lookahead, prior)

    def lookahead_width(self) -> int:
        """The beam width over the identifier being constrained now (0: none constrains, or lookahead off)."""
        state = self.state
        if self.lookahead < 2 or state is None or state.fell_back or not state.constrains:
            return 0
        return self.lookahead if any(c.startswith(state.typed) for c in state.candidates) else 0

    def span_bonus(self, token_text: str) -> float:
        """Log-prob bonus for the identifier that `token_text` finishes: `prior` when the document used it after a dot.

        The model already copies names from its context, but one token at a time; a name the document
        has dereferenced before is a likely attribute again (`self._buffer`, `os.fstat`).
        """
        if not self.prior or self.state is None:
            return 0.0
        pending = self.pending if token_text.startswith(self.pending) else ""
        emitted = token_text[len(pending) :]
        name = self.state.typed + emitted[: identifier_prefix_length(emitted)]
        return self.prior if name in self.trace.attributes_used(self.text[: self.start]) else 0.0

    def max_span_bonus(self) -> float:
        """The most `span_bonus` gives."""
        return max(0.0, self.prior)

    def advance_in_span(self, token_text: str) -> MonitorConstraint | None:
        """The draft after a token that keeps spelling the identifier; None when the token ends it.

        No trigger check: the lookahead only learns where the identifier ends; the draft it keeps is
        advanced with `advance` afterwards (which looks for the next trigger, as usual).
        """
        text = self.text + token_text
        emitted = token_text
        if self.pending:
            if self.pending.startswith(token_text):
                return dataclasses.replace(self, text=text, pending=self.pending[len(token_text) :])
            if not token_text.startswith(self.pending):
                return None
            emitted = token_text[len(self.pending) :]
        nxt = None if self.state is None else self.state.advance(emitted)
        return None if nxt is None else dataclasses.replace(self, text=text, pending="", state=nxt)

    def mask(self, vocab: int) -> torch.Tensor | None:
        """Bool [vocab] of the tokens that keep the identifier valid; None when nothing constrains."""
        if self.state is None:
            return None
        t0 = time.perf_counter()
        size = max(vocab, self.vocabulary.size)
        if self.pending:
            continuations = self.state.allowed_continuations()
            mask = pending_mask(self.vocabulary, self.pending, continuations, size) if continuations else None
        else:
            mask = mask_for(self.state, self.vocabulary.trie, size)
        if mask is not None:
            mask = mask[:vocab]  # a view: logits may be narrower than the tokenizer (never copied)
            self.trace.mask_s.append(time.perf_counter() - t0)
        return mask

    def advance(self, token_text: str) -> MonitorConstraint:
        """The draft after one more token: the identifier goes on, or the monitors look again."""
        text = self.text + token_text
        emitted = token_text
        if self.pending:
            if self.pending.startswith(token_text):  # still re-spelling the typed characters
                return dataclasses.replace(self, text=text, pending=self.pending[len(token_text) :])
            if not token_text.startswith(self.pending):  # left the typed characters: start afresh
                return self._retrigger(text)
            emitted = token_text[len(self.pending) :]
        if self.state is not None:
            nxt = self.state.advance(emitted)
            if nxt is not None:
                return dataclasses.replace(self, text=text, pending="", state=nxt)
        return self._retrigger(text)

    def _retrigger(self, text: str) -> MonitorConstraint:
        state = self.trace.trigger(self.monitors, text, text[self.start :])
        return dataclasses.replace(self, text=text, pending="", state=state)


class MonitorRuntime:
    """The engine's monitors: one long-lived `Analyzer` (jedi project = the workspace) for every request."""

    def __init__(self, workspace: str | None, config: MonitorConfig):
        self.root = workspace  # as configured (None: no workspace, jedi's project is the current directory)
        self.workspace = Path(workspace) if workspace is not None else Path.cwd()
        self.config = config
        self.analyzer = Analyzer(self.workspace, analyzer_config(config))

    def reconfigure(self, config: MonitorConfig) -> None:
        """Follow new monitor settings without losing jedi's warm caches."""
        if config != self.config:
            self.config = config
            self.analyzer.reconfigure(analyzer_config(config))

    def warm(self, uri: str, text: str) -> None:
        """Load a newly opened document's imports in jedi's thread, so the first monitor answers in time."""
        self.analyzer.warm(uri_to_path(uri), text)

    def prime(self) -> bool:
        """Load jedi's builtins and common stubs now, waiting for them (see `Analyzer.prime`)."""
        return self.analyzer.prime()

    def prefetch(self, uri: str, text: str, cursor: int) -> None:
        """After an edit ending at `cursor`: let jedi start on the question a completion there would ask."""
        self.analyzer.monitors(uri_to_path(uri), text[cursor:]).prefetch(text[:cursor])

    def start(self, uri: str, text_before: str, typed: str, text_after: str, tokenizer: Tokenizer) -> MonitorConstraint:
        """The constraint every draft of one request starts from, with a fresh trace.

        text_before ends at the token boundary before the cursor, typed runs from there to the cursor.
        """
        monitors = self.analyzer.monitors(uri_to_path(uri), text_after)
        trace = MonitorTrace(self.analyzer.jedi.stats)
        cfg = self.config
        lookahead, prior = cfg.lookahead_width, cfg.used_name_prior
        return MonitorConstraint.at(monitors, tokenizer, trace, text_before, typed, lookahead, prior)

    def close(self) -> None:
        """Stop jedi's thread."""
        self.analyzer.close()
