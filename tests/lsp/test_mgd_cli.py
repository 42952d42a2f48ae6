"""Monitors in the headless front doors: replay's `monitors` flag and the CLI's per-completion `monitor` info."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_mgd import ACCOUNT, CURSOR, MAIN_URI, PROJECT, SOURCE, attribute_after, biased_model

from superpie.completion.config import DecodingConfig, EngineConfig, MonitorConfig
from superpie.completion.engine import Engine
from superpie.lsp.cli import build_parser
from superpie.lsp.positions import position_at
from superpie.lsp.replay import Replayer, ReplayError


@pytest.fixture(scope="module")
def replayer():
    config = EngineConfig(workspace=str(PROJECT))
    config.decoding = DecodingConfig(max_tokens=8)
    config.monitors = MonitorConfig(jedi_budget_ms=20_000)
    engine = Engine(config, lm=biased_model())
    rep = Replayer(engine, PROJECT)
    rep.apply(1, {"op": "open", "uri": MAIN_URI, "text": SOURCE})
    yield rep
    engine.shutdown()


def _complete(replayer, **extra):
    line, character = position_at(SOURCE, CURSOR)
    event = {"op": "complete", "uri": MAIN_URI, "position": {"line": line, "character": character}, **extra}
    return replayer.apply(2, event).to_json()


def test_replay_complete_events_switch_monitors(replayer):
    on, off, default = _complete(replayer, monitors=True), _complete(replayer, monitors=False), _complete(replayer)
    assert set(on["completions"][0]) == {"text", "score", "monitor"}
    assert on["completions"][0]["monitor"]["fired"][0] == "dereference"
    assert on["completions"][0]["monitor"]["fell_back"] is False
    assert attribute_after(on["completions"][0]["text"], 0) in ACCOUNT
    assert off["completions"][0]["monitor"] is None
    assert attribute_after(off["completions"][0]["text"], 0) not in ACCOUNT
    assert default["completions"][0]["monitor"] is not None  # the configuration's default: on
    assert set(on["timings_ms"]) == {"sync", "decode", "total"}


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_replay_rejects_a_monitors_value_that_is_not_a_boolean(replayer, value):
    with pytest.raises(ReplayError, match="line 2: 'monitors' must be true or false"):
        _complete(replayer, monitors=value)


def test_cli_takes_monitors_on_or_off():
    parser = build_parser()
    assert parser.parse_args(["complete", "f.py", "--line", "0", "--character", "0"]).monitors == "on"
    assert parser.parse_args(["replay", "s.jsonl", "--monitors", "off"]).monitors == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", "s.jsonl", "--monitors", "maybe"])


@pytest.mark.real_model
def test_cli_json_reports_what_the_monitors_did(tmp_path):
    target = tmp_path / "main.py"
    target.write_text(SOURCE)
    line, character = position_at(SOURCE, CURSOR)
    args = ["complete", str(target), "--line", str(line), "--character", str(character), "--json"]
    args += ["--workspace", str(PROJECT), "--max-tokens", "8", "--monitors", "on", "--model", "smollm2-135m"]
    cmd = [sys.executable, "-m", "superpie.lsp.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"completions", "timings_ms"}
    (first, *_) = out["completions"]
    assert set(first) == {"text", "score", "monitor"} and isinstance(first["score"], float)
    assert first["monitor"]["fired"][0] == "dereference"
    if not first["monitor"]["fell_back"]:  # jedi answered within its budget: the attribute is real
        assert attribute_after(first["text"], 0) in ACCOUNT
        assert first["monitor"]["valid"] == first["monitor"]["checked"] >= 1
