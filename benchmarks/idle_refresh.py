"""A request that comes in while the server re-encodes stale tokens in idle time: how long it waits.

PIE leaves the tokens behind an edit with stale KV; after `cache.idleRefreshMs` without work the model
worker re-encodes them exactly. An edit near the top of a long file leaves thousands of tokens stale, and
their re-encode takes seconds (tens of seconds for the code model at 1 thread). A user who paused and
types on meanwhile asks for a completion: it waits until the worker is free. The worker now refreshes in
steps of `cache.open_chunk` tokens and serves a request between two steps (`steps`); before, one call
re-encoded every stale token (`whole`, reproduced here with a step larger than the document).

For each model and file (the first ~`--tokens` tokens of a standard-library module, cut at a line end), the
server's model worker and engine run in this process, as `superpie serve` runs them, without the JSON-RPC
transport. Per repetition and setting, on the same loaded model: open the document and wait until it is
encoded; insert a line near its top (what an editor's `didChange` brings: everything behind it goes
stale); wait the idle delay and `--into` ms more, so the refresh is under way; then queue the server's
inline request at a line start 60% into the file and time it to its answer. `alone`: the same request
with nothing pending, for scale. The two settings alternate which goes first.

    .venv/bin/python benchmarks/idle_refresh.py                                  # both models, 1 thread
    .venv/bin/python benchmarks/idle_refresh.py --models default --reps 3

Writes benchmarks/out/idle_refresh.json and prints a markdown table for benchmarks/RESULTS.md.
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
from superpie.completion.request import CompletionRequest
from superpie.lsp.options import engine_config
from superpie.lsp.scheduler import ModelWorker

OUT = Path(__file__).parent / "out"
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")
URI = "file:///bench/doc.py"
IDLE_S = 0.3  # the worker's idle delay here (the server's default is 1.5 s; only the wait before it differs)
WHOLE = 1 << 20  # a step larger than any document: the whole refresh in one call, as before


def line_start(text: str, share: float) -> int:
    """The cursor after the indentation of the first non-blank line at or after `share` of the text, with
    the line's content removed by the caller (a line to complete)."""
    at = text.find("\n", int(len(text) * share)) + 1
    while not text[at : text.find("\n", at)].strip():
        at = text.find("\n", at) + 1
    line = text[at : text.find("\n", at)]
    return at + len(line) - len(line.lstrip())


def synced(worker: ModelWorker, text: str) -> None:
    """Wait until the worker's background sync has brought the cache to `text` (a control job's barrier
    would not do: control jobs go before syncs)."""
    t0 = time.perf_counter()
    while not worker.is_current(URI, text):
        if time.perf_counter() - t0 > 3600:
            raise TimeoutError("the document was not synced")
        time.sleep(0.005)


def one_run(lm: LoadedModel, text: str, step: int, into_s: float) -> dict:
    """Open, edit near the top, let the idle refresh start, then time an inline request."""
    options = replaced(replaced(EngineConfig(), "cache.open_window", 0), "cache.open_chunk", step)
    c = options.completion
    cursor = line_start(text, 0.6)
    end = text.find("\n", cursor)
    edited = "import sys  # an edit near the top\n" + text  # every token behind it goes stale
    shift = len(edited) - len(text)
    doc = edited[: cursor + shift] + edited[end + shift :]  # the line at the cursor emptied: a line to write
    texts = {URI: text}
    worker = ModelWorker(Engine(engine_config(options, None), lm=lm), texts.get, idle_refresh_s=IDLE_S)
    worker.start()
    try:
        worker.sync_soon(URI)
        synced(worker, text)  # opened and encoded
        texts[URI] = doc
        worker.sync_soon(URI)
        synced(worker, doc)  # the edit synced by PIE: the rest is stale
        t_edit = time.perf_counter()
        pooled = worker.engine.documents.get(URI)
        assert pooled is not None
        stale = pooled.cache.stale_count
        time.sleep(IDLE_S + into_s)  # the refresh is under way
        request = CompletionRequest(
            URI, doc, cursor + shift, c.max_tokens_inline, c.drafts, c.strategy, c.inline_multiline
        )
        t0 = time.perf_counter()
        _, future = worker.complete(request, "inline")
        result = future.result(3600).result
        waited = time.perf_counter() - t0
        t1 = time.perf_counter()
        while pooled.cache.stale_count:  # the refresh goes on to its end
            time.sleep(0.01)
            if time.perf_counter() - t1 > 3600:
                raise TimeoutError("the idle refresh did not end")
        exact_s = time.perf_counter() - t_edit
        worker.submit(lambda e: None).result(3600)
        _, again = worker.complete(request, "inline")
        t2 = time.perf_counter()
        alone = again.result(3600).result
        alone_s = time.perf_counter() - t2
    finally:
        worker.stop()
    return {
        "stale_at_edit": stale,
        "request_ms": round(waited * 1000, 1),
        "alone_ms": round(alone_s * 1000, 1),
        "edit_to_exact_ms": round(exact_s * 1000, 1),  # the idle delay, the request and the whole refresh
        "refreshed_tokens": worker.snapshot.refreshed_tokens,
        "text": result.completions[0].text if result and result.completions else None,
        "alone_text": alone.completions[0].text if alone and alone.completions else None,
    }


