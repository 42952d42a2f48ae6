"""Speculative greedy decoding: several tokens per forward, the output of plain greedy decoding.

Each step feeds the pending token together with a small tree of proposed tokens behind it
(`proposals`: the document, the workspace n-grams, recycled candidates) in one forward, with the
tree mask of `CursorView.sees`. Walking down the tree, each row gives the distribution after its
node; greedy decoding's choice there (under the draft's constraint mask, as in `chain_decode`) is
taken, and the walk goes on into the child holding that token. The first choice no child holds
becomes the next pending token; the scratch keeps the KV of every node whose row decided a token
and forgets the rest (`CursorView.rewind`, or a path mask where the tree's layout leaves gaps).
Where nothing is proposed a step is one row: plain greedy decoding.

Exactness. A forward of several rows does not, in general, compute a row bit for bit as a one-row
forward does (the matrix kernels sum in another order): its logits differ by float noise, and so does
the KV of the tokens it feeds, which every later step reads. Where the runner does compute a few rows
exactly so (`LoadedModel.exact_rows`: `auto` on a CPU with bf16 units), the tree is a chain of at most
that many rows (`tree_limit`; a larger tree from any source is cut to its leading chain), whose rows are
then plain decoding's own: no guard, no replay.
Elsewhere such noise changes a greedy choice only where the top two tokens are closer than the noise.
So every choice made from a row that plain decoding would not have computed identically must beat the
runner-up by `guard` (far above the measured noise); a closer call is decided again on exact KV: the
chain is re-fed as plain decoding fed it, one call per token (`_Chain.replay`), and the position takes
a plain step. The identifier lookahead (`span_lookahead`) compares whole spellings, so it only runs on
exact KV, after the same replay.
Healing and the monitors mask every row as they mask plain steps: a draft's constraints advance
only through tokens it takes, so the masks are the ones plain decoding applies. Over stale KV, every
row's choice is held to `task.stale_margin` as plain decoding holds it (`check_margin`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from superpie.cache.cursor import CursorView
from superpie.completion.constraints.base import apply_mask
from superpie.completion.decoding.lookahead import commit_span, span_lookahead
from superpie.completion.decoding.proposals import ProposalTree, TreeLimit
from superpie.completion.decoding.task import (
    Cancelled,
    DecodeTask,
    Partial,
    check_margin,
    never_cancelled,
    top_two_gap,
)
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel

# A choice from a row computed otherwise than plain decoding would must beat the runner-up by this
# many nats, else it is decided on exact KV. Set far above the difference between a one-row and a
# many-row forward's log-probs (benchmarks/RESULTS.md, speculative: measured per activation precision);
# bf16 activations round far more coarsely than fp32.
GUARD_FP32 = 0.01
GUARD_REDUCED = 0.5
_EMPTY = ProposalTree()


class Proposals(Protocol):
    """Where the proposal trees come from, and what it learns from each verification."""

    def propose(self, history: Sequence[int], room: int) -> ProposalTree:
        """At most `room` tokens to follow `history` (the prefix, the draft, the pending token last)."""
        ...

    def learn(self, tree: ProposalTree, decisions: Sequence[tuple[int, int]]) -> None:
        """Greedy decoding's choices at the tree's rows: (node, token), node -1 for the root's row."""
        ...

    def observe(self, tokens: Sequence[int], logp: torch.Tensor, seconds: float) -> None:
        """The rows ([n, V] log-probs) a forward gave after each of the tokens it fed, and its time."""
        ...


