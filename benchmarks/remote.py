"""The remote backend against llama.cpp's own server on 127.0.0.1: keystroke replay, a load test, the engine killed.

The server is the cached `llama-server` (`make llama-server`) with SmolLM2's GGUF, started here
under `nice -n 10` with one thread per server (`-t 1`): the machine is shared. superpie talks to it through
`Engine` with `model.backend: remote` (the same path as the CLI and the language server).

- `keys`: a real file of the standard library (`glob.py`, as benchmarks/keystrokes.py) typed into a document
  character by character; at every line start and after every `.` (keystrokes.py's sites) a completion is
  asked (one line, greedy, 16 tokens). Reported: latency p50/p95, and per request the share of the prompt's
  tokens the engine took from its prefix cache (llama.cpp's `timings.cache_n` over `tokens_evaluated`),
  overall and for requests on the same line as the one before.
- `load`: 1, 2, 4, 8 simulated editors, each its own `Engine`, each typing its own stdlib file and asking at
  its sites, against one server with a slot per editor (`-np 8`); its first request (the file just opened, the
  engine's cache cold) has no deadline and is reported apart. An editor types on after
  `--interval-s`: a request not answered by then is cancelled (its connection closed), as an editor's newer
  keystroke cancels the older request. Reported per N: latency p50/p95 of the answered requests, answered
  requests per second, answered + cancelled + lost (lost must be 0), and how many answered drafts differ
  from the same site's answer at a smaller N (greedy decoding: `diverged`).
- `kill`: a completion in flight (a block of up to 96 tokens), the server killed 0.5 s after it was sent: how long
  until the completion came back and what it said (`engine_down`); with `model.fallback`, how long until the local
  model took over (the answer's time less the local decode's) and that it answered.

    nice -n 10 .venv/bin/python benchmarks/remote.py                # every part, ~10 min on 2 busy cores
    nice -n 10 .venv/bin/python benchmarks/remote.py --parts keys --chars 800
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sysconfig
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from superpie.completion.backend.llama_server import LlamaServerProcess
from superpie.completion.config import EngineConfig, ModelConfig
from superpie.completion.config.fields import replaced
from superpie.completion.engine import Engine
from superpie.completion.model.catalog import SMOLLM2
from superpie.completion.model.loading import gguf_file
from superpie.completion.request import CompletionRequest

OUT = Path(__file__).parent / "out"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
# one real file per simulated editor (the first is keystrokes.py's)
EDITOR_FILES = ("glob.py", "shlex.py", "fnmatch.py", "textwrap.py", "bisect.py", "netrc.py", "colorsys.py", "sched.py")


def start_llama_server(slots: int = 4, context: int = 8192) -> LlamaServerProcess:
    """`llama-server` with SmolLM2's GGUF on a free loopback port, niced, one thread."""
    return LlamaServerProcess(gguf_file(SMOLLM2), slots, context, prefix=("nice", "-n", "10"), ready_within_s=180)


def remote_config(url: str, monitors: bool = False, **model: Any) -> EngineConfig:
    settings: dict[str, Any] = {"read_timeout_ms": 60_000, **model}
    config = EngineConfig(model=ModelConfig(backend="remote", url=url, **settings))
    config = replaced(config, "monitors.enabled", monitors)
    return replaced(config, "decoding.max_tokens", 16)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo), 1)


def sites(source: str, chars: int) -> list[int]:
    """Where keystrokes.py asks: at every line start (after the editor's auto-indent) and after every `.`."""
    text = source[:chars]
    out = []
    for i, ch in enumerate(text):
        if ch == ".":
            out.append(i + 1)
        elif ch == "\n" and i + 1 < len(text):
            j = i + 1
            while j < len(text) and text[j] in " \t":
                j += 1
            if j < len(text) and text[j] != "\n":
                out.append(j)
    return out


def request_at(uri: str, source: str, offset: int) -> CompletionRequest:
    """The document as typed up to `offset` (nothing after the cursor: it is being typed top-down)."""
    return CompletionRequest(uri, source[:offset], offset, drafts=1, multiline=False)


