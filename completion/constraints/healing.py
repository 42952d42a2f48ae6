"""Token healing: when the cursor sits inside a token, the first new tokens must spell what was typed.

The cache backs up to the last whole token before the cursor; the characters between that boundary
and the cursor (`typed`) were typed but are not in the prefix the model sees. The model may then pick
the token the tokenizer would have used for the whole word ("fooba|" -> " foobar"), instead of being
forced to continue from a token split it never saw in training. Until `typed` is consumed, a token is
allowed only if it starts with what remains of `typed`, or is a non-empty prefix of it.

Healing is one `TokenConstraint` (see `constraints`), so every decoding strategy applies it per draft
through the same hook as the monitors.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer


@functools.lru_cache(maxsize=4)
def token_texts(tokenizer: Tokenizer) -> tuple[str, ...]:
    """The text each token id decodes to on its own (cached per tokenizer)."""
    return tuple(tokenizer.decode([i], skip_special_tokens=False) for i in range(tokenizer.get_vocab_size()))


class HealingIndex:
    """Token texts sorted for prefix queries, so a healing mask costs ~len(typed), not a vocab scan.

    Tokens that start with `rem` are one contiguous run of the sorted texts (two bisections);
    tokens that are a proper prefix of `rem` are at most len(rem) dictionary lookups.
    """

    def __init__(self, texts: tuple[str, ...]) -> None:
        order = sorted((t, i) for i, t in enumerate(texts) if t)
        self.sorted_texts = [t for t, _ in order]
        self.sorted_ids = torch.tensor([i for _, i in order], dtype=torch.long)
        self.by_text: dict[str, list[int]] = {}
        for t, i in order:
            self.by_text.setdefault(t, []).append(i)
        self.vocab = len(texts)

    def allowed(self, rem: str) -> torch.Tensor:
        """Boolean mask [vocab] of tokens that start with `rem` or are a non-empty prefix of it."""
        mask = torch.zeros(self.vocab, dtype=torch.bool)
        lo = bisect.bisect_left(self.sorted_texts, rem)
        hi = bisect.bisect_left(self.sorted_texts, rem + "\U0010ffff")
        mask[self.sorted_ids[lo:hi]] = True
        for cut in range(1, len(rem)):
            ids = self.by_text.get(rem[:cut])
            if ids:
                mask[ids] = True
        return mask


@functools.lru_cache(maxsize=4)
def healing_index(tokenizer: Tokenizer) -> HealingIndex:
    """The prefix index of a tokenizer's token texts (built once, ~0.1 s)."""
    return HealingIndex(token_texts(tokenizer))


def _rest(remaining: str, emitted: str) -> str:
    return "" if len(emitted) >= len(remaining) else remaining[len(emitted) :]


@dataclass(frozen=True)
class HealingConstraint:
    """Token healing as a per-draft constraint: done (None) once the typed characters are spelled."""

    remaining: str
    index: HealingIndex = field(repr=False, compare=False)

    @classmethod
    def for_typed(cls, typed: str, tokenizer: Tokenizer) -> HealingConstraint | None:
        """The constraint for a cursor with `typed` characters inside its token (None when none)."""
        return cls(typed, healing_index(tokenizer)) if typed else None

    @functools.cached_property
    def _mask(self) -> torch.Tensor:
        return self.index.allowed(self.remaining)

    def mask(self, vocab: int) -> torch.Tensor | None:
        """Tokens that agree with what remains of the typed characters (computed once per state)."""
        return self._mask

    def advance(self, token_text: str) -> HealingConstraint | None:
        """The rest of the typed characters after this token; None once all are spelled."""
        rest = _rest(self.remaining, token_text)
        return HealingConstraint(rest, self.index) if rest else None
