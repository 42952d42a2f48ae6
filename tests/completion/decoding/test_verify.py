"""Tree-mask verification on tiny seeded models: one forward == separate full forwards per draft."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from test_superposed import SOURCE, document
from tiny import KINDS, tiny_model

from superpie.cache.cursor import CursorView
from superpie.completion.config import VerifyConfig
from superpie.completion.decoding.greedy import chain_decode
from superpie.completion.decoding.task import DecodeTask
from superpie.completion.decoding.verify import DraftTree, Trunk, verify
from superpie.completion.draft import Draft

NO_CUT = VerifyConfig(cut_confidence=1.0, cut_margin=float("inf"), repair="off")


@torch.inference_mode()
def full_logprobs(kind: str, prefix: list[int], draft: list[int]) -> list[float]:
    """Log-prob of each draft token from one plain forward over prefix + draft (no cache)."""
    lm = tiny_model(kind)
    logits = lm.model(input_ids=torch.tensor([prefix + draft])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [float(logp[len(prefix) - 1 + i, t]) for i, t in enumerate(draft)]


def random_drafts(rng: random.Random, vocab: int) -> list[list[int]]:
    """Drafts of different lengths, some sharing prefixes, one empty, one a prefix of another."""
    base = [rng.randrange(1, vocab) for _ in range(9)]
    return [
        base,
        base[:4] + [rng.randrange(1, vocab) for _ in range(3)],
        base[:2],
        [rng.randrange(1, vocab) for _ in range(6)],
        base[:4] + [rng.randrange(1, vocab)],
        [],
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["end", "middle"])
def test_tree_verification_equals_separate_full_forwards(kind, where):
    lm = tiny_model(kind)
    doc = document(kind)
    n = doc.length if where == "end" else doc.length // 2  # middle: the suffix must stay hidden
    drafts = random_drafts(random.Random(7), lm.vocab_size)
    task = DecodeTask(doc.ids[n - 1], 16)
    view = CursorView(doc, n - 1, reserve=8)
    decoded = [Draft("", tokens=tuple(d), logprob=0.0, finished=False) for d in drafts]
    out = verify(lm, view, task, decoded, NO_CUT)
    for draft, got in zip(drafts, out, strict=True):
        assert got.tokens == tuple(draft)
        want = full_logprobs(kind, doc.ids[:n], draft)
        assert list(got.token_logprobs) == pytest.approx(want, abs=1e-4)
        assert got.logprob == pytest.approx(sum(want), abs=1e-3)
        assert got.verified


def test_the_tree_shares_prefixes_and_skips_last_tokens():
    tree = DraftTree.of([[1, 2, 3], [1, 2, 4, 5], [7]], root=100)
    # root, 1, 2 shared; 4 only for the second draft; last tokens (3, 5, 7) never fed
    assert tree.tokens == [100, 1, 2, 4]
    assert tree.parents == [-1, 0, 1, 2]
    assert tree.depths == [0, 1, 2, 3]
    assert tree.sources == [[0, 1, 2], [0, 1, 2, 3], [0]]
    vis = tree.visible(base=0)
    assert vis.tolist()[3] == [True, True, True, True]
    trunk = Trunk((100, 1), (0, 1))  # slots 0..1 (root, token 1) hold exact KV
    kept = DraftTree.of([[1, 2, 3], [1, 2, 4, 5]], trunk=trunk)
    assert kept.tokens == [2, 4] and kept.parents == [-1, 0] and kept.depths == [2, 3]
    assert kept.sources == [[0], [0, 1]] and kept.exact == [2, 2]
    assert kept.visible(base=2, trunk=trunk).tolist() == [[True, True, True, False], [True, True, True, True]]


def test_drafts_hang_off_the_trunk_where_they_leave_it():
    # trunk: root at slot 3, tokens 1, 2, 3 at slots 5, 7, 9 (another row's slots in between)
    trunk = Trunk((100, 1, 2, 3), (3, 5, 7, 9))
    tree = DraftTree.of([[1, 2, 3, 4], [1, 8, 9], [6, 7], [1, 2, 3]], trunk=trunk)
    assert tree.exact == [4, 2, 1, 3]  # up to and including the first token off the trunk
    assert tree.tokens == [8, 6]  # 4 and 9 and 7 are last tokens; [1, 2, 3] lies on the trunk
    assert tree.anchors == [1, 0] and tree.depths == [2, 1]
    assert tree.sources == [[], [0], [1], []]
    assert tree.path(0, base=10, trunk=trunk) == [3, 5, 10]
    assert tree.path(1, base=10, trunk=trunk) == [3, 11]


def test_a_draft_is_cut_where_the_model_confidently_disagrees():
    lm = tiny_model("llama")
    doc = document("llama", SOURCE)
    n = doc.length
    task = DecodeTask(doc.ids[n - 1], 16)
    view = CursorView(doc, n - 1, reserve=8)
    # The model's own greedy tokens, then its least likely token, then more greedy-ish tokens.
    ids: list[int] = []
    worst_first = None
    for _ in range(3):
        view.rewind(0)
        logits = view.step(input_ids=torch.tensor([doc.ids[n - 1], *ids]), logits_for=1)[-1]
        ids.append(int(logits.argmax()))
        worst_first = int(logits.argmin()) if worst_first is None else worst_first
    worst = int(logits.argmin())
    ids[2] = worst
    draft = Draft("", tokens=tuple(ids + [5, 6]), logprob=0.0, finished=False)
    cut_only = VerifyConfig(cut_confidence=0.0, cut_margin=5.0, repair="off")
    cut = verify(lm, view, task, [draft], cut_only)[0]
    assert cut.tokens == tuple(ids[:2])
    assert not cut.finished
    kept = verify(lm, view, task, [draft], NO_CUT)[0]
    assert kept.tokens == draft.tokens
    # A token a constraint chose is never cut.
    flags = (False, False, True, False, False)
    forced = Draft("", tokens=draft.tokens, logprob=0.0, finished=False, token_constrained=flags)
    assert len(verify(lm, view, task, [forced], cut_only)[0].tokens) >= 3
    # Repair: the best draft, cut, is finished greedily from its exact prefix = greedy decoding here.
    other = Draft("", tokens=(worst_first, 7), logprob=0.0, finished=False)  # cut at its first token: never the best
    repaired = verify(
        lm,
        view,
        task,
        [other, draft],
        VerifyConfig(cut_confidence=0.0, cut_margin=5.0, repair="best", repair_tokens=16),
    )
    greedy = chain_decode(lm, CursorView(doc, n - 1, reserve=20), task)
    assert repaired[0].tokens == ()
    assert repaired[1].tokens == greedy.tokens
    assert list(repaired[1].token_logprobs) == pytest.approx(list(greedy.token_logprobs), abs=1e-4)
    # "all": every cut draft, and every unfinished one, goes on greedily by at most repair_tokens tokens.
    every = VerifyConfig(cut_confidence=0.0, cut_margin=5.0, repair="all", repair_tokens=3)
    # unfinished, uncut: continued from its end
    start = Draft("", tokens=greedy.tokens[:2], logprob=0.0, finished=False)
    both = verify(lm, view, task, [other, draft, start], every)
    assert both[0].tokens == greedy.tokens[:3]  # cut at its first token, then 3 greedy tokens
    assert both[1].tokens == greedy.tokens[:5]  # cut after 2 tokens, then 3
    assert both[2].tokens == greedy.tokens[:5]
    assert list(both[2].token_logprobs) == pytest.approx(list(greedy.token_logprobs[:5]), abs=1e-4)
    finished = dataclasses.replace(start, finished=True)  # a finished draft is left alone
    assert verify(lm, view, task, [finished], every)[0].tokens == start.tokens
