"""Monitor-guided decoding: the monitor constraint keeps identifiers after `obj.` valid in every strategy."""

from __future__ import annotations

import functools
import time

import paths
import pytest
import torch
from tiny import _config, tiny_tokenizer

from superpie.analysis import jedi_service
from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.completion.config import MonitorConfig, SuperposedConfig
from superpie.completion.constraints.monitor import MonitorConstraint, MonitorRuntime, pending_mask
from superpie.completion.constraints.vocab import token_texts, vocabulary
from superpie.completion.decoding.beam import beam_decode
from superpie.completion.decoding.greedy import chain_decode
from superpie.completion.decoding.stops import line_end_stop
from superpie.completion.decoding.superposed import superposed_decode
from superpie.completion.decoding.task import DecodeTask, task_constraints
from superpie.completion.model.loading import LoadedModel, from_model

PROJECT = paths.DATA / "mgd" / "project"
MAIN = PROJECT / "main.py"
MAIN_URI = MAIN.as_uri()
_TEXT = MAIN.read_text()
SOURCE = _TEXT[: _TEXT.index("acct.deposit") + len("acct.")] + "\n"  # the document being typed: `acct.|`
CURSOR = len(SOURCE) - 1  # right after the dot
INSTANCE = set(dir(object)) | {"__annotations__", "__dict__", "__module__", "__weakref__"}
ACCOUNT = {"balance", "deposit", "owner", "statement", "withdraw"} | INSTANCE
CUSTOMER = {"email", "greeting", "name"} | INSTANCE
# every attribute a dereference in this fixture can reach (str/float/method attributes included)
REACHABLE = ACCOUNT | CUSTOMER | set(dir(str)) | set(dir(float)) | set(dir(len)) | {"__func__", "__self__"}


def wrong_ids() -> list[int]:
    """Identifier tokens that no reachable attribute contains: what the biased model prefers."""
    texts = token_texts(tiny_tokenizer())
    return [i for i, s in enumerate(texts) if s.isidentifier() and not any(s in name for name in REACHABLE)]


@functools.lru_cache(maxsize=2)
def biased_model(boost: float = 30.0) -> LoadedModel:
    """A tiny qwen2 whose head adds `boost` to every wrong identifier token: unconstrained, it invents names."""
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    vocab = tok.get_vocab_size()
    torch.manual_seed(0)
    config = _config("qwen2", vocab)  # untied head, so the bias touches the output only
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        head = torch.nn.Linear(config.hidden_size, vocab, bias=True)
        head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone(), requires_grad=False)
        bias = torch.zeros(vocab)
        bias[wrong_ids()] = boost
        head.bias = torch.nn.Parameter(bias, requires_grad=False)
        model.lm_head = head
    return from_model(model, tok, name="tiny-biased")


def attribute_after(text: str, at: int) -> str:
    """The identifier that starts at `at`."""
    end = at
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[at:end]


@pytest.fixture(scope="module")
def runtime():
    rt = MonitorRuntime(PROJECT, MonitorConfig(jedi_budget_ms=20_000))
    rt.analyzer.warm(str(PROJECT / "main.py"), SOURCE).result(timeout=60)
    yield rt
    rt.close()


def _decode(strategy: str, text: str, cursor: int, constraint_for, k: int = 3, max_tokens: int = 10):
    """The drafts of one strategy at a cursor, each draft starting from `constraint_for(before, typed)`."""
    lm = biased_model()
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="exact", runner=lm.runner)
    doc.sync(text)
    split = doc.split_at(cursor)
    n = split.prefix_len
    extra = () if constraint_for is None else (constraint_for(text[: cursor - len(split.typed)], split.typed),)
    task = DecodeTask(doc.ids[n - 1], max_tokens, split.typed, line_end_stop, task_constraints(lm, split.typed, extra))
    view = CursorView(doc, n - 1, reserve=k * max_tokens + 2)
    if strategy == "greedy":
        return [chain_decode(lm, view, task)], split.typed
    if strategy == "superposed":
        return superposed_decode(lm, view, task, k, SuperposedConfig(branch_ratio=0.5)).drafts, split.typed
    return beam_decode(lm, view, task, k), split.typed


