"""The identifier lookahead: a monitored identifier chosen whole by a small constrained beam over its tokens."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from superpie.cache.cursor import CursorView
from superpie.completion.constraints.base import ConstraintSet, apply_mask
from superpie.completion.constraints.vocab import token_texts
from superpie.completion.decoding.task import DecodeTask, Partial
from superpie.completion.model.loading import LoadedModel

_SPAN_TOKENS = 8  # the longest identifier span the lookahead searches (tokens)


@dataclass(frozen=True)
class _SpanHyp:
    """One way to spell the constrained span in the lookahead: tokens, per-token log-probs, scratch slots."""

    constraints: ConstraintSet
    tokens: tuple[tuple[int, float, float], ...] = ()  # (token, log-prob, the model's best log-prob there)
    slots: tuple[int, ...] = ()  # scratch slots of the tokens fed so far (all but a pending last one)
    score: float = 0.0  # sum of the tokens' log-probs
    ended: bool = False  # its last token left the span


def span_lookahead(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    draft: Partial,
    logp: torch.Tensor,
    width: int,
    path: Sequence[int] | None = None,
) -> list[tuple[int, float, float]]:
    """The constrained span spelled whole: the tokens (with log-probs) of the best-scoring spelling.

    A beam of `width` over the span only: each hypothesis takes its `width` best allowed tokens; one
    whose token leaves the span (`advance_in_span` is None: `name(`, `name)`...) is complete, with
    its exit token's log-prob included, so a short name the model would not end where it stops does
    not win for being short, plus the constraint's `span_bonus` for that name. The search stops when
    no live hypothesis can beat the best complete one (log-probs only fall; a live one is kept while
    the largest bonus could lift it past), at `_SPAN_TOKENS` or at the token budget. The live hypotheses are fed
    together as a tree in the view's scratch area (as in beam search); the view is rewound after,
    so the caller feeds the chosen tokens to its chain. `logp` [V] is the distribution at the span's
    first token. `path`: the scratch slots of the draft so far, by depth, when the scratch holds more
    than its chain (superposed decoding's exact lead; None: all of it). Empty when nothing is allowed.
    """
    texts = token_texts(lm.tokenizer)
    vocab = logp.shape[0]
    used0 = view.used
    seen = list(range(used0)) if path is None else list(path)
    pos0 = view.prefix_len + (seen[0] if seen else 0) + len(seen)  # the chain's root, then one per depth
    depth_limit = min(_SPAN_TOKENS, task.max_tokens - len(draft.ids))
    live = [_SpanHyp(draft.constraints)]
    slack = draft.constraints.span_bonus_bound()  # a bonus may still lift a live spelling past the best
    rows = logp[None]  # [live, V]
    done: list[_SpanHyp] = []
    for depth in range(depth_limit):
        cands: list[tuple[float, int, int, float, float]] = []
        for i, hyp in enumerate(live):
            row = rows[i]
            masked = apply_mask(row, hyp.constraints.mask(vocab))
            lps, ids = masked.topk(min(width, vocab))
            best = float(row.max())
            for lp, t in zip(lps.tolist(), ids.tolist(), strict=True):
                if lp != float("-inf") and t not in lm.eos_ids:
                    cands.append((hyp.score + lp, i, t, lp, best))
        cands.sort(key=lambda c: -c[0])
        nxt: list[_SpanHyp] = []
        for score, i, t, lp, best in cands:
            hyp = live[i]
            text = texts[t] if t < len(texts) else ""
            inside = hyp.constraints.advance_in_span(text)
            ended = inside is None or inside.lookahead_width() == 0
            if ended:
                score += hyp.constraints.span_bonus(text)
            grown = _SpanHyp(inside or hyp.constraints, hyp.tokens + ((t, lp, best),), hyp.slots, score, ended)
            if ended:
                done.append(grown)
            elif len(nxt) < width:
                nxt.append(grown)
        bar = max((h.score for h in done), default=float("-inf")) - slack
        live = [h for h in nxt if h.score > bar]
        if not live:
            break
        if depth == depth_limit - 1:
            done.extend(live)  # cut by the budget: an unfinished name competes as it stands
            break
        rows, live = _feed_span(view, live, seen, pos0)
    view.rewind(used0)
    if not done:
        return []
    return list(max(done, key=lambda h: h.score).tokens)


def _feed_span(
    view: CursorView, live: list[_SpanHyp], chain: list[int], pos0: int
) -> tuple[torch.Tensor, list[_SpanHyp]]:
    """Feed each live hypothesis's last token (a tree: each sees the chain and its own tokens); log-probs [n, V]."""
    n, used = len(live), view.used
    visible = view.sees([chain + list(hyp.slots) for hyp in live])  # the chain before the span, then its own
    logits = view.step(
        input_ids=torch.tensor([h.tokens[-1][0] for h in live]),
        positions=torch.tensor([pos0 + len(h.tokens) - 1 for h in live]),
        scratch_visible=visible,
        logits_for=n,
    )
    grown = [dataclasses.replace(h, slots=h.slots + (used + j,)) for j, h in enumerate(live)]
    return torch.log_softmax(logits.float(), dim=-1), grown


def commit_span(
    lm: LoadedModel,
    task: DecodeTask,
    draft: Partial,
    span: Sequence[tuple[int, float, float]],
    feed: Callable[[list[int]], object],
) -> tuple[Partial, bool]:
    """Commit a span `span_lookahead` spelled whole: the draft extended by its tokens, and whether it stopped.

    `feed` gives the chain every token of the span but the last (the next step feeds that one), so the
    greedy chain and the speculative chain, which keep their K/V differently, commit a span the same way.
    """
    if len(span) > 1:
        feed([t for t, _, _ in span[:-1]])
    for t, lp, best in span:
        draft, stopped = draft.extend(lm, task, t, lp, constrained=True, best=best)
        if stopped:
            return draft, True
    return draft, False
