"""Weight precisions: quantizers, the row-count dispatch, and reduced-precision runners on tiny models."""

from __future__ import annotations

import copy

import pytest
import torch
from test_cache_exactness import TEXT
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.cache.forward import RUNNER_ATTR
from superpie.completion.model.fast_llama import attach_fast_runner
from superpie.completion.model.loading import ModelLoadError, configure_threads, default_threads, load_model
from superpie.completion.model.precision import (
    COMPACT_MAX_ROWS,
    PRECISIONS,
    Projection,
    ProjectionSlice,
    cast_keeping_rotary,
    dequantize_q4,
    quantize_int8,
    quantize_q4,
    resolve_precision,
)


def fresh(kind: str = "llama", q4_grid: bool = False) -> torch.nn.Module:
    """An fp32 copy of a tiny HF model without a runner (optionally with weights put on a q4 grid)."""
    model = copy.deepcopy(tiny_model(kind).model)
    delattr(model, RUNNER_ATTR)
    if q4_grid:
        with torch.no_grad():
            for m in model.model.layers.modules():
                if isinstance(m, torch.nn.Linear):
                    q, scale, zero, _ = quantize_q4(m.weight)
                    m.weight.copy_(dequantize_q4(q, scale, zero))
    return model


def encode_logits(model: torch.nn.Module, kind: str = "llama") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the last token after a chunked prefill, and after one more decode step (1 row)."""
    lm = tiny_model(kind)
    doc = DocumentCache(model, lm.tokenizer, lm.rope, chunk=32)
    doc.sync(TEXT)
    view = CursorView(doc, doc.length - 1)
    step = view.step(input_ids=torch.tensor([doc.ids[-1]]))[-1]
    many = view.step(input_ids=torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]))[-1]  # 8 rows: the bf16 GEMM path
    return step, many


def test_names_and_aliases():
    assert resolve_precision("fp32") is PRECISIONS["float32"]
    assert resolve_precision("bfloat16").name == "bf16"
    assert resolve_precision("Q4").compact == "q4"
    assert resolve_precision("auto").lossless_only
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_precision("fp8")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(dtype="fp8")


def test_q4_is_exact_on_a_q4_grid_and_lossy_elsewhere():
    torch.manual_seed(0)
    w = torch.randn(64, 128)
    q, scale, zero, error = quantize_q4(w)
    assert 0.2 < error <= 0.5  # random weights round by up to half a step
    assert (dequantize_q4(q, scale, zero) - w).abs().max() <= 0.5 * scale.max() + 1e-6
    grid = dequantize_q4(q, scale, zero)
    q2, _, _, error2 = quantize_q4(grid)
    assert error2 < 1e-3 and torch.equal(q, q2)


def test_int8_error_is_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8
    assert ((q.float() * scale[:, None] - w).abs() <= 0.5 * scale[:, None] + 1e-6).all()


@pytest.mark.parametrize("name", ["bf16", "int8", "q4"])
def test_projection_rows_pick_the_form_and_agree(name):
    torch.manual_seed(0)
    w, b = torch.randn(96, 64) * 0.1, torch.randn(96) * 0.1
    proj = Projection(w, b, PRECISIONS[name])
    x = torch.randn(2 * COMPACT_MAX_ROWS, 64)
    ref = x @ w.T + b
    few = torch.cat([proj(x[i : i + 1].bfloat16()) for i in range(x.shape[0])])  # compact kernel
    many = proj(x.bfloat16())  # bf16 GEMM
    assert proj.compact == (None if name == "bf16" else name)
    tol = {"bf16": 0.05, "int8": 0.1, "q4": 0.5}[name]
    assert (few.float() - ref).abs().max() < tol
    assert (many.float() - ref).abs().max() < 0.05


def test_cast_keeps_rotary_frequencies_fp32():
    model = fresh()
    cast_keeping_rotary(model, torch.bfloat16)
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["llama", "qwen2"])  # tied head / untied head with q/k/v biases
@pytest.mark.parametrize("name", ["fp16w", "bf16", "int8", "q4", "auto"])
def test_reduced_runners_track_fp32(name, kind):
    model = fresh(kind, q4_grid=name in ("q4", "auto"))  # q4 is compared on weights it can hold
    ref_step, ref_many = encode_logits(_fp32_runner(model), kind)
    assert attach_fast_runner(model, PRECISIONS[name])
    runner = getattr(model, RUNNER_ATTR)
    assert runner.dtype == PRECISIONS[name].compute
    step, many = encode_logits(model, kind)
    for got, ref in ((step, ref_step), (many, ref_many)):
        assert got.dtype == torch.float32
        # bf16 activations on a tiny model with sharp random weights: close, not equal (HF's own bf16
        # forward is as far off); a near-tie at the top may flip, a clear winner may not
        assert torch.nn.functional.cosine_similarity(got, ref, dim=0) > 0.995
        assert got.argmax() in ref.topk(3).indices
    if name == "fp16w":  # fp32 activations: the top logits (re-scored in fp32) match closely
        top = ref_step.topk(8).indices
        torch.testing.assert_close(step[top], ref_step[top], atol=0.02, rtol=0)
    forms = runner.weight_forms()
    if name == "auto":
        assert forms == {"q4": 8, "head int8": 1}  # 2 layers x 4 projections, all on the grid


def _fp32_runner(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with the fp32 (reference) runner."""
    twin = copy.deepcopy(model)
    attach_fast_runner(twin, PRECISIONS["float32"])
    return twin


def test_auto_keeps_bf16_where_q4_would_lose():
    model = fresh()
    attach_fast_runner(model, PRECISIONS["auto"])
    assert getattr(model, RUNNER_ATTR).weight_forms() == {"none": 8, "head int8": 1}


def test_hf_forward_still_runs_on_reduced_weights():
    model = fresh()
    ids = torch.tensor([tiny_model("llama").tokenizer.encode(TEXT).ids[:40]])
    with torch.inference_mode():
        ref = model(input_ids=ids).logits[0, -1]
        attach_fast_runner(model, PRECISIONS["int8"])
        assert isinstance(model.model.layers[0].self_attn.q_proj, ProjectionSlice)
        got = model(input_ids=ids).logits[0, -1].float()
    assert torch.nn.functional.cosine_similarity(got, ref, dim=0) > 0.999


def test_threads_default_leaves_a_core_and_can_be_set():
    import os

    before = torch.get_num_threads()
    try:
        assert default_threads() == max(1, len(os.sched_getaffinity(0)) - 1)
        assert configure_threads(None) == default_threads() == torch.get_num_threads()
        assert configure_threads(3) == 3 == torch.get_num_threads()
        assert configure_threads(0) == default_threads()
    finally:
        torch.set_num_threads(before)
