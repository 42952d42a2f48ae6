"""A forward of n new tokens behind a long cached context, by attention kernel: what a PIE hunk, a cursor jump's
middle, a speculation tree or a paste costs, and where the matmul attention should hand over to SDPA.

`completion/model/attention.py` takes per-KV-head matmuls up to `FEW_ROWS` query rows (bf16, on a CPU with bf16
units) and SDPA beyond. This benchmark times, in one process and interleaved, the same forwards under several
values of that threshold, so a change of it is measured side by side:

- the whole forward of the fast runner (`auto` precision, the cache's encode: KV only, no LM head) for n new tokens
  written behind `--context` cached ones, median of `--reps`;
- the attention alone, matmul kernels vs SDPA, at the model's head shapes over all its layers' buffers (so the
  keys come from memory, as in the forward).

    cd benchmarks && ../.venv/bin/python forward_rows.py                     # both models, 4k context, 1 thread
    ../.venv/bin/python forward_rows.py --models smollm2-135m --few-rows 16 128 --rows 8 16 32 64

Writes out/forward_rows.json and .png and prints markdown tables for RESULTS.md. Timings: run it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from superpie.cache.forward import causal_mask, encode_span, no_logits, run_forward
from superpie.cache.kv import KVStore
from superpie.completion.model import attention
from superpie.completion.model.loading import load_model

OUT = Path(__file__).parent / "out"


def median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm: oneDNN compiles a kernel per new shape
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def with_threshold(rows: int, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` run with `attention.FEW_ROWS` set to `rows` (read at call time by `uses_matmul`)."""

    def run() -> object:
        saved = attention.FEW_ROWS
        attention.FEW_ROWS = rows
        try:
            return fn()
        finally:
            attention.FEW_ROWS = saved

    return run


@torch.inference_mode()
def model_rows(name: str, context: int, rows: list[int], thresholds: list[int], reps: int) -> dict:
    lm = load_model(name, dtype="auto", threads=torch.get_num_threads())
    runner = lm.runner
    assert runner is not None, f"{name}: no fast runner"
    store = KVStore(len(runner.layers))
    store.ensure_capacity(context + max(rows) + 64)
    ids = torch.randint(100, 20_000, (context + max(rows),), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    encode_span(runner, store, 0, ids[:context].tolist())  # the cache's chunked prefill
    prefill_s = time.perf_counter() - t0

    def forward(n: int) -> Callable[[], object]:
        def run() -> object:
            mask = causal_mask(context, n, runner.kv_dtype)
            positions = torch.arange(context, context + n)
            return run_forward(runner, store, context, positions, mask, input_ids=ids[:n], logits_for=no_logits())

        return run

    table: dict[str, dict[str, float]] = {}
    for n in rows:
        table[str(n)] = {f"few_rows={t}": round(median_ms(with_threshold(t, forward(n)), reps), 1) for t in thresholds}
        print(f"  {name} {n} rows: {table[str(n)]}", file=sys.stderr, flush=True)
    shapes = {"heads": runner.heads, "kv_heads": runner.kv_heads, "head_dim": runner.head_dim}
    shapes["layers"] = len(runner.layers)
    return {"prefill_tok_s": round(context / prefill_s), "forward_ms": table, "shapes": shapes}


def attend_all(q: torch.Tensor, buffers: list[tuple[torch.Tensor, torch.Tensor]], mask: attention.Mask) -> None:
    """One attention per layer's buffers, as a forward runs them."""
    for keys, values in buffers:
        attention.attend(q, keys, values, mask, q.shape[-1] ** -0.5)


@torch.inference_mode()
def attention_kernels(shapes: dict, contexts: list[int], rows: list[int], reps: int) -> dict:
    """matmul kernels vs SDPA for n query rows at each key length, over `layers` distinct buffers (bf16)."""
    h, hkv, d, layers = shapes["heads"], shapes["kv_heads"], shapes["head_dim"], shapes["layers"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for s in contexts:
        cap = s + 256
        keys = [torch.randn(1, hkv, cap, d).bfloat16() for _ in range(layers)]
        values = [torch.randn(1, hkv, cap, d).bfloat16() for _ in range(layers)]
        out[str(s)] = {}
        for n in rows:
            q = torch.randn(1, h, n, d).bfloat16()
            mask = causal_mask(s - n, n, torch.bfloat16)
            by_matmul = attention.Mask.for_matmul(mask, s - n, n, cap, torch.bfloat16)
            by_sdpa = attention.Mask.for_sdpa(mask, s - n)

            buffers = list(zip(keys, values))
            out[str(s)][str(n)] = {
                "matmul": round(median_ms(partial(attend_all, q, buffers, by_matmul), reps), 1),
                "sdpa": round(median_ms(partial(attend_all, q, buffers, by_sdpa), reps), 1),
            }
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        rows = [int(n) for n in r["forward_ms"]]
        for key in next(iter(r["forward_ms"].values())):
            ax.plot(rows, [r["forward_ms"][str(n)][key] for n in rows], marker="o", label=key)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("new tokens in the forward")
        ax.set_ylabel(f"ms (behind {r['context']} cached tokens)")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 16, 24, 32, 64, 128])
    ap.add_argument("--few-rows", type=int, nargs="+", default=[16, 128], help="attention.FEW_ROWS values compared")
    ap.add_argument("--kernel-contexts", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT / "forward_rows.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.models:
        r = model_rows(name, args.context, args.rows, args.few_rows, args.reps)
        r["context"] = args.context
        r["attention_ms"] = attention_kernels(r["shapes"], args.kernel_contexts, args.rows[1:], args.reps)
        results[name] = r
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    meta = {"threads": args.threads, "torch": torch.__version__, "date": date}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    plot(results, args.out.with_suffix(".png"))
    for name, r in results.items():
        keys = list(next(iter(r["forward_ms"].values())))
        print(f"\n{name}, forward of n new tokens behind {r['context']} (ms, median of {args.reps}):\n")
        print("| rows | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
        for n, row in r["forward_ms"].items():
            print(f"| {n} | " + " | ".join(str(row[k]) for k in keys) + " |")
        print(f"\n{name}, attention alone over {r['shapes']['layers']} layers (ms), matmul / SDPA:\n")
        contexts = list(r["attention_ms"])
        print("| rows | " + " | ".join(f"{s} keys" for s in contexts) + " |\n|---|" + "---|" * len(contexts))
        for n in r["attention_ms"][contexts[0]]:
            cells = [f"{r['attention_ms'][s][n]['matmul']} / {r['attention_ms'][s][n]['sdpa']}" for s in contexts]
            print(f"| {n} | " + " | ".join(cells) + " |")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
