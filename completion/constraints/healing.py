"""Token healing: when the cursor sits inside a token, the first new tokens must spell what was typed.

The cache backs up to the last whole token before the cursor; the characters between that boundary
and the cursor (`typed`) were typed but are not in the prefix the model sees. The model may then pick
the token the tokenizer would have used for the whole word ("fooba|" -> " foobar"), instead of being
forced to continue from a token split it never saw in training. Until `typed` is consumed, a token is
allowed only if it starts with what remains of `typed`, or is a non-empty prefix of it.

Healing is one `TokenConstraint` (see `base`), so every decoding strategy applies it per draft
through the same hook as the monitors; it queries the tokenizer's one `Vocabulary` (see `vocab`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from superpie.completion.constraints.vocab import Vocabulary, vocabulary


def _rest(remaining: str, emitted: str) -> str:
    return "" if len(emitted) >= len(remaining) else remaining[len(emitted) :]


@dataclass(frozen=True)
class HealingConstraint:
    """Token healing as a per-draft constraint: done (None) once the typed characters are spelled."""

    remaining: str
    vocabulary: Vocabulary = field(repr=False, compare=False)  # the tokenizer's, shared with the monitors

    @classmethod
    def for_typed(cls, typed: str, tokenizer: Tokenizer) -> HealingConstraint | None:
        """The constraint for a cursor with `typed` characters inside its token (None when none)."""
        return cls(typed, vocabulary(tokenizer)) if typed else None

    @functools.cached_property
    def _mask(self) -> torch.Tensor:
        return self.vocabulary.healing_mask(self.remaining)

    def mask(self, vocab: int) -> torch.Tensor | None:
        """Tokens that agree with what remains of the typed characters (computed once per state)."""
        return self._mask

    def advance(self, token_text: str) -> HealingConstraint | None:
        """The rest of the typed characters after this token; None once all are spelled."""
        rest = _rest(self.remaining, token_text)
        return HealingConstraint(rest, self.vocabulary) if rest else None
