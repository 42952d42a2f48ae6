"""CPU inference benchmark: decode ms/token and prefill tokens/s at 512, 2k and 4k tokens of context.

Systems, all on SmolLM2-135M (from its embedded GGUF):
- `hf_generate`: plain `transformers` `generate` (greedy, DynamicCache, SDPA), fp32 weights;
- `superpie_<precision>`: a `DocumentCache` prefill then greedy `CursorView` steps (the engine's
  loop), for each weight precision (`--precisions`; `auto` is this CPU's choice, `auto_bf16` and
  `auto_fp32` force the variant for a CPU with and without bf16 matrix instructions);
- `matmul_fp32` / `matmul_bf16`: the machine's limit for prefill, a plain GEMM of the model's
  projection shapes (one prefill chunk of rows, every layer), measured in the same repetition;
- `llama_cpp`: llama.cpp on the very same GGUF file through `llama-cpp-python`, run by a worker in its
  own virtual environment (not a project dependency; `--llama-python`); if it cannot be started the
  reason is recorded.

Each repetition runs every system once per context length, in turn, so a busy machine slows all of
them alike; ratios are taken per repetition and the median reported (with the load average, since
other processes may share the cores). Also measured: encoding a
16-token hunk after a 4k cached prefix against one decode step there (interleaved pairs), top-1
next-token agreement of each precision with float32 along teacher-forced decoding of real code,
the thread count (decode and prefill with 1..all allowed cores), and (`--compile`) what
`torch.compile` does to start-up and decode.

    .venv/bin/python benchmarks/cpu_inference.py                  # ~15 min on 2 busy cores
    .venv/bin/python benchmarks/cpu_inference.py --quick          # smoke run
    .venv/bin/python benchmarks/cpu_inference.py --threads 1 --lengths 2048 --no-baselines \
        --precisions float32 auto_bf16 auto --skip hunk threads      # prefill/decode by precision
    python -m venv /tmp/llamacpp-venv && /tmp/llamacpp-venv/bin/pip install llama-cpp-python numpy

Writes benchmarks/out/cpu_inference.json and .png, and prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import replace
from pathlib import Path

import torch

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.cache.forward import encode_span
from superpie.completion.config import ModelConfig
from superpie.completion.model.catalog import SMOLLM2
from superpie.completion.model.fast_llama import FastLlama
from superpie.completion.model.loading import (
    LoadedModel,
    configure_threads,
    converted_dir,
    gguf_file,
    load_model,
)
from superpie.completion.model.precision import auto_precision, native_bf16

OUT = Path(__file__).parent / "out"
SPEED_FILE = "argparse.py"  # ~22k tokens of real Python
AGREEMENT_FILES = (
    "argparse.py", "typing.py", "inspect.py", "tarfile.py", "difflib.py", "enum.py", "ast.py", "pdb.py",
    "zipfile.py", "subprocess.py", "pickle.py", "datetime.py", "doctest.py", "locale.py", "mailbox.py",
    "ipaddress.py", "pydoc.py", "_pyio.py", "optparse.py", "configparser.py",
)  # fmt: skip
PRECISIONS = ("float32", "fp16w", "bf16", "int8", "auto")
VARIANTS = {"auto_bf16": auto_precision(True), "auto_fp32": auto_precision(False)}  # auto, forced either way
DEFAULT = ModelConfig().dtype  # what the engine loads
CHUNK = 512  # rows per prefill forward (DocumentCache's default chunk)
# Timer of the single-thread measurements: wall time, or (`--clock cpu`) the thread's CPU time, which
# other processes on a shared machine disturb far less (they still share caches and memory bandwidth).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCKS["wall"]

# ----------------------------------------------------------------------------------------- inputs


def source(name: str) -> str:
    """A file of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"], name).read_text(encoding="utf-8")


def document(lm: LoadedModel, text: str, n_tokens: int) -> str:
    """The longest prefix of `text` ending at a line end that holds at most `n_tokens` tokens."""
    enc = lm.tokenizer.encode(text, add_special_tokens=False)
    cut = enc.offsets[min(n_tokens, len(enc.ids)) - 1][1]
    return text[: text.rfind("\n", 0, cut) + 1]


