"""The per-draft constraint hook: healing and custom constraints in greedy, superposed and beam decoding."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from test_superposed import CURSORS, SOURCE, document, ngram_for, task_at
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.completion.config import SuperposedConfig
from superpie.completion.constraints.base import ConstraintSet
from superpie.completion.constraints.healing import HealingConstraint
from superpie.completion.constraints.vocab import token_texts
from superpie.completion.decoding.beam import beam_decode
from superpie.completion.decoding.greedy import chain_decode, greedy_decode


@dataclass(frozen=True)
class OnlyTokens:
    """For the next `steps` tokens, only these ids."""

    ids: frozenset[int]
    steps: int = 1

    def mask(self, vocab: int) -> torch.Tensor | None:
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[list(self.ids)] = True
        return mask

    def advance(self, token_text: str):
        return OnlyTokens(self.ids, self.steps - 1) if self.steps > 1 else None


@dataclass(frozen=True)
class NoRepeat:
    """A draft may not emit the same token text twice in a row (state: its own last token)."""

    last: str = ""

    def mask(self, vocab: int) -> torch.Tensor | None:
        if not self.last:
            return None
        texts = token_texts(tiny_model("llama").tokenizer)
        return torch.tensor([t != self.last for t in texts[:vocab]] + [True] * max(0, vocab - len(texts)))

    def advance(self, token_text: str):
        return NoRepeat(token_text)


def decode_all(task, k: int = 3):
    """The drafts of every strategy for one task: greedy, superposed (k), beam (k)."""
    lm = tiny_model("llama")
    doc = document()
    _, context = task_at(doc, CURSORS[0])
    out = {"greedy": [chain_decode(lm, CursorView(doc, context, reserve=64), task)]}
    from superpie.completion.decoding.superposed import superposed_decode

    sup = superposed_decode(
        lm, CursorView(doc, context, reserve=64), task, k, SuperposedConfig(branch_ratio=0.5), ngram_for(SOURCE)
    )
    out["superposed"] = sup.drafts
    out["beam"] = beam_decode(lm, CursorView(doc, context, reserve=64), task, k)
    return out


def test_every_strategy_honours_a_constraint_per_draft_and_reports_it():
    doc = document()
    task, _ = task_at(doc, CURSORS[0], max_tokens=6)
    forced = frozenset({41, 42})
    task = type(task)(**{**task.__dict__, "constraints": (OnlyTokens(forced, steps=2),)})
    for name, drafts in decode_all(task).items():
        assert drafts, name
        for d in drafts:
            assert set(d.tokens[:2]) <= forced, name
            assert d.token_constrained[:2] == (True, True), name
            assert not any(d.token_constrained[2:]), name
            assert d.constrained


def test_constraint_state_advances_separately_for_each_draft():
    doc = document()
    task, _ = task_at(doc, CURSORS[0], max_tokens=8)
    task = type(task)(**{**task.__dict__, "constraints": (NoRepeat(),)})
    texts = token_texts(tiny_model("llama").tokenizer)
    for name, drafts in decode_all(task).items():
        for d in drafts:
            steps = [texts[t] for t in d.tokens]
            assert all(a != b for a, b in zip(steps, steps[1:])), (name, steps)


def test_constraint_set_intersects_and_falls_back_to_the_first():
    a = OnlyTokens(frozenset({1, 2, 3}))
    b = OnlyTokens(frozenset({3, 4}))
    c = OnlyTokens(frozenset({9}))
    assert torch.nonzero(ConstraintSet((a, b)).mask(10)).flatten().tolist() == [3]
    assert torch.nonzero(ConstraintSet((a, c)).mask(10)).flatten().tolist() == [1, 2, 3]
    assert ConstraintSet((a, b)).advance("x").empty
    assert ConstraintSet().mask(10) is None


def test_healing_is_a_constraint_that_spells_the_typed_characters_first():
    lm = tiny_model("llama")
    cut = SOURCE.index("exists") + 3  # inside a word: "os.path.exi|sts"
    doc = document(text=SOURCE[:cut] + SOURCE[cut:])
    split = doc.split_at(cut)
    assert split.typed, "the cursor must fall inside a token for this test"
    healing = HealingConstraint.for_typed(split.typed, lm.tokenizer)
    allowed = torch.nonzero(healing.mask(lm.vocab_size)).flatten().tolist()
    texts = token_texts(lm.tokenizer)
    assert allowed and all(texts[i].startswith(split.typed) or split.typed.startswith(texts[i]) for i in allowed)
    assert healing.advance(split.typed + "x") is None
    view = CursorView(doc, split.prefix_len - 1, reserve=16)
    draft = greedy_decode(lm, view, doc.ids[split.prefix_len - 1], 6, typed=split.typed)
    full = lm.decode(list(draft.tokens))
    assert full.startswith(split.typed) or split.typed.startswith(full)
    assert draft.token_constrained[0]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_chain_decode_records_per_token_facts(temperature):
    lm = tiny_model("llama")
    doc = document()
    task, context = task_at(doc, CURSORS[2], max_tokens=6)
    gen = torch.Generator().manual_seed(1)
    d = chain_decode(lm, CursorView(doc, context, reserve=8), task, temperature=temperature, generator=gen)
    assert len(d.token_logprobs) == len(d.best_logprobs) == len(d.token_ends) == len(d.tokens)
    assert all(b >= lp - 1e-6 for b, lp in zip(d.best_logprobs, d.token_logprobs, strict=True))
    if temperature == 0.0:  # greedy: the chosen token is the best one wherever nothing constrained it
        free = [i for i, c in enumerate(d.token_constrained) if not c]
        assert [d.best_logprobs[i] for i in free] == pytest.approx([d.token_logprobs[i] for i in free])
