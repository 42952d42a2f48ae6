"""`FastLlama` gives the HF forward's logits and KV (fp32, atol 1e-4) on tiny Llama and Qwen2 models."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_cache_exactness import TEXT
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.cache.forward import HFRunner, Runner, causal_mask, no_logits, run_forward
from superpie.cache.kv import KVStore
from superpie.completion.model.fast_llama import FastLlama, supports

ATOL = 1e-4
FAST_KINDS = ("llama", "qwen2")


def both(kind: str, fn):
    """fn(lm, runner) run with the fast runner, then with the HF forward: (fast result, HF result)."""
    lm = tiny_model(kind)
    assert isinstance(lm.runner, FastLlama)
    return fn(lm, lm.runner), fn(lm, HFRunner(lm.model))


def close(a, b) -> None:
    """Same nesting of tensors, equal within ATOL."""
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape
        torch.testing.assert_close(a.float(), b.float(), atol=ATOL, rtol=0)
        return
    assert len(a) == len(b)
    for x, y in zip(a, b):
        close(x, y)


def doc_of(lm, runner: Runner, chunk: int = 512) -> DocumentCache:
    return DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="pie", chunk=chunk, runner=runner)


def cached_kv(doc: DocumentCache) -> list[torch.Tensor]:
    return [t.clone() for k, v in doc.store.truncate_view(doc.length) for t in (k, v)]


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_tiny_models_get_a_fast_runner(kind):
    assert tiny_model(kind).fast
    assert not supports(tiny_model("phi").model)  # partial rotary: stays on the HF forward
    assert not tiny_model("phi").fast
    assert isinstance(tiny_model("phi").runner, HFRunner)


class CountingRunner:
    """Forwards to another runner and records the write index of every call."""

    def __init__(self, inner: Runner) -> None:
        self.inner, self.calls = inner, []
        self.kv_dtype = inner.kv_dtype

    def __call__(self, store, write_at, *args) -> torch.Tensor:
        self.calls.append(write_at)
        return self.inner(store, write_at, *args)


def test_caches_run_the_runner_they_are_handed():
    lm = tiny_model("llama")
    runner = CountingRunner(lm.runner)
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, chunk=32, runner=runner)
    doc.sync(TEXT)
    assert runner.calls == list(range(0, doc.length, 32))  # the prefill, chunk by chunk
    twin = doc.clone()
    assert twin.runner is runner
    CursorView(twin, 10).step(input_ids=torch.tensor([doc.ids[10]]))
    assert runner.calls[-1] == doc.length  # the scratch slot behind the document
    bare = DocumentCache(lm.model, lm.tokenizer, lm.rope)  # no runner: the module's own HF forward
    assert isinstance(bare.runner, HFRunner) and bare.dtype == torch.float32


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_chunked_prefill_matches_hf_kv_and_full_forward(kind):
    def encode(lm, runner):
        doc = doc_of(lm, runner, chunk=16)  # many chunks: each attends to the cached ones before it
        doc.sync(TEXT)
        return cached_kv(doc), CursorView(doc, doc.length - 1).step(input_ids=torch.tensor([doc.ids[-1]]))

    (kv, logits), (kv_ref, logits_ref) = both(kind, encode)
    close(kv, kv_ref)
    close(logits, logits_ref)
    lm = tiny_model(kind)
    with torch.inference_mode():
        full = lm.model(input_ids=torch.tensor([lm.tokenizer.encode(TEXT).ids])).logits[0, -1]
    close(logits[-1], full)


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_decode_steps_behind_a_hidden_suffix(kind):
    def decode(lm, runner):
        doc = doc_of(lm, runner)
        doc.sync(TEXT)
        view = CursorView(doc, 40)  # the suffix after token 40 is masked out by the row view
        out, tok = [], torch.tensor([doc.ids[40]])
        for _ in range(6):
            logits = view.step(input_ids=tok)
            out.append(logits)
            tok = logits[-1].argmax().view(1)
        return out

    close(*both(kind, decode))


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_inputs_embeds_and_tree_masks(kind):
    def superposed_then_tree(lm, runner):
        doc = doc_of(lm, runner)
        doc.sync(TEXT)
        view = CursorView(doc, 60)
        emb = lm.model.get_input_embeddings().weight
        mixed = 0.5 * emb[3] + 0.3 * emb[7] + 0.2 * emb[11]  # a superposed step's input
        first = view.step(inputs_embeds=mixed.view(1, -1))
        # Two drafts of two tokens after the mixed token: [a1, a2] and [b1, b2], each its own branch.
        visible = torch.tensor(
            [
                [1, 1, 0, 0, 0],
                [1, 0, 1, 0, 0],
                [1, 1, 0, 1, 0],
                [1, 0, 1, 0, 1],
            ],
            dtype=torch.bool,
        )
        positions = torch.tensor([61, 61, 62, 62])
        ids = torch.tensor([5, 9, 6, 10])
        tree = view.step(input_ids=ids, positions=positions, scratch_visible=visible, logits_for=0)
        return first, tree

    (first, tree), (first_ref, tree_ref) = both(kind, superposed_then_tree)
    close(first, first_ref)
    close(tree, tree_ref)
    assert tree.shape[0] == 4


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_logits_for_indices_and_no_mask_means_causal(kind):
    def forward(lm, runner):
        store = KVStore(lm.model.config.num_hidden_layers)
        ids = torch.tensor(lm.tokenizer.encode(TEXT).ids[:24])
        a = run_forward(runner, store, 0, torch.arange(16), None, input_ids=ids[:16], logits_for=0)
        mask = causal_mask(16, 8, runner.kv_dtype)
        b = run_forward(
            runner, store, 16, torch.arange(16, 24), mask, input_ids=ids[16:], logits_for=torch.tensor([1, 5])
        )
        return a, b

    (a, b), (a_ref, b_ref) = both(kind, forward)
    close(a, a_ref)
    close(b, b_ref)
    assert a.shape[0] == 16 and b.shape[0] == 2
    close(a[:8], a_ref[:8])


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_a_kv_only_encode_writes_the_same_kv_and_skips_the_last_layers_rest(kind):
    lm = tiny_model(kind)
    runner = lm.runner
    last = runner.layers[-1]
    mlp_rows: list[int] = []
    counted = replace(last, gate_up=lambda x: (mlp_rows.append(x.shape[0]), last.gate_up(x))[1])
    ids = torch.tensor(lm.tokenizer.encode(TEXT).ids[:24])
    stores = []
    for logits_for in (no_logits(), 0):
        store = KVStore(lm.model.config.num_hidden_layers)
        runner.layers[-1] = counted
        try:
            run_forward(runner, store, 0, torch.arange(16), None, input_ids=ids[:16], logits_for=logits_for)
            mask = causal_mask(16, 8, runner.kv_dtype)
            run_forward(runner, store, 16, torch.arange(16, 24), mask, input_ids=ids[16:], logits_for=logits_for)
        finally:
            runner.layers[-1] = last
        stores.append([t.clone() for k, v in store.truncate_view(24) for t in (k, v)])
    assert mlp_rows == [16, 8]  # only the forwards that kept logits ran the last layer's MLP
    for kv_only, full in zip(*stores):
        assert torch.equal(kv_only, full)


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_pie_edits_match_the_hf_path(kind):
    def edit(lm, runner):
        doc = doc_of(lm, runner, chunk=32)
        doc.sync(TEXT)
        doc.sync(TEXT.replace("hello ", "hello, dear ").replace("loud=False", "loud=True"))
        return cached_kv(doc)

    close(*both(kind, edit))


def test_fast_logits_are_fp32():
    lm = tiny_model("llama")
    store = KVStore(lm.model.config.num_hidden_layers)
    out = run_forward(lm.runner, store, 0, torch.arange(3), None, input_ids=torch.tensor([1, 2, 3]))
    assert out.dtype == torch.float32 and out.shape == (1, lm.vocab_size)


def _masks(n: int, start: int) -> dict[str, torch.Tensor | None]:
    """Causal after a visible prefix, the same with a hidden suffix, a random tree, and none."""
    dtype = torch.bfloat16
    causal = causal_mask(start, n, dtype)
    hidden = causal.clone()
    hidden[..., start // 2 : start] = torch.finfo(dtype).min
    tree = causal.clone()
    tree[..., start:] = torch.where(torch.rand(n, n) < 0.5, torch.finfo(dtype).min, 0.0).to(dtype)
    tree[..., start:].diagonal(dim1=-2, dim2=-1).zero_()
    return {"causal": causal, "hidden_suffix": hidden, "tree": tree, "none": None if n == 1 else causal}


def test_attention_kernel_by_rows_dtype_and_cpu():
    from superpie.completion.model.attention import FEW_ROWS, uses_matmul

    for native in (True, False):
        assert not any(uses_matmul(n, torch.float32, native) for n in (1, 16, 1000))  # fp32: SDPA
        assert uses_matmul(1, torch.bfloat16, native)  # a bf16 decode step: the matmuls
        assert not uses_matmul(FEW_ROWS + 1, torch.bfloat16, native)
    assert uses_matmul(FEW_ROWS, torch.bfloat16, native=True)
    assert not uses_matmul(2, torch.bfloat16, native=False)  # emulated bf16: SDPA beyond one row


@pytest.mark.parametrize("n", [1, 3, 16, 20, 140])
def test_bf16_attention_kernels_match_sdpa_in_fp32(n):
    from superpie.completion.model.attention import FEW_ROWS, Mask, attend

    torch.manual_seed(n)
    start, heads, kv_heads, d = 100, 9, 3, 64
    buf_k = torch.randn(1, kv_heads, 256, d)  # a store buffer; slots past S hold stale values
    buf_v = torch.randn(1, kv_heads, 256, d)
    keys, values = buf_k[:, :, : start + n], buf_v[:, :, : start + n]
    q = torch.randn(1, n, heads, d).transpose(1, 2)  # [1, H, n, D] strided, as the runner makes it
    for name, mask in _masks(n, start).items():
        ref = torch.nn.functional.scaled_dot_product_attention(
            q, keys, values, attn_mask=None if mask is None else mask.float(), scale=0.125, enable_gqa=True
        )
        if n <= FEW_ROWS:  # the matmul kernels, whichever kernel this CPU would pick
            prepared = Mask.for_matmul(mask, start, n, buf_k.shape[2], torch.bfloat16)
            assert prepared.padded is not None
        else:
            prepared = Mask.of(mask, start, n, buf_k.shape[2], torch.bfloat16)
        got = attend(q.bfloat16(), buf_k.bfloat16(), buf_v.bfloat16(), prepared, 0.125)
        assert got.shape == ref.shape, name
        torch.testing.assert_close(got.float(), ref, atol=0.05, rtol=0.05, msg=name)
