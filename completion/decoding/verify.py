"""Exact verification: score k drafts in ONE forward over the shared cached prefix.

The drafts are merged into a token tree (a trie: drafts that start alike share their nodes) rooted
at the last prefix token. The tree goes through the cursor's scratch area in one step with explicit
rotary positions (prefix length + depth) and a tree-shaped mask: each node sees the cached prefix,
its ancestors and itself. The prefix KV is read in place, never copied per draft. The logits of a
node's parent give the exact log-prob of the node's token, as k separate forwards would. Only nodes
whose output is needed are fed (a draft's last token only when the draft will be continued), and
scratch slots that already hold exact KV (a `Trunk`: superposed decoding's exact greedy lead, or
the stretch it fed while a single draft was alive) are kept, not re-fed: a draft hangs its nodes
off the trunk where it leaves it.

A draft is then cut where the model's own greedy choice disagrees with it with high confidence (the
greedy token has probability >= cut_confidence and beats the draft's by >= cut_margin nats), except
at tokens a constraint chose (healing and monitors overrule the model on purpose). Repair then
finishes cut (and unfinished) drafts greedily from their exact prefixes, side by side.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from superpie.cache.cursor import CursorView
from superpie.cache.diff import common_prefix
from superpie.completion.config import VerifyConfig
from superpie.completion.constraints.base import apply_mask
from superpie.completion.decoding.task import DecodeTask, Partial
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel


@dataclass(frozen=True)
class Trunk:
    """Scratch slots that already hold exact KV of one draft's first tokens, the root first.

    Decoding leaves one behind (the exact lead of superposed decoding, or the stretch decoded while a
    single draft was alive). A draft that starts like it hangs its tree nodes off it: its tokens up to
    and including the first one that leaves the trunk were scored exactly during decoding, so only
    the tokens after that need the tree.
    """

    tokens: tuple[int, ...]  # depth 0 (the root: the last prefix token), then the draft's tokens
    slots: tuple[int, ...]  # the scratch slot of each

    def shared(self, ids: Sequence[int]) -> int:
        """How many leading tokens of a draft lie on the trunk."""
        return common_prefix(ids, self.tokens[1:])


@dataclass
class DraftTree:
    """The scratch tokens that score a set of drafts: a trie of their prefixes, off a trunk or a root.

    Token i of a draft sits at depth i + 1 (the root, the last prefix token, at depth 0). Parent -1
    means the node hangs off the trunk at depth `anchors[node]` (or is the root when there is none).
    """

    tokens: list[int] = field(default_factory=list)  # per node
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    anchors: list[int] = field(default_factory=list)  # per node: the trunk depth its subtree hangs off
    sources: list[list[int]] = field(default_factory=list)  # per draft, per scored token: the node scoring it
    exact: list[int] = field(default_factory=list)  # per draft: leading tokens scored during decoding
    tails: list[int] = field(default_factory=list)  # per draft: the node holding its last token (-1: not fed)

    @classmethod
    def of(
        cls,
        drafts: Sequence[Sequence[int]],
        root: int | None = None,
        trunk: Trunk | None = None,
        feed_last: Sequence[bool] = (),
    ) -> DraftTree:
        """Nodes that score every draft token not scored exactly already.

        A draft's last token is fed only where `feed_last` says so (a draft to be continued: the
        node's output is the distribution after it); elsewhere it is scored but never fed.
        """
        assert (root is None) != (trunk is None)
        tree = cls()
        children: dict[tuple[int, int, int], int] = {}
        top = tree._node(root, -1, 0, -1) if root is not None else -1
        for d, ids in enumerate(drafts):
            if trunk is None:
                node, anchor, first, sources = top, -1, 0, [top] if ids else []
            else:
                anchor = trunk.shared(ids)
                node, first, sources = -1, min(anchor + 1, len(ids)), []
            last = len(ids) - 1
            fed = last + 1 if d < len(feed_last) and feed_last[d] and last >= anchor else last
            tail = -1
            for i in range(max(anchor, 0), fed):  # token `anchor` is the first off the trunk
                key = (anchor, node, int(ids[i]))
                if key not in children:
                    children[key] = tree._node(int(ids[i]), node, i + 1, anchor)
                node = children[key]
                if i < last:
                    sources.append(node)
                else:
                    tail = node
            tree.sources.append(sources)
            tree.exact.append(first)
            tree.tails.append(tail)
        return tree

    def _node(self, token: int, parent: int, depth: int, anchor: int) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        self.depths.append(depth)
        self.anchors.append(anchor)
        return len(self.tokens) - 1

    def path(self, node: int, base: int, trunk: Trunk | None) -> list[int]:
        """Scratch slots a node sees (itself included) when the tree sits at slots base.."""
        slots = [] if trunk is None else list(trunk.slots[: self.anchors[node] + 1])
        at = node
        while at >= 0:
            slots.append(base + at)
            at = self.parents[at]
        return sorted(slots)

    def visible(self, base: int, trunk: Trunk | None = None) -> torch.Tensor:
        """Bool [n, base + n]: every node sees its trunk slots, its ancestors and itself."""
        n = len(self.tokens)
        vis = torch.zeros((n, base + n), dtype=torch.bool)
        for i in range(n):
            vis[i, self.path(i, base, trunk)] = True
        return vis


def tree_logprobs(view: CursorView, tree: DraftTree, trunk: Trunk | None = None) -> torch.Tensor:
    """Log-probs [n, V] of the token after each node, from one tree-masked forward.

    Without a trunk the scratch is rewound first and the root sits at slot 0; with one, the tree goes
    behind what the scratch holds (trunk slots must stay).
    """
    if trunk is None:
        view.rewind(0)
    if not tree.tokens:
        return torch.zeros((0, 0))
    positions = torch.tensor(tree.depths) + view.prefix_len
    logits = view.step(
        input_ids=torch.tensor(tree.tokens),
        positions=positions,
        scratch_visible=tree.visible(view.used, trunk),
        logits_for=len(tree.tokens),
    )
    return torch.log_softmax(logits.float(), dim=-1)


def verify(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    drafts: Sequence[Draft],
    config: VerifyConfig | None = None,
    trunk: Trunk | None = None,
) -> list[Draft]:
    """The drafts with exact per-token log-probs, each cut where the model confidently disagrees.

    `trunk`: scratch slots holding exact KV of a draft that decoding fed exactly (see `Trunk`); a
    draft's log-probs (and best log-probs) up to the first token off the trunk are taken as exact.
    """
    config = config or VerifyConfig()
    if not drafts:
        return []
    if trunk is not None and len(trunk.tokens) == 0:
        trunk = None
    # drafts decoding left unfinished get their last token fed too, so repair can continue them
    going = [config.repair == "all" and not d.finished and 0 < len(d.tokens) < task.max_tokens for d in drafts]
    tree = DraftTree.of([d.tokens for d in drafts], task.first_input if trunk is None else None, trunk, going)
    base = 0 if trunk is None else view.used
    logp = tree_logprobs(view, tree, trunk)
    out = []
    for draft, sources, first in zip(drafts, tree.sources, tree.exact, strict=True):
        exact, best = list(draft.token_logprobs[:first]), list(draft.best_logprobs[:first])
        if sources:
            rows = logp[sources]  # [n, V]: the distribution before each scored token
            ids = torch.tensor(draft.tokens[first:], dtype=torch.long)
            exact += rows.gather(1, ids[:, None])[:, 0].tolist()
            best += rows.max(dim=-1).values.tolist()
        cut = _cut_at(exact, best, draft.token_constrained, config)
        out.append(_rescored(lm, task, draft, exact, best, cut))
    if config.repair != "off":
        out = _repair(lm, view, task, tree, logp, drafts, out, base, trunk, config)
    return out


def _repair(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    tree: DraftTree,
    logp: torch.Tensor,
    drafts: Sequence[Draft],
    out: list[Draft],
    base: int,
    trunk: Trunk | None,
    config: VerifyConfig,
) -> list[Draft]:
    """Finish drafts greedily from their exact prefixes: the best one if cut ("best"), or every cut or
    unfinished one ("all"), each by at most `config.repair_tokens` tokens.

    A cut draft's kept tokens have their KV in the scratch already (trunk slots + tree nodes), and the
    node before the cut holds the model's distribution there; an unfinished draft's last token was fed
    as a tree node. So the drafts continue side by side, one forward of one token per draft per step,
    each seeing only its own path (as beam rows do). Drafts that would continue from the same node
    would continue alike, so that node is continued once.
    """
    if config.repair == "best":
        best = max(range(len(out)), key=lambda j: out[j].mean_logprob if out[j].tokens else float("-inf"))
        candidates = [best]
    else:
        candidates = list(range(len(out)))
    rows: list[_Row] = []
    nodes: dict[int, int] = {}  # node continued -> the draft continuing it
    same: dict[int, int] = {}  # draft -> the draft whose continuation it shares
    for i in candidates:
        cut, first = len(out[i].tokens), tree.exact[i]
        if cut < len(drafts[i].tokens) and cut >= first and tree.sources[i]:
            node = tree.sources[i][cut - first]  # its output is the distribution before the cut token
        elif cut == len(drafts[i].tokens) and tree.tails[i] >= 0:
            node = tree.tails[i]  # an unfinished draft: its output is the distribution after it
        else:
            continue
        if node in nodes:
            same[i] = nodes[node]
            continue
        nodes[node] = i
        rows.append(_Row(i, _partial_of(lm, task, out[i]), logp[node], tree.path(node, base, trunk)))
    if not rows:
        return out
    fixed = dict(_continue_rows(lm, view, task, rows, config.repair_tokens))
    fixed.update({i: fixed[j] for i, j in same.items()})
    return [fixed.get(i, d) for i, d in enumerate(out)]


@dataclass
class _Row:
    """One cut draft being finished: its partial, the distribution after it, its visible scratch slots."""

    draft: int
    partial: Partial
    logp: torch.Tensor
    path: list[int]


def _partial_of(lm: LoadedModel, task: DecodeTask, draft: Draft) -> Partial:
    """A `Partial` holding a decoded draft's tokens (constraints advanced through them)."""
    partial = Partial.start(task)
    flags = draft.token_constrained + (False,) * len(draft.tokens)
    for j, token in enumerate(draft.tokens):
        lp, best = draft.token_logprobs[j], draft.best_logprobs[j]
        partial, _ = partial.extend(lm, task, token, lp, constrained=flags[j], best=best)
    return partial


