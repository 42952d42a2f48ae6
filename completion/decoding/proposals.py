"""What speculative decoding proposes, from what is at hand: the document, the workspace, the model's past guesses.

No second model. Three sources:
- prompt lookup ("input-guided" or prompt-lookup decoding): the last tokens of the prefix and draft
  are looked up in the document's cached tokens (the text after the cursor included) and in the draft
  itself; what followed the longest, nearest matches is proposed. Code copies itself: names, calls
  and whole lines come back;
- the workspace n-gram index, when a request has already built it: its most likely continuation for
  as long as it is confident;
- recycled candidates (token recycling): every forward leaves, for each token it fed, the model's top
  next tokens at that point; following them from the pending token proposes what the model said the
  last times it saw that token.

The paths merge into a small token tree. How much of it is worth verifying is learnt (`Acceptance`):
each kind of proposal keeps the rate at which greedy decoding took its tokens, and a node goes into
the tree only while the chance that greedy decoding reaches it and takes it pays for the row it adds
to the verification forward. Where nothing matches, the tree is empty and decoding takes a plain step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from superpie.completion.ngram.index import NgramIndex

_MAX_MATCH = 6  # tokens compared when ranking prompt-lookup matches
_DOC_BRANCHES = 2  # distinct prompt-lookup continuations per step
_RECYCLE_WIDTH = 4  # next tokens remembered per token
_RECYCLE_BRANCHES = 2
_NGRAM_FLOOR = math.log(0.4)  # the n-gram path goes on while its next token is at least this likely
_PRIORS = {"doc1": 0.3, "doc2": 0.5, "doc3": 0.6, "suffix": 0.3, "doc+": 0.7, "rec": 0.3, "rec+": 0.3}
_PRIOR = 0.3  # kinds not listed above
_LEARN = 0.05  # weight of one outcome in a kind's running acceptance rate
_FORGET = 0.1  # per request, rates move this far back to their prior, so a kind shut out gets retried
_COST_LEARN = 0.2  # weight of one forward's time in the running mean of its row count's cost
# What one more row adds to a verification forward, as a share of a one-row forward (default model, fp32
# activations: benchmarks/RESULTS.md, speculative): a node must be taken with at least this chance to pay
# for its row. The tree stays small, where a forward's cost grows slowly with its rows.
ROW_COST = 0.2
MAX_NODES = 7


@dataclass(frozen=True)
class ProposalTree:
    """Proposed tokens behind the pending token, as a tree in depth-first order (the likeliest path first).

    Node i holds `tokens[i]`; `parents[i]` is its parent node, -1 for a child of the root (the
    pending token, fed with the tree). `kinds[i]` names the source, for the acceptance statistics.
    """

    tokens: tuple[int, ...] = ()
    parents: tuple[int, ...] = ()
    kinds: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.tokens)

    def child(self, parent: int, token: int) -> int | None:
        """The node under `parent` (-1: the root) holding `token`, if proposed."""
        for i, (p, t) in enumerate(zip(self.parents, self.tokens, strict=True)):
            if p == parent and t == token:
                return i
        return None

    def children(self, parent: int) -> list[int]:
        """The nodes directly under `parent` (-1: the root)."""
        return [i for i, p in enumerate(self.parents) if p == parent]

    def ancestors(self, node: int) -> list[int]:
        """The nodes above `node`, top first (the root excluded)."""
        out = []
        at = self.parents[node]
        while at >= 0:
            out.append(at)
            at = self.parents[at]
        return out[::-1]

    def depth(self, node: int) -> int:
        """1 for a child of the root."""
        return len(self.ancestors(node)) + 1

    @property
    def chain(self) -> bool:
        """A single path: node i is the child of node i - 1."""
        return all(p == i - 1 for i, p in enumerate(self.parents))

    def leading_chain(self, nodes: int) -> ProposalTree:
        """The first path down the tree (the likeliest), at most `nodes` deep: the tree itself if it is one."""
        n = 0
        while n < min(nodes, len(self)) and self.parents[n] == n - 1:
            n += 1
        return self if n == len(self) else ProposalTree(self.tokens[:n], self.parents[:n], self.kinds[:n])


@dataclass(frozen=True)
class Path:
    """One source's proposed continuation: tokens and, per token, the kind it is judged by."""

    tokens: tuple[int, ...]
    kinds: tuple[str, ...]


