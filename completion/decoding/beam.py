"""Beam search of width k over the cursor's cached prefix, with a tree mask instead of k caches.

Every step feeds the k beams' last tokens together. They are written side by side into the scratch
area; the mask lets each see the cached prefix plus its own ancestors (earlier scratch tokens of
pruned beams stay in the buffer, invisible), and each gets the rotary position of its own depth.
So a step is one forward of k tokens, and the prefix KV is shared, not copied per beam. Log-probs are
exact. Beams that end (EOS, stop rule) are set aside until k have ended, or until `patience` runs
out: once the first beam has ended after s steps, the others get at most max(2, patience * s) more.
A beam still going long after the best line ended is rarely the line the user wants, and waiting for
it cost far more than it found (benchmarks/RESULTS.md, multidraft: patience).
"""

from __future__ import annotations

import math

import torch

from superpie.cache.cursor import CursorView
from superpie.completion.constraints.base import apply_mask
from superpie.completion.decoding.select import Candidates, Pool, select
from superpie.completion.decoding.task import Cancelled, DecodeTask, Partial, never_cancelled
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel


def beam_decode(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    k: int,
    cancelled: Cancelled = never_cancelled,
    patience: float | None = None,
) -> list[Draft]:
    """Up to k drafts by beam search (finished ones first, best mean log-prob first).

    `patience` (None or <= 0: wait for k ended beams): steps allowed after the first beam ended, as a
    share of the steps it took (at least 2).
    """
    assert k >= 1
    root, root_pos = view.used, view.next_position
    logits = view.step(input_ids=torch.tensor([task.first_input]))  # [1, V]
    pool = Pool([Partial.start(task)])
    ancestors: list[list[int]] = [[root]]  # per live beam, the scratch slots it may see
    last_step = task.max_tokens - 1
    share = patience or 0.0
    waiting = share > 0  # for the first beam to end, to set the last step
    for step in range(task.max_tokens):
        pool = _advance(lm, task, pool, torch.log_softmax(logits.float(), dim=-1), k)
        if waiting and pool.finished:
            last_step, waiting = min(last_step, step + max(2, math.ceil(share * (step + 1)))), False
        if len(pool.finished) >= k or not pool.live or step >= last_step:
            break
        if cancelled():
            return pool.cancelled(k)
        ancestors = [ancestors[p] for p in pool.parents]
        logits, ancestors = _step(view, pool.live, ancestors, root_pos)
    return pool.results(k)


def _advance(lm: LoadedModel, task: DecodeTask, pool: Pool, logp: torch.Tensor, k: int) -> Pool:
    """Each beam's 2k best tokens as candidates; the k best continuing ones survive."""
    vocab = logp.shape[-1]
    masks = [d.mask(vocab) for d in pool.live]
    rows = torch.stack([apply_mask(logp[i], m) for i, m in enumerate(masks)])  # [beams, V]
    lp, cand = rows.topk(min(vocab, 2 * k), dim=-1)
    best = logp.max(dim=-1).values  # [beams]
    return select(lm, task, pool, Candidates(cand, lp, lp, best, [m is not None for m in masks]), k)


def _step(
    view: CursorView, beams: list[Partial], ancestors: list[list[int]], root_pos: int
) -> tuple[torch.Tensor, list[list[int]]]:
    """Feed every beam's last token at once; return their logits [k, V] and the extended ancestors."""
    n, used = len(beams), view.used
    visible = view.sees(ancestors)
    grown = [anc + [used + i] for i, anc in enumerate(ancestors)]
    positions = torch.tensor([root_pos + len(b.ids) for b in beams])  # each beam at its own depth
    logits = view.step(
        input_ids=torch.tensor([b.ids[-1] for b in beams]),
        positions=positions,
        scratch_visible=visible,
        logits_for=n,
    )
    return logits, grown