def new_doc(lm: LoadedModel) -> DocumentCache:
    """A document cache run by the model's runner, with room for the longest benchmark document."""
    return DocumentCache(lm.model, lm.tokenizer, lm.rope, max_tokens=1 << 16, runner=lm.runner)


def load(name: str, threads: int) -> LoadedModel:
    """SmolLM2 in precision `name` (a configuration value, or a forced `auto` variant)."""
    if name not in VARIANTS:
        return load_model(SMOLLM2.name, dtype=name, threads=threads)
    lm = load_model(SMOLLM2.name, dtype="float32", threads=threads, fast=False)
    return replace(lm, runner=FastLlama(lm.model, VARIANTS[name]), precision=name)


# ------------------------------------------------------------------------------------------ systems


class _Stamps:
    """A logits processor that only records when each generate step's logits arrive."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(clock())
        return scores


@torch.inference_mode()
def hf_generate(model: torch.nn.Module, ids: list[int], n: int) -> dict:
    """Plain `generate`: prefill = time to the first logits; decode = gaps between later logits."""
    from transformers import LogitsProcessorList

    stamps = _Stamps()
    x = torch.tensor([ids])
    t0 = clock()
    model.generate(
        x,
        attention_mask=torch.ones_like(x),
        max_new_tokens=n + 1,
        min_new_tokens=n + 1,
        do_sample=False,
        logits_processor=LogitsProcessorList([stamps]),
        pad_token_id=model.config.eos_token_id,
    )
    gaps = [(b - a) * 1000 for a, b in zip(stamps.times, stamps.times[1:])]
    return {"prefill_s": stamps.times[0] - t0, "decode_ms": gaps}


@torch.inference_mode()
def superpie_run(lm: LoadedModel, text: str, n: int) -> tuple[dict, DocumentCache]:
    """The engine's path: `DocumentCache.sync` (prefill), then greedy `CursorView` steps at the end."""
    doc = new_doc(lm)
    t0 = clock()
    doc.sync(text)
    prefill = clock() - t0
    view = CursorView(doc, doc.length - 1, reserve=n + 2)
    tok = torch.tensor([doc.ids[-1]])
    gaps = []
    for _ in range(n + 1):
        t = clock()
        tok = view.step(input_ids=tok)[-1].argmax().view(1)
        gaps.append((clock() - t) * 1000)
    return {"prefill_s": prefill, "decode_ms": gaps[1:]}, doc


_LLAMA_WORKER = r"""
import json, sys, time
import numpy as np
import llama_cpp
from llama_cpp import Llama
path, threads, n_ctx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
clock = time.thread_time if sys.argv[4] == "cpu" else time.perf_counter
llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
vocab = llm.n_vocab()
def top1():
    # eval keeps no logits unless logits_all; read the last token's row from the context
    return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))))
print(json.dumps({"ready": True, "version": llama_cpp.__version__}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    ids, n = req["ids"], req["n"]
    llm.reset()
    t0 = clock()
    llm.eval(ids)
    tok = top1()
    prefill = clock() - t0
    gaps, toks = [], []
    for _ in range(n + 1):
        t = clock()
        llm.eval([tok])
        tok = top1()
        gaps.append((clock() - t) * 1000)
        toks.append(tok)
    print(json.dumps({"prefill_s": prefill, "decode_ms": gaps[1:], "tokens": toks}), flush=True)
"""


