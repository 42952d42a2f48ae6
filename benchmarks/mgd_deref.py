"""Monitor-guided decoding on real dereference sites: next-identifier match, valid identifiers, latency.

Sites are `name.attr` in real code: modules of the running interpreter's standard library and of
packages installed in the venv (each file cut to its first `--doc-tokens` tokens at a line end, so the
model's window never slides and the sites of one file, visited top-down, only append to the cache).
The document the engine sees is the file cut right after the dot (nothing after the cursor); the
target is `attr`. Only sites whose object jedi resolves are kept: an
"oracle" analyzer (its own jedi service, a generous budget) must list `attr` among the attributes
there. Each site is completed twice with the default model (greedy, one line, `--max-tokens`),
monitors off then on, through `Engine.complete`; the engine's jedi has warmed the file as an editor
would on open. Reported:

- next-identifier match: the completion's first identifier equals `attr`;
- valid identifiers: the share of the completions' first identifiers that the oracle lists at the site
  (and of every dereference in the completion, chained ones included), off vs on; "on, answered"
  leaves out sites where the engine's jedi missed its budget (decoding went on unconstrained there);
- latency with monitors on: each jedi wait during decoding (p50/p95), the mask per masked token (build
  + applying it to the logits, p50/p95), and the whole monitor overhead per completion (trigger checks,
  jedi waits, masks), plus the decode time off vs on. The machine is shared: wall times are noisy.

    .venv/bin/python benchmarks/mgd_deref.py --sites 150    # ~12 min on 2 busy cores
    .venv/bin/python benchmarks/mgd_deref.py --sites 12     # smoke run
    .venv/bin/python benchmarks/mgd_deref.py --lookahead 0  # monitors on without the identifier lookahead

With monitors on, greedy decoding picks each monitored identifier whole (`monitors.lookahead_width`, a
constrained beam over the identifier's tokens, see `decoding.lookahead`); its forwards show in
the decode time, not in the monitor overhead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import statistics
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from superpie.analysis.monitors import Analyzer, AnalyzerConfig
from superpie.analysis.syntax import region_at
from superpie.completion.config import EngineConfig
from superpie.completion.constraints import monitor as mc
from superpie.completion.decoding import greedy
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest

OUT = Path(__file__).parent / "out"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
PURELIB = Path(sysconfig.get_paths()["purelib"])
FILES = [
    STDLIB / "argparse.py",
    STDLIB / "shutil.py",
    STDLIB / "tempfile.py",
    STDLIB / "subprocess.py",
    STDLIB / "zipfile.py",
    STDLIB / "tarfile.py",
    STDLIB / "logging" / "handlers.py",
    STDLIB / "http" / "server.py",
    STDLIB / "email" / "generator.py",
    STDLIB / "json" / "__init__.py",
    STDLIB / "pathlib.py",
    STDLIB / "configparser.py",
    STDLIB / "unittest" / "loader.py",
    STDLIB / "asyncio" / "streams.py",
    STDLIB / "threading.py",
    STDLIB / "gzip.py",
    STDLIB / "smtplib.py",
    STDLIB / "socketserver.py",
    STDLIB / "ftplib.py",
    PURELIB / "jedi" / "api" / "__init__.py",
    PURELIB / "parso" / "python" / "diff.py",
    PURELIB / "pygls" / "workspace" / "text_document.py",
    PURELIB / "click" / "termui.py",
    PURELIB / "requests" / "sessions.py",
    PURELIB / "watchdog" / "observers" / "inotify.py",
    PURELIB / "rich" / "console.py",
    PURELIB / "jinja2" / "environment.py",
]
_SITE = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_IMPORT_LINE = re.compile(r"^\s*(from|import)\b")
_IDENT = re.compile(r"\w+")


@dataclass
class Site:
    """One `name.attr` occurrence: the document is `text[:offset]` (ending at the dot)."""

    path: str
    text: str = dataclasses.field(repr=False)  # the file's head: the site's document is text[:offset]
    offset: int = 0
    base: str = ""
    attr: str = ""
    seen: bool = False  # attr occurs in the document before the cursor (the model could copy it)
    truth: tuple[str, ...] = ()  # the attributes the oracle lists at the site


def candidate_sites(path: Path, text: str, min_offset: int = 1000) -> list[Site]:
    """`name.attr` in code (not strings, comments or import lines), late enough to have some context."""
    out = []
    for m in _SITE.finditer(text):
        dot = m.end(1)
        line = text[text.rfind("\n", 0, dot) + 1 : dot]
        if dot < min_offset or _IMPORT_LINE.match(line) or region_at(text, dot) != "code":
            continue
        out.append(Site(str(path), text, dot + 1, m.group(1), m.group(2), m.group(2) in text[: dot + 1]))
    return out


def oracle_names(oracle: Analyzer, path: str, prompt: str) -> tuple[str, ...] | None:
    """The attributes jedi lists at the end of prompt (None: no dereference there or jedi knows none)."""
    state = oracle.monitors(path, "").trigger(prompt)
    if state is None or state.fell_back or state.monitor != "dereference":
        return None
    return state.candidates


def head(engine: Engine, source: str, n_tokens: int) -> str:
    """The first ~n_tokens tokens of a file, cut at a line end."""
    enc = engine.lm.tokenizer.encode(source, add_special_tokens=False)
    if len(enc.ids) <= n_tokens:
        return source
    return source[: source.rfind("\n", 0, enc.offsets[n_tokens][0]) + 1]


def select_sites(engine: Engine, oracle: Analyzer, n: int, per_file: int, doc_tokens: int, seed: int) -> list[Site]:
    """Up to `per_file` resolvable sites from each file's head, n in all (taken round-robin), by file then offset."""
    rng = random.Random(seed)
    files = [f for f in FILES if f.is_file()]
    quota = per_file
    per: list[list[Site]] = []
    for f in files:
        text = head(engine, f.read_text(encoding="utf-8"), doc_tokens)
        pool = candidate_sites(f, text)
        rng.shuffle(pool)
        kept: list[Site] = []
        for site in pool[: 4 * quota]:
            names = oracle_names(oracle, site.path, text[: site.offset])
            if names and site.attr in names:
                site.truth = names
                kept.append(site)
            if len(kept) >= quota:
                break
        per.append(kept)
        print(f"  {f.relative_to(f.parents[2])}: {len(kept)} resolvable sites", flush=True)
    rounds = [site for i in range(quota) for kept in per if i < len(kept) for site in [kept[i]]][:n]
    taken = {id(s) for s in rounds}
    return [s for kept in per for s in sorted(kept, key=lambda s: s.offset) if id(s) in taken]


