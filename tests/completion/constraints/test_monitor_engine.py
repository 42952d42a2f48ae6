"""Monitors through the Engine: per-request switch, every strategy, ranking verdict, reported info."""

from __future__ import annotations

import pytest
from test_mgd import ACCOUNT, CURSOR, MAIN, MAIN_URI, PROJECT, SOURCE, attribute_after, biased_model

from superpie.completion.config import DecodingConfig, EngineConfig, MonitorConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest


@pytest.fixture(scope="module")
def engine():
    config = EngineConfig(workspace=str(PROJECT))
    config.decoding = DecodingConfig(max_tokens=10)
    config.monitors = MonitorConfig(jedi_budget_ms=20_000)
    eng = Engine(config, lm=biased_model())
    eng.sync(MAIN_URI, MAIN.read_text())  # opening the document warms jedi in the background
    yield eng
    eng.shutdown()


def _request(k: int, strategy: str | None, monitors: bool | None) -> CompletionRequest:
    return CompletionRequest(MAIN_URI, SOURCE, CURSOR, drafts=k, strategy=strategy, monitors=monitors)


@pytest.mark.parametrize(("k", "strategy"), [(1, "greedy"), (3, "superposed"), (3, "beam")])
def test_monitors_keep_every_completion_on_an_attribute(engine, k, strategy):
    result = engine.complete(_request(k, strategy, None))
    assert result.completions and result.monitors is not None
    for c in result.completions:
        assert attribute_after(c.text, 0) in ACCOUNT, (strategy, c.text)
        assert c.constrained
        assert c.monitor.fired[0] == "dereference" and not c.monitor.fell_back
        assert c.monitor.checked >= 1 and c.monitor.valid == c.monitor.checked
    assert result.timings_ms["monitors"] > 0 and result.monitors.trigger_s and result.monitors.mask_s


def test_a_request_can_turn_monitors_off(engine):
    result = engine.complete(_request(1, "greedy", False))
    (c,) = result.completions
    assert attribute_after(c.text, 0) not in ACCOUNT  # the biased model invents a name
    assert c.monitor is None and result.monitors is None and result.timings_ms["monitors"] == 0.0


def test_the_verdict_ranks_an_invented_attribute_below_a_real_one(engine):
    from superpie.completion.draft import Draft
    from superpie.completion.finish import monitor_hook
    from superpie.completion.plan import plan_request
    from superpie.completion.postprocess.pipeline import DraftContext

    doc = engine.documents.get(MAIN_URI)
    plan = plan_request(_request(2, "beam", True), doc.cache, engine.lm, engine.config, engine.monitor_runtime())
    hook = monitor_hook(plan)
    context = DraftContext.at(SOURCE, CURSOR, False)
    assert hook(Draft("deposit(1)"), context) == 1.0
    assert hook(Draft("depart(1)"), context) == 0.0


def test_config_switches_follow_without_a_new_jedi_project(engine):
    runtime = engine.monitor_runtime()
    engine.config.monitors = MonitorConfig(jedi_budget_ms=15_000, dereference=False)
    try:
        result = engine.complete(_request(1, "greedy", None))
        assert engine.monitor_runtime() is runtime and runtime.analyzer.jedi.budget_s == 15.0
        assert "dereference" not in result.completions[0].monitor.fired
    finally:
        engine.config.monitors = MonitorConfig(jedi_budget_ms=20_000)
    assert engine.jedi is runtime.analyzer.jedi


def test_a_synced_edit_prefetches_the_monitor_question(engine):
    text = SOURCE.replace("    acct.\n", "    acct.owner.\n")
    cursor = text.index("acct.owner.") + len("acct.owner.")
    before = engine.jedi.stats_snapshot()
    engine.sync(MAIN_URI, text)  # no anchor, as the server syncs: the edit's end is found from the texts
    engine.jedi._executor.submit(lambda: None).result(timeout=60)  # the prefetch has run
    result = engine.complete(CompletionRequest(MAIN_URI, text, cursor, drafts=1, monitors=True))
    after = engine.jedi.stats_snapshot()
    assert after.cache_hits > before.cache_hits and not result.monitors.jedi_s  # answered before it was asked
    assert result.completions[0].monitor.fired[0] == "dereference"


def test_superposed_keeps_the_single_draft_completion_first(engine):
    """The greedy line superposed decoding keeps is the one greedy decoding writes: the identifier after
    the dot spelled whole by the lookahead, not its best first token."""
    one = engine.complete(_request(1, "greedy", None)).completions[0].text
    many = engine.complete(_request(3, "superposed", None)).completions
    assert many[0].text == one, [c.text for c in many]