class Acceptance:
    """Per kind of proposal, the running rate at which greedy decoding took its tokens when it reached them."""

    def __init__(self) -> None:
        self.rates: dict[str, float] = {}

    def rate(self, kind: str) -> float:
        """The current estimate (the kind's prior before any outcome)."""
        return self.rates.get(kind, _PRIORS.get(kind, _PRIOR))

    def record(self, kind: str, accepted: bool) -> None:
        """One outcome: greedy decoding reached the node and took it (or not)."""
        self.rates[kind] = (1 - _LEARN) * self.rate(kind) + _LEARN * float(accepted)

    def relax(self) -> None:
        """Move every rate a step back towards its prior (once per request)."""
        for kind, rate in self.rates.items():
            self.rates[kind] = rate + _FORGET * (_PRIORS.get(kind, _PRIOR) - rate)


class ForwardCost:
    """What a verification forward of n rows costs next to a one-row forward, as measured here (running means
    of its seconds), so a tree is only as large as pays on this machine and at this context length (the
    attention over a long context grows with the rows). Unmeasured row counts take the prior
    1 + `ROW_COST` (n - 1); measured ones drift back towards it (`relax`), so one slow spell is retried."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}

    def ratio(self, rows: int) -> float:
        """Cost of `rows` rows over the cost of one."""
        one, many = self.seconds.get(1), self.seconds.get(rows)
        if rows <= 1:
            return 1.0
        if one is None or many is None:
            return 1.0 + ROW_COST * (rows - 1)
        return max(1.0, many / one)

    def record(self, rows: int, seconds: float) -> None:
        """One forward's time."""
        old = self.seconds.get(rows)
        self.seconds[rows] = seconds if old is None else (1 - _COST_LEARN) * old + _COST_LEARN * seconds

    def relax(self) -> None:
        """Move every measured ratio a step back towards the prior (once per request)."""
        one = self.seconds.get(1)
        if one is None:
            return
        for rows, sec in self.seconds.items():
            prior = one * (1.0 + ROW_COST * (rows - 1))
            self.seconds[rows] = sec + _FORGET * (prior - sec)


@dataclass(frozen=True)
class TreeLimit:
    """The trees a model's verification may take: at most `nodes` proposed tokens, and with `chain` a single
    path only (where only a chain's rows are computed as plain decoding's steps: speculative.tree_limit)."""

    nodes: int = MAX_NODES
    chain: bool = False


def merge(
    paths: Sequence[Path],
    acceptance: Acceptance,
    budget: int,
    floor: float,
    cost: ForwardCost | None = None,
    chain: bool = False,
) -> ProposalTree:
    """The paths as one tree of at most `budget` nodes, each worth at least `floor`; with `cost`, only as many
    of the worthiest nodes as maximise the positions a forward decides per unit of its cost; with `chain`, the
    one path that does so.

    A node's worth is the chance greedy decoding reaches and takes it: the product of its kinds'
    rates along its path (the best path that proposes it). Worth never grows with depth, so taking
    nodes by worth keeps every parent; the tree is laid out depth first, likeliest child first.
    """
    worth: dict[tuple[int, ...], float] = {}
    kinds: dict[tuple[int, ...], str] = {}
    for path in paths:
        value = 1.0
        for d in range(len(path.tokens)):
            value *= acceptance.rate(path.kinds[d])
            key = path.tokens[: d + 1]
            if value > worth.get(key, 0.0):
                worth[key], kinds[key] = value, path.kinds[d]
    if chain:
        return _best_chain(paths, worth, kinds, budget, floor, cost)
    chosen = sorted((k for k, v in worth.items() if v >= floor), key=lambda k: (-worth[k], len(k)))[:budget]
    if cost is not None:  # expected positions decided (1 + the nodes' worth) per cost, over tree sizes
        gains = itertools.accumulate((worth[k] for k in chosen), initial=1.0)
        rates = [gain / cost.ratio(1 + m) for m, gain in enumerate(gains)]
        chosen = chosen[: max(range(len(rates)), key=rates.__getitem__)]
    keep = set(chosen)
    keep = {k for k in keep if all(k[:d] in keep for d in range(1, len(k)))}
    tokens: list[int] = []
    parents: list[int] = []
    out_kinds: list[str] = []

    def visit(key: tuple[int, ...], parent: int) -> None:
        under = sorted((k for k in keep if len(k) == len(key) + 1 and k[: len(key)] == key), key=lambda k: -worth[k])
        for k in under:
            tokens.append(k[-1])
            parents.append(parent)
            out_kinds.append(kinds[k])
            visit(k, len(tokens) - 1)

    visit((), -1)
    return ProposalTree(tuple(tokens), tuple(parents), tuple(out_kinds))