# ----------------------------------------------------------------------------- keystroke replay


def line_keystrokes(source: str, chars: int, lines: int) -> list[int]:
    """Every keystroke of the `lines` lines after the first `chars` characters (after their indentation)."""
    start = source.index("\n", chars) + 1
    out = []
    for _ in range(lines):
        end = source.index("\n", start)
        first = start + len(source[start:end]) - len(source[start:end].lstrip())
        out += list(range(first + 1, end + 1))
        start = end + 1
    return out


def run_keys(url: str, chars: int, lines: int) -> dict[str, Any]:
    source = (STDLIB / "glob.py").read_text()
    engine = Engine(remote_config(url))
    engine.ensure_loaded()
    records = []
    last_line = -1
    typed = set(line_keystrokes(source, chars, lines))
    for offset in sites(source, chars) + sorted(typed):
        t0 = time.perf_counter()
        result = engine.complete(request_at((STDLIB / "glob.py").as_uri(), source, offset))
        ms = (time.perf_counter() - t0) * 1000
        r = result.remote
        assert r is not None and r.error is None, r
        line = source.count("\n", 0, offset)
        share = None if not r.prompt_tokens or r.cached_tokens is None else r.cached_tokens / r.prompt_tokens
        records.append({"offset": offset, "same_line": line == last_line, "every_key": offset in typed,
                        "latency_ms": round(ms, 1),
                        "prompt_tokens": r.prompt_tokens, "cached_tokens": r.cached_tokens, "share": share,
                        "top": result.completions[0].text if result.completions else None})  # fmt: skip
        last_line = line
    engine.shutdown()
    later = records[1:]  # the first request finds an empty cache
    shares = [r["share"] for r in later if r["share"] is not None]
    same = [r["share"] for r in later if r["same_line"] and r["share"] is not None]
    keys = [r["share"] for r in later if r["every_key"] and r["same_line"] and r["share"] is not None]
    latency = [r["latency_ms"] for r in records]
    return {
        "file": "glob.py",
        "chars": chars,
        "lines_typed_key_by_key": lines,
        "requests": len(records),
        "latency_ms": {"p50": percentile(latency, 50), "p95": percentile(latency, 95)},
        "cached_share": {
            "all_after_first": {"n": len(shares), "mean": _mean(shares), "p5": _p(shares, 5), "min": _min(shares)},
            "same_line": {"n": len(same), "mean": _mean(same), "p5": _p(same, 5), "min": _min(same)},
            "typing_one_line": {"n": len(keys), "mean": _mean(keys), "p5": _p(keys, 5), "min": _min(keys)},
            "requests_at_or_over_90pct": sum(s >= 0.9 for s in shares),
        },
        "records": records,
    }


def _mean(xs: list[float]) -> float | None:
    return round(statistics.fmean(xs), 4) if xs else None


def _p(xs: list[float], q: float) -> float | None:
    v = percentile([x * 100 for x in xs], q)
    return None if v is None else round(v / 100, 4)


def _min(xs: list[float]) -> float | None:
    return round(min(xs), 4) if xs else None


# ----------------------------------------------------------------------------- load test


@dataclasses.dataclass
class Outcome:
    editor: int
    site: int
    kind: str  # "answered" | "cancelled" | "lost"
    latency_ms: float
    text: str | None = None
    error: str | None = None


