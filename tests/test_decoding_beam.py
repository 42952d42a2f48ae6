"""Beam search over a tree mask on tiny seeded models: exact log-probs, k=1 is greedy, k distinct drafts."""

from __future__ import annotations

import pytest
from test_superposed import CURSORS, document, task_at
from test_verify import full_logprobs
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.completion.beam import beam_decode
from superpie.completion.decoding import chain_decode, line_end_stop


@pytest.mark.parametrize("offset", CURSORS[:2])
def test_beam_of_one_is_greedy(offset):
    lm = tiny_model("llama")
    doc = document()
    task, context = task_at(doc, offset, max_tokens=8, stop=line_end_stop)
    greedy = chain_decode(lm, CursorView(doc, context, reserve=16), task)
    beam = beam_decode(lm, CursorView(doc, context, reserve=16), task, 1)
    assert [d.ids for d in beam] == [greedy.ids]
    assert beam[0].token_logprobs == pytest.approx(greedy.token_logprobs, abs=1e-5)


@pytest.mark.parametrize("kind", ["llama", "phi"])
def test_beam_drafts_are_distinct_and_their_logprobs_exact(kind):
    lm = tiny_model(kind)
    doc = document(kind)
    n = doc.length // 2
    from superpie.completion.decoding import DecodeTask

    task = DecodeTask(doc.ids[n - 1], 7)
    drafts = beam_decode(lm, CursorView(doc, n - 1, reserve=8), task, 4)
    assert len(drafts) == 4
    assert len({d.ids for d in drafts}) == 4
    for d in drafts:
        want = full_logprobs(kind, doc.ids[:n], list(d.ids))
        assert list(d.token_logprobs) == pytest.approx(want, abs=1e-4)
