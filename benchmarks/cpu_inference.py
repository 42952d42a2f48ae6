"""CPU inference benchmark: decode ms/token and prefill tokens/s at 512, 2k and 4k tokens of context.

Systems, all on the default model (SmolLM2-135M, from the embedded GGUF):
- `hf_generate`: plain `transformers` `generate` (greedy, DynamicCache, SDPA), fp32 weights;
- `superpie_<precision>`: a `DocumentCache` prefill then greedy `CursorView` steps (the engine's
  loop), for each weight precision;
- `llama_cpp`: llama.cpp on the very same GGUF file through `llama-cpp-python`, run by a worker in its
  own virtual environment (not a project dependency; `--llama-python`); if it cannot be started the
  reason is recorded.

Each repetition runs every system once per context length, in turn, so a busy machine slows all of
them alike; ratios are taken per repetition and the median reported. Also measured: encoding a
16-token hunk after a 4k cached prefix against one decode step there (interleaved pairs), top-1
next-token agreement of each precision with float32 along teacher-forced decoding of real code,
the thread count (decode and prefill with 1..all allowed cores), and (`--compile`) what
`torch.compile` does to start-up and decode.

    .venv/bin/python benchmarks/cpu_inference.py                  # ~15 min on 2 busy cores
    .venv/bin/python benchmarks/cpu_inference.py --quick          # smoke run
    python -m venv /tmp/llamacpp-venv && /tmp/llamacpp-venv/bin/pip install llama-cpp-python numpy

Writes benchmarks/out/cpu_inference.json and .png.
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
from pathlib import Path

import torch

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.cache.forward import encode_span
from superpie.completion.config import ModelConfig
from superpie.completion.model.loading import (
    LoadedModel,
    configure_threads,
    converted_dir,
    default_gguf_path,
    load_model,
)

OUT = Path(__file__).parent / "out"
SPEED_FILE = "argparse.py"  # ~22k tokens of real Python
AGREEMENT_FILES = (
    "argparse.py", "typing.py", "inspect.py", "tarfile.py", "difflib.py", "enum.py", "ast.py", "pdb.py",
    "zipfile.py", "subprocess.py", "pickle.py", "datetime.py", "doctest.py", "locale.py", "mailbox.py",
    "ipaddress.py", "pydoc.py", "_pyio.py", "optparse.py", "configparser.py",
)  # fmt: skip
PRECISIONS = ("float32", "fp16w", "bf16", "int8", "auto")
DEFAULT = ModelConfig().dtype  # what the engine loads

# ----------------------------------------------------------------------------------------- inputs


def source(name: str) -> str:
    """A file of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"], name).read_text(encoding="utf-8")


def document(lm: LoadedModel, text: str, n_tokens: int) -> str:
    """The longest prefix of `text` ending at a line end that holds at most `n_tokens` tokens."""
    enc = lm.tokenizer.encode(text, add_special_tokens=False)
    cut = enc.offsets[min(n_tokens, len(enc.ids)) - 1][1]
    return text[: text.rfind("\n", 0, cut) + 1]


# ------------------------------------------------------------------------------------------ systems


class _Stamps:
    """A logits processor that only records when each generate step's logits arrive."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


@torch.inference_mode()
def hf_generate(model: torch.nn.Module, ids: list[int], n: int) -> dict:
    """Plain `generate`: prefill = time to the first logits; decode = gaps between later logits."""
    from transformers import LogitsProcessorList

    stamps = _Stamps()
    x = torch.tensor([ids])
    t0 = time.perf_counter()
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
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, max_tokens=1 << 16)
    t0 = time.perf_counter()
    doc.sync(text)
    prefill = time.perf_counter() - t0
    view = CursorView(doc, doc.length - 1, reserve=n + 2)
    tok = torch.tensor([doc.ids[-1]])
    gaps = []
    for _ in range(n + 1):
        t = time.perf_counter()
        tok = view.step(input_ids=tok)[-1].argmax().view(1)
        gaps.append((time.perf_counter() - t) * 1000)
    return {"prefill_s": prefill, "decode_ms": gaps[1:]}, doc


_LLAMA_WORKER = r"""
import json, sys, time
import numpy as np
import llama_cpp
from llama_cpp import Llama
path, threads, n_ctx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
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
    t0 = time.perf_counter()
    llm.eval(ids)
    tok = top1()
    prefill = time.perf_counter() - t0
    gaps, toks = [], []
    for _ in range(n + 1):
        t = time.perf_counter()
        llm.eval([tok])
        tok = top1()
        gaps.append((time.perf_counter() - t) * 1000)
        toks.append(tok)
    print(json.dumps({"prefill_s": prefill, "decode_ms": gaps[1:], "tokens": toks}), flush=True)