def editor(
    url: str, index: int, per_editor: int, chars: int, interval_s: float, out: list[Outcome], ready: threading.Barrier
) -> None:
    """One editor: its own Engine, typing its own file, a request per site, cancelled when the next is due."""
    path = STDLIB / EDITOR_FILES[index % len(EDITOR_FILES)]
    source = path.read_text()
    engine = Engine(remote_config(url))
    engine.ensure_loaded()
    at = sites(source, chars)
    t0 = time.monotonic()  # the file opened: its head to the first site, with no deadline (not in the figures)
    engine.complete(request_at(path.as_uri(), source, at[0]))
    out.append(Outcome(index, -1, "opened", (time.monotonic() - t0) * 1000))
    ready.wait()  # every editor has its file open: the replay starts together
    for n, offset in enumerate(at[1 : per_editor + 1]):
        t0 = time.monotonic()
        due = t0 + interval_s
        try:
            ask = request_at(path.as_uri(), source, offset)
            result = engine.complete(ask, cancelled=lambda due=due: time.monotonic() > due)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001  (counted as lost: the run must say so, not stop)
            out.append(Outcome(index, n, "lost", (time.monotonic() - t0) * 1000, error=repr(exc)))
            continue
        ms = (time.monotonic() - t0) * 1000
        if result.cancelled:
            out.append(Outcome(index, n, "cancelled", ms))
        elif result.remote is not None and result.remote.error is None:
            out.append(Outcome(index, n, "answered", ms, result.completions[0].text if result.completions else ""))
        else:
            out.append(Outcome(index, n, "lost", ms, error=None if result.remote is None else result.remote.error))
        time.sleep(max(0.0, due - time.monotonic()))  # typing on until the next site
    engine.shutdown()