def _starter(runtime, text: str, cursor: int):
    def start(before: str, typed: str) -> MonitorConstraint:
        return runtime.start(MAIN_URI, before, typed, text[cursor:], biased_model().tokenizer)

    return start


def _first_attribute(typed: str, draft_text: str) -> str:
    full = typed + draft_text  # from the token boundary: typed holds the dot when healing backed up over it
    return attribute_after(full, full.index(".") + 1 if typed.startswith(".") else 0)


def test_the_biased_model_invents_attributes_without_monitors():
    (draft,), typed = _decode("greedy", SOURCE, CURSOR, None)
    assert _first_attribute(typed, draft.text) not in ACCOUNT


@pytest.mark.parametrize("strategy", ["greedy", "superposed", "beam"])
def test_after_obj_dot_every_draft_spells_an_attribute_across_tokens(runtime, strategy):
    drafts, typed = _decode(strategy, SOURCE, CURSOR, _starter(runtime, SOURCE, CURSOR))
    assert drafts
    texts = token_texts(biased_model().tokenizer)
    spanned = 0
    for d in drafts:
        name = _first_attribute(typed, d.text)
        assert name in ACCOUNT, (strategy, d.text)
        pieces = [texts[t] for t in d.tokens]
        within = 1 + next((i for i, end in enumerate(d.token_ends) if end >= len(name)), len(pieces))
        assert all(d.token_constrained[:within]), (strategy, pieces)
        spanned += within >= 2
    assert spanned, "no identifier crossed a token boundary"


def test_a_chained_dereference_retriggers_at_each_dot(runtime):
    before = SOURCE[:CURSOR]
    c = runtime.start(MAIN_URI, before, "", SOURCE[CURSOR:], biased_model().tokenizer)
    assert c.state.monitor == "dereference" and set(c.state.candidates) == ACCOUNT & set(c.state.candidates)
    for piece in ["own", "er", ".", "gre"]:
        c = c.advance(piece)
    assert c.state is not None and c.state.typed == "gre"
    assert {"email", "greeting", "name"} <= set(c.state.candidates) <= CUSTOMER
    c = c.advance("eting().")  # a method's result: str
    assert c.state is not None and "upper" in c.state.candidates
    verdict = c.trace.verdict("owner.greeting().up")
    assert verdict.fired == ("dereference",) and verdict.checked == 3 and verdict.valid == 3
    assert c.trace.verdict("owner.grab().").valid == 1  # `grab` is no Customer attribute


def test_typed_dot_before_the_cursor_is_respelled_then_constrained(runtime):
    tok = biased_model().tokenizer
    before = SOURCE[: CURSOR - 1]
    c = runtime.start(MAIN_URI, before, ".", SOURCE[CURSOR:], tok)
    assert c.pending == "." and c.state.monitor == "dereference"
    allowed = {token_texts(tok)[i] for i in c.mask(tok.get_vocab_size()).nonzero().flatten().tolist()}
    assert "." in allowed and ".." not in allowed and allowed
    assert all(s == "." or any(name.startswith(s[1:]) for name in ACCOUNT) for s in allowed)
    c = c.advance(".")
    assert c.pending == "" and c.state.typed == ""
    c = c.advance("own")
    assert c.state.typed == "own" and c.state.allowed_continuations() == {"er"}


def test_pending_mask_matches_a_scan_of_the_vocabulary():
    tok = biased_model().tokenizer
    texts = token_texts(tok)
    conts = {"deposit", "withdraw", "owner", "__init__"}
    vocab = vocabulary(tok)
    for pending in [".", ".d", "d", "_"]:
        mask = pending_mask(vocab, pending, conts, len(texts)).nonzero().flatten().tolist()
        expect = []
        for i, s in enumerate(texts):
            if not s or "\ufffd" in s:
                continue
            if pending.startswith(s) and s != pending:
                expect.append(i)
            elif s.startswith(pending):
                rest = s[len(pending) :]
                k = next((j for j, ch in enumerate(rest) if not (ch.isalnum() or ch == "_")), len(rest))
                if (k == len(rest) and any(c.startswith(rest) for c in conts)) or (k < len(rest) and rest[:k] in conts):
                    expect.append(i)
        assert mask == expect, pending


