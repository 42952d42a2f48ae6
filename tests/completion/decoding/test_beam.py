"""Beam search over a tree mask on tiny seeded models: exact log-probs, k=1 is greedy, k distinct drafts."""

from __future__ import annotations

import pytest
from test_superposed import CURSORS, document, task_at
from test_verify import full_logprobs
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.completion.decoding.beam import beam_decode
from superpie.completion.decoding.greedy import chain_decode
from superpie.completion.decoding.stops import line_end_stop


@pytest.mark.parametrize("offset", CURSORS[:2])
def test_beam_of_one_is_greedy(offset):
    lm = tiny_model("llama")
    doc = document()
    task, context = task_at(doc, offset, max_tokens=8, stop=line_end_stop)
    greedy = chain_decode(lm, CursorView(doc, context, reserve=16), task)
    beam = beam_decode(lm, CursorView(doc, context, reserve=16), task, 1)
    assert [d.tokens for d in beam] == [greedy.tokens]
    assert beam[0].token_logprobs == pytest.approx(greedy.token_logprobs, abs=1e-5)


@pytest.mark.parametrize("kind", ["llama", "phi"])
def test_beam_drafts_are_distinct_and_their_logprobs_exact(kind):
    lm = tiny_model(kind)
    doc = document(kind)
    n = doc.length // 2
    from superpie.completion.decoding.task import DecodeTask

    task = DecodeTask(doc.ids[n - 1], 7)
    drafts = beam_decode(lm, CursorView(doc, n - 1, reserve=8), task, 4)
    assert len(drafts) == 4
    assert len({d.tokens for d in drafts}) == 4
    for d in drafts:
        want = full_logprobs(kind, doc.ids[:n], list(d.tokens))
        assert list(d.token_logprobs) == pytest.approx(want, abs=1e-4)


def test_patience_bounds_the_steps_after_the_first_beam_ends():
    """A stop rule that ends beams at different lengths: with patience, the search stops soon after
    the first end, and what it returns is what the patient-less search had at that point."""
    from superpie.completion.decoding.task import DecodeTask

    lm = tiny_model("llama")
    doc = document()
    n = doc.length // 2

    def stop_after(text: str) -> int | None:  # beams "end" at different lengths, by their last character
        return len(text) if len(text) >= 12 and ord(text[-1]) % 3 == 0 else None

    task = DecodeTask(doc.ids[n - 1], 24, stop=stop_after)
    steps: dict[str | None, int] = {}

    def run(patience: float | None):
        view = CursorView(doc, n - 1, reserve=4 * 24 + 2)
        calls = [0]
        step = view.step

        def counted(*a, **kw):
            calls[0] += 1
            return step(*a, **kw)

        view.step = counted
        drafts = beam_decode(lm, view, task, 4, patience=patience)
        steps[str(patience)] = calls[0]
        return drafts

    slow, fast = run(None), run(0.25)
    first_end = min(len(d.tokens) for d in slow if d.finished)
    assert steps["0.25"] <= first_end + max(2, -(-first_end // 4)) + 1  # the root step, then one per token
    assert steps["0.25"] < steps["None"]
    ended = {d.tokens for d in slow if d.finished}
    assert all(d.tokens in ended for d in fast if d.finished)  # the same search, stopped earlier


def _uneven_task(doc, max_tokens: int = 24):
    """A stop rule that ends lines at different lengths (by their last character), mid-document."""
    from superpie.completion.decoding.task import DecodeTask

    n = doc.length // 2

    def stop_after(text: str) -> int | None:
        return len(text) if len(text) >= 12 and ord(text[-1]) % 3 == 0 else None

    return DecodeTask(doc.ids[n - 1], max_tokens, stop=stop_after), n - 1


@pytest.mark.parametrize("patience", [None, 0.25, 1.0])
def test_keep_greedy_returns_the_greedy_line_marked_however_early_patience_stops(patience):
    """The greedy line is one of the drafts, whole, with its exact log-probs, marked greedy (ranking's
    greedy bonus applies), and it is the only draft so marked; the others are k - 1 distinct beams."""
    lm = tiny_model("llama")
    doc = document()
    task, at = _uneven_task(doc)
    greedy = chain_decode(lm, CursorView(doc, at, reserve=32), task)
    drafts = beam_decode(lm, CursorView(doc, at, reserve=4 * 24 + 2), task, 4, patience=patience, keep_greedy=True)
    marked = [d for d in drafts if d.greedy]
    assert len(marked) == 1 and marked[0].tokens == greedy.tokens and marked[0].finished == greedy.finished
    assert marked[0].token_logprobs == pytest.approx(greedy.token_logprobs, abs=1e-4)
    assert len(drafts) == 4 and len({d.tokens for d in drafts}) == 4


def test_beam_strategy_passes_keep_greedy_on():
    """Through the strategy runner: `decoding.beam_keep_greedy` on gives the greedy line among the
    drafts, marked; off (the default) no draft is marked, as before the option."""
    from superpie.completion.config import DecodingConfig
    from superpie.completion.decoding.strategies import decode

    lm = tiny_model("llama")
    doc = document()
    task, at = _uneven_task(doc)
    greedy = chain_decode(lm, CursorView(doc, at, reserve=32), task)
    marked = {}
    for keep in (True, False):
        view = CursorView(doc, at, reserve=4 * 24 + 2)
        drafts, _ = decode(lm, view, task, "beam", 4, DecodingConfig(beam_keep_greedy=keep), None, lambda: False)
        marked[keep] = [d.tokens for d in drafts if d.greedy]
    assert marked == {True: [greedy.tokens], False: []}
