"""After loading, the model worker builds what the first requests would otherwise pay for (`Engine.warm_up`):
the tokenizer's vocabulary with healing's index and the monitors' trie (about 1.3 s for the code model), and
jedi's service when the monitors are on."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tiny import tiny_model
from tokenizers import Tokenizer

from superpie.completion.config import EngineConfig
from superpie.completion.config.fields import replaced
from superpie.completion.constraints.vocab import vocabulary
from superpie.completion.engine import Engine
from superpie.lsp.scheduler import ModelWorker


@pytest.mark.parametrize("monitors", [False, True])
def test_loading_on_the_worker_prepares_the_vocabulary_and_the_monitors(monitors, tmp_path):
    lm = tiny_model()
    fresh = replace(lm, tokenizer=Tokenizer.from_str(lm.tokenizer.to_str()))  # one no other test prepared
    config = replaced(replaced(EngineConfig(), "monitors.enabled", monitors), "workspace", str(tmp_path))
    engine = Engine(config, lm=fresh)
    worker = ModelWorker(engine, {}.get, idle_refresh_s=60.0)
    worker.start()
    try:
        assert not vocabulary(fresh.tokenizer).prepared
        worker.load().result(60)
        assert vocabulary(fresh.tokenizer).prepared
        if monitors:  # jedi's service is up and has answered the priming question
            stats = engine.monitor_runtime().analyzer.stats()
            assert stats.questions == 1 and stats.fallbacks == 0 and stats.errors == 0
        else:
            assert engine._monitors is None
    finally:
        worker.stop()
        engine.shutdown()