def _continue_rows(
    lm: LoadedModel, view: CursorView, task: DecodeTask, rows: list[_Row], max_new: int | None = None
) -> list[tuple[int, Draft]]:
    """Greedy tokens after each row's draft until EOS, the stop rule, the budget or `max_new` new tokens;
    one forward per step."""
    done: list[tuple[int, Draft]] = []
    limit = {row.draft: len(row.partial.ids) + (max_new if max_new is not None else task.max_tokens) for row in rows}
    while rows:
        going = []
        for row in rows:
            mask = row.partial.mask(row.logp.shape[0])
            token = int(apply_mask(row.logp, mask).argmax())
            if token in lm.eos_ids:
                done.append((row.draft, dataclasses.replace(row.partial.done(True), verified=True)))
                continue
            row.partial, stopped = row.partial.extend(
                lm, task, token, float(row.logp[token]), constrained=mask is not None, best=float(row.logp.max())
            )
            if stopped or len(row.partial.ids) >= min(task.max_tokens, limit[row.draft]):
                done.append((row.draft, dataclasses.replace(row.partial.done(stopped), verified=True)))
            else:
                going.append(row)
        rows = going
        if not rows:
            break
        n, used = len(rows), view.used
        visible = view.sees([row.path for row in rows])
        for j, row in enumerate(rows):
            row.path.append(used + j)
        positions = torch.tensor([view.prefix_len + len(r.partial.ids) for r in rows])  # token i at depth i + 1
        logits = view.step(
            input_ids=torch.tensor([r.partial.ids[-1] for r in rows]),
            positions=positions,
            scratch_visible=visible,
            logits_for=n,
        )
        logp = torch.log_softmax(logits.float(), dim=-1)
        for j, row in enumerate(rows):
            row.logp = logp[j]
    return done