@pytest.mark.parametrize("line", ['    note = "acct.', "    # acct.", "    note = f'{acct!r} acct."])
def test_no_monitor_fires_in_a_string_or_a_comment(runtime, line):
    text = SOURCE.replace("    acct.\n", line + "\n")
    cursor = text.index(line) + len(line)
    c = runtime.start(MAIN_URI, text[:cursor], "", text[cursor:], biased_model().tokenizer)
    assert c.state is None and c.mask(512) is None
    for piece in ["own", "er", ".", "de"]:
        c = c.advance(piece)
        assert c.state is None
    assert c.trace.fired == {}


def test_a_string_draft_is_decoded_unconstrained(runtime):
    text = SOURCE.replace("    acct.\n", '    note = "acct.\n')
    cursor = text.index('"acct.') + len('"acct.')
    drafts, _ = _decode("greedy", text, cursor, _starter(runtime, text, cursor))
    assert not any(drafts[0].token_constrained[1:])  # the first token may be healing's


def test_an_unknown_object_leaves_the_draft_unconstrained(runtime):
    text = SOURCE.replace("    acct.\n", "    nowhere.\n")
    cursor = text.index("nowhere.") + len("nowhere.")
    c = runtime.start(MAIN_URI, text[:cursor], "", text[cursor:], biased_model().tokenizer)
    assert c.state is None and c.mask(512) is None  # jedi knows no attributes: nothing to enforce


def slow_jedi_completions(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every jedi completion question take `seconds` longer (for the budget and prefetch tests)."""
    complete = jedi_service._QUESTIONS["complete"]

    def sleepy(script, line, column):
        time.sleep(seconds)
        return complete(script, line, column)

    monkeypatch.setitem(jedi_service._QUESTIONS, "complete", sleepy)


def test_a_jedi_timeout_decodes_unconstrained_and_counts_a_fallback(monkeypatch):
    slow_jedi_completions(monkeypatch, 0.5)
    rt = MonitorRuntime(PROJECT, MonitorConfig(jedi_budget_ms=20))
    try:
        starter = _starter(rt, SOURCE, CURSOR)
        (draft,), typed = _decode("greedy", SOURCE, CURSOR, starter)
        assert not any(draft.token_constrained[1:])
        assert _first_attribute(typed, draft.text) not in ACCOUNT  # the model had its way
        assert rt.analyzer.stats().fallbacks >= 1
        c = starter(SOURCE[: CURSOR - 1], ".")
        assert c.state.fell_back and c.mask(512) is None
        verdict = c.trace.verdict(".deposit")
        assert verdict.fell_back and verdict.fired == ("dereference",) and verdict.score is None
    finally:
        rt.close()
        rt.analyzer.jedi._executor.shutdown(wait=True)  # let the slow question end before other tests use jedi


def test_edit_end_finds_where_a_change_ends():
    from superpie.completion.constraints.monitor import edit_end

    assert edit_end("abc", "abc") is None
    assert edit_end("x = 1\n", "x = os.\n") == len("x = os.")
    assert edit_end("a\nb\n", "a\nb\nacct.") == len("a\nb\nacct.")
    assert edit_end("abcdef", "abef") == 2  # a deletion ends where the kept tail starts
    assert edit_end("    acct.\n", "    acct.owner.\n") == len("    acct.owner.")  # not `acct.owner|.`
    assert edit_end("abcd", "abXcd") == 3


def test_a_prefetch_after_an_edit_answers_the_request_within_its_budget(monkeypatch):
    slow_jedi_completions(monkeypatch, 0.3)
    rt = MonitorRuntime(PROJECT, MonitorConfig(jedi_budget_ms=100))
    try:
        tok = biased_model().tokenizer
        assert rt.start(MAIN_URI, SOURCE[:CURSOR], "", SOURCE[CURSOR:], tok).state.fell_back  # no head start
        text = SOURCE.replace("    acct.\n", "    acct.owner.\n")
        cursor = text.index("acct.owner.") + len("acct.owner.")
        rt.prefetch(MAIN_URI, text, cursor)  # the edit is synced while the user pauses
        time.sleep(1.5)
        c = rt.start(MAIN_URI, text[:cursor], "", text[cursor:], tok)
        assert not c.state.fell_back and {"email", "greeting", "name"} <= set(c.state.candidates)
    finally:
        rt.close()
        rt.analyzer.jedi._executor.shutdown(wait=True)
