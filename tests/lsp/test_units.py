"""The server's parts without a process: options parsing, LSP conversions, the model worker's scheduling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from lsprotocol import types as t

from superpie.cache.document import NO_SYNC, SyncStats
from superpie.completion.config import EngineConfig as ServerOptions
from superpie.completion.draft import Draft
from superpie.completion.request import CompletionRequest, CompletionResult
from superpie.lsp.convert import lsp_apply_changes, lsp_encoding, lsp_inline_list, lsp_menu_list
from superpie.lsp.options import camel_case, engine_config, needs_reload, parse_options, snake_case
from superpie.lsp.scheduler import ModelWorker

# ----------------------------------------------------------------------------- options


def test_options_parse_camel_case_nested_and_keep_defaults() -> None:
    raw = {"superpie": {"completion": {"maxTokensInline": 8, "inlineMultiline": True}, "cache": {"mode": "exact"}}}
    parsed = parse_options(raw)
    assert (parsed.unknown, parsed.invalid) == ([], [])
    o = parsed.options
    assert (o.completion.max_tokens_inline, o.completion.inline_multiline, o.cache.mode) == (8, True, "exact")
    assert o.completion.max_tokens_menu == ServerOptions().completion.max_tokens_menu
    assert snake_case("memoryBudgetMb") == "memory_budget_mb" and camel_case("memory_budget_mb") == "memoryBudgetMb"


def test_unknown_and_invalid_options_are_reported_and_the_old_value_stays() -> None:
    base = parse_options({"completion": {"drafts": 3}}).options
    parsed = parse_options(
        {"bogus": 1, "completion": {"drafts": 0, "strategy": "nope", "maxTokensMenu": True, "extra": 2}, "cache": 5},
        base,
    )
    assert parsed.unknown == ["bogus", "completion.extra"]
    assert len(parsed.invalid) == 4 and any("completion.strategy" in p for p in parsed.invalid)
    assert parsed.options.completion.drafts == 3  # kept
    assert base.completion.drafts == 3 and parse_options("nonsense").invalid  # base untouched; not an object


def test_engine_config_and_reload() -> None:
    o = parse_options({"model": {"path": "/m"}, "cache": {"memoryBudgetMb": 64}, "monitors": {"enabled": False}})
    config = engine_config(o.options, "/ws")
    assert (config.workspace, config.model.path, config.cache.memory_budget_mb) == ("/ws", "/m", 64)
    if hasattr(config, "monitors"):
        assert config.monitors.enabled is False
    assert needs_reload(ServerOptions(), o.options)


# ----------------------------------------------------------------------------- conversions


def test_apply_changes_in_utf16_and_utf8() -> None:
    text = "a🐍b\nc"

    def change(line: int, start: int, end: int, new: str) -> t.TextDocumentContentChangePartial:
        return t.TextDocumentContentChangePartial(
            range=t.Range(t.Position(line, start), t.Position(line, end)), text=new
        )

    assert lsp_apply_changes(text, [change(0, 3, 4, "B")], "utf-16") == "a🐍B\nc"
    assert lsp_apply_changes(text, [change(0, 5, 6, "B")], "utf-8") == "a🐍B\nc"
    assert lsp_apply_changes(text, [t.TextDocumentContentChangeWholeDocument(text="x")], "utf-16") == "x"
    with pytest.raises(ValueError):
        lsp_apply_changes(text, [change(0, 2, 2, "!")], "utf-16")  # inside the surrogate pair
    assert lsp_encoding(t.PositionEncodingKind.Utf8) == "utf-8" and lsp_encoding(None) == "utf-16"


def test_inline_and_menu_items() -> None:
    drafts = [Draft("th.join(a, b)\n    x", score=-0.5), Draft("th", score=-1.25)]
    text = "import os\nos.pa"
    inline = lsp_inline_list(drafts, t.Position(1, 5), "r7")
    assert [i.insert_text for i in inline.items] == ["th.join(a, b)\n    x", "th"]
    assert inline.items[0].range == t.Range(t.Position(1, 5), t.Position(1, 5))
    menu = lsp_menu_list(drafts, text, len(text), "utf-16", "r7", markdown=True)
    assert menu.is_incomplete
    first, second = menu.items
    assert (first.label, first.filter_text, first.sort_text) == ("path.join(a, b)", "path.join(a, b)", "~superpie000")
    assert first.text_edit.range == t.Range(t.Position(1, 3), t.Position(1, 5))
    assert first.text_edit.new_text == "path.join(a, b)\n    x" and second.sort_text == "~superpie001"
    assert "score -0.500" in first.detail and first.documentation.value.startswith("```python\n")
    assert first.command.arguments == [{"id": "r7", "rank": 0, "kind": "menu"}]


# ----------------------------------------------------------------------------- the worker


@dataclass
class FakeEngine:
    """Records calls; `complete` takes `steps` decode steps of `step_s`, polling `cancelled` between them."""

    steps: int = 1
    step_s: float = 0.0
    calls: list[tuple] = field(default_factory=list)
    loaded: bool = True
    lm: object = None
    config: object = None
    jedi: object = None  # no monitors
    model_name: str | None = "fake"

    def backend_status(self) -> dict[str, object]:
        return {"backend": "local", "loaded": self.loaded}

    def shutdown(self) -> None:
        """Nothing to stop: the fake runs no jedi thread."""

    def ensure_loaded(self) -> float:
        return 0.0

    def sync(self, uri: str, text: str, anchor: int | None = None) -> SyncStats:
        self.calls.append(("sync", uri, text))
        return SyncStats("pie", 0, 1, 0, 0, 1, 1.0)

    def complete(self, req: CompletionRequest, cancelled=lambda: False) -> CompletionResult:
        self.calls.append(("complete", req.uri, req.text))
        for _ in range(self.steps):
            if cancelled():
                return CompletionResult([], {"total": 0.0}, NO_SYNC, cancelled=True)
            time.sleep(self.step_s)
        return CompletionResult([Draft("x", score=0.0)], {"total": 0.0}, NO_SYNC)

    def close(self, uri: str) -> None:
        self.calls.append(("close", uri))

    def refresh_idle(self, uri: str) -> int:
        self.calls.append(("refresh", uri))
        return 0

    def open_step(self, uri: str) -> bool:
        return False  # no window-first opening to finish

    def memory_bytes(self) -> int:
        return 0


@pytest.fixture
def texts() -> dict[str, str]:
    return {}


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def make_worker(engine: FakeEngine, texts: dict[str, str], idle_s: float = 60.0) -> ModelWorker:
    worker = ModelWorker(engine, texts.get, idle_refresh_s=idle_s)
    worker.start()
    return worker


def test_edits_are_coalesced_into_one_sync_of_the_latest_text(texts: dict[str, str]) -> None:
    engine = FakeEngine(steps=20, step_s=0.01)
    worker = make_worker(engine, texts)
    texts["a"] = "busy"
    _, busy = worker.complete(CompletionRequest("a", "busy", 0))  # keeps the worker busy meanwhile
    for i in range(50):
        texts["a"] = f"text {i}"
        worker.sync_soon("a")
    busy.result(5)
    worker.submit(lambda e: None).result(5)  # a barrier: every queued sync has run
    worker.stop()
    assert [c for c in engine.calls if c[0] == "sync"] == [("sync", "a", "text 49")]
    assert worker.is_current("a", "text 49")


def test_a_newer_request_supersedes_and_cancel_stops_between_steps(texts: dict[str, str]) -> None:
    engine = FakeEngine(steps=500, step_s=0.01)
    worker = make_worker(engine, texts)
    texts["a"] = "x"
    token1, first = worker.complete(CompletionRequest("a", "x", 0))
    time.sleep(0.05)
    token2, second = worker.complete(CompletionRequest("a", "x", 0))
    assert first.result(2).cancelled == "superseded" and token1()
    time.sleep(0.05)
    t0 = time.perf_counter()
    token2.cancel("client")
    assert second.result(2).cancelled == "client" and time.perf_counter() - t0 < 0.5
    worker.stop()
    assert worker.snapshot.stopped_decodes == 2


def test_completions_run_before_queued_syncs_and_closed_documents_are_freed(texts: dict[str, str]) -> None:
    engine = FakeEngine(steps=10, step_s=0.01)
    worker = make_worker(engine, texts)
    texts.update(a="a", b="b")
    gate = threading.Event()
    worker.submit(lambda e: gate.wait(5))  # hold the worker while work queues up
    worker.sync_soon("b")
    _, done = worker.complete(CompletionRequest("a", "a", 0))
    del texts["a"]  # closed before the worker got to it: its cache is freed after the request
    gate.set()
    done.result(5)
    worker.submit(lambda e: None).result(5)
    worker.stop()
    assert [c[0] for c in engine.calls] == ["complete", "close", "sync"]


def test_idle_time_refreshes_stale_documents(texts: dict[str, str]) -> None:
    engine = FakeEngine()
    worker = make_worker(engine, texts, idle_s=0.05)
    texts["a"] = "a"
    worker.sync_soon("a")
    wait_until(lambda: ("refresh", "a") in engine.calls)
    worker.stop()


def test_an_idle_refresh_goes_in_steps_and_a_request_does_not_wait_for_all_of_them(texts: dict[str, str]) -> None:
    class SteppedRefresh(FakeEngine):
        """Each idle step encodes one chunk of a long refresh and takes 50 ms."""

        def __init__(self) -> None:
            super().__init__(steps=1, step_s=0.0)
            self.left = 10

        def refresh_idle(self, uri: str) -> int:
            self.calls.append(("refresh", uri))
            if not self.left:
                return 0
            time.sleep(0.05)
            self.left -= 1
            return 256

    engine = SteppedRefresh()
    worker = make_worker(engine, texts, idle_s=0.05)
    texts["a"] = "a"
    worker.sync_soon("a")
    wait_until(lambda: ("refresh", "a") in engine.calls)
    _, done = worker.complete(CompletionRequest("a", "a", 0))  # comes in while the refresh has 9 steps to go
    done.result(5)
    wait_until(lambda: not engine.left and engine.calls[-1] == ("refresh", "a"))  # then it goes on to its end
    worker.stop()
    kinds = [c[0] for c in engine.calls if c[0] in ("refresh", "complete")]
    assert kinds.index("complete") <= 2  # served after at most the steps already under way, not after all 10
    assert kinds.count("refresh") == 11 and worker.snapshot.refreshed_tokens == 10 * 256


def test_inline_and_menu_for_the_same_text_do_not_supersede_each_other(texts: dict[str, str]) -> None:
    engine = FakeEngine(steps=20, step_s=0.01)
    worker = make_worker(engine, texts)
    texts["a"] = "x"
    _, inline = worker.complete(CompletionRequest("a", "x", 0), "inline")
    _, menu = worker.complete(CompletionRequest("a", "x", 0), "menu")
    _, newer = worker.complete(CompletionRequest("a", "xy", 0), "menu")  # the text changed: both are stale
    assert [f.result(5).cancelled for f in (inline, menu, newer)] == ["superseded", "superseded", None]
    _, inline = worker.complete(CompletionRequest("a", "xy", 0), "inline")
    _, menu = worker.complete(CompletionRequest("a", "xy", 0), "menu")
    assert [f.result(5).cancelled for f in (inline, menu)] == [None, None]
    worker.stop()