def run_load(url: str, editors: list[int], per_editor: int, chars: int, interval_s: float) -> dict[str, Any]:
    rows = []
    reference: dict[tuple[int, int], str | None] = {}
    for n in editors:
        out: list[Outcome] = []
        started: list[float] = []
        ready = threading.Barrier(n, action=lambda s=started: s.append(time.monotonic()))  # type: ignore[misc]
        args = [(url, i, per_editor, chars, interval_s, out, ready) for i in range(n)]
        threads = [threading.Thread(target=editor, args=a) for a in args]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.monotonic() - started[0]
        opened = [o.latency_ms for o in out if o.kind == "opened"]
        out = [o for o in out if o.kind != "opened"]
        answered = [o for o in out if o.kind == "answered"]
        compared = [o for o in answered if (o.editor, o.site) in reference]  # answered at a smaller N before
        for o in answered:  # the first answer of a site is the reference for the larger N
            reference.setdefault((o.editor, o.site), o.text)
        latency = [o.latency_ms for o in answered]
        rows.append({
            "editors": n,
            "requests": len(out),
            "answered": len(answered),
            "cancelled": sum(o.kind == "cancelled" for o in out),
            "lost": sum(o.kind == "lost" for o in out),
            "lost_errors": [o.error for o in out if o.kind == "lost"][:5],
            "latency_ms": {"p50": percentile(latency, 50), "p95": percentile(latency, 95)},
            "throughput_rps": round(len(answered) / wall, 3),
            "wall_s": round(wall, 1),
            "first_request_ms": {"p50": percentile(opened, 50), "max": round(max(opened), 1)},
            "outcomes": [[o.editor, o.site, o.kind, round(o.latency_ms)] for o in out],
            "compared_with_fewer_editors": len(compared),
            "diverged": sum(o.text != reference[(o.editor, o.site)] for o in compared),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return {"per_editor_requests": per_editor, "interval_s": interval_s, "files": EDITOR_FILES, "rows": rows}


# ----------------------------------------------------------------------------- engine killed


def run_kill(tries: int, read_timeout_ms: int) -> dict[str, Any]:
    source = (STDLIB / "glob.py").read_text()
    req = dataclasses.replace(request_at((STDLIB / "glob.py").as_uri(), source, 3000), max_tokens=96, multiline=True)
    rows = []
    for fallback in (False, True):
        for _ in range(tries):
            server = start_llama_server(slots=1)
            engine = Engine(remote_config(server.url, read_timeout_ms=read_timeout_ms, fallback=fallback))
            engine.ensure_loaded()
            local_at: list[float] = []
            if fallback:
                engine._load_local()  # the local model is ready before the engine dies (as after a fallback)
                local = engine._complete_local

                def spy(req: CompletionRequest, cancelled: Any, local: Any = local, at: list[float] = local_at) -> Any:
                    at.append(time.monotonic())  # the moment the engine's failure handed over to the local model
                    return local(req, cancelled)

                engine._complete_local = spy  # type: ignore[method-assign]
            got: list[Any] = []
            th = threading.Thread(target=lambda e=engine, g=got: g.append(e.complete(req)))
            th.start()
            time.sleep(0.5)
            in_flight = th.is_alive()
            t_kill = time.monotonic()
            server.stop()
            th.join(read_timeout_ms / 1000 + 120)  # the local model decodes the whole block after a fallback
            back_s = time.monotonic() - t_kill
            result = got[0] if got else None
            rows.append({
                "fallback": fallback,
                "in_flight_at_kill": in_flight,
                "returned_s": round(back_s, 2),
                "hung": th.is_alive(),
                "empty_reason": None if result is None else result.empty_reason,
                "strategy": None if result is None else result.strategy,
                "error": None if result is None or result.remote is None else result.remote.error,
                "answered_locally": bool(result is not None and result.remote is not None and result.remote.fallback),
                "local_started_s": round(local_at[0] - t_kill, 2) if local_at else None,
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            engine.shutdown()
    return {"read_timeout_ms": read_timeout_ms, "rows": rows}


# ----------------------------------------------------------------------------- report


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if "keys" in result:
        recs = result["keys"]["records"]
        axes[0].plot([r["latency_ms"] for r in recs], ".", label="latency (ms)")
        ax2 = axes[0].twinx()
        ax2.plot([100 * (r["share"] or 0) for r in recs], "g-", alpha=0.5, label="cached share (%)")
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("prompt tokens from the engine's cache (%)")
        axes[0].set_xlabel("request (typing glob.py)")
        axes[0].set_ylabel("latency (ms)")
        axes[0].set_title("keystroke replay, remote")
    if "load" in result:
        rows = result["load"]["rows"]
        ns = [r["editors"] for r in rows]
        axes[1].plot(ns, [r["latency_ms"]["p50"] for r in rows], "o-", label="p50 latency (ms)")
        axes[1].plot(ns, [r["latency_ms"]["p95"] for r in rows], "s-", label="p95 latency (ms)")
        ax3 = axes[1].twinx()
        ax3.plot(ns, [r["throughput_rps"] for r in rows], "r^--", label="answered / s")
        ax3.set_ylabel("answered requests / s")
        axes[1].set_xscale("log", base=2)
        axes[1].set_xlabel("simulated editors")
        axes[1].legend(loc="upper left", fontsize=8)
        axes[1].set_title("load test, one llama-server (-t 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="keys,load,kill")
    p.add_argument("--chars", type=int, default=2000, help="keys: type the first N characters of glob.py")
    p.add_argument("--lines", type=int, default=3, help="keys: then type N lines asking at every keystroke")
    p.add_argument("--editors", default="1,2,4,8")
    p.add_argument("--per-editor", type=int, default=10, help="load: requests per editor")
    p.add_argument("--load-chars", type=int, default=1500, help="load: each editor's sites within its file's head")
    p.add_argument("--interval-s", type=float, default=3.0, help="load: an editor types on (cancels) after this")
    p.add_argument("--kill-tries", type=int, default=2)
    p.add_argument("--read-timeout-ms", type=int, default=10_000)
    p.add_argument("--out", default=str(OUT / "remote"))
    args = p.parse_args()
    parts = args.parts.split(",")
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start",
        "model": gguf_file(SMOLLM2).name,
    }
    if "keys" in parts or "load" in parts:
        server = start_llama_server(slots=8, context=32768)
        result["server"] = server.command
        try:
            if "keys" in parts:
                result["keys"] = run_keys(server.url, args.chars, args.lines)
                print(json.dumps({k: v for k, v in result["keys"].items() if k != "records"}), flush=True)
            if "load" in parts:
                editors = [int(n) for n in args.editors.split(",")]
                result["load"] = run_load(server.url, editors, args.per_editor, args.load_chars, args.interval_s)
        finally:
            server.stop()
    if "kill" in parts:
        result["kill"] = run_kill(args.kill_tries, args.read_timeout_ms)
    result["load_average_end"] = round(os.getloadavg()[0], 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
