"""From `didOpen` of a 4k-token file to its first suggestion: window-first opening vs encoding the whole file.

For each model (the default SmolLM2 and `qwen2.5-coder-0.5b`) and each real file (the first ~4096 tokens
of a standard-library module, cut at a line end), the server's own model worker (lsp/scheduler.py) and
engine are run in this process, as `superpie serve` runs them, without the JSON-RPC transport: the
document is opened (`sync_soon`, what `didOpen` queues) and an inline request (the server's ghost-text
request: its token budget, drafts and strategy) is queued at once, at a cursor in the middle of a line
60% into the file, after one unmeasured warm-up request on another file (the first request of a process
pays one-time set-up). Two settings, side by side on the same loaded model, alternating which goes first:

- `window`: `cache.open_window` at its default (cache/opening.py): the request encodes the window before
  its cursor, the worker encodes the rest in idle steps afterwards, then re-encodes the window exactly;
- `whole`: `cache.open_window` 0: the whole file is encoded before the first suggestion (the old way).

Reported per run: milliseconds to the first suggestion, milliseconds until the background work is over
(`window`: the opening finished; the cache is then an exact encode), the tokens the request's sync
encoded, whether the first suggestion equals the `whole` one, and whether a second request at the same
cursor after the background work gives the same suggestion as `whole` (it should: the caches are equal).

    .venv/bin/python benchmarks/first_suggestion.py                       # both models, 3 files, 1 thread
    .venv/bin/python benchmarks/first_suggestion.py --models default --files difflib.py

Writes benchmarks/out/first_suggestion.json and prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from pathlib import Path

from cpu_inference import document, source

from superpie.completion.config import EngineConfig
from superpie.completion.config.fields import replaced
from superpie.completion.engine import Engine
from superpie.completion.model.loading import LoadedModel, load_model
from superpie.completion.request import CompletionRequest, CompletionResult
from superpie.lsp.options import engine_config
from superpie.lsp.scheduler import ModelWorker

OUT = Path(__file__).parent / "out"
FILES = ("difflib.py", "tarfile.py", "argparse.py")
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")
URI = "file:///bench/doc.py"


def cursor_in(text: str, share: float) -> int:
    """The middle of the first non-blank line's content at or after `share` of the text (a cursor mid-line)."""
    at = text.find("\n", int(len(text) * share)) + 1
    while True:
        end = text.find("\n", at)
        line = text[at:end]
        if line.strip():
            indent = len(line) - len(line.lstrip())
            return at + indent + (len(line) - indent) // 2
        at = end + 1


def first_suggestion(lm: LoadedModel, text: str, cursor: int, open_window: int | None) -> dict:
    """didOpen and an inline request at once through a fresh worker and engine; the times and answers."""
    options = EngineConfig()
    if open_window is not None:
        options = replaced(options, "cache.open_window", open_window)
    c = options.completion
    request = CompletionRequest(URI, text, cursor, c.max_tokens_inline, c.drafts, c.strategy, c.inline_multiline)
    texts = {URI: text}
    worker = ModelWorker(Engine(engine_config(options, None), lm=lm), texts.get, idle_refresh_s=3600.0)
    worker.start()
    try:
        t0 = time.perf_counter()
        worker.sync_soon(URI)  # didOpen
        _, future = worker.complete(request, "inline")
        first = future.result(600).result
        t_first = time.perf_counter() - t0
        while worker.opening(URI):  # the window-first opening's idle steps
            time.sleep(0.005)
        worker.submit(lambda e: None).result(600)  # a barrier: the last step is over
        t_done = time.perf_counter() - t0
        pooled = worker.engine.documents.get(URI)
        assert pooled is not None and pooled.cache.opening is None and pooled.cache.stale_count == 0
        _, again = worker.complete(request, "inline")
        second = again.result(600).result
    finally:
        worker.stop()
    assert first is not None and second is not None
    return {
        "first_ms": round(t_first * 1000, 1),
        "done_ms": round(t_done * 1000, 1),
        "encoded_first": first.cache.encoded,
        "cached_tokens": pooled.cache.length,
        "first_text": best(first),
        "after_text": best(second),
    }


def best(result: CompletionResult) -> str | None:
    return result.completions[0].text if result.completions else None


def run_model(name: str, files: list[str], tokens: int, threads: int, dtype: str, reps: int) -> dict:
    lm = load_model(None if name == "default" else name, dtype=dtype, threads=threads)
    warm = document(lm, source("textwrap.py"), 300)  # not measured: the first forward, decode and jedi set up
    first_suggestion(lm, warm, cursor_in(warm, 0.6), 0)
    rows = []
    for f in files:
        text = document(lm, source(f), tokens)
        cursor = cursor_in(text, 0.6)
        n_tokens = len(lm.tokenizer.encode(text, add_special_tokens=False).ids)
        for rep in range(reps):
            order = ("window", "whole") if rep % 2 == 0 else ("whole", "window")
            runs = {mode: first_suggestion(lm, text, cursor, None if mode == "window" else 0) for mode in order}
            w, h = runs["window"], runs["whole"]
            row = {
                "file": f, "tokens": n_tokens, "rep": rep, "order": order[0],
                "window": w, "whole": h,
                "speedup_first": round(h["first_ms"] / w["first_ms"], 2),
                "first_same": w["first_text"] == h["first_text"],
                "after_same": w["after_text"] == h["after_text"],
            }  # fmt: skip
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("window", "whole")}), flush=True)
            print(f"  window first {w['first_ms']:.0f} ms done {w['done_ms']:.0f} ms | whole first {h['first_ms']:.0f}"
                  f" ms done {h['done_ms']:.0f} ms", flush=True)  # fmt: skip
    out = {"model": lm.name, "layout": "fim" if lm.fim is not None else "prefix", "rows": rows}
    del lm
    gc.collect()
    return out


def table(results: list[dict]) -> str:
    lines = [
        "| model | layout | file | tokens | window: first ms | window: done ms | whole: first ms | whole: done ms | "
        "first x | request encoded (window / whole) | first same | after same |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["rows"]:
            w, h = r["window"], r["whole"]
            lines.append(
                f"| {res['model']} | {res['layout']} | {r['file']} | {r['tokens']} | {w['first_ms']:.0f} | "
                f"{w['done_ms']:.0f} | {h['first_ms']:.0f} | {h['done_ms']:.0f} | {r['speedup_first']:.1f} | "
                f"{w['encoded_first']} / {h['encoded_first']} | {r['first_same']} | {r['after_same']} |"
            )
        sp = [r["speedup_first"] for r in res["rows"]]
        lines.append(f"| {res['model']} | median first x | | | | | | | {statistics.median(sp):.1f} | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--files", nargs="+", default=list(FILES))
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="fp16w", help="pinned (today's auto on this CPU), so both models use one")
    parser.add_argument("--reps", type=int, default=1, help="repetitions per file (alternating which mode goes first)")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = [run_model(m, args.files, args.tokens, args.threads, args.dtype, args.reps) for m in args.models]
    meta = {"date": started, "load_after": os.getloadavg(), "args": vars(args)}
    OUT.mkdir(exist_ok=True)
    (OUT / "first_suggestion.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(table(results))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
