"""Exact verification: score k drafts in ONE forward over the shared cached prefix.

The drafts are merged into a token tree (a trie: drafts that start alike share their nodes) rooted
at the last prefix token. The tree goes through the cursor's scratch area in one step with explicit
rotary positions (prefix length + depth) and a tree-shaped mask: each node sees the cached prefix,
its ancestors and itself. The prefix KV is read in place, never copied per draft. The logits of a
node's parent give the exact log-prob of the node's token, as k separate forwards would. Only nodes
whose output is needed are fed (a draft's last token is not), and scratch slots that already hold
exact KV (the trunk superposed decoding fed while a single draft was alive) are kept, not re-fed.

A draft is then cut where the model's own greedy choice disagrees with it with high confidence (the
greedy token has probability >= cut_confidence and beats the draft's by >= cut_margin nats), except
at tokens a constraint chose (healing and monitors overrule the model on purpose).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from superpie.cache.cursor import CursorView
from superpie.completion.config import VerifyConfig
from superpie.completion.constraints import apply_mask
from superpie.completion.decoding import DecodedDraft, DecodeTask, Partial
from superpie.completion.model import LoadedModel


@dataclass
class DraftTree:
    """The scratch tokens that score a set of drafts: a trie of their prefixes.

    Token i of a draft sits at depth i + 1 (the root, the last prefix token, at depth 0). Parent -1
    means the node hangs directly under the kept scratch slots.
    """

    tokens: list[int] = field(default_factory=list)  # per node
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    sources: list[list[int]] = field(default_factory=list)  # per draft, per scored token: the node scoring it

    @classmethod
    def of(cls, root: int | None, drafts: Sequence[Sequence[int]], first: int = 0) -> DraftTree:
        """Nodes that score tokens first.. of every draft; root None when first > 0 (kept in scratch)."""
        assert (root is None) == (first > 0)
        tree = cls()
        top = -1 if root is None else tree._node(root, -1, 0)
        children: dict[tuple[int, int], int] = {}
        for ids in drafts:
            node, sources = top, [top] if first == 0 and ids else []
            for i in range(max(first - 1, 0), len(ids) - 1):
                key = (node, int(ids[i]))
                if key not in children:
                    children[key] = tree._node(int(ids[i]), node, i + 1)
                node = children[key]
                sources.append(node)
            tree.sources.append(sources)
        return tree

    def _node(self, token: int, parent: int, depth: int) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        self.depths.append(depth)
        return len(self.tokens) - 1

    def visible(self, kept: int) -> torch.Tensor:
        """Bool [n, kept + n]: every node sees the kept slots, its ancestors and itself."""
        n = len(self.tokens)
        vis = torch.zeros((n, kept + n), dtype=torch.bool)
        vis[:, :kept] = True
        for i, p in enumerate(self.parents):
            if p >= 0:
                vis[i] = vis[p]  # parents come before children
            vis[i, kept + i] = True
        return vis


def tree_logprobs(view: CursorView, tree: DraftTree, kept: int = 0) -> torch.Tensor:
    """Log-probs [n, V] of the token after each node, from one tree-masked forward.

    The scratch is rewound to its first `kept` slots; the root (depth 0) sits at scratch slot 0.
    """
    view.rewind(kept)
    if not tree.tokens:
        return torch.zeros((0, 0))
    positions = torch.tensor(tree.depths) + view.prefix_len
    logits = view.step(
        input_ids=torch.tensor(tree.tokens),
        positions=positions,
        scratch_visible=tree.visible(kept),
        logits_for=len(tree.tokens),
    )
    return torch.log_softmax(logits.float(), dim=-1)


def verify(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    drafts: Sequence[DecodedDraft],
    config: VerifyConfig | None = None,
    exact_slots: int = 0,
) -> list[DecodedDraft]:
    """The drafts with exact per-token log-probs, each cut where the model confidently disagrees.

    `exact_slots` > 0: scratch slots 0..exact_slots-1 hold exact KV of the root and of tokens every
    draft shares, and each draft's first exact_slots log-probs (and best log-probs) are exact already.
    """
    config = config or VerifyConfig()
    if not drafts:
        return []
    first = exact_slots
    tree = DraftTree.of(task.first_input if first == 0 else None, [d.ids for d in drafts], first)
    logp = tree_logprobs(view, tree, kept=exact_slots)
    out = []
    for draft, sources in zip(drafts, tree.sources, strict=True):
        exact, best = list(draft.token_logprobs[:first]), list(draft.best_logprobs[:first])
        if sources:
            rows = logp[sources]  # [n, V]: the distribution before each scored token
            ids = torch.tensor(draft.ids[first:], dtype=torch.long)
            exact += rows.gather(1, ids[:, None])[:, 0].tolist()
            best += rows.max(dim=-1).values.tolist()
        cut = _cut_at(exact, best, draft.constrained, config)
        out.append(_rescored(lm, task, draft, exact, best, cut))
    if config.repair:
        out = _repair_best(lm, view, task, tree, logp, drafts, out, first)
    return out


def _repair_best(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    tree: DraftTree,
    logp: torch.Tensor,
    drafts: Sequence[DecodedDraft],
    out: list[DecodedDraft],
    kept: int,
) -> list[DecodedDraft]:
    """If the best draft (mean exact log-prob) was cut, finish it greedily from its exact prefix.

    Its tokens' KV sits in the scratch already (kept slots + tree nodes), so this is a chain decode
    that starts at the cut with the model's own token; it costs a step per new token, and only when
    the draft a user would see first is a broken line.
    """
    i = max(range(len(out)), key=lambda j: out[j].mean_logprob if out[j].ids else float("-inf"))
    cut = len(out[i].ids)
    if cut == len(drafts[i].ids) or cut < kept or not tree.sources[i]:
        return out
    node = tree.sources[i][cut - kept]  # its output is the distribution before the cut token
    path = list(range(kept))
    at = node
    while at >= 0:
        path.append(kept + at)
        at = tree.parents[at]
    fixed = _continue(lm, view, task, out[i], logp[node], sorted(path))
    return out[:i] + [fixed] + out[i + 1 :]


def _continue(
    lm: LoadedModel, view: CursorView, task: DecodeTask, draft: DecodedDraft, logp: torch.Tensor, path: list[int]
) -> DecodedDraft:
    """Greedy tokens after `draft` (its KV at scratch slots `path`), until EOS, the stop rule or the budget."""
    partial = Partial.start(task)
    flags = draft.constrained + (False,) * len(draft.ids)
    for j, token in enumerate(draft.ids):
        lp, best = draft.token_logprobs[j], draft.best_logprobs[j]
        partial, _ = partial.extend(lm, task, token, lp, constrained=flags[j], best=best)
    while len(partial.ids) < task.max_tokens:
        mask = partial.mask(logp.shape[0])
        token = int(apply_mask(logp, mask).argmax())
        if token in lm.eos_ids:
            return dataclasses.replace(partial.done(True), verified=True)
        partial, stopped = partial.extend(
            lm, task, token, float(logp[token]), constrained=mask is not None, best=float(logp.max())
        )
        if stopped or len(partial.ids) >= task.max_tokens:
            return dataclasses.replace(partial.done(stopped), verified=True)
        visible = torch.zeros((1, view.used + 1), dtype=torch.bool)
        visible[0, path + [view.used]] = True
        path.append(view.used)
        position = torch.tensor([view.prefix_len + len(partial.ids)])  # token i sits at depth i + 1
        logits = view.step(input_ids=torch.tensor([token]), positions=position, scratch_visible=visible)[-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
    return dataclasses.replace(partial.done(False), verified=True)


def _cut_at(exact: list[float], best: list[float], constrained: Sequence[bool], config: VerifyConfig) -> int | None:
    """First token index where the model's greedy choice confidently beats the draft's token."""
    floor = math.log(config.cut_confidence) if config.cut_confidence > 0 else float("-inf")
    for i, (lp, top) in enumerate(zip(exact, best, strict=True)):
        if top >= floor and top - lp >= config.cut_margin and not (i < len(constrained) and constrained[i]):
            return i
    return None


def _rescored(
    lm: LoadedModel, task: DecodeTask, draft: DecodedDraft, exact: list[float], best: list[float], cut: int | None
) -> DecodedDraft:
    if cut is None:
        return dataclasses.replace(
            draft, logprob=sum(exact), token_logprobs=tuple(exact), best_logprobs=tuple(best), verified=True
        )
    full = lm.decode(list(draft.ids[:cut]))
    return DecodedDraft(
        draft.ids[:cut],
        full[len(task.typed) :] if full.startswith(task.typed) else full,
        sum(exact[:cut]),
        False,
        draft.cancelled,
        tuple(exact[:cut]),
        draft.token_ends[:cut],
        draft.constrained[:cut],
        tuple(best[:cut]),
        verified=True,
    )