def _best_chain(
    paths: Sequence[Path],
    worth: dict[tuple[int, ...], float],
    kinds: dict[tuple[int, ...], str],
    budget: int,
    floor: float,
    cost: ForwardCost | None,
) -> ProposalTree:
    """The path prefix of at most `budget` nodes, each worth at least `floor`, that decides the most positions
    per unit of its forward's cost (without `cost`: the longest such prefix of the likeliest path)."""
    best: tuple[int, ...] = ()
    best_rate = 1.0  # a plain step: one position for one row's cost
    for path in paths:
        gain = 1.0
        for d in range(min(len(path.tokens), budget)):
            key = path.tokens[: d + 1]
            if worth[key] < floor:
                break
            gain += worth[key]
            rate = gain / cost.ratio(d + 2) if cost is not None else gain
            if rate > best_rate:
                best, best_rate = key, rate
    return ProposalTree(best, tuple(range(-1, len(best) - 1)), tuple(kinds[best[: d + 1]] for d in range(len(best))))


class DocumentLookup:
    """Prompt lookup over the document's cached tokens (the whole window, after the cursor too) and the draft."""

    def __init__(self, ids: Sequence[int], cursor: int) -> None:
        """`cursor`: how many of `ids` lie before the cursor (the prefix the draft continues)."""
        self.ids = np.asarray(ids, dtype=np.int64)
        self.cursor = cursor

    def paths(self, history: Sequence[int], length: int) -> list[Path]:
        """Up to `_DOC_BRANCHES` distinct continuations of `history` (the prefix, then the draft), best first.

        Matches are ranked by how many tokens they share with the end of `history` (up to
        `_MAX_MATCH`), then by nearness to the cursor. The history's own place in the document (only
        before the draft has a token) continues with the text after the cursor: proposed as "suffix".
        """
        if length <= 0 or not history:
            return []
        drafted = len(history) - self.cursor
        tail = list(history[-_MAX_MATCH:])
        found: list[tuple[int, int, tuple[int, ...], str]] = []  # (-match, distance, continuation, kind)
        hits = np.flatnonzero(self.ids[:-1] == tail[-1])
        if hits.size:
            match = self._match_lengths(hits, tail)
            for hit, m in zip(hits.tolist(), match.tolist(), strict=True):
                own = drafted == 0 and hit == self.cursor - 1
                cont = tuple(self.ids[hit + 1 : hit + 1 + length].tolist())
                found.append((0 if own else -m, abs(hit - self.cursor), cont, "suffix" if own else f"doc{min(m, 3)}"))
        drafted_ids = list(history[len(history) - drafted :]) if drafted > 0 else []
        for j in range(len(drafted_ids) - 1):  # the draft repeating itself (the same pattern on the next line)
            if drafted_ids[j] == tail[-1]:
                m = _common_suffix(history[: len(history) - drafted + j + 1], tail)
                cont = tuple(drafted_ids[j + 1 : j + 1 + length])
                found.append((-m, 0, cont, f"doc{min(m, 3)}"))
        found.sort(key=lambda f: (f[0], f[1]))
        out: list[Path] = []
        firsts: set[int] = set()
        for _, _, cont, kind in found:
            if not cont or cont[0] in firsts:
                continue
            firsts.add(cont[0])
            out.append(Path(cont, (kind,) + ("doc+",) * (len(cont) - 1)))
            if len(out) >= _DOC_BRANCHES:
                break
        return out

    def _match_lengths(self, hits: np.ndarray, tail: list[int]) -> np.ndarray:
        """How many tokens ending at each hit equal the end of `tail` (at least 1: the hit itself)."""
        match = np.ones(hits.size, dtype=np.int64)
        alive = np.ones(hits.size, dtype=bool)
        for k in range(1, len(tail)):
            prev = hits - k
            ok = alive & (prev >= 0)
            ok[ok] = self.ids[prev[ok]] == tail[-1 - k]
            if not ok.any():
                break
            match += ok
            alive = ok
        return match


def _common_suffix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


