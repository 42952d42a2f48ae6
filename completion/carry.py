"""A suggestion the user types along: answered from what was shown, without decoding again.

While ghost text is shown, the commonest edit is typing its next characters, and every editor then asks
again. Decoding again from the longer prefix nearly always gives the rest of the same line: greedy
decoding over the same tokens goes on the same way. On the held-out sites of `benchmarks/quality.py`
where the line-start suggestion began with the word the user typed next, a fresh decode after that word
gave the rest of the suggestion at 189 of 191 (benchmarks/RESULTS.md, `carry`). So the engine keeps its
last answer per document, and when the document differs from that answer's only by text typed at its
cursor, which its drafts begin with, it answers with the rest of those drafts at once. The ghost text
stays put while the user types along it, and the model is free for the next request.

What carries: inline answers within a line (a typed newline, or a request that may span lines, decodes
again); drafts that decoding ended itself (a draft the token budget cut would have gone on); a rest that
is not blank; requests with the same options. Anything else decodes as before.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from superpie.cache.stats import NO_SYNC
from superpie.completion.request import CompletionRequest, CompletionResult


@dataclass(frozen=True)
class RequestKey:
    """What must be equal for an answer to carry: the request's options that change what is decoded
    (speculation gives the same drafts either way, so it is not one of them)."""

    max_tokens: int | None
    drafts: int | None
    strategy: str | None
    multiline: bool  # as the request runs (its own value, else the configuration's)
    monitors: bool | None


def request_key(req: CompletionRequest, multiline: bool) -> RequestKey:
    """The key of `req`, which runs with `multiline`."""
    return RequestKey(req.max_tokens, req.drafts, req.strategy, multiline, req.monitors)


@dataclass(frozen=True)
class Shown:
    """An answer as it was given: the document and its cursor, the request's options, the drafts."""

    text: str
    offset: int
    key: RequestKey
    result: CompletionResult


class Carry:
    """The last answer per document, and the answers it still gives while the user types along it."""

    def __init__(self) -> None:
        self._shown: dict[str, Shown] = {}

    def remember(self, req: CompletionRequest, key: RequestKey, result: CompletionResult) -> None:
        """Keep `result` as the document's shown answer (an answer with nothing to show replaces none; one
        whose drafts span lines never carries, so it only ends the one before)."""
        if not result.completions or result.cancelled:
            return
        if key.multiline:
            self._shown.pop(req.uri, None)
        else:
            self._shown[req.uri] = Shown(req.text, req.offset, key, result)

    def answer(self, req: CompletionRequest, key: RequestKey) -> CompletionResult | None:
        """The shown answer's drafts less what was typed since, if `req` types along them; else None."""
        t0 = time.perf_counter()
        shown = self._shown.get(req.uri)
        if shown is None or key != shown.key:
            return None
        before = req.text[: req.offset]
        if not before.startswith(shown.text[: shown.offset]) or req.text[req.offset :] != shown.text[shown.offset :]:
            return None
        typed = before[shown.offset :]
        if not typed or "\n" in typed:
            return None
        rest = [
            d.less_typed(typed)
            for d in shown.result.completions
            if d.finished and d.text.startswith(typed) and d.text[len(typed) :].strip()
        ]
        if not rest:
            return None
        return dataclasses.replace(
            shown.result,
            completions=rest,
            timings_ms={"total": (time.perf_counter() - t0) * 1000},
            cache=NO_SYNC,
            monitors=None,
            speculation=None,
            remote=None,
            carried=True,
        )

    def forget(self, uri: str | None = None) -> None:
        """Drop the shown answer of `uri` (closed), or of every document (new settings)."""
        if uri is None:
            self._shown.clear()
        else:
            self._shown.pop(uri, None)