"""


class LlamaCpp:
    """llama.cpp in a worker process of its own environment, queried between the other systems."""

    def __init__(self, python: str, gguf: Path, threads: int, n_ctx: int) -> None:
        self.error: str | None = None
        self.version: str | None = None
        self.proc: subprocess.Popen | None = None
        try:
            self.proc = subprocess.Popen(
                [python, "-c", _LLAMA_WORKER, str(gguf), str(threads), str(n_ctx)],
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


# ------------------------------------------------------------------------------------ measurements


def speed(models: dict[str, LoadedModel], hf: torch.nn.Module, llama: LlamaCpp, args) -> dict:
    """Per context length and system: prefill tokens/s and decode ms/token, per repetition."""
    text = source(SPEED_FILE)
    ref = models["float32"]
    runs: dict[str, dict[str, list[dict]]] = {}
    for rep in range(args.reps):
        for length in args.lengths:
            doc_text = document(ref, text, length)
            ids = ref.tokenizer.encode(doc_text, add_special_tokens=False).ids
            row = runs.setdefault(str(length), {})
            results = {"hf_generate": hf_generate(hf, ids, args.decode)}
            for name, lm in models.items():
                results[f"superpie_{name}"], _ = superpie_run(lm, doc_text, args.decode)
            llama_run = llama.run(ids, args.decode)
            if llama_run is not None:
                llama_run.pop("tokens", None)
                results["llama_cpp"] = llama_run
            for system, r in results.items():
                r["tokens"] = len(ids)
                row.setdefault(system, []).append(r)
            summary = {s: round(statistics.median(r["decode_ms"]), 1) for s, r in results.items()}
            print(f"rep {rep} ctx {len(ids)}: decode ms/token {summary}", flush=True)
    return runs


def summarize_speed(runs: dict) -> dict:
    """Median over repetitions of each system's median step, and prefill tokens/s."""
    out = {}
    for length, systems in runs.items():
        out[length] = {
            s: {
                "tokens": rs[0]["tokens"],
                "decode_ms_per_token": round(statistics.median(statistics.median(r["decode_ms"]) for r in rs), 2),
                "prefill_tokens_per_s": round(statistics.median(r["tokens"] / r["prefill_s"] for r in rs), 1),
            }
            for s, rs in systems.items()
        }
    return out


def paired_ratio(runs: dict, length: str, num: str, den: str, key: str = "decode_ms") -> float | None:
    """Median over repetitions of num/den (each repetition's systems ran back to back)."""
    systems = runs.get(length, {})
    if num not in systems or den not in systems:
        return None
    pairs = zip(systems[num], systems[den])
    return round(statistics.median(statistics.median(a[key]) / statistics.median(b[key]) for a, b in pairs), 3)


@torch.inference_mode()
def hunk_vs_step(lm: LoadedModel, context: int, hunk: int, reps: int) -> dict:
    """Encode a `hunk`-token span behind `context` cached tokens vs one decode step there, interleaved."""
    text = document(lm, source(SPEED_FILE), context + hunk + 64)
    ids = lm.tokenizer.encode(text, add_special_tokens=False).ids
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, max_tokens=1 << 16)
    doc.sync(lm.tokenizer.decode(ids[:context]))
    start = doc.length
    piece = ids[start : start + hunk]
    view = CursorView(doc, start, reserve=4)
    tok = torch.tensor([ids[start]])
    encode_ms, step_ms = [], []
    for _ in range(reps + 1):  # the first pair warms up
        t = time.perf_counter()
        encode_span(doc.model, doc.store, doc.hf_cache, start, piece, doc.dtype)  # the PIE hunk encode
        encode_ms.append((time.perf_counter() - t) * 1000)
        view.rewind(0)
        t = time.perf_counter()
        view.step(input_ids=tok)
        step_ms.append((time.perf_counter() - t) * 1000)
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
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, max_tokens=1 << 16)
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

    runner = lm.model.superpie_runner

    def mlp(layer, x):
        gu = layer.gate_up(runner._norm(x, layer.ln2))
        return x + layer.down(F.silu(gu[:, : runner.inter]) * gu[:, runner.inter :])

    compiled = torch.compile(mlp, dynamic=True)
    eager_mlp = runner._mlp
    text = document(lm, source(SPEED_FILE), context + 8)
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, max_tokens=1 << 16)
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
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, max_tokens=1 << 16)
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
            encode_span(doc.model, doc.store, doc.hf_cache, doc.length, ids[context : context + 256], doc.dtype)
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


