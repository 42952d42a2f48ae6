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

import functools
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer


@functools.lru_cache(maxsize=4)
def token_texts(tokenizer: Tokenizer) -> tuple[str, ...]:
    """The text each token id decodes to on its own (cached per tokenizer)."""
    return tuple(tokenizer.decode([i], skip_special_tokens=False) for i in range(tokenizer.get_vocab_size()))


@dataclass(frozen=True)
class Healing:
    """What remains of the typed characters that new tokens must reproduce."""

    remaining: str

    @property
    def active(self) -> bool:
        """Whether the next token is still constrained."""
        return bool(self.remaining)

    def allowed(self, texts: tuple[str, ...], vocab: int) -> torch.Tensor:
        """Boolean mask [vocab] of the tokens that agree with `remaining`."""
        rem = self.remaining
        ok = [i for i, s in enumerate(texts[:vocab]) if s and (s.startswith(rem) or rem.startswith(s))]
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[ok] = True
        return mask

    def advance(self, emitted: str) -> Healing:
        """What remains after a token with text `emitted`."""
        if len(emitted) >= len(self.remaining):
            return Healing("")
        return Healing(self.remaining[len(emitted) :])


@dataclass(frozen=True)
class HealingConstraint:
    """Token healing as a per-draft constraint: done (None) once the typed characters are spelled."""

    remaining: str
    texts: tuple[str, ...] = field(repr=False, compare=False)

    @classmethod
    def for_typed(cls, typed: str, tokenizer: Tokenizer) -> HealingConstraint | None:
        """The constraint for a cursor with `typed` characters inside its token (None when none)."""
        return cls(typed, token_texts(tokenizer)) if typed else None

    @functools.cached_property
    def _mask(self) -> torch.Tensor:
        return Healing(self.remaining).allowed(self.texts, len(self.texts))

    def mask(self, vocab: int) -> torch.Tensor | None:
        """Tokens that agree with what remains of the typed characters (computed once per state)."""
        return self._mask

    def advance(self, token_text: str) -> HealingConstraint | None:
        """The rest of the typed characters after this token; None once all are spelled."""
        rest = Healing(self.remaining).advance(token_text)
        return HealingConstraint(rest.remaining, self.texts) if rest.active else None
