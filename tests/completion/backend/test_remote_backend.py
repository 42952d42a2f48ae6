"""The remote backend against a scripted engine: detection, k drafts in one request, the prompt layout for
the engine's prefix cache, ranking, cancellation, timeouts, bounded retries, the engine down, the fallback."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from fake_engine import FakeEngine, llama_props, llama_result, no_infill

from superpie.completion.backend.prompt import layout
from superpie.completion.backend.remote import RemoteBackend
from superpie.completion.config import EngineConfig, ModelConfig
from superpie.completion.config.fields import replaced
from superpie.completion.engine import Engine
from superpie.completion.model.loading import ModelLoadError
from superpie.completion.request import CompletionRequest
from superpie.lsp.cli import build_parser, config_from_flags

TEXT = "import os\n\n\ndef main():\n    path = os.getcwd()\n    print(pa"
OFFSET = len(TEXT)


def remote_config(url: str, **model: Any) -> EngineConfig:
    config = EngineConfig(model=ModelConfig(backend="remote", url=url, **model))
    return replaced(config, "monitors.enabled", False)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def llama_engine(completion) -> FakeEngine:
    return FakeEngine({"/props": llama_props, "/infill": no_infill, "/completion": completion})


def request(**kw: Any) -> CompletionRequest:
    return CompletionRequest(uri="file:///x.py", text=TEXT, offset=OFFSET, **kw)


# ----------------------------------------------------------------------------- prompt layout


def test_typing_on_a_line_only_extends_the_prompt() -> None:
    """Stable material first, the text being typed last: each keystroke's prompt extends the previous one."""
    body = "".join(f"line_{i} = {i}\n" for i in range(400))
    typed = "result = compute("
    prompts = [layout(body + typed[:n], len(body) + n, 2000, 500) for n in range(len(typed) + 1)]
    for before, after in zip(prompts, prompts[1:]):
        assert after.text.startswith(before.text)
        assert after.prefix == before.prefix
    assert len(prompts[0].prefix) <= 2000 and prompts[0].prefix.startswith("line_")


def test_the_window_moves_in_steps_at_line_starts() -> None:
    body = "".join(f"x{i} = {i}\n" for i in range(2000))
    starts = set()
    for line in range(1500, 1600):
        offset = body.index(f"x{line} =")
        prompt = layout(body, offset, 4000, 0)
        starts.add(offset - len(prompt.prefix))
        assert 3000 <= len(prompt.prefix) <= 4000
        assert body[offset - len(prompt.prefix) - 1] == "\n"
    assert len(starts) <= 3  # 100 lines of ~8 characters cross at most two quarter-window steps


def test_the_suffix_ends_at_a_line_end() -> None:
    text = "a = 1\nb = 2\nc = 3\n"
    prompt = layout(text, 2, 100, 10)
    assert (prompt.prefix, prompt.line, prompt.suffix) == ("", "a ", "= 1\nb = 2\n")
    assert layout(text, 2, 100, 9).suffix == "= 1\n"  # "b = 2" would be cut inside its line


# ----------------------------------------------------------------------------- llama.cpp server


def test_llama_cpp_k_drafts_in_one_request_ranked_and_post_processed() -> None:
    def completion(body: dict[str, Any]) -> tuple[int, Any]:
        return 200, [
            llama_result("th)\nnext", ["th", ")", "\n", "next"], logprob=-2.0, stop_type="limit"),
            llama_result("th)", ["th", ")"], logprob=-0.1),
            llama_result("th + '/')", ["th", " +", " '/", "')"], logprob=-1.0),
        ]

    with llama_engine(completion) as fake:
        engine = Engine(remote_config(fake.url))
        engine.ensure_loaded()
        result = engine.complete(request(drafts=3))
        sent = fake.posted("/completion")
    assert len(sent) == 1 and sent[0]["n_cmpl"] == 3 and sent[0]["cache_prompt"] is True
    assert sent[0]["n_probs"] == 1 and sent[0]["temperature"] > 0  # k drafts are sampled
    assert sent[0]["prompt"] == TEXT and sent[0]["stop"] == ["\n"]
    texts = [d.text for d in result.completions]
    assert texts[0] == "th)"  # best mean log-prob first
    assert "th)\nnext" not in texts  # cut at the line end by the same post-processing as local drafts
    assert set(texts) <= {"th)", "th + '/')"}
    assert result.remote is not None
    assert (result.remote.api, result.remote.endpoint, result.remote.model) == (
        "llama.cpp",
        "/completion",
        "fake-model.gguf",
    )
    assert (result.remote.prompt_tokens, result.remote.cached_tokens, result.remote.http_requests) == (40, 36, 1)
    assert result.strategy == "remote" and result.empty_reason is None
    assert engine.backend_status()["state"] == "up"