def _cut_at(exact: list[float], best: list[float], constrained: Sequence[bool], config: VerifyConfig) -> int | None:
    """First token index where the model's greedy choice confidently beats the draft's token."""
    floor = math.log(config.cut_confidence) if config.cut_confidence > 0 else float("-inf")
    for i, (lp, top) in enumerate(zip(exact, best, strict=True)):
        if top >= floor and top - lp >= config.cut_margin and not (i < len(constrained) and constrained[i]):
            return i
    return None


def _rescored(
    lm: LoadedModel, task: DecodeTask, draft: Draft, exact: list[float], best: list[float], cut: int | None
) -> Draft:
    if cut is None:
        return dataclasses.replace(
            draft, logprob=sum(exact), token_logprobs=tuple(exact), best_logprobs=tuple(best), verified=True
        )
    full = lm.decode(list(draft.tokens[:cut]))
    return Draft(
        full[len(task.typed) :] if full.startswith(task.typed) else full,
        tokens=draft.tokens[:cut],
        logprob=sum(exact[:cut]),
        finished=False,
        cancelled=draft.cancelled,
        token_logprobs=tuple(exact[:cut]),
        token_ends=draft.token_ends[:cut],
        token_constrained=draft.token_constrained[:cut],
        best_logprobs=tuple(best[:cut]),
        verified=True,
    )
