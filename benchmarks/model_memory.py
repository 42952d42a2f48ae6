"""The server process's memory with a model loaded: resident set, its anonymous and file-backed parts.

Each model is loaded in a fresh Python process (so one model's memory does not colour the next), as the
server loads it (`load_model`, the given precision), then a ~2k-token document of `argparse.py` is encoded
and 16 greedy tokens decoded (so the runner's buffers and kernels are in place). The process then reports
`/proc/self/status`: VmRSS (what an editor's task manager shows), RssAnon (the process's own memory:
weights as the runner holds them, KV, the runtime) and RssFile (pages of mapped files that are resident,
such as a weights file still mapped), and whether a file of the model's directory is still mapped.
Linux only (it reads /proc).

    .venv/bin/python benchmarks/model_memory.py                                  # default + code model, auto
    .venv/bin/python benchmarks/model_memory.py --models default --dtypes auto float32

Writes benchmarks/out/model_memory.json and .png and prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "out"

_WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[4])
from cpu_inference import document, source, superpie_run
from superpie.completion.model.loading import load_model

name, dtype, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])

def status():
    keys = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) // 1024 for k, v in (l.split(":", 1) for l in f) if k in keys}

t0 = time.perf_counter()
lm = load_model(None if name == "default" else name, dtype=dtype, threads=1)
load_s = time.perf_counter() - t0
after_load = status()
run, doc = superpie_run(lm, document(lm, source("argparse.py"), tokens), 16)
with open("/proc/self/maps") as f:
    mapped = sorted({l.split()[-1] for l in f if ".safetensors" in l})
print(json.dumps({
    "model": lm.name, "precision": lm.precision, "load_s": round(load_s, 1), "tokens": doc.length,
    "after_load_mb": after_load, "after_decode_mb": status(), "weights_files_mapped": mapped,
}))
"""


def measure(name: str, dtype: str, tokens: int) -> dict:
    """One model in one precision, in a fresh process."""
    here = str(Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, name, dtype, str(tokens), here], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name} {dtype}: the worker failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path) -> None:
    """Stacked bars: anonymous and file-backed resident memory after the decode, per model and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']}\n{r['precision']}" for r in rows]
    anon = [r["after_decode_mb"]["RssAnon"] for r in rows]
    files = [r["after_decode_mb"]["RssFile"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 4.5))
    ax.bar(labels, anon, label="anonymous (weights as run, KV, runtime)")
    ax.bar(labels, files, bottom=anon, label="file-backed (mapped files)")
    ax.set(ylabel="resident MB", title="server process memory with a model loaded, 2k-token document")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    p.add_argument("--dtypes", nargs="+", default=["auto"])
    p.add_argument("--tokens", type=int, default=2048, help="the document's length in tokens")
    p.add_argument("--out", type=Path, default=OUT / "model_memory.json")
    args = p.parse_args()
    rows = []
    for name in args.models:
        for dtype in args.dtypes:
            rows.append(measure(name, dtype, args.tokens))
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    plot(rows, args.out.with_suffix(".png"))
    print("\n| model | precision | load s | VmRSS MB after load / after decode | RssAnon | RssFile | file mapped |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        a, d = r["after_load_mb"], r["after_decode_mb"]
        mapped = "yes" if r["weights_files_mapped"] else "no"
        print(
            f"| {r['model']} | {r['precision']} | {r['load_s']} | {a['VmRSS']:,} / {d['VmRSS']:,} | "
            f"{d['RssAnon']:,} | {d['RssFile']:,} | {mapped} |"
        )


if __name__ == "__main__":
    main()
