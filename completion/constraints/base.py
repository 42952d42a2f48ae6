"""Per-draft token constraints: the one hook through which healing and monitors steer every strategy.

A constraint is an immutable value. `mask(vocab)` says which tokens the draft may take next (None:
any); `advance(token_text)` returns the constraint after the draft took a token (None: it no longer
constrains). Because it is a value, the k drafts of superposed or beam decoding can start from the
same constraint and each advance its own copy. Token texts are the per-token decodes of the tokenizer
(`vocab.token_texts`), starting at the token boundary before the cursor: the characters typed
inside the cursor's token are part of the first token's text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


class TokenConstraint(Protocol):
    """What a draft may spell next; immutable, advanced once per emitted token."""

    def mask(self, vocab: int) -> torch.Tensor | None:
        """Bool [vocab] of the allowed next tokens, or None when unconstrained right now."""
        ...

    def advance(self, token_text: str) -> TokenConstraint | None:
        """The constraint after the draft emitted a token with this text; None once it is done."""
        ...


@dataclass(frozen=True)
class ConstraintContext:
    """Where a completion starts, for factories that build constraints (monitors need the text)."""

    uri: str
    text_before: str  # the document up to the token boundary before the cursor
    typed: str  # characters between that boundary and the cursor
    text_after: str  # the document after the cursor


class SpanConstraint(ABC):
    """A constraint that may ask decoding to search the span it constrains (a monitored identifier).

    Greedy decoding under a mask commits to the span's first token on its own merits (`_` of
    `_get_ident` can lead only to `__name__`); a small constrained beam over the span alone, kept
    apart from the rest of the draft, picks the span with the best total log-prob instead.
    `ConstraintSet` tells span constraints from the others with isinstance: an ABC, not a
    runtime-checkable Protocol, because that check runs per token of the lookahead and a Protocol's
    isinstance inspects every member on each call.
    """

    @abstractmethod
    def mask(self, vocab: int) -> torch.Tensor | None:
        """Bool [vocab] of the allowed next tokens, or None when unconstrained right now."""

    @abstractmethod
    def advance(self, token_text: str) -> TokenConstraint | None:
        """The constraint after the draft emitted a token with this text; None once it is done."""

    @abstractmethod
    def lookahead_width(self) -> int:
        """Beam width to search the span constrained right now with (0: no span, decode greedily)."""

    @abstractmethod
    def advance_in_span(self, token_text: str) -> TokenConstraint | None:
        """The constraint after a token that stays inside the span; None when the token leaves it.

        Unlike `advance`, leaving the span asks nothing further (no new monitor question): the
        lookahead only needs to know that the span ended there.
        """

    def span_bonus(self, token_text: str) -> float:
        """What this constraint adds to the score of a spelling of the span that this token finishes."""
        return 0.0

    def max_span_bonus(self) -> float:
        """The most `span_bonus` gives (the lookahead keeps a live spelling this far below the best)."""
        return 0.0


ConstraintFactory = Callable[[ConstraintContext], Sequence[TokenConstraint]]


@dataclass(frozen=True)
class ConstraintSet:
    """The constraints of one draft, all applied at once (their masks intersect)."""

    items: tuple[TokenConstraint, ...] = ()

    @property
    def empty(self) -> bool:
        """No constraint left: the draft decodes freely from here on."""
        return not self.items

    def mask(self, vocab: int) -> torch.Tensor | None:
        """Intersection of the masks; the first constraint alone if the intersection would be empty."""
        out: torch.Tensor | None = None
        for c in self.items:
            m = c.mask(vocab)
            if m is None:
                continue
            m = _fit(m, vocab)
            if out is None:
                out = m
            elif bool((out & m).any()):
                out = out & m
        return out

    def lookahead_width(self) -> int:
        """The widest span search any constraint asks for right now (0: none)."""
        return max((c.lookahead_width() for c in self.items if isinstance(c, SpanConstraint)), default=0)

    def span_bonus(self, token_text: str) -> float:
        """What the span constraints add to the score of a spelling that this token finishes."""
        return sum(c.span_bonus(token_text) for c in _searching(self.items))

    def span_bonus_bound(self) -> float:
        """The most `span_bonus` can add (the lookahead prunes a live spelling only this far below the best)."""
        return sum(c.max_span_bonus() for c in _searching(self.items))

    def advance_in_span(self, token_text: str) -> ConstraintSet | None:
        """The set after a token inside the constrained span; None when the token leaves the span.

        Span constraints advance with `advance_in_span`, the others as usual (healing is cheap).
        """
        out: list[TokenConstraint] = []
        for c in self.items:
            if isinstance(c, SpanConstraint) and c.lookahead_width():
                nxt = c.advance_in_span(token_text)
                if nxt is None:
                    return None
            else:
                nxt = c.advance(token_text)
            if nxt is not None:
                out.append(nxt)
        return ConstraintSet(tuple(out))

    def advance(self, token_text: str) -> ConstraintSet:
        """Every constraint advanced by the token; finished ones dropped."""
        if not self.items:
            return self
        nxt = (c.advance(token_text) for c in self.items)
        return ConstraintSet(tuple(c for c in nxt if c is not None))


def _searching(items: Sequence[TokenConstraint]) -> list[SpanConstraint]:
    """The span constraints among items that search their span right now (lookahead width > 0)."""
    return [c for c in items if isinstance(c, SpanConstraint) and c.lookahead_width()]


def _fit(mask: torch.Tensor, vocab: int) -> torch.Tensor:
    """A mask sized to the logits (embeddings may be padded past the tokenizer's vocabulary)."""
    if mask.numel() == vocab:
        return mask
    out = torch.zeros(vocab, dtype=torch.bool)
    n = min(vocab, mask.numel())
    out[:n] = mask[:n]
    return out


def apply_mask(logp: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Log-probs with disallowed tokens at -inf (a no-op without a mask)."""
    if mask is None:
        return logp
    return logp.masked_fill(~mask, float("-inf"))
