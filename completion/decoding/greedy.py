"""Greedy (or sampled) decoding at a cursor: one draft, one token per step through the view's chain."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from superpie.cache.cursor import CursorView
from superpie.completion.constraints.base import TokenConstraint, apply_mask
from superpie.completion.decoding.lookahead import commit_span, span_lookahead
from superpie.completion.decoding.speculative import Speculator, speculative_decode
from superpie.completion.decoding.stops import StopRule
from superpie.completion.decoding.task import (
    Cancelled,
    DecodeTask,
    Partial,
    check_margin,
    never_cancelled,
    task_constraints,
)
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel


def greedy_decode(
    lm: LoadedModel,
    view: CursorView,
    first_input: int,
    max_tokens: int,
    typed: str = "",
    stop: StopRule | None = None,
    cancelled: Cancelled = never_cancelled,
    constraints: Sequence[TokenConstraint] | None = None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    speculator: Speculator | None = None,
) -> Draft:
    """Decode one draft token by token (argmax, or sampling when temperature > 0).

    `constraints` None means token healing for `typed` only; the text returned excludes `typed`.
    """
    if constraints is None:
        constraints = task_constraints(lm, typed)
    task = DecodeTask(first_input, max_tokens, typed, stop, tuple(constraints))
    return chain_decode(lm, view, task, cancelled, temperature, generator, speculator)


def chain_decode(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    cancelled: Cancelled = never_cancelled,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    speculator: Speculator | None = None,
) -> Draft:
    """One draft of a `DecodeTask`, one token per step through the view's chain.

    Greedy: where a constraint asks for it (a monitored identifier), the identifier is chosen whole by
    `span_lookahead` and its tokens are committed at once. With a `speculator`, greedy decoding verifies
    proposed tokens several per forward (`speculative`), with the same output. Greedy over stale KV raises
    `StaleCloseCall` at a choice closer than `task.stale_margin` (sampled drafts are not checked).
    """
    if speculator is not None and temperature <= 0:
        return speculative_decode(lm, view, task, speculator, cancelled)
    draft = Partial.start(task)
    token = task.first_input
    while len(draft.ids) < task.max_tokens:
        if cancelled():
            return draft.done(False, cancelled=True)
        logits = view.step(input_ids=torch.tensor([token]))[-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        mask, masked = None, None  # the draft's mask, computed once a step (the margin check reads it too)
        if task.stale_margin > 0 and temperature <= 0:
            mask = draft.mask(logp.shape[0])
            masked = apply_mask(logp, mask)
            check_margin(masked, task.stale_margin, len(draft.ids))
        width = 0 if temperature > 0 or draft.constraints.empty else draft.constraints.lookahead_width()
        span = span_lookahead(lm, view, task, draft, logp, width) if width > 1 else []
        if span:
            draft, stopped = commit_span(lm, task, draft, span, lambda ids: view.step(input_ids=torch.tensor(ids)))
            if stopped:
                return draft.done(True)
            token = span[-1][0]
            continue
        if masked is None:
            mask = draft.mask(logp.shape[0])
            masked = apply_mask(logp, mask)
        token = _choose(masked, temperature, generator)
        if token in lm.eos_ids:
            return draft.done(True)
        best = float(logp.max())
        draft, stopped = draft.extend(lm, task, token, float(logp[token]), constrained=mask is not None, best=best)
        if stopped:
            return draft.done(True)
    return draft.done(False)


def _choose(logp: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logp.argmax())
    probs = torch.softmax(logp / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
