"""The draft: one completion candidate, the same value from decoding through ranking to every front door.

Decoding builds drafts token by token (`decoding.task.Partial`) and hands out `Draft`s; post-processing
returns new ones with `with_text(...)`, so the tokens, the log-probs and the id survive each step;
ranking sets `score`, the monitors' judgement sets `monitor`. Drafts are immutable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from superpie.completion.constraints.monitor import MonitorVerdict


@dataclass(frozen=True)
class Draft:
    """Text to insert at the cursor, with what decoding and ranking knew about it."""

    text: str  # after the characters typed inside the cursor's token
    tokens: tuple[int, ...] = ()
    logprob: float | None = None  # sum of the model's log-probs of `tokens` (exact for greedy, beam, verified)
    finished: bool = True  # decoding ended it (EOS or the stop rule), not the token budget
    cancelled: bool = False  # the request was cancelled while it was decoded
    token_logprobs: tuple[float, ...] = ()  # per token, when known
    token_ends: tuple[int, ...] = ()  # per token, the str offset in `text` where it ends (past the end when cut)
    token_constrained: tuple[bool, ...] = ()  # per token: a constraint mask (healing, a monitor) was active
    best_logprobs: tuple[float, ...] = ()  # per token: log-prob of the model's own top choice there
    verified: bool = False  # log-probs re-scored exactly by `decoding.verify`
    greedy: bool = False  # the model's own top token at every step (ranking favours it: RankConfig.greedy_bonus)
    score: float = 0.0  # rank score, higher is better (set by ranking)
    monitor_score: float | None = None  # 1.0: every identifier checked was valid; None: unchecked
    monitor: MonitorVerdict | None = None  # what the monitors said of the final text (None: monitors off)
    id: int = 0  # position in the decoder's output, so ranking can look back at the decoded draft

    def with_text(self, text: str) -> Draft:
        """The same draft with new text; a cut keeps only the tokens (and their data) that still fit."""
        if not (self.token_ends and self.text.startswith(text)):  # re-indented: tokens stay as decoded
            return dataclasses.replace(self, text=text)
        keep = sum(1 for end in self.token_ends if end <= len(text))
        return self._tokens_from(text, 0, keep)

    def less_typed(self, typed: str) -> Draft:
        """The rest of this draft once the user typed its first characters, `typed` (completion/carry.py):
        the tokens that end inside `typed` go, with their data; one that straddles it stays."""
        n = len(typed)
        assert self.text.startswith(typed), "typed along the draft"
        if not self.token_ends:
            return dataclasses.replace(self, text=self.text[n:])
        drop = sum(1 for end in self.token_ends if end <= n)
        return self._tokens_from(self.text[n:], drop, None, shift=n)

    def _tokens_from(self, text: str, lo: int, hi: int | None, shift: int = 0) -> Draft:
        """The draft with `text`, keeping tokens lo..hi (None: to the end) and their data; their ends move
        back by `shift`."""
        logprobs = self.token_logprobs[lo:hi]
        return dataclasses.replace(
            self,
            text=text,
            tokens=self.tokens[lo:hi],
            token_ends=tuple(end - shift for end in self.token_ends[lo:hi]),
            token_logprobs=logprobs,
            token_constrained=self.token_constrained[lo:hi],
            best_logprobs=self.best_logprobs[lo:hi],
            logprob=sum(logprobs) if self.token_logprobs else self.logprob,
        )

    @property
    def num_tokens(self) -> int:
        """Token count for length normalisation (at least 1, so a mean never divides by zero)."""
        return max(1, len(self.token_logprobs) or len(self.tokens))

    @property
    def mean_logprob(self) -> float:
        """Length-normalised log-prob, comparable across drafts of different lengths."""
        return (self.logprob or 0.0) / max(1, len(self.tokens))

    @property
    def constrained(self) -> bool:
        """Whether any constraint (healing, a monitor) restricted this draft's tokens."""
        return any(self.token_constrained)
