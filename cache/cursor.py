"""`CursorView`: decode new tokens at a cursor against the document's cached prefix, without copying it.

The document's KV stays where it is. New tokens are written into a scratch area behind the last
cached token, at rotary positions that continue the prefix (prefix_len, prefix_len + 1, ...), and an
additive mask hides the document's suffix (the tokens after the cursor) from them. Closing the view
forgets the scratch tokens; the document cache is untouched.

Scratch tokens may form a tree (several drafts sharing the prefix): the caller passes, for the new
tokens, which earlier scratch tokens each may see. A plain chain is the default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from superpie.cache.document import DocumentCache
from superpie.cache.forward import neg_inf, run_forward


class CursorView:
    """Scratch decoding behind a document's cached tokens, seeing only the first `prefix_len` of them."""

    def __init__(self, doc: DocumentCache, prefix_len: int, reserve: int = 64) -> None:
        assert 0 <= prefix_len <= doc.length
        self.doc = doc
        self.prefix_len = prefix_len
        self.base = doc.length  # first scratch index
        self.used = 0  # scratch tokens written so far
        self.dtype = doc.dtype
        self._grow_row(reserve)

    @torch.inference_mode()
    def _grow_row(self, reserve: int) -> None:
        """The mask row of a chain step: prefix visible, suffix hidden, scratch visible."""
        size = self.base + self.used + max(reserve, 1)
        self.doc.store.ensure_capacity(size)
        row = torch.zeros(size, dtype=self.dtype)
        row[self.prefix_len : self.base] = neg_inf(self.dtype)
        self._row = row

    @property
    def next_position(self) -> int:
        """Rotary position of the next chain token."""
        return self.prefix_len + self.used

    @torch.inference_mode()
    def step(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        scratch_visible: torch.Tensor | None = None,
        logits_for: int | torch.Tensor = 1,
    ) -> torch.Tensor:
        """Feed n new tokens; return their logits (last `logits_for` rows).

        `scratch_visible` [n, used + n] (bool) says which scratch tokens each new token sees; None means
        a chain (each sees all earlier scratch tokens and itself).
        """
        given = input_ids if input_ids is not None else inputs_embeds
        assert given is not None, "input_ids or inputs_embeds"
        n = given.shape[0]
        if positions is None:
            positions = torch.arange(self.next_position, self.next_position + n)
        write_at = self.base + self.used
        if write_at + n > self._row.numel():
            self._grow_row(2 * (self.used + n))
        mask = self._mask(n, scratch_visible)
        logits = run_forward(
            self.doc.runner,
            self.doc.store,
            write_at,
            positions,
            mask,
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            logits_for=logits_for,
        )
        self.used += n
        return logits

    def _mask(self, n: int, scratch_visible: torch.Tensor | None) -> torch.Tensor | None:
        end = self.base + self.used + n
        if scratch_visible is None and n == 1:
            if self.prefix_len == self.base:
                return None  # everything before is visible: plain causal decode
            return self._row[:end].view(1, 1, 1, end)  # a view: no per-token mask allocation
        mask = self._row[:end].repeat(n, 1)
        if scratch_visible is None:
            scratch_visible = torch.ones((n, self.used + n), dtype=torch.bool).tril(self.used)
        assert scratch_visible.shape == (n, self.used + n)
        mask[:, self.base :] = torch.where(scratch_visible, 0.0, neg_inf(self.dtype)).to(self.dtype)
        return mask[None, None]

    def sees(self, paths: Sequence[Sequence[int]]) -> torch.Tensor:
        """`scratch_visible` for len(paths) new tokens: new token j sees the scratch slots paths[j] and itself."""
        n, used = len(paths), self.used
        visible = torch.zeros((n, used + n), dtype=torch.bool)
        for j, path in enumerate(paths):
            visible[j, list(path)] = True
            visible[j, used + j] = True
        return visible

    def rewind(self, used: int) -> None:
        """Forget scratch tokens after the first `used` (e.g. to restart drafts from a shared point)."""
        assert 0 <= used <= self.used
        self.used = used
