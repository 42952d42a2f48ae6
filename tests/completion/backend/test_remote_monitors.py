"""Monitors over a remote engine, against a scripted engine: a ruled-out identifier after `obj.` is re-spelled
under the engine's constraint (llama.cpp `grammar`, vLLM `guided_regex` / `structured_outputs`), an allowed one
costs no extra request, and where the engine cannot constrain (or the bound is spent) the draft is cut before it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fake_engine import FakeEngine, llama_props, llama_result, no_infill

from superpie.completion.backend.llamacpp import allowed_grammar
from superpie.completion.backend.openai import allowed_regex
from superpie.completion.config import EngineConfig, ModelConfig
from superpie.completion.config.fields import replaced
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest, CompletionResult

BASE = '''class Account:
    def __init__(self, owner):
        self.owner_name = owner
        self.balance_cents = 0


acct = Account("bob")
'''
NAMES = ("balance_cents", "owner_name")


def config(url: str, **model: Any) -> EngineConfig:
    engine = EngineConfig(model=ModelConfig(backend="remote", url=url, **model))
    return replaced(engine, "monitors.jedi_budget_ms", 20_000)  # a cold jedi on a busy machine still answers


def complete(engine: Engine, tmp_path: Path, line: str, **kw: Any) -> CompletionResult:
    text = BASE + line
    return engine.complete(CompletionRequest((tmp_path / "acct.py").as_uri(), text, len(text), **kw))


def llama(answer_free: str) -> tuple[FakeEngine, list[dict[str, Any]]]:
    """A llama.cpp server that answers `answer_free` unconstrained, the grammar's first name and `)` under one."""
    grammars: list[dict[str, Any]] = []

    def completion(body: dict[str, Any]) -> tuple[int, Any]:
        if "grammar" in body:
            grammars.append(body)
            name = "owner_name"
            assert f'"{name}"' in body["grammar"]
            return 200, llama_result(name + ")", ["owner", "_name", ")"], stop_type="eos")
        if body["prompt"].endswith("acct.owner_name)"):
            return 200, llama_result("", [])
        return 200, llama_result(answer_free, [answer_free[:4], answer_free[4:]])

    return FakeEngine({"/props": llama_props, "/infill": no_infill, "/completion": completion}), grammars


def test_a_ruled_out_name_is_re_spelled_under_the_engine_s_grammar(tmp_path: Path) -> None:
    fake, grammars = llama("name)")
    with fake:
        engine = Engine(config(fake.url))
        off = complete(engine, tmp_path, "print(acct.", monitors=False)
        on = complete(engine, tmp_path, "print(acct.")
        sent = fake.posted("/completion")
    engine.shutdown()
    assert [d.text for d in off.completions] == ["name)"]  # what the engine spelled: no such attribute
    assert [d.text for d in on.completions] == ["owner_name)"]
    draft = on.completions[0]
    assert draft.monitor is not None and (draft.monitor.checked, draft.monitor.valid) == (1, 1)
    assert draft.token_constrained == (True, True, True)
    assert on.remote is not None and on.monitors is not None
    assert (on.remote.round_trips, on.remote.monitor_requests, on.remote.monitor_corrected) == (3, 2, 1)
    grammar = grammars[0]
    assert grammar["prompt"].endswith("print(acct.") and grammar["stop"] == [] and grammar["n_cmpl"] == 1
    assert set(re.findall(r'"(\w+)"', grammar["grammar"])) >= set(NAMES)
    assert not any('"name"' in g["grammar"] for g in grammars)
    assert sent[-1]["prompt"].endswith("print(acct.owner_name)") and "grammar" not in sent[-1]


def test_an_allowed_name_costs_no_extra_request(tmp_path: Path) -> None:
    fake, grammars = llama("balance_cents)")
    with fake:
        engine = Engine(config(fake.url))
        result = complete(engine, tmp_path, "print(acct.")
    engine.shutdown()
    assert [d.text for d in result.completions] == ["balance_cents)"] and not grammars
    assert result.remote is not None and (result.remote.round_trips, result.remote.monitor_requests) == (1, 0)
    assert result.completions[0].monitor is not None and result.completions[0].monitor.valid == 1


def test_past_the_bound_the_draft_is_cut_before_the_name(tmp_path: Path) -> None:
    fake, grammars = llama("acct.name + 1")
    with fake:
        engine = Engine(config(fake.url, monitor_requests=0))
        result = complete(engine, tmp_path, "total = ")
    engine.shutdown()
    assert [d.text for d in result.completions] == ["acct."] and not grammars
    assert result.remote is not None and (result.remote.round_trips, result.remote.monitor_cut) == (1, 1)


def openai_engine(owned_by: str | None) -> FakeEngine:
    def models(body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"data": [{"id": "coder", **({"owned_by": owned_by} if owned_by else {})}]}

    def completions(body: dict[str, Any]) -> tuple[int, Any]:
        pattern = body.get("guided_regex")
        if pattern is not None:
            return 200, {"choices": [{"index": 0, "text": "owner_name)", "finish_reason": "stop"}]}
        text = "" if body["prompt"].endswith("owner_name)") else "name)"
        return 200, {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}

    return FakeEngine({"/v1/models": models, "/v1/completions": completions})


def test_vllm_gets_a_regex_of_the_allowed_names(tmp_path: Path) -> None:
    with openai_engine("vllm") as fake:
        engine = Engine(config(fake.url))
        result = complete(engine, tmp_path, "print(acct.")
        asked = [b for b in fake.posted("/v1/completions") if "guided_regex" in b]
    engine.shutdown()
    assert [d.text for d in result.completions] == ["owner_name)"]
    assert len(asked) == 1 and asked[0]["structured_outputs"] == {"regex": asked[0]["guided_regex"]}
    assert asked[0]["prompt"].endswith("print(acct.") and asked[0]["n"] == 1
    pattern = asked[0]["guided_regex"]
    assert re.fullmatch(pattern, "owner_name)") and re.fullmatch(pattern, "balance_cents\n")
    assert not re.fullmatch(pattern, "name)") and not re.fullmatch(pattern, "owner_names")
    assert "guided_regex" in engine.backend_status()["features"]


def test_a_plain_openai_server_cannot_constrain_so_the_draft_is_cut(tmp_path: Path) -> None:
    with openai_engine(None) as fake:
        engine = Engine(config(fake.url))
        result = complete(engine, tmp_path, "print(acct.")
        sent = fake.posted("/v1/completions")
    engine.shutdown()
    assert len(sent) == 1 and result.completions == []  # nothing valid was spelled: no completion at all
    assert result.remote is not None and result.remote.monitor_cut == 1 and result.remote.round_trips == 1


@pytest.mark.parametrize(
    ("allowed", "grammar", "regex"),
    [
        (("cwd", "env"), 'root ::= ("cwd" | "env") [^A-Za-z0-9_]', "(?:cwd|env)[^A-Za-z0-9_]"),
        (("", "s"), 'root ::= ("s")? [^A-Za-z0-9_]', "(?:s)?[^A-Za-z0-9_]"),
        (("",), "root ::= [^A-Za-z0-9_]", "[^A-Za-z0-9_]"),
    ],
)
def test_the_constraint_texts(allowed: tuple[str, ...], grammar: str, regex: str) -> None:
    assert allowed_grammar(allowed) == grammar and allowed_regex(allowed) == regex
