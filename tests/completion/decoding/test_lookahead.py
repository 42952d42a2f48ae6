"""The identifier lookahead: greedy decoding under a monitor chooses the whole identifier, not its first token."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from test_superposed import SOURCE, document
from tiny import tiny_model

from superpie.analysis.monitor_state import MonitorState
from superpie.cache.cursor import CursorView
from superpie.completion.constraints.base import ConstraintSet
from superpie.completion.constraints.monitor import MonitorConstraint, MonitorTrace
from superpie.completion.constraints.vocab import token_texts, vocabulary
from superpie.completion.decoding.greedy import chain_decode
from superpie.completion.decoding.task import DecodeTask, task_constraints

NAMES = ["path", "exists", "default", "read", "write", "text", "load", "save", "open", "join", "isdir", "rename"]
CURSOR = SOURCE.index("os.path.exists") + len("os.path.")  # right after a dot


class Silent:
    """A monitor set that never fires again (the lookahead must not ask it anything)."""

    def __init__(self) -> None:
        self.asked = 0

    def trigger(self, text: str) -> None:
        self.asked += 1
        return None


def constraint(before: str, typed: str, names, lookahead: int, prior: float = 0.0, monitors=None):
    tok = tiny_model("llama").tokenizer
    state = MonitorState("dereference", "", tuple(names))
    return MonitorConstraint(
        monitors or Silent(),
        vocabulary(tok),
        MonitorTrace(),
        before,
        len(before),
        typed,
        state,
        lookahead,
        prior,
    )


def setup(names, lookahead: int, max_tokens: int = 8, prior: float = 0.0, text: str = SOURCE, cursor: int = CURSOR):
    lm = tiny_model("llama")
    doc = document(text=text)
    split = doc.split_at(cursor)
    n = split.prefix_len
    c = constraint(text[: cursor - len(split.typed)], split.typed, names, lookahead, prior)
    task = DecodeTask(doc.ids[n - 1], max_tokens, split.typed, None, task_constraints(lm, split.typed, (c,)))
    return lm, doc, n, task


def spellings(names, max_tokens: int = 8):
    """Every token path that spells one identifier and leaves it, with its exact log-prob (full forwards)."""
    lm, doc, n, task = setup(names, 16, max_tokens)
    texts = token_texts(lm.tokenizer)
    context = list(doc.ids[:n])
    out: list[tuple[float, tuple[int, ...]]] = []

    def walk(cs: ConstraintSet, path: tuple[int, ...], score: float) -> None:
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([context + list(path)])).logits[0, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        mask = cs.mask(logp.shape[0])
        for t in mask.nonzero().flatten().tolist():
            if t in lm.eos_ids:
                continue
            inside = cs.advance_in_span(texts[t])
            total = score + float(logp[t])
            if inside is None or inside.lookahead_width() == 0 or len(path) + 1 == max_tokens:
                out.append((total, path + (t,)))
            else:
                walk(inside, path + (t,), total)

    walk(ConstraintSet(task.constraints), (), 0.0)
    return out


def decode(names, lookahead: int, prior: float = 0.0):
    lm, doc, n, task = setup(names, lookahead, prior=prior)
    return chain_decode(lm, CursorView(doc, n - 1, reserve=64), task), task


def identifier(typed: str, text: str) -> str:
    full = (typed + text).lstrip(".")
    end = next((i for i, ch in enumerate(full) if not (ch.isalnum() or ch == "_")), len(full))
    return full[:end]


def test_the_lookahead_spells_the_most_likely_identifier_even_where_greedy_starts_elsewhere():
    differed = 0
    for names in itertools.combinations(NAMES[:8], 3):
        best_score, best = max(spellings(names))
        (draft, task), (greedy, _) = decode(names, 16), decode(names, 0)
        assert draft.tokens[: len(best)] == best, names
        assert sum(draft.token_logprobs[: len(best)]) == pytest.approx(best_score, abs=1e-3)
        assert all(draft.token_constrained[: len(best)])
        assert identifier(task.typed, draft.text) in names
        assert identifier(task.typed, greedy.text) in names
        differed += identifier(task.typed, draft.text) != identifier(task.typed, greedy.text)
    assert differed, "greedy already found the best identifier everywhere: the test shows nothing"


def test_a_narrow_lookahead_still_spells_an_allowed_identifier():
    for names in itertools.combinations(NAMES, 4):
        draft, task = decode(names, 3)
        assert identifier(task.typed, draft.text) in names
        assert draft.logprob == pytest.approx(sum(draft.token_logprobs))


def test_the_draft_after_the_lookahead_matches_decoding_those_tokens_one_by_one():
    names = NAMES[:3]
    lm, doc, n, task = setup(names, 16)
    draft = chain_decode(lm, CursorView(doc, n - 1, reserve=64), task)
    # re-score the whole draft with full forwards: the chain after the lookahead saw the right KV
    context = list(doc.ids[:n])
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([context + list(draft.tokens)])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    exact = [float(logp[n - 1 + i, t]) for i, t in enumerate(draft.tokens)]
    assert draft.token_logprobs == pytest.approx(exact, abs=1e-3)
    # after the span the draft is greedy (no constraint is left): each token is the argmax
    span = next(i for i, c in enumerate(draft.token_constrained) if not c)
    for i in range(span, len(draft.tokens)):
        assert int(logp[n - 1 + i].argmax()) == draft.tokens[i]


def test_advance_in_span_keeps_the_typed_dot_and_ends_at_a_non_identifier_char():
    c = constraint("x = os", ".", ["path", "pathsep"], 6)
    assert c.lookahead_width() == 6
    c = c.advance_in_span(".")
    assert c is not None and c.pending == "" and c.state.typed == ""
    d = c.advance_in_span("pa")
    assert d is not None and d.state.typed == "pa" and d.lookahead_width() == 6
    assert d.advance_in_span("th(") is None
    assert c.advance_in_span("x") is not None  # not a prefix of a name: the mask forbids it, not advance_in_span
    assert constraint("x = os", ".", ["path"], 6).advance_in_span(",") is None  # left the typed dot
    assert constraint("x = os.", "", ["path"], 0).lookahead_width() == 0  # lookahead off
    hint = MonitorState("keyword_argument", "", ("key",), constrains=False)
    assert dataclasses.replace(constraint("f(", "", ["key"], 6), state=hint).lookahead_width() == 0


def test_the_lookahead_asks_the_monitors_nothing_while_it_searches():
    monitors = Silent()
    lm, doc, n, task = setup(NAMES[:3], 16)
    split = doc.split_at(CURSOR)
    c = constraint(SOURCE[: CURSOR - len(split.typed)], split.typed, NAMES[:3], 16, monitors=monitors)
    task = DecodeTask(task.first_input, 8, split.typed, None, task_constraints(lm, split.typed, (c,)))
    draft = chain_decode(lm, CursorView(doc, n - 1, reserve=64), task)
    spelled = draft.token_constrained.index(False)  # the span's tokens, its exit token last
    # only the kept draft asks: once at its exit token, then at every later token (no state left)
    assert monitors.asked == len(draft.tokens) - spelled + 1


def test_a_prior_for_names_the_document_dereferenced_moves_the_choice():
    names = ("path", "default", "rename")  # only `path` follows a dot before the cursor (`os.path.`)
    base, task = decode(names, 16)
    boosted, _ = decode(names, 16, prior=50.0)
    assert identifier(task.typed, boosted.text) == "path"
    assert identifier(task.typed, base.text) in names
    c = constraint(SOURCE[:CURSOR], "", names, 16, prior=1.5)
    assert c.span_bonus("path(") == 1.5 and c.span_bonus("rename(") == 0.0 and c.span_bonus("pa") == 0.0
    assert c.trace.prior_s > 0


def test_superposed_decodings_exact_lead_spells_the_identifier_as_greedy_decoding_does():
    """With k drafts, superposed decoding's first draft is the single-draft completion, lookahead included."""
    from superpie.completion.config import SuperposedConfig
    from superpie.completion.decoding.superposed import superposed_decode

    differed = 0
    for names in itertools.combinations(NAMES[:8], 3):
        lm, doc, n, task = setup(names, 16)
        greedy = chain_decode(lm, CursorView(doc, n - 1, reserve=64), task)
        differed += greedy.tokens != decode(names, 0)[0].tokens  # token by token, it would spell another name
        out = superposed_decode(lm, CursorView(doc, n - 1, reserve=128), task, 4, SuperposedConfig(patience=1.0))
        lead = [d for d in out.drafts if d.greedy]
        assert len(lead) == 1 and lead[0].tokens == greedy.tokens, names
        assert lead[0].token_logprobs == pytest.approx(greedy.token_logprobs, abs=1e-4)
        assert out.trunk.tokens[1:] == greedy.tokens[: len(out.trunk.tokens) - 1]
        assert all(identifier(task.typed, d.text) in names for d in out.drafts)
    assert differed, "the lookahead changed nothing here: the test shows nothing"
