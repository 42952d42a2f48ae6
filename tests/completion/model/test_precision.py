"""Weight precisions: quantizers, the row-count dispatch, and reduced-precision runners on tiny models."""

from __future__ import annotations

import copy

import pytest
import torch
from test_cache_exactness import TEXT
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.cache.forward import Runner
from superpie.completion.model.fast_llama import FastLlama
from superpie.completion.model.loading import ModelLoadError, configure_threads, default_threads, load_model
from superpie.completion.model.precision import (
    COMPACT_MAX_ROWS,
    PRECISIONS,
    Precision,
    Projection,
    ProjectionSlice,
    auto_precision,
    cast_keeping_rotary,
    dequantize_q4,
    native_bf16,
    quantize_int8,
    quantize_q4,
    resolve_precision,
)

# `auto` on a CPU with bf16 matrix instructions and on one without (PRECISIONS["auto"] is this machine's).
AUTO = {"auto_bf16": auto_precision(True), "auto_fp32": auto_precision(False)}


def precision(name: str) -> Precision:
    """A named precision, or one of the two `auto` variants."""
    return AUTO.get(name) or PRECISIONS[name]


def fresh(kind: str = "llama", q4_grid: bool = False) -> torch.nn.Module:
    """An fp32 copy of a tiny HF model, its weights as loaded (optionally put on a q4 grid, the LM head too)."""
    model = copy.deepcopy(tiny_model(kind).model)
    if q4_grid:
        with torch.no_grad():
            for m in [*model.model.layers.modules(), model.lm_head]:
                if isinstance(m, torch.nn.Linear):
                    q, scale, zero, _ = quantize_q4(m.weight)
                    m.weight.copy_(dequantize_q4(q, scale, zero))
    return model


def encode_logits(model: torch.nn.Module, runner: Runner, kind: str = "llama") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the last token after a chunked prefill, and after one more decode step (1 row)."""
    lm = tiny_model(kind)
    doc = DocumentCache(model, lm.tokenizer, lm.rope, chunk=32, runner=runner)
    doc.sync(TEXT)
    view = CursorView(doc, doc.length - 1)
    step = view.step(input_ids=torch.tensor([doc.ids[-1]]))[-1]
    many = view.step(input_ids=torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]))[-1]  # 8 rows: the bf16 GEMM path
    return step, many


def test_names_and_aliases():
    assert resolve_precision("fp32") is PRECISIONS["float32"]
    assert resolve_precision("bfloat16").name == "bf16"
    assert resolve_precision("Q4").compact == "q4"
    assert resolve_precision("auto") is PRECISIONS["auto"]
    assert PRECISIONS["auto"] == auto_precision(native_bf16())
    with_units, without = auto_precision(True), auto_precision(False)
    assert (with_units.compute, with_units.compact, with_units.head.compact) == (torch.bfloat16, "q4", "q4")
    assert (without.compute, without.compact, without.kv_dtype) == (torch.float32, "fp16", torch.float32)
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


def test_q4_recovers_a_grid_whose_groups_skip_its_end_levels():
    """A GGUF Q4_K sub-block is d * q - m with q in 0..15, but its weights need not use q = 0 or 15:
    min/max over 15 would misplace the grid; the largest span that fits recovers it exactly."""
    torch.manual_seed(0)
    n, k = 8, 128
    d = torch.rand(n, k // 32, 1) * 0.02 + 0.001
    m = torch.rand(n, k // 32, 1) * 0.1
    q = torch.randint(0, 16, (n, k // 32, 32))
    q[:, 0] = torch.randint(2, 13, (n, 32))  # the first group of each row uses levels 2..12 only
    w = (d * q.float() - m).reshape(n, k)
    got, scale, zero, error = quantize_q4(w)
    assert error < 1e-3
    torch.testing.assert_close(dequantize_q4(got, scale, zero), w, atol=1e-6, rtol=0)
    noisy = w + torch.randn(n, k) * 0.003  # off any 4-bit grid: lossy, and reported as such
    assert quantize_q4(noisy)[3] > 0.01


def test_precisions_that_round_activations_are_marked():
    """Speculation's guard follows this: a kernel rounding to bf16 or int8 (even under fp32 compute, as
    int8dyn's dyn8) makes a many-row forward differ from a one-row one by more than float noise."""
    rounding = {name for name, p in {**PRECISIONS, **AUTO}.items() if p.rounds_activations}
    assert rounding == {"int8dyn", "bf16", "int8", "q4", "auto_bf16"} | ({"auto"} if native_bf16() else set())


def test_int8_error_is_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8
    assert ((q.float() * scale[:, None] - w).abs() <= 0.5 * scale[:, None] + 1e-6).all()


