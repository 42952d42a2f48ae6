"""Beam search of width k over the cursor's cached prefix, with a tree mask instead of k caches.

Every step feeds the k beams' last tokens together. They are written side by side into the scratch
area; the mask lets each see the cached prefix plus its own ancestors (earlier scratch tokens of
pruned beams stay in the buffer, invisible), and each gets the rotary position of its own depth.
So a step is one forward of k tokens, and the prefix KV is shared, not copied per beam. Log-probs are
exact. Beams that end (EOS, stop rule) are set aside until k have ended, or until `patience` runs
out: once the first beam has ended after s steps, the others get at most max(2, patience * s) more.
A beam still going long after the best line ended is rarely the line the user wants, and waiting for
it cost far more than it found (benchmarks/RESULTS.md, multidraft: patience).

With `keep_greedy` the greedy line is one of the beams all along: the beam that took its row's top
token at every step keeps its slot however its total compares (the other k - 1 are chosen as
usual), the search does not stop before it has ended, and its draft comes back marked `greedy`, as
greedy decoding's and superposed decoding's lead do, so ranking treats the model's own line alike
whatever the strategy. Without it, patience can stop the search before the greedy line has ended, so
it is among the drafts at only some sites (benchmarks/RESULTS.md, multidraft); with it, the top draft
is greedy's line wherever ranking's greedy bonus decides, which also gives up beam's top-draft wins.
"""

from __future__ import annotations

import dataclasses
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
    keep_greedy: bool = False,
) -> list[Draft]:
    """Up to k drafts by beam search (finished ones first, best mean log-prob first).

    `patience` (None or <= 0: wait for k ended beams): steps allowed after the first beam ended, as a
    share of the steps it took (at least 2). `keep_greedy`: the greedy line is always one of the
    beams and of the drafts (marked `greedy`), and the search goes on until it has ended.
    """
    assert k >= 1
    root, root_pos = view.used, view.next_position
    logits = view.step(input_ids=torch.tensor([task.first_input]))  # [1, V]
    pool = Pool([Partial.start(task)])
    greedy: Partial | None = pool.live[0] if keep_greedy and k > 1 else None  # the greedy beam while it goes on
    greedy_ids: tuple[int, ...] | None = () if greedy is not None else None  # its tokens, also once ended
    ancestors: list[list[int]] = [[root]]  # per live beam, the scratch slots it may see
    last_step = task.max_tokens - 1
    share = patience or 0.0
    waiting = share > 0  # for the first beam to end, to set the last step
    for step in range(task.max_tokens):
        logp = torch.log_softmax(logits.float(), dim=-1)
        if greedy is None:
            pool = _advance(lm, task, pool, logp, k)
        else:
            pool, greedy, greedy_ids = _advance_with_greedy(lm, task, pool, logp, k, greedy)
        if waiting and pool.finished:
            last_step, waiting = min(last_step, step + max(2, math.ceil(share * (step + 1)))), False
        if greedy is not None and len(pool.finished) >= k - 1:  # the other slots are filled: greedy goes on alone
            pool.live, pool.parents = pool.live[:1], pool.parents[:1]
        going = greedy is not None
        if not pool.live or not going and (len(pool.finished) >= k or step >= last_step):
            break
        if cancelled():
            return pool.cancelled(k)
        ancestors = [ancestors[p] for p in pool.parents]
        logits, ancestors = _step(view, pool.live, ancestors, root_pos)
    if greedy_ids is None:
        return pool.results(k)
    every = pool.results(len(pool.finished) + len(pool.live))
    marked = [dataclasses.replace(d, greedy=d.tokens == greedy_ids) for d in every]
    return ([d for d in marked if d.greedy][:1] + [d for d in marked if not d.greedy])[:k]


def _advance(lm: LoadedModel, task: DecodeTask, pool: Pool, logp: torch.Tensor, k: int) -> Pool:
    """Each beam's 2k best tokens as candidates; the k best continuing ones survive."""
    return select(lm, task, pool, _candidates(pool, logp, k), k)


def _candidates(pool: Pool, logp: torch.Tensor, k: int) -> Candidates:
    vocab = logp.shape[-1]
    masks = [d.mask(vocab) for d in pool.live]
    rows = torch.stack([apply_mask(logp[i], m) for i, m in enumerate(masks)])  # [beams, V]
    lp, cand = rows.topk(min(vocab, 2 * k), dim=-1)
    best = logp.max(dim=-1).values  # [beams]
    return Candidates(cand, lp, lp, best, [m is not None for m in masks])


def _advance_with_greedy(
    lm: LoadedModel, task: DecodeTask, pool: Pool, logp: torch.Tensor, k: int, greedy: Partial
) -> tuple[Pool, Partial | None, tuple[int, ...]]:
    """The greedy beam extended by its row's top allowed token (set aside if it ends there), and the
    k - 1 best other continuations; returns the pool, the greedy beam (None once ended), its tokens."""
    cand = _candidates(pool, logp, k)
    g = 0  # the greedy beam is always the first live one
    assert pool.live[g] is greedy
    token, score = int(cand.tokens[g, 0]), float(cand.scores[g, 0])
    nxt: Partial | None = None
    ids = greedy.ids
    if score == float("-inf") or token in lm.eos_ids:
        pool.finish(greedy)
    else:
        nxt, stopped = greedy.extend(
            lm, task, token, float(cand.logprobs[g, 0]), constrained=cand.constrained[g], best=float(cand.best[g])
        )
        ids = nxt.ids
        if stopped:
            pool.finish(nxt)
            nxt = None
    scores = cand.scores.clone()
    scores[g, 0] = float("-inf")  # taken by the greedy beam itself
    room = k if nxt is None else 0 if len(pool.finished) >= k - 1 else k - 1  # 0: greedy goes on alone
    others = select(lm, task, pool, dataclasses.replace(cand, scores=scores), room)
    if nxt is None:
        return others, None, ids
    rest = [i for i, d in enumerate(others.live) if d.text != nxt.text]
    live = [nxt] + [others.live[i] for i in rest]
    parents = [g] + [others.parents[i] for i in rest]
    return Pool(live, parents, others.finished, others.seen), nxt, ids


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
