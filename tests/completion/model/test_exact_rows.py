"""A forward of a few rows gives each row bit for bit as one-row steps would, where `exact_rows` says so.

Speculative decoding leans on it where activations are bf16 (`auto` on a CPU with bf16 units): a chain's
verification rows are then plain decoding's own steps, so it needs no guard and no replay. Checked on the
attention kernels (key lengths across the 64-key buckets, masks with holes, the GQA shapes of both named
models, 1 and 2 threads) and on tiny models through `CursorView` (the rows' logits, and the KV that later
steps read). Only on a CPU with bf16 matrix units: elsewhere no runner claims it (`exact_rows` is 1), which
is checked everywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import random

import pytest
import torch
from test_cache_exactness import TEXT
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.completion.model.attention import Mask, attend
from superpie.completion.model.fast_llama import FastLlama
from superpie.completion.model.loading import LoadedModel
from superpie.completion.model.precision import COMPACT_MAX_ROWS, PRECISIONS, native_bf16

needs_bf16_units = pytest.mark.skipif(not native_bf16(), reason="bf16 matmul attention runs only with bf16 units")


def with_precision(kind: str, precision: str) -> LoadedModel:
    base = tiny_model(kind)
    model = copy.deepcopy(base.model)
    return dataclasses.replace(base, model=model, runner=FastLlama(model, PRECISIONS[precision]), precision=precision)


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_only_bf16_with_q4_projections_and_matmul_attention_claims_exact_rows():
    for precision in ("float32", "fp16w", "int8dyn", "bf16", "int8"):
        assert with_precision("llama", precision).exact_rows == 1, precision
    assert with_precision("llama", "q4").exact_rows == (COMPACT_MAX_ROWS if native_bf16() else 1)
    assert tiny_model("phi").exact_rows == 1  # the Hugging Face forward


@needs_bf16_units
@pytest.mark.parametrize("heads, kv_heads", [(14, 2), (9, 3)], ids=["Qwen2.5-0.5B", "SmolLM2-135M"])
def test_attention_gives_a_few_rows_as_one_row_steps_do(heads, kv_heads, threads):
    rng = random.Random(heads * 10 + threads)
    gen = torch.Generator().manual_seed(threads)
    capacity = 4608
    keys = torch.randn(1, kv_heads, capacity, 64, generator=gen).bfloat16()
    values = torch.randn(1, kv_heads, capacity, 64, generator=gen).bfloat16()
    ends = [rng.randrange(8, 4500) for _ in range(20)] + [64 * k + d for k in (1, 32, 63) for d in (-1, 1, 2, 3)]
    for end in ends:
        n = rng.randint(2, COMPACT_MAX_ROWS)
        start = end - n
        q = (torch.randn(1, heads, n, 64, generator=gen) * 2).bfloat16()
        seen = torch.where(torch.rand(end, generator=gen) < 0.1, float("-inf"), 0.0)  # holes, as a cursor view's
        mask = seen.repeat(n, 1)
        mask[:, start:] = torch.triu(torch.full((n, n), float("-inf")), 1)
        rows = attend(q, keys, values, Mask.of(mask.bfloat16()[None, None], start, n, capacity, torch.bfloat16), 0.125)
        for i in range(n):
            one = mask[i : i + 1, : start + i + 1].bfloat16()[None, None]
            step = Mask.of(one, start + i, 1, capacity, torch.bfloat16, fp32_step=True)
            alone = attend(q[:, :, i : i + 1], keys, values, step, 0.125)
            assert torch.equal(alone[0, :, 0], rows[0, :, i]), (end, n, i)


@needs_bf16_units
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_a_chain_forward_gives_each_row_and_its_kv_as_steps_do(kind, threads):
    lm = with_precision(kind, "q4")
    assert lm.exact_rows == COMPACT_MAX_ROWS and lm.speculates
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="exact", runner=lm.runner)
    doc.sync(TEXT)
    rng = random.Random(threads)
    for _ in range(12):
        context = doc.split_at(rng.randrange(20, len(TEXT) - 1)).prefix_len - 1
        tokens = [rng.randrange(lm.vocab_size) for _ in range(COMPACT_MAX_ROWS + 4)]
        before, n = rng.randint(0, 3), rng.randint(2, COMPACT_MAX_ROWS)
        steps, chain = CursorView(doc, context, reserve=16), CursorView(doc, context, reserve=16)
        for t in tokens[:before]:
            steps.step(input_ids=torch.tensor([t]))
            chain.step(input_ids=torch.tensor([t]))
        fed = tokens[before : before + n]
        one_by_one = torch.stack([steps.step(input_ids=torch.tensor([t]))[-1] for t in fed])
        together = chain.step(input_ids=torch.tensor(fed), logits_for=n)
        assert torch.equal(one_by_one, together)
        after = torch.tensor([tokens[-1]])
        assert torch.equal(steps.step(input_ids=after), chain.step(input_ids=after))  # the KV the chain wrote