@dataclass
class Recycler:
    """The model's top next tokens after each token, as last seen: proposals that cost nothing to keep."""

    table: np.ndarray | None = None  # [V, width] token ids, -1 where never seen
    width: int = _RECYCLE_WIDTH

    def update(self, tokens: Sequence[int], logp: torch.Tensor) -> None:
        """Remember, for each fed token, the top tokens of the row the model gave after it ([n, V])."""
        if not tokens:
            return
        vocab = logp.shape[-1]
        if self.table is None or self.table.shape[0] != vocab:
            self.table = np.full((vocab, self.width), -1, dtype=np.int64)
        top = logp.topk(self.width, dim=-1).indices.numpy()
        self.table[np.asarray(tokens, dtype=np.int64)] = top

    def paths(self, pending: int, length: int) -> list[Path]:
        """Chains that follow the remembered top token from each of the pending token's best next tokens."""
        table = self.table
        if table is None or length <= 0 or not 0 <= pending < table.shape[0]:
            return []
        out = []
        for first in table[pending][:_RECYCLE_BRANCHES].tolist():
            if first < 0:
                break
            chain = [first]
            while len(chain) < length and (nxt := int(table[chain[-1]][0])) >= 0:
                chain.append(nxt)
            out.append(Path(tuple(chain), ("rec",) + ("rec+",) * (len(chain) - 1)))
        return out


@dataclass
class NgramLookup:
    """The workspace n-gram index's most likely continuation, while it is confident."""

    index: NgramIndex
    vocab: int
    _all: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._all = torch.arange(min(self.vocab, self.index.vocab_size))

    def paths(self, history: Sequence[int], length: int) -> list[Path]:
        """At most one path: the argmax continuation while its probability stays above the floor."""
        context = list(history[-max(1, self.index.config.order - 1) :])
        out: list[int] = []
        while len(out) < length:
            logp = self.index.logprobs(context, self._all)
            token = int(logp.argmax())
            if float(logp[token]) < _NGRAM_FLOOR:
                break
            out.append(token)
            context = context[1:] + [token]
        return [Path(tuple(out), ("ngram",) + ("ngram+",) * (len(out) - 1))] if out else []


class Proposer:
    """The proposal trees of one request, from the document, the n-gram index (if built) and the recycler.

    Satisfies `speculative.Proposals`. The recycler and the acceptance rates live across requests
    (`Speculation`), so what was learnt in one completion shapes the next.
    """

    def __init__(
        self,
        document: DocumentLookup | None,
        recycler: Recycler | None,
        acceptance: Acceptance,
        ngram: NgramLookup | None = None,
        floor: float = ROW_COST,
        limit: TreeLimit = TreeLimit(),
        cost: ForwardCost | None = None,
    ) -> None:
        self.document = document
        self.recycler = recycler
        self.acceptance = acceptance
        self.ngram = ngram
        self.floor = floor
        self.limit = limit
        self.cost = cost

    def propose(self, history: Sequence[int], room: int) -> ProposalTree:
        """The tree worth verifying after `history` (its last token is the pending one), at most `room` deep."""
        length = min(room, self.limit.nodes)
        if length <= 0:
            return ProposalTree()
        paths: list[Path] = []
        if self.document is not None:
            paths += self.document.paths(history, length)
        if self.ngram is not None:
            paths += self.ngram.paths(history, length)
        if self.recycler is not None:
            paths += self.recycler.paths(history[-1], length)
        return merge(paths, self.acceptance, self.limit.nodes, self.floor, self.cost, self.limit.chain)

    def learn(self, tree: ProposalTree, decisions: Sequence[tuple[int, int]]) -> None:
        """Every node whose parent's row decided a token was reached: taken if it holds that token."""
        for node, token in decisions:
            for child in tree.children(node):
                self.acceptance.record(tree.kinds[child], tree.tokens[child] == token)

    def observe(self, tokens: Sequence[int], logp: torch.Tensor, seconds: float) -> None:
        """Recycle the rows' top tokens; time the forward by its rows."""
        if self.recycler is not None:
            self.recycler.update(tokens, logp)
        if self.cost is not None:
            self.cost.record(len(tokens), seconds)


class Speculation:
    """What speculative decoding keeps between requests (one per engine): recycled candidates, acceptance rates,
    the measured cost of a forward by rows."""

    def __init__(self) -> None:
        self.recycler = Recycler()
        self.acceptance = Acceptance()
        self.cost = ForwardCost()

    def proposer(
        self,
        ids: Sequence[int],
        cursor: int,
        ngram: NgramIndex | None = None,
        vocab: int = 0,
        limit: TreeLimit = TreeLimit(),
    ) -> Proposer:
        """A request's proposer over a document's cached `ids`, `cursor` of them before the cursor (the
        prefix, the re-fed token included); `ngram` when the workspace index is already built; `limit`: the
        trees the model may verify (speculative.tree_limit)."""
        self.acceptance.relax()
        self.cost.relax()
        lookup = NgramLookup(ngram, vocab) if ngram is not None and vocab > 0 else None
        return Proposer(
            DocumentLookup(ids, cursor), self.recycler, self.acceptance, lookup, limit=limit, cost=self.cost
        )
