"""Typing along the shown suggestion: the rest of it comes back at once, and only when nothing else changed."""

from __future__ import annotations

import dataclasses

import pytest
from tiny import tiny_model

from superpie.cache.stats import NO_SYNC
from superpie.completion.carry import Carry, request_key
from superpie.completion.config import EngineConfig
from superpie.completion.draft import Draft
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest, CompletionResult

BEFORE = "def area(r):\n    return "
AFTER = "\n\nprint(area(2))\n"
URI = "mem://a.py"


def draft(text: str, ends: tuple[int, ...], finished: bool = True, score: float = 0.0) -> Draft:
    """A decoded draft whose tokens end at `ends` in `text` (log-prob -1 each)."""
    n = len(ends)
    return Draft(
        text,
        tokens=tuple(range(10, 10 + n)),
        logprob=-float(n),
        finished=finished,
        token_logprobs=(-1.0,) * n,
        token_ends=ends,
        token_constrained=(False,) * n,
        best_logprobs=(-0.5,) * n,
        score=score,
    )


def request(typed: str = "", after: str = AFTER, **options) -> CompletionRequest:
    text = BEFORE + typed + after
    return CompletionRequest(URI, text, len(BEFORE + typed), multiline=False, **options)


def shown(*drafts: Draft) -> Carry:
    carry = Carry()
    req = request()
    carry.remember(req, request_key(req, False), CompletionResult(list(drafts), {"total": 900.0}, NO_SYNC))
    return carry


def answer(carry: Carry, req: CompletionRequest) -> CompletionResult | None:
    return carry.answer(req, request_key(req, bool(req.multiline)))


def test_typing_along_gives_the_rest_of_the_draft_with_its_remaining_tokens():
    carry = shown(draft("3.14 * r * r", (1, 4, 6, 8, 10, 12)))  # "3" ".14" " *" " r" " *" " r"
    got = answer(carry, request("3.1"))
    assert got is not None and got.carried
    (rest,) = got.completions
    assert rest.text == "4 * r * r"
    assert rest.tokens == (11, 12, 13, 14, 15)  # ".14" straddles the typed text: kept
    assert rest.token_ends == (1, 3, 5, 7, 9)
    assert rest.logprob == -5.0 and len(rest.token_logprobs) == len(rest.best_logprobs) == 5
    assert got.cache == NO_SYNC and got.timings_ms["total"] < 900
    again = answer(carry, request("3.14 * r"))  # further along: still from the same answer
    assert again is not None and again.completions[0].text == " * r"


def test_only_the_drafts_typed_along_carry_in_their_order():
    carry = shown(draft("r * r", (1, 3, 5), score=2), draft("3.14", (1, 4), score=1), draft("r ** 2", (1, 4, 6)))
    got = answer(carry, request("r "))
    assert got is not None
    assert [d.text for d in got.completions] == ["* r", "** 2"]


@pytest.mark.parametrize(
    "req",
    [
        request(""),  # nothing typed: the same request again decodes
        request("3.2"),  # typed away from the draft
        request("3.14 * r * r"),  # typed all of it: nothing left to show
        request("3.14 * r * r  "),  # past its end
        request("3\n"),  # a new line
        request("3", after="\nprint(area(3))\n"),  # the text after the cursor changed
        CompletionRequest(URI, "x = 1\n" + BEFORE + "3" + AFTER, len("x = 1\n" + BEFORE + "3")),  # and before it
        request("3", max_tokens=8),  # other options
        request("3", monitors=False),
        CompletionRequest("mem://b.py", BEFORE + "3" + AFTER, len(BEFORE + "3"), multiline=False),  # another file
    ],
)
def test_anything_else_decodes_again(req):
    assert answer(shown(draft("3.14 * r * r", (1, 4, 6, 8, 10, 12))), req) is None


def test_a_draft_the_token_budget_cut_or_a_blank_rest_does_not_carry():
    assert answer(shown(draft("3.14 * r", (1, 4, 6, 8), finished=False)), request("3")) is None
    assert answer(shown(draft("3.14   ", (1, 4, 7))), request("3.14")) is None


def test_drafts_that_span_lines_do_not_carry_and_end_the_answer_before():
    carry = shown(draft("3.14 * r", (1, 4, 6, 8)))
    req = dataclasses.replace(request(), multiline=True)
    carry.remember(req, request_key(req, True), CompletionResult([draft("3.14", (1, 4))], {}, NO_SYNC))
    assert answer(carry, dataclasses.replace(request("3"), multiline=True)) is None
    assert answer(carry, request("3")) is None


def test_an_empty_or_cancelled_answer_is_not_remembered():
    carry = shown(draft("3.14", (1, 4)))
    req = request()
    carry.remember(req, request_key(req, False), CompletionResult([], {}, NO_SYNC, empty_reason="blank"))
    carry.remember(req, request_key(req, False), CompletionResult([draft("2", (1,))], {}, NO_SYNC, cancelled=True))
    got = answer(carry, request("3"))
    assert got is not None and got.completions[0].text == ".14"


class CountingEngine(Engine):
    """The engine with its decode counted and replaced by a fixed answer (the carry sits in front of it)."""

    def __init__(self, config: EngineConfig, text: str) -> None:
        super().__init__(config, lm=tiny_model("llama"))
        self.decodes = 0
        self.text = text

    def _complete(self, req: CompletionRequest, cancelled) -> CompletionResult:
        self.decodes += 1
        return CompletionResult([draft(self.text, (len(self.text),))], {"total": 1.0}, NO_SYNC)


def test_the_engine_answers_along_the_suggestion_without_decoding_and_forgets_on_close_and_new_settings():
    eng = CountingEngine(EngineConfig(), "3.14 * r * r")
    assert not eng.complete(request()).carried and eng.decodes == 1
    got = eng.complete(request("3.1"))
    assert got.carried and got.completions[0].text == "4 * r * r" and eng.decodes == 1
    eng.close(URI)
    assert not eng.complete(request("3.1")).carried and eng.decodes == 2
    eng.reconfigure(EngineConfig())
    assert not eng.complete(request("3.14")).carried and eng.decodes == 3


def test_carry_off_decodes_every_request():
    config = EngineConfig()
    config.completion.carry = False
    eng = CountingEngine(config, "3.14 * r * r")
    eng.complete(request())
    assert not eng.complete(request("3.1")).carried and eng.decodes == 2


def test_a_real_decode_then_typing_along_it():
    """The tiny model's own inline draft, typed along one character at a time, comes back less each character."""
    eng = Engine(EngineConfig(), lm=tiny_model("llama"))
    first = eng.complete(request(max_tokens=64))
    top = first.completions[0] if first.completions else None
    if top is None or not top.finished or len(top.text.strip()) < 2:
        pytest.skip("the tiny model's draft here is not a finished line of two or more characters")
    for i in range(1, len(top.text.rstrip())):
        got = eng.complete(request(top.text[:i], max_tokens=64))
        assert got.carried and got.completions[0].text == top.text[i:]
