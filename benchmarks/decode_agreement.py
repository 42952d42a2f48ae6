"""Top-1 agreement with float32 of the decode path in each weight precision, on real code, for either model.

Issue 17's decode speed on AVX2 comes from compact weight forms (fp16 weights, FBGEMM's dynamic int8); this
measures what each costs in the greedy choice. For every variant, the model is loaded alone (one model in memory
at a time), each of `--files` standard-library files is cut at a seeded random offset, `--prefix` tokens are
synced into a `DocumentCache`, and `--steps` teacher-forced `CursorView` decode steps follow (the engine's decode
path, one row per step): the top-1 token of each step is compared with float32's at the same position.

Variants: any `resolve_precision` name, plus `fp16w_dyn8head` (fp16w's layers with the `int8dyn` LM head) and
`auto_fp32` (`auto` as on a CPU without bf16 matrix units).

    .venv/bin/python benchmarks/decode_agreement.py --model qwen2.5-coder-0.5b --variants fp16w int8dyn

Prints the agreement of each variant and the paired difference to the first variant (95% interval over
positions, normal approximation of the paired difference), and writes benchmarks/out/decode_agreement_<model>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path

from cpu_inference import AGREEMENT_FILES, source, teacher_forced_top1

from superpie.completion.model.fast_llama import FastLlama
from superpie.completion.model.loading import LoadedModel, configure_threads, load_model
from superpie.completion.model.precision import PRECISIONS, Precision, auto_precision

OUT = Path(__file__).parent / "out"
EXTRA = {
    "fp16w_dyn8head": replace(PRECISIONS["fp16w"], name="fp16w_dyn8head", head_compact="dyn8"),
    "auto_fp32": auto_precision(False),
}


def load(model: str, variant: str) -> LoadedModel:
    """`model` in `variant`: a configuration name, or one of `EXTRA` (built on the float32 load)."""
    if variant not in EXTRA:
        return load_model(model, dtype=variant, threads=1)
    lm = load_model(model, dtype="float32", threads=1, fast=False)
    precision: Precision = EXTRA[variant]
    return replace(lm, runner=FastLlama(lm.model, precision), precision=variant)


def windows(lm: LoadedModel, files: list[str], prefix: int, steps: int) -> list[list[int]]:
    """One window of prefix + steps tokens per file, at a seeded random offset."""
    rng = random.Random(0)
    out = []
    for name in files:
        ids = lm.tokenizer.encode(source(name), add_special_tokens=False).ids
        start = rng.randrange(0, max(1, len(ids) - prefix - steps))
        out.append(ids[start : start + prefix + steps])
    return out


def paired(a: list[bool], b: list[bool]) -> tuple[float, float, float]:
    """Mean of a - b over paired positions and its 95% interval (normal approximation)."""
    d = [int(x) - int(y) for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(1, n - 1)
    half = 1.96 * math.sqrt(var / n)
    return round(mean, 4), round(mean - half, 4), round(mean + half, 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--variants", nargs="+", default=["fp16w", "int8dyn", "fp16w_dyn8head"])
    p.add_argument("--files", type=int, default=16)
    p.add_argument("--prefix", type=int, default=384)
    p.add_argument("--steps", type=int, default=32)
    args = p.parse_args()
    configure_threads(1)
    files = list(AGREEMENT_FILES[: args.files])
    top1: dict[str, list[int]] = {}
    step_ms: dict[str, float] = {}
    docs: list[list[int]] = []
    for variant in ["float32", *args.variants]:
        lm = load(args.model, variant)
        if not docs:
            docs = windows(lm, files, args.prefix, args.steps)
        t0, got = time.perf_counter(), []
        for ids in docs:
            got.extend(int(t) for t in teacher_forced_top1(lm, ids, args.prefix))
        top1[variant], step_ms[variant] = got, round((time.perf_counter() - t0) * 1000 / len(got), 1)
        print(variant, "positions", len(got), "ms per position (prefill included)", step_ms[variant], flush=True)
        del lm
        gc.collect()
    ref = top1.pop("float32")
    same = {v: [a == b for a, b in zip(t, ref)] for v, t in top1.items()}
    first = args.variants[0]
    result = {
        "model": args.model,
        "positions": len(ref),
        "files": files,
        "prefix": args.prefix,
        "agreement": {v: round(sum(s) / len(s), 4) for v, s in same.items()},
        f"minus_{first}": {v: paired(s, same[first]) for v, s in same.items() if v != first},
        "ms_per_position": step_ms,
    }
    print(json.dumps(result, indent=1))
    OUT.mkdir(exist_ok=True)
    (OUT / f"decode_agreement_{args.model}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
