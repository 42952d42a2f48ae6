"""Superposed decoding (Shen et al., 2024): k drafts from one autoregressive pass.

Step one reads the exact distribution at the cursor and starts k drafts from its best tokens. From
then on each step feeds ONE input through the cursor's chain: the sum of the k drafts' last-token
embeddings weighted by the drafts' normalised probabilities. The model's single output distribution
is shared by all drafts; what tells the drafts apart is the n-gram model, asked about each draft's
own recent tokens. A candidate (draft i, token x), x among the top-m tokens of the LM, scores

    log((1 - lambda) P_LM(x) + lambda P_ngram(x | draft i's last tokens))

(linear interpolation, as in the paper: an n-gram that knows nothing backs off towards the unigram
and leaves the LM's ranking alone, where a log-linear mix would punish every rare token). The k best
(draft, token) pairs survive; drafts that end (EOS, stop rule) are set aside. With k = 1 nothing is
superposed and nothing needs telling apart, so the n-gram term is off and this is greedy decoding.
The log-probs recorded are the superposed model's, approximate: `verify` re-scores them exactly.

That is the paper's algorithm (`exact_lead` False). On the 135M default model it loses to plain
greedy decoding: superposing the drafts' inputs degrades every draft, the best one included
(benchmarks/RESULTS.md, multidraft). So by default (`exact_lead`) the greedy draft is fed exactly
beside ONE superposed input that carries the other k - 1 drafts: each step is a forward of two
tokens (not k), the first draft is the greedy line itself, and the others branch off it at its
exact distributions wherever the model hesitates; only they share the superposed input. Decoding
ends with the greedy line (`patience` 0); `verify` then scores the others exactly, cuts them where
the model confidently disagrees and finishes the cut or unfinished ones by a greedy token or more
(`VerifyConfig.repair_tokens`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from superpie.cache.cursor import CursorView
from superpie.cache.diff import common_prefix
from superpie.completion.config import SuperposedConfig
from superpie.completion.constraints.base import apply_mask
from superpie.completion.decoding.lookahead import span_lookahead
from superpie.completion.decoding.select import Candidates, Pool, select
from superpie.completion.decoding.task import Cancelled, DecodeTask, Partial, never_cancelled
from superpie.completion.decoding.verify import Trunk
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel
from superpie.completion.ngram.index import NgramIndex


@dataclass(frozen=True)
class SuperposedDrafts:
    """The drafts of one superposed pass, and the scratch slots that hold exact KV (for `verify`)."""

    drafts: list[Draft]
    trunk: Trunk | None  # None when cancelled


def superposed_decode(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    k: int,
    config: SuperposedConfig | None = None,
    ngram: NgramIndex | None = None,
    cancelled: Cancelled = never_cancelled,
) -> SuperposedDrafts:
    """Up to k + spare drafts (finished ones first), decoded in one pass of one token per step.

    While only one draft is alive its input is exact, so the scratch slots fed before the first
    branch hold exact KV and their tokens exact log-probs: `verify` keeps them (the trunk) and feeds
    the rest. With `exact_lead` (the default for k > 1) the greedy draft stays exact all along.
    """
    assert k >= 1
    config = config or SuperposedConfig()
    if config.exact_lead and k > 1:
        return _decode_with_exact_lead(lm, view, task, k, config, ngram, cancelled)
    prune = _prune(config)
    embed = lm.embeddings
    pool = Pool([Partial.start(task)])
    base = view.used
    trunk = [task.first_input]  # tokens of the exact slots base, base + 1, ...
    logits = view.step(input_ids=torch.tensor([task.first_input]))[-1].float()  # [V], exact
    for step in range(task.max_tokens):
        pool = select(lm, task, pool, _candidates(task, pool, logits, k, config, ngram), k, prune)
        if len(pool.finished) >= k or not pool.live or step == task.max_tokens - 1:
            break
        if cancelled():
            return SuperposedDrafts(pool.cancelled(k), None)
        if len(pool.live) == 1 and len(trunk) == view.used - base:
            trunk.append(pool.live[0].ids[-1])
        logits = view.step(inputs_embeds=_superpose(embed, pool.live, _weights(pool.live, config)))[-1].float()
    return SuperposedDrafts(pool.results(k + config.spare), Trunk(tuple(trunk), tuple(range(base, base + len(trunk)))))


def _prune(config: SuperposedConfig) -> float | None:
    return math.log(config.branch_ratio) if 0 < config.branch_ratio < 1 else None


def _decode_with_exact_lead(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    k: int,
    config: SuperposedConfig,
    ngram: NgramIndex | None,
    cancelled: Cancelled,
) -> SuperposedDrafts:
    """The greedy draft fed exactly beside ONE superposed input that carries the other k - 1 drafts.

    Each step is one forward of two tokens: the lead's own last token (a chain through its exact
    path, so the lead is exactly the greedy draft: where a monitor constrains an identifier, the lead
    spells it whole by the same lookahead, over its own path) and the weighted sum of the other
    drafts' last tokens. What the superposed token sees at each earlier depth (`_alt_history`): the
    lead's token where the drafts holding most of its weight still followed the lead there, else the
    superposed token fed there (this "vote" found the most lines on the multidraft benchmark of its
    time; the other histories measured there are in benchmarks/RESULTS.md and are gone from the code).
    The lead's non-greedy tokens are candidates too, scored exactly, so drafts branch off the greedy
    line wherever the model hesitates. With `patience`, once the greedy line has ended after s tokens
    the others get at most ceil(patience * s) more steps, however far behind they are (as beam
    search's patience); without it, they stop once they fall `branch_ratio` behind it.
    """
    prune = _prune(config)
    embed = lm.embeddings
    root, root_pos = view.used, view.next_position
    logits = view.step(input_ids=torch.tensor([task.first_input]))[-1:].float()  # [1, V], exact
    pool = Pool([Partial.start(task)])
    lead: Partial | None = pool.live[0]
    lead_path = [root]  # the lead's slots, by depth (root at depth 0)
    own_slots: dict[int, int] = {0: root}  # the superposed input's slots, by depth
    greedy_ids: tuple[int, ...] = ()  # the lead's tokens, also once it has ended
    last_step = task.max_tokens - 1
    patient = config.patience is not None
    for step in range(task.max_tokens):
        alts = [d for d in pool.live if d is not lead]
        rows = ([lead] if lead is not None else []) + alts
        cand = _rows_candidates(task, rows, logits, k, config, ngram, lead is not None)
        nxt_lead = None
        if lead is not None:
            span = _lead_span(lm, view, task, lead, logits[0], lead_path)
            if span:
                nxt_lead, greedy_ids = _extend_by_span(lm, view, task, pool, lead, span, lead_path)
                cand = _without(cand, span[0][0])
            else:
                nxt_lead, greedy_ids = _extend_greedy(lm, task, pool, lead, cand)
                cand = _without(cand, int(cand.tokens[0, 0]))
        room = k - (1 if nxt_lead is not None else 0)
        chosen = select(lm, task, Pool(rows, [], pool.finished, pool.seen), cand, room, prune, not patient)
        others = [d for d in chosen.live if nxt_lead is None or d.text != nxt_lead.text]
        pool = Pool(([nxt_lead] if nxt_lead is not None else []) + others, [], chosen.finished, chosen.seen)
        if lead is not None and nxt_lead is None and patient:  # the greedy line ended after step + 1 tokens
            last_step = min(last_step, step + math.ceil((config.patience or 0.0) * (step + 1)))
        lead = nxt_lead
        if lead is not None and len(pool.finished) >= k - 1:
            pool.live = [lead]  # the other slots are filled: only the greedy line goes on, alone
        if len(pool.finished) >= k and lead is None or not pool.live or step >= last_step:
            break
        if lead is not None and len(lead.ids) >= task.max_tokens:  # a spelled identifier used up the budget
            break
        if cancelled():
            return SuperposedDrafts(pool.cancelled(k), None)
        alts = [d for d in pool.live if d is not lead]
        used, vectors, positions, seen = view.used, [], [], []
        if lead is not None:
            vectors.append(embed(torch.tensor([lead.ids[-1]])))
            positions.append(root_pos + len(lead.ids))
            seen.append(list(lead_path))
        if alts:
            vectors.append(_superpose(embed, alts, _weights(alts, config)))
            positions.append(root_pos + len(alts[0].ids))
            seen.append(_alt_history(config, alts, greedy_ids, lead_path, own_slots))
        logits = view.step(
            inputs_embeds=torch.cat(vectors),
            positions=torch.tensor(positions),
            scratch_visible=view.sees(seen),
            logits_for=len(vectors),
        ).float()
        if lead is not None:
            lead_path.append(used)
        if alts:
            own_slots[len(alts[0].ids)] = used + len(vectors) - 1
    trunk = Trunk((task.first_input, *greedy_ids[: len(lead_path) - 1]), tuple(lead_path))
    every = [
        dataclasses.replace(d, greedy=d.tokens == greedy_ids) for d in pool.results(len(pool.finished) + len(pool.live))
    ]
    keep = k + config.spare
    drafts = [d for d in every if d.greedy][:1]  # the greedy line always, then the best others
    drafts += [d for d in every if not d.greedy][: keep - len(drafts)]
    return SuperposedDrafts(drafts, trunk)


def _alt_history(
    config: SuperposedConfig,
    alts: list[Partial],
    lead_ids: tuple[int, ...],
    lead_path: list[int],
    own_slots: dict[int, int],
) -> list[int]:
    """The scratch slots the superposed input sees, by depth (itself excluded).

    At each earlier depth there are two slots to choose from: the lead's token there (exact) and the
    superposed input fed there. A draft's own token at depth d is the lead's if it left the lead later
    (d <= its common prefix with the lead). At each depth the slot of the drafts holding most of the
    input's weight is taken, so the input's history is that of the drafts it mostly is. A depth with
    no superposed input (no draft had branched yet) is the lead's.
    """
    depth = len(alts[0].ids)  # of the drafts' last tokens, fed now
    shares = _weights(alts, config).tolist()
    common = [common_prefix(a.ids, lead_ids) for a in alts]
    slots = [lead_path[0]]
    for d in range(1, depth):
        on_lead = sum(w for w, c in zip(shares, common, strict=True) if d <= c) >= 0.5
        if d < len(lead_path) and (on_lead or d not in own_slots):
            slots.append(lead_path[d])
        elif d in own_slots:
            slots.append(own_slots[d])
    return slots


def _rows_candidates(
    task: DecodeTask,
    rows: list[Partial],
    logits: torch.Tensor,  # [1 or 2, V]: the lead's exact row first (if `has_lead`), then the superposed one
    k: int,
    config: SuperposedConfig,
    ngram: NgramIndex | None,
    has_lead: bool,
) -> Candidates:
    """Candidates of the lead (exact log-probs, no n-gram) and of the superposed drafts (mixed)."""
    if not has_lead:
        return _candidates(task, Pool(rows), logits[-1], k, config, ngram)
    lead = _candidates(task, Pool(rows[:1]), logits[0], k, dataclasses.replace(config, ngram_weight=0.0), None)
    if len(rows) == 1:
        return lead
    alts = _candidates(task, Pool(rows[1:]), logits[-1], k, config, ngram)
    return Candidates(
        torch.cat([lead.tokens, alts.tokens]),
        torch.cat([lead.scores.to(alts.scores.dtype), alts.scores]),
        torch.cat([lead.logprobs, alts.logprobs]),
        torch.cat([lead.best, alts.best]),
        list(lead.constrained) + list(alts.constrained),
    )


def _extend_greedy(
    lm: LoadedModel, task: DecodeTask, pool: Pool, lead: Partial, cand: Candidates
) -> tuple[Partial | None, tuple[int, ...]]:
    """The lead with its best allowed token (row 0, column 0), or None when it ends there (then set
    aside as finished); and the lead's tokens after this step."""
    token = int(cand.tokens[0, 0])
    if float(cand.scores[0, 0]) == float("-inf"):
        return None, lead.ids
    if token in lm.eos_ids:
        pool.finish(lead)
        return None, lead.ids
    nxt, stopped = lead.extend(
        lm, task, token, float(cand.logprobs[0, 0]), constrained=cand.constrained[0], best=float(cand.best[0])
    )
    if stopped:
        pool.finish(nxt)
        return None, nxt.ids
    return nxt, nxt.ids


def _lead_span(
    lm: LoadedModel, view: CursorView, task: DecodeTask, lead: Partial, logp_row: torch.Tensor, lead_path: list[int]
) -> list[tuple[int, float, float]]:
    """Where a monitor constrains the lead's next identifier, the identifier spelled whole, as greedy
    decoding spells it (`span_lookahead` over the lead's own path); else nothing."""
    width = 0 if lead.constraints.empty else lead.constraints.lookahead_width()
    if width < 2:
        return []
    return span_lookahead(lm, view, task, lead, torch.log_softmax(logp_row, dim=-1), width, lead_path)


def _extend_by_span(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    pool: Pool,
    lead: Partial,
    span: list[tuple[int, float, float]],
    lead_path: list[int],
) -> tuple[Partial | None, tuple[int, ...]]:
    """The lead with a spelled identifier's tokens (None when it ends inside them: set aside as finished),
    and the lead's tokens after them. The span's tokens but the last go through the lead's path now
    (its slots appended to `lead_path`); the last is fed with the next step, as any lead token."""
    for token, logprob, best in span:
        lead, stopped = lead.extend(lm, task, token, logprob, constrained=True, best=best)
        if stopped:
            pool.finish(lead)
            return None, lead.ids
    if len(span) > 1:
        n, used, depth = len(span) - 1, view.used, len(lead.ids) - len(span) + 1  # of the first fed token
        root_pos = view.prefix_len + lead_path[0]
        view.step(
            input_ids=torch.tensor([t for t, _, _ in span[:-1]]),
            positions=torch.arange(root_pos + depth, root_pos + depth + n),
            scratch_visible=view.sees([lead_path + list(range(used, used + j)) for j in range(n)]),  # a chain
        )
        lead_path.extend(range(used, used + n))
    return lead, lead.ids


def _without(cand: Candidates, token: int) -> Candidates:
    """The candidates with the lead's own next token taken out of its row (it is extended on its own)."""
    scores = cand.scores.clone()
    scores[0][cand.tokens[0] == token] = float("-inf")
    return dataclasses.replace(cand, scores=scores)


def _weights(drafts: list[Partial], config: SuperposedConfig) -> torch.Tensor:
    """[k]: the drafts' normalised probabilities (sharpened by weight_temperature < 1)."""
    return torch.softmax(torch.tensor([d.score for d in drafts]) / config.weight_temperature, dim=0)


def _superpose(embed: torch.nn.Module, drafts: list[Partial], weights: torch.Tensor) -> torch.Tensor:
    """[1, H]: the drafts' last-token embeddings, weighted."""
    vectors = embed(torch.tensor([d.ids[-1] for d in drafts]))  # [k, H]
    return (weights.to(vectors.dtype)[:, None] * vectors).sum(0, keepdim=True)


def _candidates(
    task: DecodeTask,
    pool: Pool,
    logits: torch.Tensor,  # [V], shared by every live draft
    k: int,
    config: SuperposedConfig,
    ngram: NgramIndex | None,
) -> Candidates:
    """The top-m tokens of every live draft, scored by the (tempered) LM mixed with the n-gram model."""
    vocab = logits.shape[0]
    logp = torch.log_softmax(logits, dim=-1)
    tempered = logp if config.temperature == 1.0 else torch.log_softmax(logits / config.temperature, dim=-1)
    masks = [d.mask(vocab) for d in pool.live]
    m = min(vocab, max(config.top_m, k))
    if all(mk is None for mk in masks):  # one shared row: its top-m once
        top = tempered.topk(m)
        lm_lp, cand = top.values.expand(len(masks), m), top.indices.expand(len(masks), m)
    else:
        rows = torch.stack([apply_mask(tempered, mk) for mk in masks])  # [rows, V]
        lm_lp, cand = rows.topk(m, dim=-1)  # [rows, m]
    scores = lm_lp
    if ngram is not None and k > 1 and config.ngram_weight > 0:
        weight = torch.full((len(masks), 1), config.ngram_weight, dtype=torch.float64)
        if config.ngram_by_share:  # the LM speaks for a draft in proportion to its share of the input
            weight = weight * (1.0 - _weights(pool.live, config).to(torch.float64)[:, None])
        scores = _mix(lm_lp, _ngram_logprobs(ngram, task, pool.live, cand, config), weight)
    best = logp.max().expand(len(masks))
    return Candidates(cand, scores, logp[cand], best, [mk is not None for mk in masks])


def _ngram_logprobs(
    ngram: NgramIndex, task: DecodeTask, drafts: list[Partial], cand: torch.Tensor, config: SuperposedConfig
) -> torch.Tensor:
    """[rows, m]: log P_ngram(candidate | the draft's last order-1 tokens, prefix included)."""
    n = max(0, config.ngram_order - 1)
    contexts = [(task.prefix_tail + d.ids)[-n:] if n else () for d in drafts]
    return ngram.logprobs_batch(contexts, cand)


def _mix(lm_lp: torch.Tensor, ng_lp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """log((1 - w) P_LM + w P_ngram) per row (weight [rows, 1]); masked-out tokens (-inf) stay out."""
    w = weight.clamp(0.0, 1.0)
    mixed = torch.logaddexp(lm_lp + torch.log1p(-w).to(lm_lp.dtype), ng_lp.to(lm_lp.dtype) + w.log().to(lm_lp.dtype))
    return mixed.masked_fill(torch.isinf(lm_lp), float("-inf"))
