"""Through the Engine, a silent monitor leaves the completion exactly what it is with monitors off.

The biased tiny model invents names after every dot; where jedi knows the object it is kept on the
attributes (test_monitor_engine), where jedi knows only object's dunders or a `__getattr__` object
the monitors must not replace its name with `__class__` (issue 15).
"""

from __future__ import annotations

import pytest
from test_mgd import biased_model

from superpie.completion.config import DecodingConfig, EngineConfig, MonitorConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest

SOURCES = {
    "object_only": "def show(frame=None):\n    return frame.",
    "dynamic": "import ctypes\n\nlib = ctypes.CDLL(None)\nlib.",
    "known": "class Account:\n    def deposit(self, amount):\n        return amount\n\n\nAccount().",
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("silent-engine")
    config = EngineConfig(workspace=str(root))
    config.decoding = DecodingConfig(max_tokens=6)
    config.monitors = MonitorConfig(jedi_budget_ms=60_000)
    eng = Engine(config, lm=biased_model())
    yield eng, root
    eng.shutdown()


def _complete(engine, name: str, monitors: bool):
    eng, root = engine
    source = SOURCES[name]
    uri = (root / f"{name}.py").as_uri()
    result = eng.complete(CompletionRequest(uri, source, len(source), drafts=1, strategy="greedy", monitors=monitors))
    (c,) = result.completions
    return c, result


@pytest.mark.parametrize("name", ["object_only", "dynamic"])
def test_a_silent_monitor_leaves_the_completion_as_it_is_without_monitors(engine, name):
    off, _ = _complete(engine, name, False)
    on, result = _complete(engine, name, True)
    assert on.text == off.text
    assert on.monitor is not None and on.monitor.fired == () and on.monitor.checked == 0
    assert not result.monitors.mask_s  # no token was masked
    (state,) = result.monitors.fired.values()
    assert state.silent == name


def test_a_known_object_is_still_constrained(engine):
    off, _ = _complete(engine, "known", False)
    on, _ = _complete(engine, "known", True)
    assert on.text != off.text and on.monitor.fired == ("dereference",) and on.monitor.valid == on.monitor.checked == 1