@dataclass
class SpeculationStats:
    """What speculation did in one request (or summed over several)."""

    forwards: int = 0  # forwards run: verifications, plain steps, replays, identifier feeds
    plain_forwards: int = 0  # forwards plain greedy decoding would have run for the same drafts
    proposed: int = 0  # proposed tokens fed for verification
    accepted: int = 0  # ... that greedy decoding took
    replays: int = 0  # times the chain was re-fed plainly to decide a close call or an identifier exactly
    replayed: int = 0  # forwards those replays cost (included in `forwards`)

    @property
    def forwards_saved(self) -> int:
        """Forwards plain decoding would have needed beyond those run (negative: speculation cost more)."""
        return self.plain_forwards - self.forwards

    @property
    def acceptance(self) -> float:
        """Share of proposed tokens taken."""
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Positions decided per forward run (plain decoding: 1)."""
        return self.plain_forwards / self.forwards if self.forwards else 0.0

    def add(self, other: SpeculationStats) -> None:
        """Sum another record into this one."""
        for name in ("forwards", "plain_forwards", "proposed", "accepted", "replays", "replayed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def counts(self) -> dict[str, int]:
        """The counts alone (they add up over requests: the server's stats sum them)."""
        names = ("forwards", "plain_forwards", "proposed", "accepted", "replays", "replayed")
        return {**{name: getattr(self, name) for name in names}, "forwards_saved": self.forwards_saved}

    def to_json(self) -> dict[str, float]:
        """The counts and the derived rates, for stats and benchmarks."""
        return {
            "forwards": self.forwards,
            "plain_forwards": self.plain_forwards,
            "forwards_saved": self.forwards_saved,
            "proposed": self.proposed,
            "accepted": self.accepted,
            "acceptance": round(self.acceptance, 4),
            "tokens_per_forward": round(self.tokens_per_forward, 4),
            "replays": self.replays,
            "replayed": self.replayed,
        }


@dataclass
class Speculator:
    """One request's speculation: its proposal source and its statistics."""

    proposals: Proposals
    stats: SpeculationStats = field(default_factory=SpeculationStats)


def guard_for(lm: LoadedModel) -> float:
    """The margin a choice from a non-plain row needs, for the model's activation precision."""
    return GUARD_REDUCED if lm.rounds_activations else GUARD_FP32


def tree_limit(lm: LoadedModel) -> TreeLimit:
    """The trees worth proposing for `lm`: where decoding rounds activations, only chains whose rows are exact
    (`exact_rows`; a close call from any other row is replayed one token at a time, which cost more than the
    speculation saved); elsewhere any tree."""
    if lm.rounds_activations:
        return TreeLimit(nodes=lm.exact_rows - 1, chain=True)
    return TreeLimit()


class _Chain:
    """The draft's tokens in the view's scratch: what plain greedy decoding fed, call by call, where it
    sits now, and how much of it holds the KV plain decoding would have written (bit for bit)."""

    def __init__(self, view: CursorView, stats: SpeculationStats, exact_rows: int) -> None:
        self.view = view
        self.stats = stats
        self.exact_rows = exact_rows  # a chain forward of up to this many rows computes each as a plain step
        self.start = view.used  # scratch slots before the draft: seen by every step, as in a chain
        self.path = list(range(view.used))  # scratch slots the next token sees
        self.groups: list[tuple[int, ...]] = []  # the tokens plain decoding fed per call
        self.exact = 0  # leading groups whose KV is plain decoding's (they sit contiguously from `start`)

    @property
    def drifted(self) -> bool:
        """Some KV in the chain came from a forward plain decoding would not have run."""
        return self.exact < len(self.groups)

    @property
    def packed(self) -> bool:
        """The chain fills the scratch: a plain chain step sees exactly the path."""
        return len(self.path) == self.view.used

    def forward(self, token: int, tree: ProposalTree) -> tuple[torch.Tensor, bool]:
        """Feed the pending token and the tree behind it; log-probs [1 + len(tree), V], and whether every
        row is exactly plain decoding's (one row, or a chain of rows the runner computes as steps)."""
        view, n = self.view, 1 + len(tree)
        rows_exact = n == 1 or (tree.chain and n <= self.exact_rows)
        exact = rows_exact and self.packed and not self.drifted  # before the step: it moves `view.used`
        self.stats.forwards += 1
        self.stats.proposed += len(tree)
        ids = torch.tensor([token, *tree.tokens])
        if self.packed and tree.chain:  # positions and mask of a plain chain
            logits = view.step(input_ids=ids, logits_for=n)
        else:
            used, pos = view.used, view.prefix_len + len(self.path)
            seen = [self.path] + [self.path + [used] + [used + 1 + a for a in tree.ancestors(i)] for i in range(n - 1)]
            positions = [pos] + [pos + tree.depth(i) for i in range(n - 1)]
            logits = view.step(
                input_ids=ids, positions=torch.tensor(positions), scratch_visible=view.sees(seen), logits_for=n
            )
        return torch.log_softmax(logits.float(), dim=-1), exact

    def keep(self, base: int, fed: Sequence[int], kept: Sequence[int], exact: bool) -> None:
        """After a forward that wrote `fed` at slots base..: keep the KV of the fed positions `kept`
        (0: the pending token, 1 + i: tree node i), each one token plain decoding feeds alone."""
        slots = [base + k for k in kept]
        if slots == list(range(base, base + len(slots))) and len(self.path) == base:
            self.view.rewind(base + len(slots))
        elif slots:
            self.view.rewind(max(slots) + 1)
        else:
            self.view.rewind(base)
        self.path += slots
        self.groups += [(fed[k],) for k in kept]
        if exact and self.exact == len(self.groups) - len(kept):
            self.exact = len(self.groups)

    def feed(self, tokens: Sequence[int]) -> None:
        """Feed tokens as one chain call, as plain decoding feeds a spelled identifier (on exact KV only)."""
        assert not self.drifted and self.packed, (self.exact, self.groups, self.path, self.view.used)
        self.view.step(input_ids=torch.tensor(list(tokens)))
        self.stats.forwards += 1
        self.stats.plain_forwards += 1
        self.path = list(range(self.view.used))
        self.groups.append(tuple(tokens))
        self.exact = len(self.groups)

    def replay(self) -> None:
        """Re-feed the chain from the first drifted group, one plain call per group: exact KV again."""
        if not self.drifted and self.packed:
            return
        slot = self.start + sum(len(g) for g in self.groups[: self.exact])
        self.view.rewind(slot)
        for group in self.groups[self.exact :]:
            self.view.step(input_ids=torch.tensor(group))
            self.stats.forwards += 1
            self.stats.replayed += 1
        self.stats.replays += 1
        self.path = list(range(self.view.used))
        self.exact = len(self.groups)


def speculative_decode(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    speculator: Speculator,
    cancelled: Cancelled = never_cancelled,
) -> Draft:
    """The greedy draft of `task` (as `chain_decode` at temperature 0 decodes it), several tokens per forward
    where the proposals are right."""
    proposals, stats = speculator.proposals, speculator.stats
    chain = _Chain(view, stats, lm.exact_rows)
    guard, limit = guard_for(lm), tree_limit(lm)
    prefix = list(view.doc.ids[: view.prefix_len]) + [task.first_input]
    draft = Partial.start(task)
    token = task.first_input
    exact_next = False  # the next position must be decided from an exact plain step
    while len(draft.ids) < task.max_tokens:
        if cancelled():
            return draft.done(False, cancelled=True)
        width = 0 if draft.constraints.empty else draft.constraints.lookahead_width()
        tree = _EMPTY
        if width > 1 or exact_next:
            chain.replay()
        elif task.max_tokens - len(draft.ids) > 1:
            tree = proposals.propose(prefix + list(draft.ids), task.max_tokens - len(draft.ids) - 1)
            if limit.chain:  # whatever the source proposes, only rows computed as plain steps
                tree = tree.leading_chain(limit.nodes)
        exact_next = False
        base = view.used
        t0 = time.perf_counter()
        logp, exact = chain.forward(token, tree)
        proposals.observe([token, *tree.tokens], logp, time.perf_counter() - t0)
        if width > 1:  # a monitored identifier, spelled whole by the lookahead, as `chain_decode` spells it
            chain.keep(base, [token], [0], exact)
            if task.stale_margin > 0:
                check_margin(apply_mask(logp[0], draft.mask(logp.shape[-1])), task.stale_margin, len(draft.ids))
            span = span_lookahead(lm, view, task, draft, logp[0], width)
            if span:
                stats.plain_forwards += 1
                draft, stopped = commit_span(lm, task, draft, span, chain.feed)
                if stopped:
                    return draft.done(True)
                token = span[-1][0]
                continue
            walk = _walk(lm, task, draft, logp, tree, 0.0)
        else:
            walk = _walk(lm, task, draft, logp, tree, 0.0 if exact else guard)
            chain.keep(base, [token, *tree.tokens], walk.kept, exact)
        proposals.learn(tree, walk.decisions)
        stats.plain_forwards += len(walk.decisions)
        stats.accepted += walk.accepted
        draft = walk.draft
        if walk.finished:
            return draft.done(True)
        if walk.pending is not None:
            token = walk.pending
        exact_next = walk.unsure
    return draft.done(False)


@dataclass
class _Walk:
    """Where greedy decoding went through one verified tree."""

    draft: Partial
    decisions: list[tuple[int, int]]  # (node, token chosen at its row); node -1: the root's row
    kept: list[int]  # fed positions whose rows decided a token (0: the pending token, 1 + i: node i)
    pending: int | None  # the next token to feed (None: unchanged)
    accepted: int = 0  # proposed tokens taken
    finished: bool = False  # EOS or the stop rule
    unsure: bool = False  # stopped at a row that must be decided on exact KV (a close call, an identifier)


def _walk(
    lm: LoadedModel, task: DecodeTask, draft: Partial, logp: torch.Tensor, tree: ProposalTree, guard: float
) -> _Walk:
    """Decide positions down the tree, from row 0, as greedy decoding would; stop at the first choice the
    tree does not hold, at a close call (`guard`), at a monitored identifier, EOS, the stop rule or the budget."""
    decisions: list[tuple[int, int]] = []
    kept: list[int] = []
    node, pending, accepted = -1, None, 0
    vocab = logp.shape[-1]
    while len(draft.ids) < task.max_tokens:
        row = logp[node + 1]
        if decisions and not draft.constraints.empty and draft.constraints.lookahead_width() > 1:
            return _Walk(draft, decisions, kept, pending, accepted, unsure=True)
        mask = draft.mask(vocab)
        masked = apply_mask(row, mask)
        if (guard > 0 or task.stale_margin > 0) and vocab > 1:
            token, gap = top_two_gap(masked)
            check_margin(masked, task.stale_margin, len(draft.ids), gap)
            if guard > 0 and not gap >= guard:  # a close call, a tie, or nothing allowed (nan): plain decoding decides
                return _Walk(draft, decisions, kept, pending, accepted, unsure=True)
        else:
            token = int(masked.argmax())
        decisions.append((node, token))
        kept.append(node + 1)
        if token in lm.eos_ids:
            return _Walk(draft, decisions, kept, None, accepted, finished=True)
        best = float(row.max())
        draft, stopped = draft.extend(lm, task, token, float(row[token]), constrained=mask is not None, best=best)
        if stopped:
            return _Walk(draft, decisions, kept, None, accepted, finished=True)
        pending = token
        child = tree.child(node, token)
        if child is None:
            break
        node, accepted = child, accepted + 1
    return _Walk(draft, decisions, kept, pending, accepted)
