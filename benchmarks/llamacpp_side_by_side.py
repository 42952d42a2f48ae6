"""Prefill and decode at 2k tokens of context: superpie's engine vs llama.cpp's server, both models, side by side.

Issue 17 asks for prefill tokens/s at 2k beside the machine's plain-matmul limit, and per-token decode of the code
model against llama.cpp on the same GGUF. For each model (the default SmolLM2-135M and Qwen2.5-Coder-0.5B):

- `superpie`: the engine's path (`cpu_inference.superpie_run`: `DocumentCache.sync` of a ~2k-token stdlib document,
  then greedy `CursorView` steps at its end), the model as `load_model` gives it in each of `--dtypes` (default
  `auto`; several are loaded together and run in turn, so their ratios come from the same minutes);
- `llama.cpp`: the cached `llama-server` (`make llama-server`) on the model's GGUF, the same text as its prompt,
  `cache_prompt` off, greedy; prefill and decode rates from the server's own `timings`;
- `matmul_fp32`: a plain GEMM of the model's projection shapes (`cpu_inference.MatmulLimit`), the prefill limit;
  `matmul_all_fp32`: the same with attention's own matmuls added at the projections' FLOP rate (the causal
  half of each chunk's own block), work no prefill can skip. On a CPU with bf16 matrix units (AVX-512 BF16,
  AMX: `native_bf16`) the same two in bf16 too (`matmul_bf16`, `matmul_all_bf16`): there the limit issue 17
  names is the bf16 one.

One thread for everything; each repetition runs the three in turn, so load slows them alike.

    .venv/bin/python benchmarks/llamacpp_side_by_side.py [--reps 2] [--tokens 2048] [--decode 32] [--dtypes fp16w auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import urllib.request
from pathlib import Path

import torch
from cpu_inference import CHUNK, MatmulLimit, document, source, superpie_run

from superpie.completion.backend.llama_server import LLAMA_SERVER, LlamaServerProcess
from superpie.completion.model.catalog import MODELS, gguf_path
from superpie.completion.model.fast_llama import FastLlama
from superpie.completion.model.loading import LoadedModel, configure_threads, load_model
from superpie.completion.model.precision import native_bf16

OUT = Path(__file__).parent / "out"


def llama_run(server: LlamaServerProcess, text: str, n: int) -> dict:
    """One uncached completion of `n` tokens after `text`; the server's prefill and decode rates."""
    body = {"prompt": text, "n_predict": n, "temperature": 0, "cache_prompt": False, "ignore_eos": True}
    req = urllib.request.Request(
        server.url + "/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        t = json.load(r)["timings"]
    return {
        "prompt_n": t["prompt_n"],
        "prefill_tok_s": t["prompt_per_second"],
        "decode_ms": t["predicted_per_token_ms"],
    }


def measure(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    """One model: superpie in each of `args.dtypes`, llama.cpp and the matmul limit, in turn per repetition."""
    lms = {d: load_model(name, dtype=d, threads=1) for d in args.dtypes}
    first = lms[args.dtypes[0]]
    text = document(first, source("argparse.py"), args.tokens)
    limit = MatmulLimit(first.model, CHUNK)
    gguf = gguf_path(MODELS[name], workdir)
    server = LlamaServerProcess(gguf, slots=1, context=args.tokens + args.decode + 256, threads=1)
    rows: dict[str, list[dict]] = {d: [] for d in lms}
    try:
        for _ in range(args.reps):
            ours = {d: superpie_run(lm, text, args.decode) for d, lm in lms.items()}
            theirs = llama_run(server, text, args.decode)
            matmul = limit.tokens_per_s(torch.float32)
            matmul_all = limit.with_attention(matmul, args.tokens)
            bf16 = {}
            if native_bf16():
                rate = limit.tokens_per_s(torch.bfloat16)
                bf16 = {"matmul_bf16_tok_s": rate, "matmul_all_bf16_tok_s": limit.with_attention(rate, args.tokens)}
            for d, (run, doc) in ours.items():
                rows[d].append({
                    "tokens": doc.length,
                    "superpie_prefill_tok_s": doc.length / run["prefill_s"],
                    "superpie_decode_ms": statistics.median(run["decode_ms"]),
                    "llama_prefill_tok_s": theirs["prefill_tok_s"],
                    "llama_decode_ms": theirs["decode_ms"],
                    "llama_prompt_n": theirs["prompt_n"],
                    "matmul_fp32_tok_s": matmul,
                    "matmul_all_fp32_tok_s": matmul_all,
                    **bf16,
                })  # fmt: skip
                print(name, d, json.dumps({k: round(v, 2) for k, v in rows[d][-1].items()}), flush=True)
    finally:
        server.stop()
    out = {}
    for d, rs in rows.items():
        med = {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
        med["superpie_prefill_over_matmul"] = round(med["superpie_prefill_tok_s"] / med["matmul_fp32_tok_s"], 3)
        med["superpie_prefill_over_matmul_all"] = round(med["superpie_prefill_tok_s"] / med["matmul_all_fp32_tok_s"], 3)
        for k in ("matmul_bf16_tok_s", "matmul_all_bf16_tok_s"):
            if k in med:
                med[f"superpie_prefill_over_{k[:-6]}"] = round(med["superpie_prefill_tok_s"] / med[k], 3)
        # per repetition (the two ran back to back), then the median
        ratios = [r["superpie_decode_ms"] / r["llama_decode_ms"] for r in rs]
        med["superpie_decode_over_llama"] = round(statistics.median(ratios), 2)
        out[d] = {"precision": lms[d].precision, "weight_forms": _forms(lms[d]), "rows": rs, "median": med}
    return out


def _forms(lm: LoadedModel) -> dict[str, int]:
    """The runner's weight forms (FastLlama), for the record."""
    return lm.runner.weight_forms() if isinstance(lm.runner, FastLlama) else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--dtypes", nargs="+", default=["auto"], help="superpie precisions, loaded together")
    p.add_argument("--out", type=Path, default=OUT / "llamacpp_side_by_side.json")
    args = p.parse_args()
    if not LLAMA_SERVER.is_file():
        p.error(f"no llama-server at {LLAMA_SERVER}: run `make llama-server` first")
    configure_threads(1)
    result = {"load_average_start": round(os.getloadavg()[0], 1), "threads": 1, "models": {}}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            for d, r in measure(name, args, Path(workdir)).items():
                result["models"][f"{name} {d}"] = r
    result["load_average_end"] = round(os.getloadavg()[0], 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("| model | superpie precision | context | prefill tok/s superpie / llama.cpp / fp32 matmul limit "
          "(projections; + attention) | superpie / limit (projections; + attention) | "
          "decode ms/token superpie / llama.cpp | superpie / llama.cpp |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, r in result["models"].items():
        m = r["median"]
        print(f"| {name} | {r['precision']} | {int(m['tokens'])} | {m['superpie_prefill_tok_s']} / "
              f"{m['llama_prefill_tok_s']} / {m['matmul_fp32_tok_s']}; {m['matmul_all_fp32_tok_s']} | "
              f"{m['superpie_prefill_over_matmul']}; {m['superpie_prefill_over_matmul_all']} | "
              f"{m['superpie_decode_ms']} / {m['llama_decode_ms']} | {m['superpie_decode_over_llama']} |")  # fmt: skip
        if "matmul_bf16_tok_s" in m:
            rates = f"{m['matmul_bf16_tok_s']}; {m['matmul_all_bf16_tok_s']}"
            over = f"{m['superpie_prefill_over_matmul_bf16']}; {m['superpie_prefill_over_matmul_all_bf16']}"
            print(f"|   bf16 limit | | | {rates} | {over} | | |")
    print(f"wrote {args.out}; load average {result['load_average_start']} -> {result['load_average_end']}")


if __name__ == "__main__":
    main()
