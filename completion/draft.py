"""The draft: one completion candidate as it travels from decoding through post-processing to a front end.

Drafts are immutable; every post-processing step returns a new one with `with_text(...)`, so the id,
the score and the monitor verdict survive each step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Draft:
    """Text to insert at the cursor, with what decoding knew about it."""

    text: str
    score: float = 0.0  # rank score, higher is better (set by postprocess.rank)
    logprob: float | None = None  # sum of the model's log-probs of `tokens` (exact, when verified)
    tokens: tuple[int, ...] = ()
    token_logprobs: tuple[float, ...] = ()  # per token, when known
    token_ends: tuple[int, ...] = ()  # per token, the str offset in `text` where it ends, when known
    monitor_score: float | None = None  # 1.0: all identifiers checked were valid; None: unchecked
    greedy: bool = False  # the model's own top token at every step (ranking favours it: RankConfig.greedy_bonus)
    finished: bool = True  # decoding ended it (EOS or the line/block stop), not the token budget
    id: int = 0

    def with_text(self, text: str) -> Draft:
        """The same draft with new text; a cut keeps only the tokens (and log-probs) that still fit."""
        if not (self.token_ends and self.text.startswith(text)):  # re-indented: tokens stay as decoded
            return dataclasses.replace(self, text=text)
        keep = sum(1 for end in self.token_ends if end <= len(text))
        logprobs = self.token_logprobs[:keep]
        return dataclasses.replace(
            self,
            text=text,
            tokens=self.tokens[:keep],
            token_ends=self.token_ends[:keep],
            token_logprobs=logprobs,
            logprob=sum(logprobs) if self.token_logprobs else self.logprob,
        )

    @property
    def num_tokens(self) -> int:
        """Token count for length normalisation (at least 1, so a mean never divides by zero)."""
        return max(1, len(self.token_logprobs) or len(self.tokens))
