"""Token healing: the prefix index gives exactly the brute-force allowed set, and advances by text."""

from __future__ import annotations

import random

import torch
from tiny import tiny_model

from superpie.completion.constraints.healing import HealingConstraint
from superpie.completion.constraints.vocab import token_texts, vocabulary


def brute_force(texts, rem: str) -> torch.Tensor:
    return torch.tensor([bool(t) and (t.startswith(rem) or rem.startswith(t)) for t in texts])


def test_index_equals_a_scan_of_the_vocabulary():
    tok = tiny_model("llama").tokenizer
    texts = token_texts(tok)
    vocab = vocabulary(tok)
    rng = random.Random(0)
    samples = ["\n", "\n    ", "(", "sel", "self.", " re", "é", "x", "def f", ")\n\n"]
    samples += [rng.choice(texts) + rng.choice(texts) for _ in range(40)]
    for rem in samples:
        if rem:
            assert torch.equal(vocab.healing_mask(rem), brute_force(texts, rem)), rem


def test_constraint_advances_until_the_typed_text_is_spelled():
    tok = tiny_model("llama").tokenizer
    c = HealingConstraint.for_typed("retu", tok)
    assert c is not None and c.mask(tok.get_vocab_size()).any()
    c = c.advance("re")
    assert c is not None and c.remaining == "tu"
    assert c.advance("turn") is None
    assert HealingConstraint.for_typed("", tok) is None
