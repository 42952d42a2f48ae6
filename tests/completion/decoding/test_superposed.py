"""Superposed decoding on tiny seeded models: k=1 is greedy; k>1 gives distinct drafts; exact trunk."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.completion.config import NgramConfig, SuperposedConfig, VerifyConfig
from superpie.completion.decoding.greedy import chain_decode
from superpie.completion.decoding.stops import line_end_stop
from superpie.completion.decoding.superposed import superposed_decode
from superpie.completion.decoding.task import DecodeTask, task_constraints
from superpie.completion.decoding.verify import verify
from superpie.completion.ngram.index import NgramIndex

SOURCE = '''import os


def load(path, default=None):
    """Read a file, or return the default."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return f.read()


def save(path, text):
    with open(path, "w") as f:
        f.write(text)
'''


def document(kind: str = "llama", text: str = SOURCE) -> DocumentCache:
    lm = tiny_model(kind)
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="exact", runner=lm.runner)
    doc.sync(text)
    return doc


def task_at(doc: DocumentCache, offset: int, max_tokens: int = 10, stop=None) -> tuple[DecodeTask, int]:
    lm = tiny_model("llama")
    split = doc.split_at(offset)
    n = split.prefix_len
    task = DecodeTask(
        doc.ids[n - 1],
        max_tokens,
        split.typed,
        stop,
        task_constraints(lm, split.typed),
        tuple(doc.ids[max(0, n - 8) : n]),
    )
    return task, n - 1


def ngram_for(text: str) -> NgramIndex:
    lm = tiny_model("llama")
    index = NgramIndex(
        ".",
        lambda s: lm.tokenizer.encode(s, add_special_tokens=False).ids,
        vocab_size=lm.vocab_size,
        tokenizer_id="tiny",
        config=NgramConfig(persist=False),
    )
    index.update_document("mem://doc", text)
    return index


CURSORS = [SOURCE.index("    if not"), SOURCE.index("default\n") + 3, SOURCE.index("f.write"), len(SOURCE)]


@pytest.mark.parametrize("offset", CURSORS)
@pytest.mark.parametrize("stop", [None, line_end_stop])
def test_superposed_with_one_draft_is_greedy(offset, stop):
    lm = tiny_model("llama")
    doc = document()
    task, context = task_at(doc, offset, stop=stop)
    greedy = chain_decode(lm, CursorView(doc, context, reserve=16), task)
    out = superposed_decode(lm, CursorView(doc, context, reserve=16), task, 1, ngram=ngram_for(SOURCE))
    assert len(out.drafts) == 1
    draft = out.drafts[0]
    assert draft.tokens == greedy.tokens
    assert draft.text == greedy.text
    assert draft.finished == greedy.finished
    assert draft.token_logprobs == pytest.approx(greedy.token_logprobs, abs=1e-5)
    assert len(out.trunk.tokens) == len(draft.tokens) or draft.finished  # all fed but the last: all exact


@pytest.mark.parametrize("exact_lead", [True, False])
def test_superposed_drafts_are_distinct_and_verify_keeps_the_exact_trunk(exact_lead):
    lm = tiny_model("llama")
    doc = document()
    task, context = task_at(doc, CURSORS[1], max_tokens=8)
    view = CursorView(doc, context, reserve=64)
    cfg = SuperposedConfig(branch_ratio=0.3, exact_lead=exact_lead)
    out = superposed_decode(lm, view, task, 3, cfg, ngram_for(SOURCE))
    assert 1 <= len(out.drafts) <= 3
    assert len({d.text for d in out.drafts}) == len(out.drafts)
    assert len(out.trunk.tokens) >= 1
    no_cut = VerifyConfig(cut_confidence=1.0, cut_margin=float("inf"))
    kept = verify(lm, view, task, out.drafts, no_cut, trunk=out.trunk)
    fresh = verify(lm, view, task, out.drafts, no_cut)
    for a, b in zip(kept, fresh, strict=True):
        assert a.tokens == b.tokens
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
        assert a.best_logprobs == pytest.approx(b.best_logprobs, abs=1e-4)


@pytest.mark.parametrize("offset", CURSORS)
def test_the_exact_lead_is_the_greedy_draft(offset):
    lm = tiny_model("llama")
    doc = document()
    task, context = task_at(doc, offset, max_tokens=8, stop=line_end_stop)
    greedy = chain_decode(lm, CursorView(doc, context, reserve=16), task)
    cfg = SuperposedConfig(branch_ratio=0.01, patience=1.0)
    out = superposed_decode(lm, CursorView(doc, context, reserve=64), task, 4, cfg, ngram_for(SOURCE))
    assert len(out.drafts) > 1
    lead = next(d for d in out.drafts if d.tokens == greedy.tokens)
    assert [d.greedy for d in out.drafts].count(True) == 1 and lead.greedy
    assert lead.token_logprobs == pytest.approx(greedy.token_logprobs, abs=1e-5)
    assert out.trunk.tokens[1:] == greedy.tokens[: len(out.trunk.tokens) - 1]


def test_vote_history_follows_the_drafts_holding_most_weight():
    from superpie.completion.decoding.superposed import _alt_history
    from superpie.completion.decoding.task import Partial

    lead_ids, lead_path = (1, 2, 3, 4), [10, 11, 12, 13, 14]  # root, then the lead's tokens by depth
    own = {2: 20, 3: 21, 4: 22}  # the superposed inputs fed at depths 2..4
    early = Partial(ids=(1, 9, 9, 9), score=0.0)  # left the lead at depth 2
    late = Partial(ids=(1, 2, 3, 7), score=-3.0)  # left it at depth 4
    cfg = SuperposedConfig(weight_temperature=1.0)
    # mostly the early draft: from depth 2 on, the superposed chain
    assert _alt_history(cfg, [early, late], lead_ids, lead_path, own) == [10, 11, 20, 21]
    # mostly the late one: the lead's path, up to where it left the lead
    late_first = Partial(ids=late.ids, score=0.0)
    early_behind = Partial(ids=early.ids, score=-3.0)
    assert _alt_history(cfg, [late_first, early_behind], lead_ids, lead_path, own) == [10, 11, 12, 13]


def test_superposed_input_is_the_weighted_sum_of_embeddings():
    from superpie.completion.decoding.superposed import _superpose, _weights
    from superpie.completion.decoding.task import Partial

    lm = tiny_model("llama")
    embed = lm.model.get_input_embeddings()
    a = Partial(ids=(5,), score=0.0)
    b = Partial(ids=(9,), score=float(torch.log(torch.tensor(3.0))))  # three times as likely
    mixed = _superpose(embed, [a, b], _weights([a, b], SuperposedConfig(weight_temperature=1.0)))
    want = 0.25 * embed(torch.tensor([5])) + 0.75 * embed(torch.tensor([9]))
    assert torch.allclose(mixed, want, atol=1e-6)
    sharp = _weights([a, b], SuperposedConfig(weight_temperature=0.5))  # probabilities squared, normalised
    assert sharp.tolist() == pytest.approx([0.1, 0.9])
