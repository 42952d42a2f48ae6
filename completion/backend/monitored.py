"""Monitors over a serving engine: each draft's monitored identifiers are checked, and where one is not allowed
the engine spells it again under a grammar (llama.cpp) or a regex (vLLM, SGLang) of the allowed names.

Locally a monitor masks every token of a monitored identifier. An engine takes a constraint only per request,
and a request per `obj.` would cost a round trip at every dot whether the model needed help or not. So the k
drafts come unconstrained in one request, and superpie walks each through the same monitors the local decoder
asks (`analysis.monitors`, `MonitorSet.trigger` at every identifier start, jedi's answers cached per request).
A draft whose monitored identifiers are all allowed is kept as it is: greedy decoding that spelled an allowed
name took, token by token, tokens the local mask keeps too. At the first identifier that is not allowed the
draft is cut, the engine spells the identifier under the constraint (one request: one allowed name and the
character after it), then goes on unconstrained from there (one more), and the walk goes on. The extra requests
per completion are bounded (`model.monitor_requests`); past the bound, or on an engine that cannot constrain (a
plain OpenAI-compatible server), the draft is cut before the identifier: no draft spells a name the analysis
ruled out. The walk records each firing in the request's `MonitorTrace`, so the verdicts and the ranking are
the local ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from superpie.analysis.token_trie import identifier_prefix_length, is_identifier_char
from superpie.completion.backend.base import EngineClient, EngineDraft, EngineReply, EngineRequest, Prompt
from superpie.completion.backend.http import RequestCancelled
from superpie.completion.decoding.task import Cancelled

if TYPE_CHECKING:
    from superpie.analysis.monitors import MonitorSet, MonitorState
    from superpie.completion.constraints.monitor import MonitorTrace


@dataclass
class _Assembly:
    """A draft put together from the pieces of several answers, with its per-token record."""

    text: str
    finished: bool
    texts: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    constrained: list[bool] = field(default_factory=list)
    spelled: bool = True  # the token texts spell `text` (else the per-token record is dropped at the end)
    with_ids: bool = True

    @classmethod
    def of(cls, d: EngineDraft) -> _Assembly:
        a = cls("", d.finished)
        a.extend(d, constrained=False)
        return a

    def extend(self, d: EngineDraft, constrained: bool) -> None:
        self.text += d.text
        spelled = bool(d.token_texts) and "".join(d.token_texts) == d.text and len(d.token_logprobs) == len(
            d.token_texts
        )
        if d.text and not spelled:
            self.spelled = False
        self.texts += d.token_texts
        self.logprobs += d.token_logprobs
        self.ids += d.token_ids
        self.with_ids = self.with_ids and len(d.token_ids) == len(d.token_texts)
        self.constrained += [constrained] * len(d.token_texts)

    def cut(self, at: int) -> None:
        """Keep the first `at` characters; a token across the cut keeps its log-prob and its text up to it."""
        self.text, self.finished = self.text[:at], False
        end = 0
        for i, piece in enumerate(self.texts):
            if end >= at:  # this token starts at the cut or after it
                keep = i
                break
            if end + len(piece) > at:  # this token crosses the cut
                self.texts[i] = piece[: at - end]
                self.with_ids = False  # the shortened token is no longer the engine's token
                keep = i + 1
                break
            end += len(piece)
        else:
            return
        del self.texts[keep:], self.logprobs[keep:], self.ids[keep:], self.constrained[keep:]

    def tokens(self) -> int:
        """Tokens spent on this draft (estimated at 3 characters each where the engine gave no tokens)."""
        return len(self.texts) if self.spelled else len(self.text) // 3 + 1

    def draft(self) -> EngineDraft:
        ok = self.spelled and "".join(self.texts) == self.text
        return EngineDraft(
            text=self.text,
            token_texts=tuple(self.texts) if ok else (),
            token_ids=tuple(self.ids) if ok and self.with_ids else (),
            token_logprobs=tuple(self.logprobs) if ok else (),
            finished=self.finished,
            token_constrained=tuple(self.constrained) if ok else (),
        )


class RemoteMonitors:
    """The monitors of one remote completion: the walk over its drafts and the re-asking, with its counts."""

    def __init__(
        self, client: EngineClient, monitors: MonitorSet, trace: MonitorTrace, before: str, max_requests: int
    ) -> None:
        self.client = client
        self.monitors = monitors
        self.trace = trace
        self.before = before  # the document up to the cursor
        self.max_requests = max_requests
        self.requests = 0  # extra requests this completion sent for monitored identifiers
        self.corrected = 0  # identifiers the engine spelled again under the constraint
        self.cut = 0  # drafts cut before an identifier that could not be re-asked

    def check(self, request: EngineRequest, drafts: tuple[EngineDraft, ...], cancelled: Cancelled) -> list[EngineDraft]:
        """The drafts with every monitored identifier allowed (re-asked or cut where one was not)."""
        return [self._check(request, d, cancelled) for d in drafts]

    def _check(self, request: EngineRequest, d: EngineDraft, cancelled: Cancelled) -> EngineDraft:
        a = _Assembly.of(d)
        pos = 0
        while True:
            bad = self.first_invalid(a.text, pos, a.finished)
            if bad is None:
                return a.draft()
            at, state = bad
            a.cut(at)
            if not self.client.constrains or self.requests >= self.max_requests:
                self.cut += 1
                return a.draft()
            if cancelled():
                raise RequestCancelled("cancelled between monitored requests")
            allowed = tuple(sorted(state.allowed_continuations()))
            ident = self._ask(request, a.text, allowed, cancelled).drafts[0]
            n = identifier_prefix_length(ident.text)
            if ident.text[:n] not in allowed or n == len(ident.text):  # not honoured, or the budget ran out
                self.cut += 1
                return a.draft()
            self.corrected += 1
            a.extend(ident, constrained=True)
            a.cut(at + n + 1)  # the name and the character after it (the grammar allows nothing more)
            pos = at + 1
            if a.text.endswith("\n") and "\n" in request.stop:  # the line ended with the identifier
                a.cut(len(a.text) - 1)
                a.finished = True
                continue
            left = request.max_tokens - a.tokens()
            if left <= 0 or self.requests >= self.max_requests:
                continue  # a.finished is False: the draft ends after the identifier
            rest = self._ask(request, a.text, (), cancelled, left).drafts[0]
            a.extend(rest, constrained=False)
            a.finished = rest.finished

    def _ask(
        self, request: EngineRequest, drafted: str, allowed: tuple[str, ...], cancelled: Cancelled, tokens: int = 0
    ) -> EngineReply:
        p = request.prompt
        asked = EngineRequest(
            prompt=Prompt(p.prefix, p.line + drafted, p.suffix),
            drafts=1,
            # a name is at most one token per character, then the character after it
            max_tokens=max(map(len, allowed)) + 2 if allowed else tokens,
            stop=() if allowed else request.stop,
            temperature=0.0,
            allowed=allowed,
        )
        self.requests += 1
        reply = self.client.complete(asked, cancelled)
        if not reply.drafts:
            raise RequestCancelled("the engine answered no draft")  # not expected: n=1 asked
        return reply

    def first_invalid(self, text: str, start: int, finished: bool) -> tuple[int, MonitorState] | None:
        """The first identifier start at or after `start` where a constraining monitor fired and the draft's
        identifier is not one of its names (or, unfinished, no name begins with it)."""
        for at in range(start, len(text) + 1):
            if at and is_identifier_char(text[at - 1]):
                continue  # inside an identifier: its start was checked
            state = self.trace.trigger(self.monitors, self.before + text[:at], text[:at])
            allowed = set() if state is None else state.allowed_continuations()
            if not allowed or state is None:
                continue
            rest = text[at:]
            n = identifier_prefix_length(rest)
            spelled = rest[:n]
            done = n < len(rest) or finished
            if not (spelled in allowed if done else any(c.startswith(spelled) for c in allowed)):
                return at, state
        return None