class LlamaCpp:
    """llama.cpp in a worker process of its own environment, queried between the other systems."""

    def __init__(self, python: str, gguf: Path, threads: int, n_ctx: int, clock_name: str) -> None:
        self.error: str | None = None
        self.version: str | None = None
        self.proc: subprocess.Popen | None = None
        try:
            self.proc = subprocess.Popen(
                [python, "-c", _LLAMA_WORKER, str(gguf), str(threads), str(n_ctx), clock_name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            ready = self._read()
            self.version = ready.get("version")
        except (OSError, RuntimeError) as exc:
            self.error = f"llama.cpp worker did not start: {exc}"
            self.close()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            raise RuntimeError(err[-1] if err else f"worker exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self, ids: list[int], n: int) -> dict | None:
        """Prefill `ids`, then `n` greedy steps; None (and `error` set) if the worker failed."""
        if self.proc is None:
            return None
        try:
            self.proc.stdin.write(json.dumps({"ids": ids, "n": n}) + "\n")
            self.proc.stdin.flush()
            return self._read()
        except (OSError, RuntimeError, ValueError) as exc:
            self.error = f"llama.cpp worker failed: {exc}"
            self.close()
            return None

    def close(self) -> None:
        """Stop the worker."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class MatmulLimit:
    """Plain GEMMs of one layer's projection shapes (x [rows, K] @ W^T), run once per layer: the rate
    at which this CPU can push prefill tokens through the model's weights in fp32 and in bf16.

    `with_attention` adds attention's own matmuls (scores and weighted values) at the same FLOP
    rate: every prefill computes them besides the projections, and for a small model they are a large share
    of the work (SmolLM2-135M at 2k: about a third of the projections' FLOPs), so a limit of the projections
    alone cannot be reached by any implementation.
    """

    def __init__(self, model: torch.nn.Module, rows: int) -> None:
        c = model.config
        d = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * d
        shapes = [(qkv, c.hidden_size), (c.hidden_size, c.num_attention_heads * d),
                  (2 * c.intermediate_size, c.hidden_size), (c.hidden_size, c.intermediate_size)]  # fmt: skip
        self.rows, self.layers = rows, c.num_hidden_layers
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, d
        gen = torch.Generator().manual_seed(0)
        self.weights = [torch.randn(n, k, generator=gen) * 0.05 for n, k in shapes]
        self.inputs = [torch.randn(rows, k, generator=gen) for _, k in shapes]

    @torch.inference_mode()
    def tokens_per_s(self, dtype: torch.dtype) -> float:
        """Rows per second through every layer's four projections (one warm-up pass first)."""
        ws = [w.to(dtype) for w in self.weights]
        xs = [x.to(dtype) for x in self.inputs]
        for w, x in zip(ws, xs):
            torch.nn.functional.linear(x, w)
        t = clock()
        for _ in range(self.layers):
            for w, x in zip(ws, xs):
                torch.nn.functional.linear(x, w)
        return self.rows / (clock() - t)

    def with_attention(self, rate: float, tokens: int) -> float:
        """Tokens per second if a prefill of `tokens` (in chunks of `self.rows`, as `encode_span` runs it) did
        its projections at `rate` (what `tokens_per_s` measured) and attention's matmuls (scores and weighted
        values) at the same FLOP rate. Attention's FLOPs count each chunk's queries against the keys before it
        and the causal half of its own block. Plain batched matmuls of attention's shapes are no limit: with an
        inner dimension of 64 they run far below the GEMM rate and their score matrices leave the caches, which
        a fused kernel (SDPA's) avoids; so the rate is the projections'. Softmax and masks are left out."""
        proj_flops = 2 * self.layers * sum(w.numel() for w in self.weights)  # per token
        attn_flops = 0.0
        for start in range(0, tokens, self.rows):
            rows = min(self.rows, tokens - start)
            keys = rows * start + rows * rows / 2  # query-key pairs that count
            attn_flops += 2 * 2 * self.heads * self.head_dim * keys * self.layers  # q k^T, then p v
        return tokens / ((tokens * proj_flops + attn_flops) / (proj_flops * rate))


@torch.inference_mode()
def kernel_table(limit: MatmulLimit, rows: tuple[int, ...] = (1, 4, 16, 64, 512), reps: int = 3) -> dict:
    """ms for one layer's four projections, per weight form and row count (median of `reps` passes).

    `int8` and `q4` are the compact kernels as the runner calls them (bf16 activations); `int8_fp32act`
    and `q4_fp32act` feed them float32 activations, which they accept, to show what that costs.
    """
    from superpie.completion.model.precision import Q4_GROUP, Precision, Projection, quantize_int8, quantize_q4

    f32, bf16 = torch.float32, torch.bfloat16
    forms: dict[str, list] = {}
    for w in limit.weights:
        q8, s8 = quantize_int8(w)
        q4, scale, zero, _ = quantize_q4(w)
        packed = torch._convert_weight_to_int4pack_for_cpu(q4, 1)
        sz = torch.stack([scale.t(), zero.t()], dim=-1).contiguous()
        ops = {
            "fp32": (Projection(w, None, Precision("fp32", f32)), f32),
            "bf16": (Projection(w, None, Precision("bf16", bf16)), bf16),
            "fp16w": (Projection(w, None, Precision("fp16w", f32, "fp16")), f32),
            "int8": (Projection(w, None, Precision("int8", bf16, "int8"))._few, bf16),
            "q4": (Projection(w, None, Precision("q4", bf16, "q4"))._few, bf16),
            "int8_fp32act": (lambda x, q8=q8, s8=s8: torch._weight_int8pack_mm(x, q8, s8), f32),
            "q4_fp32act": (lambda x, p=packed, sz=sz: torch._weight_int4pack_mm_for_cpu(x, p, Q4_GROUP, sz), f32),
        }
        for name, op in ops.items():
            forms.setdefault(name, []).append(op)
    out: dict[str, dict[str, float]] = {}
    for n in rows:
        xs = [torch.randn(n, w.shape[1]) for w in limit.weights]
        for name, ops in forms.items():
            inputs = [x.to(dtype) for x, (_, dtype) in zip(xs, ops)]
            times = []
            for _ in range(reps + 1):  # the first pass warms up
                t = clock()
                for (op, _), x in zip(ops, inputs):
                    op(x)
                times.append((clock() - t) * 1000)
            out.setdefault(str(n), {})[name] = round(statistics.median(times[1:]), 3)
        print(f"kernels, {n} rows, ms per layer: {out[str(n)]}", flush=True)
    return out


@torch.inference_mode()
def attention_table(model: torch.nn.Module, context: int = 2048, reps: int = 5) -> dict:
    """ms of attention over every layer for n query rows behind `context` keys: SDPA vs the matmul
    kernels, in fp32 and bf16 (whichever `uses_matmul` would pick on this CPU)."""
    from superpie.cache.forward import causal_mask
    from superpie.completion.model.attention import Mask, attend

    c = model.config
    d = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    out: dict[str, dict[str, float]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        keys = torch.randn(1, c.num_key_value_heads, context + 256, d).to(dtype)
        values = torch.randn_like(keys)
        for n in (1, 4, 16, 64, 128):
            q = torch.randn(1, n, c.num_attention_heads, d).transpose(1, 2).to(dtype)
            mask = causal_mask(context - n, n, dtype)
            row = {}
            for kernel, prepared in (
                ("sdpa", Mask.for_sdpa(mask, context - n)),
                ("matmul", Mask.for_matmul(mask, context - n, n, keys.shape[2], dtype)),
            ):
                times = []
                for _ in range(reps + 1):
                    t = clock()
                    for _ in range(c.num_hidden_layers):
                        attend(q, keys, values, prepared, 0.125)
                    times.append((clock() - t) * 1000)
                row[kernel] = round(statistics.median(times[1:]), 2)
            out[f"{str(dtype).removeprefix('torch.')} {n} rows"] = row
            print(f"attention at {context}, {dtype} {n} rows, ms (all layers): {row}", flush=True)
    return out


# ------------------------------------------------------------------------------------ measurements


def speed(
    models: dict[str, LoadedModel], hf: torch.nn.Module | None, llama: LlamaCpp | None, limit: MatmulLimit, args
) -> dict:
    """Per context length and system: prefill tokens/s and decode ms/token, per repetition."""
    text = source(SPEED_FILE)
    ref = models["float32"]
    runs: dict[str, dict[str, list[dict]]] = {}
    for rep in range(args.reps):
        for length in args.lengths:
            doc_text = document(ref, text, length)
            ids = ref.tokenizer.encode(doc_text, add_special_tokens=False).ids
            row = runs.setdefault(str(length), {})
            load = os.getloadavg()[0]
            results = {} if hf is None else {"hf_generate": hf_generate(hf, ids, args.decode)}
            for name, lm in models.items():
                results[f"superpie_{name}"], _ = superpie_run(lm, doc_text, args.decode)
            llama_run = None if llama is None else llama.run(ids, args.decode)
            if llama_run is not None:
                llama_run.pop("tokens", None)
                results["llama_cpp"] = llama_run
            for name, dtype in (("matmul_fp32", torch.float32), ("matmul_bf16", torch.bfloat16)):  # prefill only
                results[name] = {"prefill_s": len(ids) / limit.tokens_per_s(dtype), "decode_ms": []}
            for system, r in results.items():
                r["tokens"], r["load_average"] = len(ids), round(load, 2)
                row.setdefault(system, []).append(r)
            summary = {s: round(statistics.median(r["decode_ms"]), 1) for s, r in results.items() if r["decode_ms"]}
            prefill = {s: round(len(ids) / r["prefill_s"]) for s, r in results.items()}
            print(f"rep {rep} ctx {len(ids)} load {load:.1f}: decode ms/token {summary}", flush=True)
            print(f"    prefill tokens/s {prefill}", flush=True)
    return runs


def summarize_speed(runs: dict) -> dict:
    """Median over repetitions of each system's median step, and prefill tokens/s."""
    out = {}
    for length, systems in runs.items():
        out[length] = {
            s: {
                "tokens": rs[0]["tokens"],
                "decode_ms_per_token": (
                    round(statistics.median(statistics.median(r["decode_ms"]) for r in rs), 2)
                    if rs[0]["decode_ms"]
                    else None
                ),
                "prefill_tokens_per_s": round(statistics.median(r["tokens"] / r["prefill_s"] for r in rs), 1),
                "prefill_over_matmul_fp32": round(
                    statistics.median(m["prefill_s"] / r["prefill_s"] for r, m in zip(rs, systems["matmul_fp32"])), 3
                ),
                "load_average": [r["load_average"] for r in rs],
            }
            for s, rs in systems.items()
        }
    return out


def paired_ratio(
    runs: dict, length: str, num: str, den: str, key: str = "decode_ms", invert: bool = False
) -> float | None:
    """Median over repetitions of num/den of `key` (den/num with `invert`: a rate from times); each
    repetition's systems ran back to back."""
    systems = runs.get(length, {})
    if num not in systems or den not in systems:
        return None

    def value(r: dict) -> float:
        return statistics.median(r[key]) if isinstance(r[key], list) else r[key]

    ratios = [value(a) / value(b) for a, b in zip(systems[num], systems[den])]
    return round(statistics.median(1 / r if invert else r for r in ratios), 3)


@torch.inference_mode()
def hunk_vs_step(lm: LoadedModel, context: int, hunk: int, reps: int) -> dict:
    """Encode a `hunk`-token span behind `context` cached tokens vs one decode step there, interleaved."""
    text = document(lm, source(SPEED_FILE), context + hunk + 64)
    ids = lm.tokenizer.encode(text, add_special_tokens=False).ids
    doc = new_doc(lm)
    doc.sync(lm.tokenizer.decode(ids[:context]))
    start = doc.length
    piece = ids[start : start + hunk]
    view = CursorView(doc, start, reserve=4)
    tok = torch.tensor([ids[start]])
    encode_ms, step_ms = [], []
    for _ in range(reps + 1):  # the first pair warms up
        t = clock()
        encode_span(doc.runner, doc.store, start, piece)  # the PIE hunk encode
        encode_ms.append((clock() - t) * 1000)
        view.rewind(0)
        t = clock()
        view.step(input_ids=tok)
        step_ms.append((clock() - t) * 1000)
    encode_ms, step_ms = encode_ms[1:], step_ms[1:]
    return {
        "context": start,
        "hunk_tokens": len(piece),
        "encode_ms": round(statistics.median(encode_ms), 2),
        "step_ms": round(statistics.median(step_ms), 2),
        "ratio": round(statistics.median(a / b for a, b in zip(encode_ms, step_ms)), 3),
    }


@torch.inference_mode()
def teacher_forced_top1(lm: LoadedModel, ids: list[int], prefix: int) -> torch.Tensor:
    """Greedy choices along `ids` after a `prefix` prefill, one decode step per token (the decode path)."""
    doc = new_doc(lm)
    doc.sync(lm.tokenizer.decode(ids[:prefix]))
    view = CursorView(doc, doc.length - 1, reserve=len(ids))
    out = []
    for tok in ids[doc.length - 1 : -1]:
        out.append(int(view.step(input_ids=torch.tensor([tok]))[-1].argmax()))
    return torch.tensor(out)


def agreement(models: dict[str, LoadedModel], files: tuple[str, ...], prefix: int, steps: int) -> dict:
    """Share of decode steps whose top-1 token equals float32's, per precision, on real code.

    One window per file at a seeded random offset: `prefix` tokens synced, then `steps` decode steps.
    """
    ref = models["float32"]
    rng = random.Random(0)
    docs = []
    for name in files:
        ids = ref.tokenizer.encode(source(name), add_special_tokens=False).ids
        start = rng.randrange(0, max(1, len(ids) - prefix - steps))
        docs.append(ids[start : start + prefix + steps])
    reference = [teacher_forced_top1(ref, ids, prefix) for ids in docs]
    out = {"positions": sum(len(r) for r in reference), "files": list(files)}
    for name, lm in models.items():
        if name == "float32":
            continue
        got = [teacher_forced_top1(lm, ids, prefix) for ids in docs]
        same = sum(int((a == b).sum()) for a, b in zip(reference, got))
        out[name] = round(same / out["positions"], 4)
        print(f"top-1 agreement {name} vs float32: {out[name]:.4f}", flush=True)
    return out


def compile_check(lm: LoadedModel, context: int, reps: int) -> dict:
    """torch.compile of each layer's norm+projection+RoPE and MLP parts: start-up cost and decode ratio.

    The in-place K/V writes and attention stay eager (inductor cannot write inference tensors in
    place); the rest of a layer is what compile could fuse.
    """
    import torch.nn.functional as F

    runner = lm.runner

    def mlp(layer, x):
        gu = layer.gate_up(runner._norm(x, layer.ln2))
        return x + layer.down(F.silu(gu[:, : runner.inter]) * gu[:, runner.inter :])

    compiled = torch.compile(mlp, dynamic=True)
    eager_mlp = runner._mlp
    text = document(lm, source(SPEED_FILE), context + 8)
    doc = new_doc(lm)
    doc.sync(text)
    tok = torch.tensor([doc.ids[-1]])

    def steps(k: int = 4) -> float:
        view = CursorView(doc, doc.length - 1, reserve=k + 2)
        view.step(input_ids=tok)
        t = time.perf_counter()
        for _ in range(k):
            view.step(input_ids=tok)
        return (time.perf_counter() - t) / k * 1000

    def use(fn) -> None:
        runner._mlp = (lambda layer, x: x.copy_(fn(layer, x))) if fn is not None else eager_mlp

    t0 = time.perf_counter()
    use(compiled)
    steps(1)
    first_s = time.perf_counter() - t0
    eager, comp = [], []
    for _ in range(reps):
        use(None)
        eager.append(steps())
        use(compiled)
        comp.append(steps())
    use(None)
    return {
        "first_call_s": round(first_s, 1),
        "eager_ms": round(statistics.median(eager), 2),
        "compiled_ms": round(statistics.median(comp), 2),
        "ratio": round(statistics.median(b / a for a, b in zip(eager, comp)), 3),
    }


@torch.inference_mode()
def threads_check(lm: LoadedModel, context: int, reps: int) -> dict:
    """Decode step and a 256-token prefill chunk with each thread count up to the affinity, interleaved."""
    text = document(lm, source(SPEED_FILE), context + 300)
    ids = lm.tokenizer.encode(text, add_special_tokens=False).ids
    doc = new_doc(lm)
    doc.sync(lm.tokenizer.decode(ids[:context]))
    counts = list(range(1, len(os.sched_getaffinity(0)) + 1))
    before = torch.get_num_threads()
    times: dict[int, dict[str, list[float]]] = {c: {"decode_ms": [], "prefill256_ms": []} for c in counts}
    for _ in range(reps):
        for c in counts:
            torch.set_num_threads(c)
            view = CursorView(doc, doc.length - 1, reserve=8)
            tok = torch.tensor([doc.ids[-1]])
            t = time.perf_counter()
            for _ in range(4):
                tok = view.step(input_ids=tok)[-1].argmax().view(1)
            times[c]["decode_ms"].append((time.perf_counter() - t) / 4 * 1000)
            t = time.perf_counter()
            encode_span(doc.runner, doc.store, doc.length, ids[context : context + 256])
            times[c]["prefill256_ms"].append((time.perf_counter() - t) * 1000)
    torch.set_num_threads(before)
    return {str(c): {k: round(statistics.median(v), 1) for k, v in t.items()} for c, t in times.items()}


# ------------------------------------------------------------------------------------------- output


def plot(summary: dict, path: Path) -> None:
    """Decode ms/token and prefill tokens/s against context length, one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted(summary, key=int)
    systems = sorted({s for row in summary.values() for s in row})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for s in systems:
        xs = [summary[n][s]["tokens"] for n in lengths if s in summary[n]]
        if summary[lengths[0]].get(s, {}).get("decode_ms_per_token") is not None:
            ax1.plot(xs, [summary[n][s]["decode_ms_per_token"] for n in lengths if s in summary[n]], "o-", label=s)
        ax2.plot(xs, [summary[n][s]["prefill_tokens_per_s"] for n in lengths if s in summary[n]], "o-", label=s)
    ax1.set(xlabel="context tokens", ylabel="ms per decoded token", title="decode (lower is better)")
    ax2.set(xlabel="context tokens", ylabel="prefill tokens/s", title="prefill (higher is better)")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(result: dict) -> str:
    """The figures for benchmarks/RESULTS.md: one row per context length and system, then the ratios."""
    lines = [
        "| context | system | prefill tokens/s | prefill / fp32 matmul | decode ms/token |",
        "|---|---|---|---|---|",
    ]
    for systems in result["summary"].values():
        for s, r in systems.items():
            decode = "" if r["decode_ms_per_token"] is None else r["decode_ms_per_token"]
            lines.append(
                f"| {r['tokens']} | {s} | {r['prefill_tokens_per_s']} | {r['prefill_over_matmul_fp32']} | {decode} |"
            )
    kernels = result.get("kernels_ms_per_layer") or {}
    if kernels:
        names = list(next(iter(kernels.values())))
        lines += ["", "| rows | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {n} | " + " | ".join(str(k[m]) for m in names) + " |" for n, k in kernels.items()]
    lines += ["", "Ratios (median over repetitions of per-repetition ratios): " + json.dumps(result["targets"])]
    agree = {k: v for k, v in result.get("top1_agreement_with_float32", {}).items() if k != "files"}
    if agree:
        lines.append("Top-1 agreement with float32 (teacher-forced decode steps on stdlib code): " + json.dumps(agree))
    return "\n".join(lines)


def main() -> None:
    """Run every measurement, print the figures, write JSON + PNG."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 512/2k, one repetition, few steps")
    p.add_argument("--threads", type=int, default=None, help="torch and llama.cpp threads (default: affinity)")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096])
    p.add_argument("--decode", type=int, default=16, help="decoded tokens per run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), help="float32 is always included")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True, help="hf_generate, llama.cpp")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall", help="cpu: thread CPU time (needs 1 thread)")
    sections = ["kernels", "attention", "hunk", "agreement", "threads"]
    p.add_argument("--skip", nargs="*", default=[], choices=sections, help="measurements to leave out")
    p.add_argument("--agree-prefix", type=int, default=384)
    p.add_argument("--agree-steps", type=int, default=160, help="teacher-forced decode steps per file")
    p.add_argument("--llama-python", default="/tmp/llamacpp-venv/bin/python")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to start)")
    p.add_argument("--out", type=Path, default=OUT / "cpu_inference.json")
    args = p.parse_args()
    if args.quick:
        args.lengths, args.reps, args.decode, args.agree_steps = [512, 2048], 1, 8, 32
    threads = configure_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    if args.clock == "cpu" and threads != 1:
        p.error("--clock cpu measures one thread: pass --threads 1")
    from transformers import AutoModelForCausalLM

    hf = None
    if args.baselines:
        hf = AutoModelForCausalLM.from_pretrained(
            str(converted_dir(SMOLLM2)), dtype=torch.float32, attn_implementation="sdpa"
        )
        hf.eval()
    models, load_s = {}, {}
    for name in dict.fromkeys(["float32", *args.precisions]):
        t0 = time.perf_counter()
        models[name] = load(name, threads)
        load_s[name] = round(time.perf_counter() - t0, 2)
    default = DEFAULT if DEFAULT in models else list(models)[-1]
    gguf = gguf_file(SMOLLM2)
    n_ctx = max(args.lengths) + args.decode + 64
    llama = LlamaCpp(args.llama_python, gguf, threads, n_ctx, args.clock) if args.baselines else None
    llama_state = "off" if llama is None else llama.version or llama.error
    print(f"threads {threads}; llama.cpp {llama_state}; load s {load_s}", flush=True)

    limit = MatmulLimit(models["float32"].model, CHUNK)
    kernels = kernel_table(limit) if "kernels" not in args.skip else {}
    attention = attention_table(models["float32"].model) if "attention" not in args.skip else {}
    runs = speed(models, hf, llama, limit, args)
    if llama is not None:
        llama.close()
    summary = summarize_speed(runs)
    at2k = str(2048) if "2048" in runs else str(args.lengths[-1])
    targets = {
        "decode_2k_default_over_hf_generate": paired_ratio(runs, at2k, f"superpie_{default}", "hf_generate"),
        "decode_2k_default_over_llama_cpp": paired_ratio(runs, at2k, f"superpie_{default}", "llama_cpp"),
        "decode_2k_float32_over_hf_generate": paired_ratio(runs, at2k, "superpie_float32", "hf_generate"),
    }
    for name in models:
        if name != "float32":
            targets[f"decode_2k_{name}_over_float32"] = paired_ratio(runs, at2k, f"superpie_{name}", "superpie_float32")
            targets[f"prefill_2k_{name}_over_float32"] = paired_ratio(
                runs, at2k, f"superpie_{name}", "superpie_float32", key="prefill_s", invert=True
            )
    targets["matmul_bf16_over_fp32"] = paired_ratio(runs, at2k, "matmul_bf16", "matmul_fp32", "prefill_s", True)
    hunk = {}
    if "hunk" not in args.skip:
        hunk = {name: hunk_vs_step(models[name], max(args.lengths), 16, args.reps + 2) for name in ("float32", default)}
        targets["hunk16_at_4k_over_step_default"] = hunk[default]["ratio"]
    agree = {}
    if "agreement" not in args.skip:
        files = AGREEMENT_FILES if not args.quick else AGREEMENT_FILES[:3]
        agree = agreement(models, files, args.agree_prefix, args.agree_steps)
    result = {
        "machine": {
            "threads": threads,
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_matrix_units": native_bf16(),
            "clock": args.clock,
        },
        "model": models[default].name,
        "gguf": gguf.name,
        "default_precision": DEFAULT,
        "weight_forms": {n: m.runner.weight_forms() for n, m in models.items() if isinstance(m.runner, FastLlama)},
        "load_s": load_s,
        "llama_cpp": None if llama is None else {"version": llama.version, "error": llama.error},
        "decode_tokens": args.decode,
        "reps": args.reps,
        "summary": summary,
        "kernels_ms_per_layer": kernels,
        "attention_ms_all_layers": attention,
        "targets": targets,
        "hunk_vs_step": hunk,
        "top1_agreement_with_float32": agree,
        "runs": runs,
    }
    if "threads" not in args.skip:
        result["threads_check"] = threads_check(models[default], 2048, args.reps)
        print(f"threads (ms by thread count): {result['threads_check']}", flush=True)
    if args.compile:
        result["torch_compile"] = compile_check(models[default], 2048, args.reps + 2)
        print(f"torch.compile: {result['torch_compile']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(summary, args.out.with_suffix(".png"))
    print(json.dumps({"summary": summary, "targets": targets, "hunk_vs_step": hunk, "agreement": agree}, indent=1))
    print(markdown(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    sys.exit(main())