def run_model(
    name: str, files: list[str], tokens: int, threads: int, dtype: str, reps: int, into_s: float, step: int
) -> dict:
    lm = load_model(None if name == "default" else name, dtype=dtype, threads=threads)
    warm = document(lm, source("textwrap.py"), 300)  # not measured: the first forward, decode and jedi set up
    one_run(lm, warm, WHOLE, 0.0)
    rows = []
    for f in files:
        text = document(lm, source(f), tokens)
        n_tokens = len(lm.tokenizer.encode(text, add_special_tokens=False).ids)
        for rep in range(reps):
            order = ("steps", "whole") if rep % 2 == 0 else ("whole", "steps")
            runs = {mode: one_run(lm, text, step if mode == "steps" else WHOLE, into_s) for mode in order}
            row = {"file": f, "tokens": n_tokens, "rep": rep, "order": order[0], **runs}
            rows.append(row)
            s, w = runs["steps"], runs["whole"]
            print(f"{f} rep {rep}: stale {s['stale_at_edit']}; request during the refresh: steps "
                  f"{s['request_ms']:.0f} ms, whole {w['request_ms']:.0f} ms; alone {s['alone_ms']:.0f} / "
                  f"{w['alone_ms']:.0f} ms; edit to exact {s['edit_to_exact_ms']:.0f} / {w['edit_to_exact_ms']:.0f} ms",
                  flush=True)  # fmt: skip
    out = {"model": lm.name, "rows": rows}
    del lm
    gc.collect()
    return out


def table(results: list[dict]) -> str:
    lines = [
        "| model | file | tokens | stale at the edit | request during the refresh, ms: steps / whole | "
        "the same request alone, ms (steps / whole) | same answer (steps = whole) |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["rows"]:
            s, w = r["steps"], r["whole"]
            lines.append(
                f"| {res['model']} | {r['file']} | {r['tokens']} | {s['stale_at_edit']} | "
                f"{s['request_ms']:.0f} / {w['request_ms']:.0f} | {s['alone_ms']:.0f} / {w['alone_ms']:.0f} | "
                f"{s['text'] == w['text']} |"
            )
        steps = statistics.median(r["steps"]["request_ms"] for r in res["rows"])
        whole = statistics.median(r["whole"]["request_ms"] for r in res["rows"])
        lines.append(f"| {res['model']} | median | | | {steps:.0f} / {whole:.0f} | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--files", nargs="+", default=["argparse.py", "tarfile.py"])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--reps", type=int, default=2, help="repetitions per file (alternating which goes first)")
    parser.add_argument("--into", type=float, default=0.5, help="seconds into the refresh the request comes")
    parser.add_argument("--step", type=int, default=EngineConfig().cache.open_chunk, help="tokens per idle step")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = [
        run_model(m, args.files, args.tokens, args.threads, args.dtype, args.reps, args.into, args.step)
        for m in args.models
    ]
    meta = {"date": started, "load_after": os.getloadavg(), "args": vars(args)}
    OUT.mkdir(exist_ok=True)
    (OUT / "idle_refresh.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(table(results))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
