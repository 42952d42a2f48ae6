"""Choosing the next drafts from (draft, token) candidates: shared by superposed and beam decoding.

Candidates are ranked by total score; the best k that continue survive, and those that end there
(EOS or the stop rule) are set aside as finished if they rank above the last survivor. Drafts whose
text equals one already kept are skipped, so the slots hold different texts. With `prune` (a log
ratio, e.g. log 0.02), a candidate survives only if its total is within that much of the best
candidate's, and a live draft only while it is within that much of the best finished draft: drafts
branch where the model is unsure, not at every step, and decoding ends soon after the best draft.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from superpie.completion.decoding.task import DecodeTask, Partial
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel


@dataclass
class Pool:
    """The drafts of one decode: live ones (still growing) and finished ones (set aside)."""

    live: list[Partial]
    parents: list[int] = field(default_factory=list)  # per live draft, the row it grew from
    finished: list[Partial] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # texts of every finished draft

    def finish(self, draft: Partial) -> None:
        """Set a draft aside (blank or already-seen texts are dropped)."""
        if draft.text.strip() and draft.text not in self.seen:
            self.seen.add(draft.text)
            self.finished.append(draft)

    @property
    def best_finished(self) -> float:
        """Total score of the best finished draft (-inf before any)."""
        return max((d.score for d in self.finished), default=float("-inf"))

    def results(self, k: int) -> list[Draft]:
        """Up to k drafts, finished ones first, each group best mean score first."""
        done = [d.done(True) for d in sorted(self.finished, key=_mean_score, reverse=True)]
        live = sorted((d for d in self.live if d.text.strip() and d.text not in self.seen), key=_mean_score)
        return (done + [d.done(False) for d in reversed(live)])[:k]

    def cancelled(self, k: int) -> list[Draft]:
        """What there is when a request is cancelled mid-decode (every draft marked cancelled)."""
        return [dataclasses.replace(d, finished=False, cancelled=True) for d in self.results(k)] or [
            Draft("", logprob=0.0, finished=False, cancelled=True)
        ]


def _mean_score(d: Partial) -> float:
    return d.score / max(1, len(d.ids))


@dataclass(frozen=True)
class Candidates:
    """(draft row, token) candidates of one step, each [rows, m]."""

    tokens: torch.Tensor  # token ids
    scores: torch.Tensor  # score increments (-inf: not allowed)
    logprobs: torch.Tensor  # the model's log-probs, recorded per token
    best: torch.Tensor  # [rows]: the model's top log-prob per row
    constrained: Sequence[bool]  # per row: a constraint mask was active


def select(
    lm: LoadedModel,
    task: DecodeTask,
    pool: Pool,
    cand: Candidates,
    k: int,
    prune: float | None = None,
    prune_live: bool = True,
) -> Pool:
    """The next pool: the k best continuing candidates, finished ones set aside.

    `prune_live` False keeps live drafts however far they fall behind the best finished one (the
    caller bounds how long they go on).
    """
    rows = pool.live
    total = cand.scores + torch.tensor([d.score for d in rows], dtype=cand.scores.dtype)[:, None]
    order = torch.argsort(total.flatten(), descending=True).tolist()
    m = cand.tokens.shape[1]
    floor = float("-inf") if prune is None else float(total.flatten()[order[0]]) + prune
    nxt = Pool([], [], pool.finished, pool.seen)
    texts: set[str] = set()
    for flat in order:
        r, j = divmod(flat, m)
        if len(nxt.live) >= k or float(total[r, j]) < floor or float(cand.scores[r, j]) == float("-inf"):
            break
        token = int(cand.tokens[r, j])
        if token in lm.eos_ids:
            nxt.finish(rows[r])
            continue
        draft, stopped = rows[r].extend(
            lm,
            task,
            token,
            float(cand.logprobs[r, j]),
            constrained=cand.constrained[r],
            score=float(cand.scores[r, j]),
            best=float(cand.best[r]),
        )
        if stopped:
            nxt.finish(draft)
        elif draft.text not in texts:
            texts.add(draft.text)
            nxt.live.append(draft)
            nxt.parents.append(r)
    if prune is not None and prune_live and nxt.finished:
        keep = [i for i, d in enumerate(nxt.live) if d.score >= nxt.best_finished + prune]
        nxt.live, nxt.parents = [nxt.live[i] for i in keep], [nxt.parents[i] for i in keep]
    return nxt
