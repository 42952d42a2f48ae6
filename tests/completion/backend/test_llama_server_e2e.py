"""superpie completing through a real serving engine: llama.cpp's own `llama-server`, serving the default
model's GGUF on 127.0.0.1.

The server is built once per version into a cache outside the repository (`make llama-server`, which runs
scripts/build_llama_server.sh); `make test-engine` builds it if needed and runs this file. Without the
binary (`SUPERPIE_LLAMA_SERVER`, else the cache's path) the tests are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paths
import pytest

from superpie.completion.backend.base import EngineRequest
from superpie.completion.backend.http import HttpSettings, HttpTransport
from superpie.completion.backend.llama_server import LLAMA_SERVER, LlamaServerProcess
from superpie.completion.backend.llamacpp import LlamaCppClient
from superpie.completion.backend.prompt import layout
from superpie.completion.config import EngineConfig, ModelConfig
from superpie.completion.config.fields import replaced
from superpie.completion.decoding.task import never_cancelled
from superpie.completion.engine import Engine
from superpie.completion.model.catalog import SMOLLM2
from superpie.completion.model.loading import gguf_file
from superpie.completion.request import CompletionRequest
from superpie.lsp.cli import main

SAMPLE = paths.ROOT / "examples" / "sample.py"

pytestmark = pytest.mark.skipif(
    not LLAMA_SERVER.is_file(), reason=f"no llama-server at {LLAMA_SERVER} (make llama-server)"
)


def default_model_server() -> LlamaServerProcess:
    """`llama-server` with SmolLM2's GGUF on a free loopback port."""
    return LlamaServerProcess(gguf_file(SMOLLM2), slots=4, context=8192)


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServerProcess]:
    s = default_model_server()
    yield s
    s.stop()


def remote(url: str, **model: object) -> EngineConfig:
    settings: dict[str, object] = {"read_timeout_ms": 60_000, **model}
    config = EngineConfig(model=ModelConfig(backend="remote", url=url, **settings))  # type: ignore[arg-type]
    return replaced(config, "monitors.enabled", False)


def sample_request(**kw: object) -> CompletionRequest:
    text = SAMPLE.read_text()
    lines = text.split("\n")
    offset = sum(len(line) + 1 for line in lines[:22]) + 12  # line 22, character 12, as `make demo`
    return CompletionRequest(uri=SAMPLE.as_uri(), text=text, offset=offset, **kw)  # type: ignore[arg-type]


def test_the_cli_completes_through_llama_server(server: LlamaServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["complete", str(SAMPLE), "--line", "22", "--character", "12", "--json", "--monitors", "off"]
    assert main(argv + ["--backend", "remote", "--url", server.url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["remote"]["api"] == "llama.cpp" and out["remote"]["endpoint"] == "/completion"  # SmolLM2: no FIM
    assert out["remote"]["model"] == gguf_file(SMOLLM2).name and out["remote"]["http_requests"] == 1
    assert out["completions"] and out["completions"][0]["text"].strip()
    assert "\n" not in out["completions"][0]["text"]  # one line, as a local inline draft


def test_k_drafts_in_one_request(server: LlamaServerProcess) -> None:
    client = LlamaCppClient(HttpTransport(HttpSettings(server.url, read_timeout_s=60)))
    client.detect()
    req = sample_request()
    prompt = layout(req.text, req.offset, 6000, 0)
    asked = EngineRequest(prompt, drafts=3, max_tokens=12, stop=(), temperature=0.8)
    reply = client.complete(asked, never_cancelled)
    assert len(reply.drafts) == 3 and client.http.requests == 3  # detection (/props, the /infill probe), then one
    assert all(len(d.token_logprobs) == len(d.token_texts) > 0 for d in reply.drafts)  # n_probs: per token
    result = Engine(remote(server.url)).complete(sample_request(drafts=3))
    assert result.remote is not None and result.remote.http_requests == 3  # detection's two, then one completion
    assert 1 <= len(result.completions) <= 3


def test_typing_on_a_line_is_served_from_the_engine_s_cache(server: LlamaServerProcess) -> None:
    engine = Engine(remote(server.url))
    base = sample_request()
    shares = []
    for typed in ("t", "to", "tot", "tota"):
        text = base.text[: base.offset] + typed + base.text[base.offset :]
        result = engine.complete(CompletionRequest(base.uri, text, base.offset + len(typed), max_tokens=4))
        assert result.remote is not None and result.remote.prompt_tokens and result.remote.cached_tokens is not None
        shares.append(result.remote.cached_tokens / result.remote.prompt_tokens)
    assert min(shares[1:]) >= 0.9, shares  # after the first keystroke, the prompt's prefix is in the cache


def test_cancelling_stops_the_request_and_the_engine_stays_usable(server: LlamaServerProcess) -> None:
    engine = Engine(remote(server.url))
    engine.ensure_loaded()
    t0 = time.perf_counter()
    long = sample_request(max_tokens=1500, multiline=True)
    result = engine.complete(long, cancelled=lambda: time.perf_counter() - t0 > 0.3)
    assert result.cancelled and result.empty_reason == "stopped" and time.perf_counter() - t0 < 1.5
    after = engine.complete(sample_request(max_tokens=8))
    assert after.remote is not None and after.remote.error is None and after.empty_reason in (None, "blank", "cut")


def test_the_engine_killed_mid_request_and_down() -> None:
    own = default_model_server()
    engine = Engine(remote(own.url, read_timeout_ms=20_000, retries=1))
    engine.ensure_loaded()
    results = []
    thread = threading.Thread(
        target=lambda: results.append(engine.complete(sample_request(max_tokens=1500, multiline=True)))
    )
    thread.start()
    time.sleep(0.5)
    t_kill = time.perf_counter()
    own.stop()
    thread.join(10)
    assert not thread.is_alive() and time.perf_counter() - t_kill < 5  # no hang: the read fails at once
    assert results[0].empty_reason == "engine_down" and results[0].remote.error  # type: ignore[union-attr]
    again = engine.complete(sample_request())
    assert again.empty_reason == "engine_down" and engine.backend_status()["state"] == "down"
    argv = ["complete", str(SAMPLE), "--line", "22", "--character", "12", "--backend", "remote", "--url", own.url]
    assert main(argv) == 2  # the CLI says so in one line: superpie: error: remote engine ... is down


ACCOUNT = '''class Account:
    def __init__(self, owner):
        self.owner_name = owner
        self.balance_cents = 0


acct = Account("bob")
'''


def test_monitors_over_the_engine_keep_every_name_after_the_dot_valid(
    server: LlamaServerProcess, tmp_path: Path
) -> None:
    config = replaced(remote(server.url), "monitors.enabled", True)
    engine = Engine(replaced(config, "monitors.jedi_budget_ms", 20_000))
    uri = (tmp_path / "acct.py").as_uri()
    invalid_without = 0
    names = ("owner_name", "balance_cents")
    for line in ("print(acct.", "total = acct.", "name = acct.", "if acct."):
        text = ACCOUNT + line
        ask = CompletionRequest(uri, text, len(text), max_tokens=12)
        off = engine.complete(dataclasses.replace(ask, monitors=False))
        invalid_without += not off.completions or not off.completions[0].text.startswith(names)
        on = engine.complete(ask)
        assert on.completions and on.completions[0].text.startswith(names), line
        verdict = on.completions[0].monitor
        assert verdict is not None and verdict.checked >= 1 and verdict.valid == verdict.checked
        assert on.remote is not None and on.remote.round_trips == 1 + on.remote.monitor_requests
    engine.shutdown()
    assert invalid_without >= 1  # SmolLM2 alone spells attributes Account does not have