def test_llama_cpp_infill_puts_the_typed_line_last() -> None:
    def infill(body: dict[str, Any]) -> tuple[int, Any]:
        return 200, llama_result("th)", ["th", ")"]) if body.get("n_predict") else {"content": ""}

    routes = {"/props": llama_props, "/infill": infill}
    with FakeEngine(routes) as fake:
        text = TEXT + "\n\nmain()\n"
        result = Engine(remote_config(fake.url)).complete(
            CompletionRequest(uri="file:///x.py", text=text, offset=OFFSET)
        )
        body = fake.posted("/infill")[-1]
    assert result.remote is not None and result.remote.endpoint == "/infill"
    assert body["prompt"] == "    print(pa" and body["input_suffix"] == "\n\nmain()\n"
    assert body["input_prefix"] == TEXT[: TEXT.rindex("\n") + 1]
    assert body["temperature"] == 0.0 and body["n_cmpl"] == 1
    assert [d.text for d in result.completions] == ["th)"]


def test_the_api_key_comes_from_the_environment_variable_named_in_the_config() -> None:
    with llama_engine(lambda body: (200, llama_result("th)", ["th", ")"]))) as fake:
        backend = RemoteBackend(
            ModelConfig(backend="remote", url=fake.url, api_key_env="TEAM_KEY"), environ={"TEAM_KEY": "sekrit"}
        )
        backend.connect()
        headers = fake.requests[0][3]
    assert headers.get("Authorization") == "Bearer sekrit"


# ----------------------------------------------------------------------------- OpenAI-compatible


def test_openai_completions_n_drafts_legacy_logprobs_and_cached_tokens() -> None:
    def models(body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"object": "list", "data": [{"id": "other"}, {"id": "coder", "max_model_len": 8192}]}

    def completions(body: dict[str, Any]) -> tuple[int, Any]:
        choices = [
            {"index": 1, "text": "th + 1)", "finish_reason": "stop", "logprobs": {
                "tokens": ["th", " +", " 1", ")"], "token_logprobs": [-0.1, -2.0, -2.0, -0.1]}},
            {"index": 0, "text": "th)", "finish_reason": "stop", "logprobs": {
                "tokens": ["th", ")"], "token_logprobs": [-0.1, -0.2]}},
        ]  # fmt: skip
        usage = {"prompt_tokens": 30, "prompt_tokens_details": {"cached_tokens": 28}}
        return 200, {"choices": choices, "usage": usage}

    with FakeEngine({"/v1/models": models, "/v1/completions": completions}) as fake:
        engine = Engine(remote_config(fake.url, name="coder"))
        engine.ensure_loaded()
        result = engine.complete(request(drafts=2))
        sent = fake.posted("/v1/completions")
    assert len(sent) == 1 and (sent[0]["n"], sent[0]["model"], sent[0]["logprobs"]) == (2, "coder", 1)
    assert [d.text for d in result.completions] == ["th)", "th + 1)"]
    assert result.completions[0].token_logprobs == (-0.1, -0.2)
    assert result.remote is not None
    assert (result.remote.api, result.remote.cached_tokens, result.remote.prompt_tokens) == ("openai", 28, 30)


def test_an_openai_engine_without_the_configured_model_is_a_load_error() -> None:
    with FakeEngine({"/v1/models": lambda body: (200, {"data": [{"id": "other"}]})}) as fake:
        with pytest.raises(ModelLoadError, match="'coder' is not served"):
            Engine(remote_config(fake.url, name="coder")).ensure_loaded()


# ----------------------------------------------------------------------------- robustness


def test_cancelling_closes_the_request_at_once() -> None:
    release = threading.Event()

    def slow(body: dict[str, Any]) -> tuple[int, Any]:
        release.wait(5)
        return 200, llama_result("th)", ["th", ")"])

    with llama_engine(slow) as fake:
        engine = Engine(remote_config(fake.url))
        engine.ensure_loaded()
        t0 = time.perf_counter()
        result = engine.complete(request(), cancelled=lambda: time.perf_counter() - t0 > 0.1)
        elapsed = time.perf_counter() - t0
        release.set()
        assert fake.disconnected.wait(2)  # the engine found the client gone when it answered
    assert elapsed < 0.5
    assert result.cancelled and result.empty_reason == "stopped" and result.completions == []


def test_a_read_timeout_is_engine_down_within_the_timeout_and_not_retried() -> None:
    release = threading.Event()

    def slow(body: dict[str, Any]) -> tuple[int, Any]:
        release.wait(5)
        return 200, llama_result("th)", ["th", ")"])

    with llama_engine(slow) as fake:
        engine = Engine(remote_config(fake.url, read_timeout_ms=300, retries=3))
        engine.ensure_loaded()
        t0 = time.perf_counter()
        result = engine.complete(request())
        elapsed = time.perf_counter() - t0
        release.set()
        sent = fake.posted("/completion")
    assert elapsed < 4.0  # the engine answers after 5 s: it was not waited for (retries: `sent` below)
    assert result.empty_reason == "engine_down" and result.remote is not None
    assert "timed out" in (result.remote.error or "") and len(sent) == 1
    assert engine.backend_status()["state"] == "down"


