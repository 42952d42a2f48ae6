"""Keystroke replay through the real language server: end-to-end inline completion latency.

A real Python file of the running interpreter's standard library (`glob.py`, ~2.3k tokens) is typed
into an empty document, one `didChange` per character, with realistic pauses (log-normal inter-key
intervals, longer at line ends; the editor inserts each line's indentation at once, as auto-indent
does). At every line start and after every `.`, the client waits the editor's debounce and asks for
an inline completion (single line, up to 16 new tokens, the default model), waits for the answer and
types on. `--ask words` also asks after each space, `(`, `,` and `=` inside a line: nearer an editor that
asks at every pause. Reported: latency from request to response (p50/p95, overall and once the document
holds 1.5k+ tokens), the share of requests answered from a cache the background sync had already brought
up to date, the server's memory; JSON and a PNG plot under benchmarks/out/.

`--file` is a path in the standard library or an absolute path. `--context on` turns the repository context
on (`context.enabled`): the workspace is then the file's folder (unless `--workspace` names one) and the typed
document `typed_<name>` in it (no such file on disk), so the names typed lead to the definitions in the
file's sibling modules, looked up by jedi as in an editor (the standard library's own modules resolve to
jedi's stubs, outside any workspace, so type a package's file: `--file .../site-packages/rich/columns.py`).
This measures what the context costs a keystroke, not what it is worth (benchmarks/repo_context.py does).

    .venv/bin/python benchmarks/keystrokes.py              # ~6-8 min on 2 cores
    .venv/bin/python benchmarks/keystrokes.py --chars 1500 # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from lsprotocol import types as t
from pygls.lsp.client import LanguageClient

from superpie.lsp.positions import position_at

OUT = Path(__file__).parent / "out"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p95": None, "mean": None, "max": None}
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "mean": round(statistics.fmean(values), 1),
        "max": round(max(values), 1),
    }


class Typist:
    """Types text into the server's document and asks for inline completions along the way."""

    def __init__(
        self, client: LanguageClient, uri: str, rng: random.Random, debounce_s: float, token_count, words: bool = False
    ) -> None:
        self.client, self.rng, self.debounce_s, self.token_count = client, rng, debounce_s, token_count
        self.words = words  # also ask after each space, `(`, `,` and `=` inside a line (`--ask words`)
        self.uri = uri
        self.text, self.version = "", 1
        self.records: list[dict] = []
        self.t0 = time.perf_counter()

    def insert(self, chunk: str) -> None:
        line, character = position_at(self.text, len(self.text))
        at = t.Position(line=line, character=character)
        self.text += chunk
        self.version += 1
        self.client.text_document_did_change(
            t.DidChangeTextDocumentParams(
                text_document=t.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
                content_changes=[t.TextDocumentContentChangePartial(range=t.Range(start=at, end=at), text=chunk)],
            )
        )

    def pause(self, ch: str) -> float:
        base = self.rng.lognormvariate(mu=-3.6, sigma=0.5)  # median ~27 ms between keys
        return base + (0.12 if ch == "\n" else 0.0) + (0.25 if self.rng.random() < 0.02 else 0.0)

    async def request(self, kind: str) -> None:
        await asyncio.sleep(self.debounce_s)
        line, character = position_at(self.text, len(self.text))
        params = t.InlineCompletionParams(
            context=t.InlineCompletionContext(trigger_kind=t.InlineCompletionTriggerKind.Automatic),
            text_document=t.TextDocumentIdentifier(uri=self.uri),
            position=t.Position(line=line, character=character),
        )
        sent = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.client.text_document_inline_completion_async(params), 60)
        except asyncio.TimeoutError:  # recorded at the timeout; pygls sends no cancel for it
            result = None
        latency = (time.perf_counter() - sent) * 1000
        items = list(result.items) if result else []
        self.records.append(
            {
                "t_s": round(sent - self.t0, 3),
                "kind": kind,
                "latency_ms": round(latency, 1),
                "doc_tokens": self.token_count(self.text),
                "items": len(items),
                "top": items[0].insert_text if items else None,
            }
        )

    async def type_file(self, source: str) -> None:
        i = 0
        while i < len(source):
            ch = source[i]
            self.insert(ch)
            i += 1
            if ch == "\n":  # auto-indent: the editor inserts the next line's indentation
                j = i
                while j < len(source) and source[j] in " \t":
                    j += 1
                if j > i and j < len(source) and source[j] != "\n":
                    self.insert(source[i:j])
                    i = j
                if i < len(source) and source[i] != "\n":
                    await self.request("line_start")
            elif ch == ".":
                await self.request("dot")
            elif self.words and ch in " (,=" and source[i - 2 : i] != "  " and source[i : i + 1] not in ("", "\n"):
                await self.request("word")
            await asyncio.sleep(self.pause(ch))


