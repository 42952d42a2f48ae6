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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from superpie.cache.cursor import CursorView
from superpie.completion.config import SuperposedConfig
from superpie.completion.constraints import apply_mask
from superpie.completion.decoding import Cancelled, DecodedDraft, DecodeTask, Partial, never_cancelled
from superpie.completion.model import LoadedModel
from superpie.completion.ngram import NgramIndex
from superpie.completion.select import Candidates, Pool, select


@dataclass(frozen=True)
class SuperposedDrafts:
    """The drafts of one superposed pass, and how much of the scratch holds exact KV."""

    drafts: list[DecodedDraft]
    exact_slots: int  # leading scratch slots fed while only one draft was alive (root included)


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
    branch hold exact KV and their tokens exact log-probs: `verify` keeps them and re-feeds the rest.
    """
    assert k >= 1
    config = config or SuperposedConfig()
    prune = math.log(config.branch_ratio) if 0 < config.branch_ratio < 1 else None
    embed = lm.model.get_input_embeddings()
    pool = Pool([Partial.start(task)])
    base = view.used
    exact = 1
    logits = view.step(input_ids=torch.tensor([task.first_input]))[-1].float()  # [V], exact
    for step in range(task.max_tokens):
        pool = select(lm, task, pool, _candidates(task, pool, logits, k, config, ngram), k, prune)
        if len(pool.finished) >= k or not pool.live or step == task.max_tokens - 1:
            break
        if cancelled():
            return SuperposedDrafts(pool.cancelled(k), 0)
        if len(pool.live) == 1 and exact == view.used - base:
            exact += 1
        logits = view.step(inputs_embeds=_superpose(embed, pool.live, _weights(pool.live, config)))[-1].float()
    return SuperposedDrafts(pool.results(k + config.spare), exact)


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
    rows = torch.stack([apply_mask(tempered, m) for m in masks])  # [rows, V]
    m = min(vocab, max(config.top_m, k))
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
