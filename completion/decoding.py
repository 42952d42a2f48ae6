"""Greedy decoding at a cursor over the document's cached prefix.

The first step re-feeds the last prefix token (its KV is already cached, so this only buys the
next-token distribution at the cursor without storing logits for every document token). Token
healing constrains the first tokens when the cursor was inside a token; `stop` cuts at a line end;
`cancelled` is polled between steps so a superseded request stops within one step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from superpie.cache.cursor import CursorView
from superpie.completion.healing import Healing, token_texts
from superpie.completion.model import LoadedModel

StopRule = Callable[[str], int | None]  # text so far -> cut index where the draft ends, or None


@dataclass(frozen=True)
class DecodedDraft:
    """One decoded continuation: its tokens, its text after the typed characters, its log-prob."""

    ids: tuple[int, ...]
    text: str
    logprob: float  # sum of the model's log-probs of the chosen tokens
    finished: bool  # ended by EOS or the stop rule (not by the token budget)
    cancelled: bool = False

    @property
    def mean_logprob(self) -> float:
        """Length-normalised log-prob, comparable across drafts of different lengths."""
        return self.logprob / max(1, len(self.ids))


def line_end_stop(text: str) -> int | None:
    """Stop at the first newline that follows real content (a leading newline starts the draft)."""
    seen = False
    for i, ch in enumerate(text):
        if ch == "\n" and seen:
            return i
        if not ch.isspace():
            seen = True
    return None


def greedy_decode(
    lm: LoadedModel,
    view: CursorView,
    first_input: int,
    max_tokens: int,
    typed: str = "",
    stop: StopRule | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> DecodedDraft:
    """Decode up to `max_tokens` tokens greedily; the text returned excludes `typed`."""
    healing = Healing(typed)
    texts = token_texts(lm.tokenizer) if healing.active else ()
    ids: list[int] = []
    logprob = 0.0
    token = first_input
    finished = False
    text = ""
    for _ in range(max_tokens):
        if cancelled():
            return DecodedDraft(tuple(ids), text, logprob, False, cancelled=True)
        logits = view.step(input_ids=torch.tensor([token]))[-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        if healing.active:
            allowed = healing.allowed(texts, logp.shape[0])
            token = int(torch.where(allowed, logp, float("-inf")).argmax())
        else:
            token = int(logp.argmax())
        if token in lm.eos_ids:
            finished = True
            break
        ids.append(token)
        logprob += float(logp[token])
        if healing.active:
            healing = healing.advance(texts[token])
        full = lm.decode(ids)
        text = full[len(typed) :] if full.startswith(typed) else full
        cut = stop(text) if stop is not None else None
        if cut is not None:
            text = text[:cut]
            finished = True
            break
    return DecodedDraft(tuple(ids), text, logprob, finished)
