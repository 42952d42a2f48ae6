"""The decode-path forms for CPUs without bf16 units: FBGEMM's dynamic int8 (`int8dyn`, a dyn8 LM head) and the
fp32 one-row attention on matmuls."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from test_cache_exactness import TEXT
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.cache.forward import causal_mask
from superpie.completion.model.attention import Mask, attend, uses_matmul
from superpie.completion.model.fast_llama import FastLlama
from superpie.completion.model.precision import (
    COMPACT_MAX_ROWS,
    PRECISIONS,
    Projection,
    dyn8_supported,
    resolve_precision,
)

needs_fbgemm = pytest.mark.skipif(not dyn8_supported(), reason="FBGEMM is not built into this PyTorch")


def test_int8dyn_is_named_and_keeps_fp32_activations():
    prec = resolve_precision("INT8DYN")
    assert prec is PRECISIONS["int8dyn"]
    assert (prec.compute, prec.kv_dtype, prec.compact, prec.fp16_many) == (torch.float32, torch.float32, "dyn8", True)
    assert not prec.reference  # its many rows are fp16, not the loaded weight
    assert prec.head.compact == "dyn8" and prec.head.reference  # the head's many rows: the fp32 weight
    assert PRECISIONS["fp16w"].head.compact == "int8"  # fp16w unchanged
    assert replace(PRECISIONS["fp16w"], head_compact="dyn8").head.compact == "dyn8"


@needs_fbgemm
def test_dyn8_projection_takes_the_int8_kernel_for_few_rows_only():
    torch.manual_seed(0)
    w, b = torch.randn(96, 64) * 0.1, torch.randn(96) * 0.1
    proj = Projection(w, b, PRECISIONS["int8dyn"])
    assert proj.compact == "dyn8"
    x = torch.randn(2 * COMPACT_MAX_ROWS, 64)
    ref = x @ w.T + b
    few = torch.cat([proj(x[i : i + 1]) for i in range(x.shape[0])])  # the int8 kernel, row by row
    many = proj(x)  # fp16 weights, fp32 activations
    assert few.dtype == many.dtype == torch.float32
    assert (few - ref).abs().max() < 0.1  # 8-bit weights and activations
    assert (many - ref).abs().max() < 0.005  # fp16 weights only
    assert (few - many).abs().max() > 1e-4  # the few rows really took the other kernel


def _decode_logits(model: torch.nn.Module, runner, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-token logits after a chunked prefill, then one decode step (1 row), then 8 rows."""
    lm = tiny_model(kind)
    doc = DocumentCache(model, lm.tokenizer, lm.rope, chunk=32, runner=runner)
    doc.sync(TEXT)
    view = CursorView(doc, doc.length - 1)
    step = view.step(input_ids=torch.tensor([doc.ids[-1]]))[-1]
    many = view.step(input_ids=torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]))[-1]
    return step, many


@needs_fbgemm
@pytest.mark.parametrize("kind", ["llama", "qwen2"])  # tied head / untied head with q/k/v biases
@pytest.mark.parametrize("variant", ["int8dyn", "fp16w_dyn8head"])
def test_dyn8_runners_track_fp32(kind, variant):
    model = copy.deepcopy(tiny_model(kind).model)
    twin = copy.deepcopy(model)
    ref_step, ref_many = _decode_logits(twin, FastLlama(twin, PRECISIONS["float32"]), kind)
    prec = PRECISIONS["int8dyn"] if variant == "int8dyn" else replace(PRECISIONS["fp16w"], head_compact="dyn8")
    runner = FastLlama(model, prec)
    layers = {"int8dyn": "dyn8", "fp16w_dyn8head": "fp16"}[variant]
    assert runner.weight_forms() == {layers: 8, "head dyn8": 1}
    assert runner.dtype == runner.kv_dtype == torch.float32
    if kind == "llama":  # tied: the head's many rows read the embedding itself, kept fp32
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert model.model.embed_tokens.weight.dtype == torch.float32
    step, many = _decode_logits(model, runner, kind)
    for got, ref in ((step, ref_step), (many, ref_many)):
        assert got.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(got, ref, dim=0) > 0.995
        assert got.argmax() in ref.topk(3).indices
        top = ref.topk(8).indices  # re-scored in fp32 from the head's rows
        if variant == "fp16w_dyn8head":  # fp32 activations: the hidden state is fp16w's, the top logits exact
            torch.testing.assert_close(got[top], ref[top], atol=0.05, rtol=0)
        else:  # 8-bit activations in every projection: close, not exact
            torch.testing.assert_close(got[top], ref[top], atol=0, rtol=0.1)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_a_lossy_q4_head_only_picks_the_candidates_rescored_in_fp32(kind):
    model = copy.deepcopy(tiny_model(kind).model)  # random weights: far from any 4-bit grid
    twin = copy.deepcopy(model)
    ref_step, ref_many = _decode_logits(twin, FastLlama(twin, PRECISIONS["float32"]), kind)
    runner = FastLlama(model, replace(PRECISIONS["fp16w"], head_compact="q4"))  # fp32 activations
    assert runner.weight_forms() == {"fp16": 8, "head q4": 1}
    for got, ref in zip(_decode_logits(model, runner, kind), (ref_step, ref_many)):
        assert not torch.allclose(got, ref, atol=0.05)  # the q4 head's own logits are off...
        top = ref.topk(4).indices  # ...the leaders are among its 8 candidates, re-scored in fp32
        torch.testing.assert_close(got[top], ref[top], atol=0.05, rtol=0)
        assert got.argmax() == ref.argmax()


def test_fp32_decode_step_takes_the_matmuls_only_when_asked():
    for native in (True, False):
        assert uses_matmul(1, torch.float32, native, fp32_step=True)
        assert not uses_matmul(2, torch.float32, native, fp32_step=True)  # several rows: SDPA
        assert not uses_matmul(1, torch.float32, native)  # the float32 reference: SDPA
    assert PRECISIONS["float32"].reference and not PRECISIONS["fp16w"].reference


@pytest.mark.parametrize("hidden", [False, True])
def test_fp32_one_row_matmuls_match_sdpa(hidden):
    torch.manual_seed(int(hidden))
    start, heads, kv_heads, d = 100, 14, 2, 64
    buf_k = torch.randn(1, kv_heads, 256, d)  # a store buffer; slots past S hold stale values
    buf_v = torch.randn(1, kv_heads, 256, d)
    q = torch.randn(1, 1, heads, d).transpose(1, 2)  # [1, H, 1, D]
    mask = causal_mask(start, 1, torch.float32)
    if hidden:  # a cursor view: the document's suffix is hidden
        mask[..., start // 2 : start] = torch.finfo(torch.float32).min
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, buf_k[:, :, : start + 1], buf_v[:, :, : start + 1], attn_mask=mask, scale=0.125, enable_gqa=True
    )
    prepared = Mask.of(mask, start, 1, buf_k.shape[2], torch.float32, fp32_step=True)
    assert prepared.padded is not None  # the matmul kernel, over a bucketed key length
    got = attend(q, buf_k, buf_v, prepared, 0.125)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