def main() -> None:
    """Run every measurement, print the figures, write JSON + PNG."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 512/2k, one repetition, few steps")
    p.add_argument("--threads", type=int, default=None, help="torch and llama.cpp threads (default: affinity)")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096])
    p.add_argument("--decode", type=int, default=16, help="decoded tokens per run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--agree-prefix", type=int, default=384)
    p.add_argument("--agree-steps", type=int, default=160, help="teacher-forced decode steps per file")
    p.add_argument("--llama-python", default="/tmp/llamacpp-venv/bin/python")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to start)")
    p.add_argument("--out", type=Path, default=OUT / "cpu_inference.json")
    args = p.parse_args()
    if args.quick:
        args.lengths, args.reps, args.decode, args.agree_steps = [512, 2048], 1, 8, 32
    threads = configure_threads(args.threads)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(converted_dir()), dtype=torch.float32, attn_implementation="sdpa")
    hf.eval()
    models, load_s = {}, {}
    for name in PRECISIONS:
        t0 = time.perf_counter()
        models[name] = load_model(dtype=name, threads=threads)
        load_s[name] = round(time.perf_counter() - t0, 2)
    gguf = default_gguf_path()
    llama = LlamaCpp(args.llama_python, gguf, threads, max(args.lengths) + args.decode + 64)
    print(f"threads {threads}; llama.cpp {llama.version or llama.error}; load s {load_s}", flush=True)

    runs = speed(models, hf, llama, args)
    llama.close()
    summary = summarize_speed(runs)
    at2k = str(2048) if "2048" in runs else str(args.lengths[-1])
    targets = {
        "decode_2k_default_over_hf_generate": paired_ratio(runs, at2k, f"superpie_{DEFAULT}", "hf_generate"),
        "decode_2k_default_over_llama_cpp": paired_ratio(runs, at2k, f"superpie_{DEFAULT}", "llama_cpp"),
        "decode_2k_float32_over_hf_generate": paired_ratio(runs, at2k, "superpie_float32", "hf_generate"),
    }
    hunk = {name: hunk_vs_step(models[name], max(args.lengths), 16, args.reps + 2) for name in ("float32", DEFAULT)}
    targets["hunk16_at_4k_over_step_default"] = hunk[DEFAULT]["ratio"]
    files = AGREEMENT_FILES if not args.quick else AGREEMENT_FILES[:3]
    agree = agreement(models, files, args.agree_prefix, args.agree_steps)
    result = {
        "machine": {
            "threads": threads,
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "model": models[DEFAULT].name,
        "gguf": gguf.name,
        "default_precision": DEFAULT,
        "weight_forms": {n: m.model.superpie_runner.weight_forms() for n, m in models.items()},
        "load_s": load_s,
        "llama_cpp": {"version": llama.version, "error": llama.error},
        "decode_tokens": args.decode,
        "reps": args.reps,
        "summary": summary,
        "targets": targets,
        "hunk_vs_step": hunk,
        "top1_agreement_with_float32": agree,
        "runs": runs,
    }
    result["threads_check"] = threads_check(models[DEFAULT], 2048, args.reps)
    print(f"threads (ms by thread count): {result['threads_check']}", flush=True)
    if args.compile:
        result["torch_compile"] = compile_check(models[DEFAULT], 2048, args.reps + 2)
        print(f"torch.compile: {result['torch_compile']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(summary, args.out.with_suffix(".png"))
    print(json.dumps({"summary": summary, "targets": targets, "hunk_vs_step": hunk, "agreement": agree}, indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    sys.exit(main())
