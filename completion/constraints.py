"""Per-draft token constraints: the one hook through which healing and monitors steer every strategy.

A constraint is an immutable value. `mask(vocab)` says which tokens the draft may take next (None:
any); `advance(token_text)` returns the constraint after the draft took a token (None: it no longer
constrains). Because it is a value, the k drafts of superposed or beam decoding can start from the
same constraint and each advance its own copy. Token texts are the per-token decodes of the tokenizer
(`healing.token_texts`), starting at the token boundary before the cursor: the characters typed
inside the cursor's token are part of the first token's text.
"""

from __future__ import annotations

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

    def advance(self, token_text: str) -> ConstraintSet:
        """Every constraint advanced by the token; finished ones dropped."""
        if not self.items:
            return self
        nxt = (c.advance(token_text) for c in self.items)
        return ConstraintSet(tuple(c for c in nxt if c is not None))


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
