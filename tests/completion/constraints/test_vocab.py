"""The one vocabulary per tokenizer: built once, shared by healing and the monitors; typed span constraints."""

from __future__ import annotations

import torch
from tiny import tiny_model

from superpie.analysis.monitors import MonitorSet
from superpie.completion.constraints.base import ConstraintSet, SpanConstraint
from superpie.completion.constraints.healing import HealingConstraint
from superpie.completion.constraints.monitor import MonitorConstraint, MonitorTrace
from superpie.completion.constraints.vocab import Vocabulary, token_texts, vocabulary
from superpie.completion.decoding.task import task_constraints


def test_the_vocabulary_is_built_once_and_shared_by_healing_and_monitors():
    lm = tiny_model("llama")
    tok = lm.tokenizer
    vocab = vocabulary(tok)
    assert vocabulary(tok) is vocab and token_texts(tok) is vocab.texts
    monitor = MonitorConstraint.at(MonitorSet([]), tok, MonitorTrace(), "x = obj", typed="")
    healing, monitor_again = task_constraints(lm, "ob", (monitor,))
    assert isinstance(healing, HealingConstraint) and monitor_again is monitor
    assert healing.vocabulary is vocab and monitor.vocabulary is vocab
    assert vocab.trie is vocab.trie and vocab.index is vocab.index  # the trie and index are built once too
    assert vocab.trie.vocab_size == vocab.size == tok.get_vocab_size()


def test_token_texts_are_each_token_decoded_on_its_own():
    tok = tiny_model("llama").tokenizer
    texts = token_texts(tok)
    assert texts == tuple(tok.decode([i], skip_special_tokens=False) for i in range(tok.get_vocab_size()))
    usable = vocabulary(tok).usable
    assert all((u is None) == ("\ufffd" in t) for t, u in zip(texts, usable, strict=True))
    assert all(u == t for t, u in zip(texts, usable, strict=True) if u is not None)


def test_one_index_serves_healing_with_every_text_and_monitors_with_usable_ones():
    vocab = Vocabulary(["ab", "a\ufffd", "a", "", "abc", "b", "a\ufffd"])
    healing = vocab.healing_mask("a").nonzero().flatten().tolist()
    assert healing == [0, 1, 2, 4, 6]  # U+FFFD texts are spellings too; the empty text never is
    assert vocab.healing_mask("abx").nonzero().flatten().tolist() == [0, 2]  # proper prefixes of what remains
    assert vocab.starting_with("a") == [("a", 2), ("ab", 0), ("abc", 4)]  # in text order, usable only
    assert vocab.starting_with("b") == [("b", 5)]
    assert vocab.exactly("a\ufffd") == [] and vocab.exactly("ab") == [0] and vocab.exactly("") == []
    assert vocab.trie.allowed_ids({"ab"}) == [0, 2]  # the monitors' trie: "a\ufffd" never takes part


class _DuckSpan:
    """Looks like a span constraint but does not declare it: the set must not treat it as one."""

    def mask(self, vocab: int) -> torch.Tensor | None:
        return None

    def advance(self, token_text: str) -> _DuckSpan:
        return self

    def lookahead_width(self) -> int:
        return 4

    def span_bonus(self, token_text: str) -> float:
        return 1.0


def test_span_constraints_are_known_by_their_type_not_by_their_methods():
    tok = tiny_model("llama").tokenizer
    monitor = MonitorConstraint.at(MonitorSet([]), tok, MonitorTrace(), "x = obj", lookahead=6, prior=1.5)
    assert isinstance(monitor, SpanConstraint)
    assert not isinstance(HealingConstraint.for_typed("ob", tok), SpanConstraint)
    duck = ConstraintSet((_DuckSpan(),))
    assert duck.lookahead_width() == 0 and duck.span_bonus("x") == 0.0 and duck.span_bonus_bound() == 0.0
    assert duck.advance_in_span("x") == duck  # not a span constraint: advanced as usual
