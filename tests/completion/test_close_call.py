"""Greedy decoding over stale KV keeps a margin (`cache.close_call_margin`): a closer choice refreshes the stale
tokens the cursor reads and decodes again, so the answer is the exact cache's. Tiny random models make every
choice a near-tie, so a large margin forces the close call, and the answer must equal an exact-mode engine's."""

from __future__ import annotations

import pytest
import torch
from test_fim_cache import TEXT, fim_model
from tiny import tiny_model

from superpie.completion.config import EngineConfig
from superpie.completion.decoding.close_call import decode_guarded, stale_margin
from superpie.completion.decoding.task import DecodeTask, StaleCloseCall, check_margin
from superpie.completion.engine import Engine
from superpie.completion.model.loading import LoadedModel
from superpie.completion.request import CompletionRequest, CompletionResult


def test_check_margin_raises_below_the_margin_only() -> None:
    logp = torch.log_softmax(torch.tensor([2.0, 1.5, -3.0]), dim=-1)
    check_margin(logp, 0.4, 0)
    check_margin(logp, 0.0, 0)  # 0: never
    with pytest.raises(StaleCloseCall) as call:
        check_margin(logp, 0.6, 3)
    assert call.value.step == 3 and call.value.gap == pytest.approx(0.5)
    with pytest.raises(StaleCloseCall):  # nothing allowed: decide on exact KV
        check_margin(torch.full((3,), float("-inf")), 0.1, 0)


def engine(lm: LoadedModel, mode: str, margin: float, tokens: int = 100_000, speculate: bool = False) -> Engine:
    config = EngineConfig()
    config.cache.mode = mode
    config.cache.close_call_margin = margin
    config.cache.close_call_tokens = tokens
    config.decoding.speculate = speculate
    config.monitors.enabled = False
    return Engine(config, lm=lm)


def session(eng: Engine, steps: list[tuple[str, int]]) -> list[CompletionResult]:
    return [eng.complete(CompletionRequest("mem://a.py", text, at, max_tokens=6)) for text, at in steps]


def tokens(results: list[CompletionResult]) -> list[tuple[int, ...]]:
    return [r.completions[0].tokens if r.completions else () for r in results]


def edits() -> list[tuple[str, int]]:
    """Open at one cursor, jump to another and back (the FIM layout's suffix marker moves), insert a line far
    above. Mid-line cursors: the tiny FIM model ends at once at a line's start. Without the margin, PIE's answers
    differ from exact's at the second or the fourth step for either layout."""
    a, b = TEXT.index("msg.upper()") + len("msg.up"), TEXT.index("Greeter(os") + len("Greeter(o")
    edited = TEXT.replace("import os\n", "import os\nimport sys\n")
    return [(TEXT, a), (TEXT, b), (TEXT, a), (edited, edited.index("msg.upper()") + len("msg.up"))]


def test_without_the_margin_pie_answers_differently_here() -> None:
    """The sessions below can tell: PIE alone does not already answer what exact answers."""
    for lm in (fim_model("llama"), tiny_model("llama")):
        assert tokens(session(engine(lm, "pie", margin=0.0), edits())) != tokens(
            session(engine(lm, "exact", margin=0.0), edits())
        )


@pytest.mark.parametrize("speculate", [False, True])
@pytest.mark.parametrize("layout", ["fim", "prefix"])
def test_a_close_call_over_stale_kv_answers_what_an_exact_cache_answers(layout: str, speculate: bool) -> None:
    lm = fim_model("llama") if layout == "fim" else tiny_model("llama")
    got = session(engine(lm, "pie", margin=1e6, speculate=speculate), edits())
    want = session(engine(lm, "exact", margin=0.0, speculate=speculate), edits())
    assert tokens(got) == tokens(want)
    assert got[0].close_call_refreshed == 0  # the first sync encodes everything: nothing is stale
    assert sum(r.close_call_refreshed for r in got) > 0
    assert all(r.timings_ms["close_call_refresh"] >= 0 for r in got)


def test_no_margin_or_too_many_stale_tokens_leaves_pie_as_it_stands() -> None:
    lm = fim_model("llama")
    for eng in (engine(lm, "pie", margin=0.0), engine(lm, "pie", margin=1e6, tokens=1)):
        results = session(eng, edits())
        assert all(r.close_call_refreshed == 0 for r in results)
        doc = eng.documents.get("mem://a.py")
        assert doc is not None and doc.cache.stale_count > 0  # the stale KV was decoded over, not refreshed


def test_a_clear_choice_keeps_the_stale_kv() -> None:
    lm = fim_model("llama")
    results = session(engine(lm, "pie", margin=1e-9), edits())
    assert all(r.close_call_refreshed == 0 for r in results)  # random logits are not exact ties


def test_decode_guarded_refreshes_once_and_decodes_again_unguarded() -> None:
    """The shared rule (completion/decoding/close_call.py) the engine and the benchmarks decode through."""
    eng = engine(fim_model("llama"), "pie", margin=0.0)
    session(eng, edits())
    doc = eng.documents.get("mem://a.py")
    assert doc is not None
    cache = doc.cache
    reads = cache.length - 1
    stale = cache.refreshable_stale(reads)
    assert stale > 0
    assert stale_margin(cache, reads, 2.0, cap=stale) == 2.0
    assert stale_margin(cache, reads, 2.0, cap=stale - 1) == 0.0  # more than a request may re-encode
    assert stale_margin(cache, reads, 0.0, cap=stale) == 0.0
    seen: list[float] = []

    def run(task: DecodeTask) -> str:
        seen.append(task.stale_margin)
        if task.stale_margin > 0:
            raise StaleCloseCall(0, 0.1)
        return "decoded"

    task = DecodeTask(first_input=cache.ids[reads], max_tokens=4)
    out = decode_guarded(run, task, cache, reads, 2.0, cap=stale)
    assert (out.result, seen) == ("decoded", [2.0, 0.0])
    assert out.refreshed == stale and cache.refreshable_stale(reads) == 0
    seen.clear()  # nothing stale any more: no guard, one decode
    assert decode_guarded(run, task, cache, reads, 2.0, cap=stale).refreshed == 0 and seen == [0.0]