@pytest.mark.parametrize("name", ["bf16", "int8", "q4", "fp16w"])
def test_projection_rows_pick_the_form_and_agree(name):
    torch.manual_seed(0)
    w, b = torch.randn(96, 64) * 0.1, torch.randn(96) * 0.1
    prec = precision(name)
    proj = Projection(w, b, prec)
    x = torch.randn(2 * COMPACT_MAX_ROWS, 64)
    ref = x @ w.T + b
    few = torch.cat([proj(x[i : i + 1].to(prec.compute)) for i in range(x.shape[0])])  # compact kernel
    many = proj(x.to(prec.compute))  # the GEMM in the compute dtype
    assert few.dtype == many.dtype == prec.compute
    tol = {"bf16": 0.05, "int8": 0.1, "q4": 0.5, "fp16w": 0.005}  # fp16w: fp16 weights, fp32 activations
    assert proj.compact == {"bf16": None, "fp16w": "fp16"}.get(name, name)
    assert (few.float() - ref).abs().max() < tol[name]
    assert (many.float() - ref).abs().max() < min(0.05, tol[name])


@pytest.mark.parametrize("compute", [torch.bfloat16, torch.float32])
def test_q4_few_rows_take_either_activation_dtype(compute):
    torch.manual_seed(0)
    q, scale, zero, _ = quantize_q4(torch.randn(96, 64) * 0.1)
    w, b = dequantize_q4(q, scale, zero), torch.randn(96) * 0.1  # on the q4 grid: lossless
    proj = Projection(w, b, Precision("t", compute, "q4"))
    assert proj.compact == "q4"
    x = torch.randn(1, 64)
    got = proj(x.to(compute))
    assert got.dtype == compute
    # bf16 activations in the kernel, bf16 scales: within bf16 rounding of the exact product
    assert (got.float() - (x @ w.T + b)).abs().max() < 0.03


def test_cast_keeps_rotary_frequencies_fp32():
    model = fresh()
    cast_keeping_rotary(model, torch.bfloat16)
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["llama", "qwen2"])  # tied head / untied head with q/k/v biases
@pytest.mark.parametrize("name", ["fp16w", "bf16", "int8", "q4", "auto_bf16", "auto_fp32"])
def test_reduced_runners_track_fp32(name, kind):
    model = fresh(kind, q4_grid=name in ("q4", "auto_bf16"))  # q4 is compared on weights it can hold
    ref_step, ref_many = encode_logits(*_fp32_runner(model), kind)
    prec = precision(name)
    runner = FastLlama(model, prec)
    assert runner.dtype == runner.kv_dtype == prec.compute
    step, many = encode_logits(model, runner, kind)
    for got, ref in ((step, ref_step), (many, ref_many)):
        assert got.dtype == torch.float32
        # bf16 activations on a tiny model with sharp random weights: close, not equal (HF's own bf16
        # forward is as far off); a near-tie at the top may flip, a clear winner may not
        assert torch.nn.functional.cosine_similarity(got, ref, dim=0) > 0.995
        assert got.argmax() in ref.topk(3).indices
    if not prec.rounds_activations:  # fp32 activations: the top logits (re-scored in fp32) match closely
        for got, ref in ((step, ref_step), (many, ref_many)):
            top = ref.topk(8).indices
            torch.testing.assert_close(got[top], ref[top], atol=0.02, rtol=0)
    forms = runner.weight_forms()
    if name == "auto_bf16":
        assert forms == {"q4": 8, "head q4": 1}  # 2 layers x 4 projections, all on the grid
    if name == "fp16w":
        assert forms == {"fp16": 8, "head int8": 1}
    if name == "auto_fp32":  # fp16w's layers, int8dyn's head (FBGEMM)
        assert forms == {"fp16": 8, "head dyn8": 1}


def _fp32_runner(model: torch.nn.Module) -> tuple[torch.nn.Module, Runner]:
    """A copy of `model` with the fp32 (reference) runner."""
    twin = copy.deepcopy(model)
    return twin, FastLlama(twin, PRECISIONS["float32"])


def test_auto_with_bf16_units_decodes_through_q4_where_the_weights_are_not_4_bit_too():
    runner = FastLlama(fresh(), AUTO["auto_bf16"])  # random weights, off any grid: re-quantized
    assert runner.weight_forms() == {"q4": 8, "head q4": 1}


def test_auto_without_bf16_units_computes_and_caches_in_fp32():
    model = fresh()
    runner = FastLlama(model, AUTO["auto_fp32"])
    assert runner.dtype == runner.kv_dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.float32  # nothing cast to bf16
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the fp32 head reads the embedding
    doc = DocumentCache(model, tiny_model().tokenizer, tiny_model().rope, runner=runner)
    doc.sync(TEXT)
    assert doc.dtype == torch.float32 and doc.store.keys[0].dtype == torch.float32


def test_hf_forward_still_runs_on_reduced_weights():
    model = fresh()
    ids = torch.tensor([tiny_model("llama").tokenizer.encode(TEXT).ids[:40]])
    with torch.inference_mode():
        ref = model(input_ids=ids).logits[0, -1]
        FastLlama(model, PRECISIONS["int8"])
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