async def save_stderr(client: LanguageClient, path: Path) -> None:
    """Keep the server's stderr flowing (a full pipe would block it) into a log file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        while line := await client._server.stderr.readline():
            f.write(line)
            f.flush()


async def command(client: LanguageClient, name: str, *args) -> dict:
    params = t.ExecuteCommandParams(command=name, arguments=list(args) or None)
    return await asyncio.wait_for(client.workspace_execute_command_async(params), 60)


async def run(args: argparse.Namespace) -> dict:
    path = Path(sysconfig.get_paths()["stdlib"], args.file)  # (an absolute `args.file` stays itself)
    source = path.read_text()[: args.chars]
    client = LanguageClient("keystrokes", "1")
    cmd = [sys.executable, "-m", "superpie.lsp.cli", "serve", "--log-level", args.log_level]
    await client.start_io(*cmd, *(["--model", args.model] if args.model else []))
    drain = asyncio.create_task(save_stderr(client, Path(args.out).with_suffix(".server.log")))
    home = path.parent if args.context == "on" else None
    root = Path(args.workspace or home or tempfile.mkdtemp(prefix="superpie-keystrokes-")).resolve()
    uri = (root / f"typed_{path.name}").as_uri() if args.context == "on" else f"file:///virtual/typed_{path.name}"
    await client.initialize_async(
        t.InitializeParams(
            capabilities=t.ClientCapabilities(),
            root_uri=root.as_uri(),
            initialization_options={
                "completion": {"maxTokensInline": 16, "inlineMultiline": False, "carry": args.carry == "on"},
                "monitors": {"enabled": not args.no_monitors},
                "model": {"threads": args.threads, "dtype": args.dtype, "layout": args.layout},
                "decoding": {} if args.speculate == "server" else {"speculate": args.speculate == "on"},
                "context": {"enabled": args.context == "on", "tokens": args.context_tokens},
            },
        )
    )
    client.initialized(t.InitializedParams())
    t_load = time.perf_counter()
    while not (await command(client, "superpie.stats"))["model"]["loaded"]:
        await asyncio.sleep(0.1)
    load_s = time.perf_counter() - t_load
    client.text_document_did_open(
        t.DidOpenTextDocumentParams(t.TextDocumentItem(uri=uri, language_id="python", version=1, text=""))
    )
    tokenizer = _tokenizer(args.model)
    typist = Typist(
        client,
        uri,
        random.Random(args.seed),
        args.debounce_ms / 1000,
        lambda s: len(tokenizer.encode(s).ids),
        words=args.ask == "words",
    )
    t_start = time.perf_counter()
    await typist.type_file(source)
    typing_s = time.perf_counter() - t_start
    state = await command(client, "superpie.document", uri)
    stats = await command(client, "superpie.stats")
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    drain.cancel()
    assert state["length"] == len(typist.text), "the server's document diverged from the client's"
    return report(args, source, typist, stats, load_s, typing_s, tokenizer)


def _tokenizer(model: str | None):
    from tokenizers import Tokenizer

    from superpie.completion.model.catalog import MODELS
    from superpie.completion.model.loading import converted_dir, default_model

    if model and model not in MODELS:
        return Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    path = converted_dir(MODELS[model] if model else default_model())
    return Tokenizer.from_file(str(path / "tokenizer.json"))


def report(args, source: str, typist: Typist, stats: dict, load_s: float, typing_s: float, tokenizer) -> dict:
    recs = typist.records
    lat = [r["latency_ms"] for r in recs]
    warm = [r["latency_ms"] for r in recs if r["doc_tokens"] >= 1500]
    return {
        "file": args.file,
        "chars": len(source),
        "tokens": len(tokenizer.encode(source).ids),
        "keystrokes": typist.version - 1,
        "requests": len(recs),
        "answered_with_items": sum(r["items"] > 0 for r in recs),
        "latency_ms": summary(lat),
        "latency_ms_doc_1500_plus_tokens": summary(warm),
        "latency_ms_by_kind": {
            k: summary([r["latency_ms"] for r in recs if r["kind"] == k]) for k in ("line_start", "dot", "word")
        },
        "targets_ms": {"p50": 600, "p95": 1500},
        "current_cache_share": stats["cache"]["current_share"],
        "carried": stats["cache"]["carried"],
        "close_calls": stats["cache"]["close_calls"],
        "close_call_tokens": stats["cache"]["close_call_tokens"],
        "cache_reuse_share": stats["cache"]["reuse_share"],
        "server_latency_ms": stats["latency_ms"]["all"],
        "server_latency_parts_ms": stats["latency_parts_ms"],
        "memory": stats["memory"],
        "model": stats["model"],
        "load_s": round(load_s, 2),
        "typing_s": round(typing_s, 1),
        "debounce_ms": args.debounce_ms,
        "monitors": not args.no_monitors,
        "speculate": args.speculate,
        "carry": args.carry,
        "ask": args.ask,
        "context": args.context,
        "context_tokens": args.context_tokens,
        "dtype": args.dtype,
        "layout": args.layout,
        "speculation": stats.get("speculation"),
        "loadavg_at_end": os.getloadavg(),
        "cpus": len(os.sched_getaffinity(0)),
        "records": recs,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for kind, color in (("line_start", "tab:blue"), ("dot", "tab:orange")):
        rs = [r for r in result["records"] if r["kind"] == kind]
        ax.scatter([r["t_s"] for r in rs], [r["latency_ms"] for r in rs], s=10, c=color, label=f"after {kind}")
    lat = result["latency_ms"]
    ax.axhline(lat["p50"], color="k", lw=1, label=f"p50 {lat['p50']:.0f} ms")
    ax.axhline(lat["p95"], color="k", lw=1, ls="--", label=f"p95 {lat['p95']:.0f} ms")
    ax.axhline(600, color="tab:green", lw=1, ls=":", label="targets (600 / 1500 ms)")
    ax.axhline(1500, color="tab:green", lw=1, ls=":")
    ax.set_xlabel("session time (s)")
    ax.set_ylabel("inline completion latency (ms)")
    ax.set_title(f"superpie keystroke replay: {result['file']} ({result['tokens']} tokens), {result['model']['name']}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default="glob.py", help="file to type: in the stdlib, or an absolute path")
    parser.add_argument("--chars", type=int, default=None, help="type only the first N characters")
    parser.add_argument(
        "--ask", choices=["lines", "words"], default="lines",
        help="ask at line starts and after `.`; words: also after each space, `(`, `,` and `=` inside a line",
    )  # fmt: skip
    parser.add_argument("--model", default=None, help="model name or directory (default: the embedded default model)")
    parser.add_argument(
        "--speculate",
        choices=["on", "off", "server"],
        default="server",
        help="speculative greedy decoding (default: the server's own default)",
    )
    parser.add_argument(
        "--carry", choices=["on", "off"], default="on", help="typing along the shown suggestion answers with its rest"
    )
    parser.add_argument("--dtype", default="auto", help="weight precision (model.dtype)")
    parser.add_argument("--layout", default="auto", choices=["auto", "prefix", "fim"], help="model.layout")
    parser.add_argument("--workspace", default=None, help="workspace folder for the server (default: an empty one)")
    parser.add_argument("--context", choices=["on", "off"], default="off", help="repository context (see above)")
    parser.add_argument("--context-tokens", type=int, default=1024, help="context.tokens")
    parser.add_argument("--debounce-ms", type=int, default=50, help="editor debounce before a request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="the server's CPU threads (default: its own)")
    parser.add_argument("--no-monitors", action="store_true", help="turn monitor-guided decoding (jedi) off")
    parser.add_argument("--log-level", default="info", choices=["error", "warning", "info", "debug"])
    parser.add_argument("--out", default=str(OUT / "keystrokes"), help="output path without extension")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    plot(result, out.with_suffix(".png"))
    brief = {k: v for k, v in result.items() if k != "records"}
    print(json.dumps(brief, indent=1, ensure_ascii=False))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