def first_identifier(text: str) -> str:
    """The identifier the completion starts with ('' when it starts otherwise)."""
    m = _IDENT.match(text)
    return m.group() if m and not m.group()[0].isdigit() else ""


def is_valid(name: str, names: tuple[str, ...], completion: str, at: int) -> bool:
    """A listed name; one cut by the end of the completion (the token budget) counts if it begins a listed name."""
    if at + len(name) < len(completion):
        return name in names
    return any(c.startswith(name) for c in names)


def dereferences(oracle: Analyzer, site: Site, completion: str) -> list[tuple[int, bool]]:
    """Per dereference the completion spells (the site's and chained ones): where, and a name the oracle lists?"""
    out = []
    prompt = site.text[: site.offset]
    points = [0] + [m.end() for m in re.finditer(r"(?<=[\w)\]])\.", completion)]
    for at in points:
        name = first_identifier(completion[at:])
        if not name:
            continue
        names = site.truth if at == 0 else oracle_names(oracle, site.path, prompt + completion[:at])
        if names is None:
            continue  # jedi cannot say (not code, unresolved object)
        out.append((at, is_valid(name, names, completion, at)))
    return out


class MaskClock:
    """Times every monitor mask: its build in the constraint plus applying it to the logits in the decoder."""

    def __init__(self) -> None:
        self.build: list[float] = []
        self.apply: list[float] = []
        self.per_token: list[float] = []
        self._pending: float | None = None
        self._mask = mc.MonitorConstraint.mask
        self._apply = greedy.apply_mask

    def install(self) -> None:
        """Wrap MonitorConstraint.mask and the greedy decoder's apply_mask."""
        clock = self

        def mask(constraint: mc.MonitorConstraint, vocab: int) -> torch.Tensor | None:
            t0 = time.perf_counter()
            out = clock._mask(constraint, vocab)
            if out is not None:
                clock._pending = time.perf_counter() - t0
            return out

        def apply(logp: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
            t0 = time.perf_counter()
            out = clock._apply(logp, m)
            if clock._pending is not None:
                dt = time.perf_counter() - t0
                clock.build.append(clock._pending)
                clock.apply.append(dt)
                clock.per_token.append(clock._pending + dt)
                clock._pending = None
            return out

        mc.MonitorConstraint.mask = mask  # type: ignore[method-assign]
        greedy.apply_mask = apply

    def mark(self) -> int:
        """How many masked tokens were timed so far."""
        return len(self.per_token)


def quantiles(xs: list[float], scale: float = 1000.0) -> dict[str, float | int]:
    """p50/p95/mean (in ms for seconds) and the count."""
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    return {
        "n": len(s),
        "p50": round(s[len(s) // 2] * scale, 3),
        "p95": round(s[min(len(s) - 1, int(0.95 * len(s)))] * scale, 3),
        "mean": round(statistics.fmean(s) * scale, 3),
    }


def run_site(engine: Engine, oracle: Analyzer, clock: MaskClock, site: Site, max_tokens: int, opened: set[str]) -> dict:
    """Complete one site with monitors off and on; what each produced and what it cost.

    The document is synced to the cut first, as the server syncs each edit before the request comes
    (that sync also lets jedi start on the site's question: the prefetch is part of what is measured).
    """
    prompt = site.text[: site.offset]
    uri = Path(site.path).as_uri()
    if uri not in opened:  # the editor opened the file (up to the site's line) and jedi warmed up on it
        opened.add(uri)
        engine.sync(uri, prompt[: prompt.rfind("\n") + 1])
        engine.monitor_runtime().analyzer.warm(site.path, site.text).result(timeout=120)
    keep = ("path", "offset", "base", "attr", "seen")
    rec: dict = {"site": {k: getattr(site, k) for k in keep}, "truth_size": len(site.truth)}
    engine.sync(uri, prompt, anchor=len(prompt))  # the edit up to the dot, synced before the request
    for on in (False, True):
        req = CompletionRequest(uri, prompt, len(prompt), max_tokens=max_tokens, drafts=1, multiline=False, monitors=on)
        mark = clock.mark()
        t0 = time.perf_counter()
        result = engine.complete(req)
        wall = time.perf_counter() - t0
        c = result.completions[0] if result.completions else None
        completion = c.text if c else ""
        name = first_identifier(completion)
        out = {
            "text": completion,
            "identifier": name,
            "match": name == site.attr,
            "valid": bool(name) and is_valid(name, site.truth, completion, 0),
            "derefs": dereferences(oracle, site, completion),
            "decode_ms": round(result.timings_ms["decode"], 3),
            "wall_ms": round(wall * 1000, 3),
        }
        if on:
            trace = result.monitors
            first = min(trace.fired.items(), key=lambda kv: len(kv[0]))[1] if trace.fired else None
            out["site_monitor"] = None if first is None else first.monitor
            out["fell_back"] = bool(first is not None and first.fell_back)
            out["jedi_ms"] = [round(s * 1000, 3) for s in trace.jedi_s]
            masks = clock.per_token[mark:]
            out["mask_ms"] = [round(s * 1000, 4) for s in masks]
            out["overhead_ms"] = round((trace.overhead_s() + sum(clock.apply[mark:])) * 1000, 3)
            out["verdict"] = None if c is None or c.monitor is None else c.monitor.to_json()
            typed = min(trace.fired, key=len) if trace.fired else ""  # the first firing sits at the cursor
            answered = {len(k) - len(typed) for k, st in trace.fired.items() if not st.fell_back}
            out["derefs_answered"] = [ok for at, ok in out["derefs"] if at in answered]
        rec["on" if on else "off"] = out
    return rec


def _pct(flags: list[bool]) -> float | None:
    return round(100 * sum(flags) / len(flags), 1) if flags else None


def summarize(records: list[dict], clock: MaskClock) -> dict:
    """The figures of the run."""
    answered = [r for r in records if r["on"]["site_monitor"] == "dereference" and not r["on"]["fell_back"]]
    unseen = [r for r in records if not r["site"]["seen"]]
    out: dict = {"sites": len(records), "answered_sites": len(answered), "unseen_sites": len(unseen)}
    for run in ("off", "on"):
        derefs = [ok for r in records for _, ok in r[run]["derefs"]]
        out[run] = {
            "next_identifier_match_pct": _pct([r[run]["match"] for r in records]),
            "next_identifier_match_unseen_pct": _pct([r[run]["match"] for r in unseen]),
            "valid_first_identifier_pct": _pct([r[run]["valid"] for r in records]),
            "valid_first_identifier_answered_pct": _pct([r[run]["valid"] for r in answered]),
            "valid_dereferences_pct": _pct(derefs),
            "dereferences": len(derefs),
            "decode_ms": quantiles([r[run]["decode_ms"] / 1000 for r in records]),
        }
    out["on"]["valid_dereferences_answered_pct"] = _pct([ok for r in records for ok in r["on"]["derefs_answered"]])
    out["latency_on"] = {
        "jedi_wait_ms": quantiles([s / 1000 for r in records for s in r["on"]["jedi_ms"]]),
        "mask_per_token_ms": quantiles(clock.per_token),
        "mask_build_ms": quantiles(clock.build),
        "mask_apply_ms": quantiles(clock.apply),
        "overhead_per_completion_ms": quantiles([r["on"]["overhead_ms"] / 1000 for r in records]),
        "fallback_sites": sum(r["on"]["fell_back"] for r in records),
    }
    return out


def plot(summary: dict, records: list[dict], path: Path) -> None:
    """Quality off vs on, and the latency distributions with monitors on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = ["next-identifier\nmatch", "valid first\nidentifier", "valid (answered\nsites)", "valid, all\nderefs"]
    keys = [
        "next_identifier_match_pct",
        "valid_first_identifier_pct",
        "valid_first_identifier_answered_pct",
        "valid_dereferences_pct",
    ]
    x = range(len(keys))
    for i, run in enumerate(("off", "on")):
        vals = [summary[run][k] or 0 for k in keys]
        bars = ax1.bar([j + (i - 0.5) * 0.38 for j in x], vals, 0.38, label=f"monitors {run}")
        ax1.bar_label(bars, fmt="%.1f", fontsize=7)
    ax1.set_xticks(list(x), labels, fontsize=8)
    ax1.set_ylabel("% of sites / identifiers")
    ax1.set_ylim(0, 110)
    ax1.set_title(f"{summary['sites']} dereference sites (stdlib + venv packages)")
    ax1.legend(loc="upper left")
    series = {
        "jedi wait": [s for r in records for s in r["on"]["jedi_ms"]],
        "mask / token": [s for r in records for s in r["on"]["mask_ms"]],
        "overhead / completion": [r["on"]["overhead_ms"] for r in records],
    }
    ax2.boxplot([v or [0] for v in series.values()], showfliers=True)
    ax2.set_xticks([1, 2, 3], list(series), fontsize=9)
    ax2.set_yscale("log")
    ax2.set_ylabel("ms (log)")
    ax2.axhline(1.0, color="grey", ls=":", lw=1)
    ax2.axhline(150.0, color="grey", ls="--", lw=1)
    ax2.set_title("monitor latency (dotted: 1 ms, dashed: 150 ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    """Select sites, run them off and on, write JSON + PNG, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=150)
    ap.add_argument("--per-file", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--budget-ms", type=float, default=150.0, help="the engine's jedi budget per question")
    ap.add_argument("--doc-tokens", type=int, default=1536, help="each file is cut to its first ~N tokens")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared machine steady)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lookahead", type=int, default=None, help="beam width over each monitored identifier")
    ap.add_argument("--prior", type=float, default=None, help="lookahead bonus for names used after a dot before")
    ap.add_argument("--out", type=Path, default=OUT / "mgd_deref.json")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    config = EngineConfig(workspace=str(STDLIB))
    config.model.path = "smollm2-135m"  # its figures in RESULTS are SmolLM2's; the default depends on the CPU
    config.model.threads = args.threads
    config.cache.context_tokens = args.doc_tokens + 256  # the whole head fits: the window never slides
    config.monitors.jedi_budget_ms = args.budget_ms
    if args.lookahead is not None:
        config.monitors.lookahead_width = args.lookahead
    if args.prior is not None:
        config.monitors.used_name_prior = args.prior
    engine = Engine(config)
    engine.ensure_loaded()
    oracle = Analyzer(STDLIB, AnalyzerConfig(budget_ms=60_000, imports=False, keyword_arguments=False))
    print("selecting sites ...", flush=True)
    sites = select_sites(engine, oracle, args.sites, args.per_file, args.doc_tokens, args.seed)
    print(f"{len(sites)} sites in {time.perf_counter() - t0:.0f} s", flush=True)
    clock = MaskClock()
    clock.install()
    records: list[dict] = []
    opened: set[str] = set()
    for i, site in enumerate(sites):
        rec = run_site(engine, oracle, clock, site, args.max_tokens, opened)
        records.append(rec)
        print(
            f"  [{i + 1}/{len(sites)}] {Path(site.path).name}:{site.base}.{site.attr}"
            f"  off={rec['off']['identifier']!r} on={rec['on']['identifier']!r}",
            flush=True,
        )
    engine.shutdown()
    oracle.close()
    summary = summarize(records, clock)
    seconds = round(time.perf_counter() - t0, 1)
    summary["config"] = {**vars(args), "out": str(args.out), "model": engine.lm.name, "seconds": seconds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "records": records}, indent=1))
    plot(summary, records, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