def test_a_503_is_retried_a_bounded_number_of_times() -> None:
    answers = iter([(503, {"error": {"message": "Loading model"}}), (200, llama_result("th)", ["th", ")"]))])
    with llama_engine(lambda body: next(answers)) as fake:
        engine = Engine(remote_config(fake.url, retries=1))
        engine.ensure_loaded()
        result = engine.complete(request())
        assert len(fake.posted("/completion")) == 2
    assert [d.text for d in result.completions] == ["th)"]
    assert result.remote is not None and result.remote.http_requests == 2


def test_an_engine_that_is_down_is_a_clear_load_error_and_an_empty_answer() -> None:
    url = closed_port_url()
    with pytest.raises(ModelLoadError, match=f"remote engine {url} is down: ConnectionRefusedError.*3 tries"):
        Engine(remote_config(url, retries=2)).ensure_loaded()
    engine = Engine(remote_config(url, retries=2))
    t0 = time.perf_counter()
    result = engine.complete(request())
    assert time.perf_counter() - t0 < 2  # refused three times with back-off 0.1 + 0.2 s
    assert result.empty_reason == "engine_down" and result.completions == []
    assert result.remote is not None and result.remote.http_requests == 3
    assert not engine.loaded and engine.backend_status()["state"] == "down"


def test_an_engine_error_is_reported_not_raised() -> None:
    with llama_engine(lambda body: (400, {"error": {"message": "context too long"}})) as fake:
        result = Engine(remote_config(fake.url)).complete(request())
    assert result.empty_reason == "engine_error"
    assert result.remote is not None and "context too long" in (result.remote.error or "")


def test_fallback_completes_with_the_local_model_while_the_engine_is_down() -> None:
    from tiny import tiny_model

    config = remote_config(closed_port_url(), fallback=True, retries=0)
    engine = Engine(replaced(config, "decoding.max_tokens", 4), lm=tiny_model())
    assert engine.ensure_loaded() == 0.0  # the engine is down: the local model (already here) answers
    result = engine.complete(request())
    assert result.remote is not None and result.remote.fallback and result.remote.error
    assert result.strategy == "greedy" and result.empty_reason != "engine_down"
    assert result.cache.encoded > 0  # decoded locally over a PIE cache


# ----------------------------------------------------------------------------- configuration


def test_the_backend_is_read_off_the_tree_by_the_cli() -> None:
    args = build_parser().parse_args(
        ["complete", "f.py", "--line", "0", "--character", "0", "--backend", "remote", "--url", "http://h:1"]
        + ["--remote-model", "coder", "--fallback"]
    )
    model = config_from_flags(args).model
    assert (model.backend, model.url, model.name, model.fallback) == ("remote", "http://h:1", "coder", True)
    with pytest.raises(ValueError, match="backend"):
        ModelConfig(backend="cloud")  # type: ignore[arg-type]
    engine = Engine(EngineConfig(model=ModelConfig(backend="remote")))  # the server keeps running: no raise here
    with pytest.raises(ModelLoadError, match="model.url must be set"):
        engine.ensure_loaded()
    with pytest.raises(ModelLoadError, match="must be an http"):
        Engine(EngineConfig(model=ModelConfig(backend="remote", url="gpu-box:8080"))).ensure_loaded()
    assert Engine(EngineConfig(model=ModelConfig(backend="remote"))).complete(request()).empty_reason == "engine_error"


def test_the_server_stats_say_which_engine_answered_and_its_cached_share() -> None:
    from superpie.lsp.scheduler import Outcome, Snapshot
    from superpie.lsp.stats import ServerStats

    with llama_engine(lambda body: (200, llama_result("th)", ["th", ")"]))) as fake:
        engine = Engine(remote_config(fake.url))
        engine.ensure_loaded()
        stats = ServerStats()
        for _ in range(2):
            stats.record("inline", 5.0, Outcome(engine.complete(request())))
    out = stats.to_json(Snapshot(loaded=True, model=engine.model_name, backend=engine.backend_status()), 0, 0)
    model: Any = out["model"]
    assert model["backend"]["api"] == "llama.cpp" and model["backend"]["state"] == "up"
    assert model["remote"]["requests"] == 2 and model["remote"]["cached_share"] == 0.9  # 36 of 40, twice
    assert model["remote"]["round_trips_per_request"] == 1.0  # monitors off: one request per completion
    assert "llama.cpp at http://127.0.0.1:" in model["name"]
