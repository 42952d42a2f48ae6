"""Monitors over a remote engine vs in-process, on the dereference benchmark's sites (benchmarks/mgd_deref.py).

The same sites as mgd_deref.py (`name.` in the heads of real stdlib and package files, kept where an oracle jedi
lists the attribute that follows; selected by its `select_sites` with the same seed), each completed three
times with the default model, greedy, one line, `--max-tokens`: in process with monitors on (mgd_deref's "on"),
through llama-server (the same model's GGUF) with monitors off, and through it with monitors on (a ruled-out
identifier re-spelled under a GBNF grammar, `completion/backend/monitored.py`). Each engine's jedi warmed the
file first, as an editor does on open; both use the same jedi budget. Reported per run: the share of valid
first identifiers and of every dereference the completion spells (the oracle's lists), over all sites and over
the sites where the monitor's jedi answered in time ("answered") and the part of those where it constrained (not
silent), and for the remote runs the engine round trips per completion.

    nice -n 10 .venv/bin/python benchmarks/remote_monitors.py --sites 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mgd_deref import OUT, STDLIB, Site, dereferences, first_identifier, is_valid, select_sites
from remote import start_llama_server

from superpie.analysis.monitors import Analyzer, AnalyzerConfig
from superpie.completion.config import EngineConfig, ModelConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest


def config(args: argparse.Namespace, url: str | None = None) -> EngineConfig:
    c = EngineConfig(workspace=str(STDLIB))
    c.model.path = "smollm2-135m"  # the model llama-server serves here (remote.start_llama_server)
    c.model.threads = 1
    c.cache.context_tokens = args.doc_tokens + 256
    c.monitors.jedi_budget_ms = args.budget_ms
    if url is not None:
        c.model = ModelConfig(backend="remote", url=url, read_timeout_ms=60_000, threads=1)
    return c


def complete(engine: Engine, oracle: Analyzer, site: Site, on: bool, max_tokens: int) -> dict[str, Any]:
    prompt = site.text[: site.offset]
    uri = Path(site.path).as_uri()
    req = CompletionRequest(uri, prompt, len(prompt), max_tokens=max_tokens, drafts=1, multiline=False, monitors=on)
    t0 = time.perf_counter()
    result = engine.complete(req)
    ms = (time.perf_counter() - t0) * 1000
    text = result.completions[0].text if result.completions else ""
    name = first_identifier(text)
    trace = result.monitors
    first = min(trace.fired.items(), key=lambda kv: len(kv[0]))[1] if trace is not None and trace.fired else None
    remote = result.remote
    return {
        "text": text,
        "identifier": name,
        "valid": bool(name) and is_valid(name, site.truth, text, 0),
        "derefs": [ok for _, ok in dereferences(oracle, site, text)],
        "answered": first is not None and first.monitor == "dereference" and not first.fell_back,
        "silent": None if first is None else first.silent,  # answered, but the monitor did not constrain: why
        "ms": round(ms, 1),
        "round_trips": None if remote is None else remote.round_trips,
        "corrected": None if remote is None else remote.monitor_corrected,
        "cut": None if remote is None else remote.monitor_cut,
    }


def pct(flags: list[bool]) -> float | None:
    return round(100 * sum(flags) / len(flags), 1) if flags else None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"sites": len(records)}
    for run in ("local_on", "remote_off", "remote_on"):
        rs = [r[run] for r in records]
        answered = [r for r in rs if r["answered"]]
        constrained = [r for r in answered if not r["silent"]]
        trips = [r["round_trips"] for r in rs if r["round_trips"] is not None]
        out[run] = {
            "valid_first_identifier_pct": pct([r["valid"] for r in rs if r["identifier"]]),
            "with_identifier": sum(bool(r["identifier"]) for r in rs),
            "valid_dereferences_pct": pct([ok for r in rs for ok in r["derefs"]]),
            "dereferences": sum(len(r["derefs"]) for r in rs),
            "answered_sites": len(answered),
            "answered_valid_first_identifier_pct": pct([r["valid"] for r in answered if r["identifier"]]),
            "constrained_sites": len(constrained),
            "constrained_valid_first_identifier_pct": pct([r["valid"] for r in constrained if r["identifier"]]),
            "ms_p50": round(statistics.median([r["ms"] for r in rs]), 1) if rs else None,
            "round_trips_mean": round(statistics.fmean(trips), 3) if trips else None,
            "round_trips_max": max(trips) if trips else None,
            "corrected": sum(r["corrected"] or 0 for r in rs),
            "cut": sum(r["cut"] or 0 for r in rs),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=60)
    ap.add_argument("--per-file", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--budget-ms", type=float, default=150.0, help="each engine's jedi budget per question")
    ap.add_argument("--doc-tokens", type=int, default=1536)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT / "remote_monitors.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    local = Engine(config(args))
    local.ensure_loaded()
    oracle = Analyzer(STDLIB, AnalyzerConfig(budget_ms=60_000, imports=False, keyword_arguments=False))
    sites = select_sites(local, oracle, args.sites, args.per_file, args.doc_tokens, args.seed)
    print(f"{len(sites)} sites", flush=True)
    server = start_llama_server(slots=2, context=8192)
    remote = Engine(config(args, server.url))
    remote.ensure_loaded()
    records = []
    opened: set[str] = set()
    try:
        for i, site in enumerate(sites):
            prompt = site.text[: site.offset]
            uri = Path(site.path).as_uri()
            if uri not in opened:  # the editor opened the file: each engine's jedi warms on it
                opened.add(uri)
                local.sync(uri, prompt[: prompt.rfind("\n") + 1])
                for e in (local, remote):
                    e.monitor_runtime().analyzer.warm(site.path, site.text).result(timeout=120)
            local.sync(uri, prompt, anchor=len(prompt))
            rec: dict[str, Any] = {"site": {"path": site.path, "offset": site.offset, "attr": site.attr}}
            rec["local_on"] = complete(local, oracle, site, True, args.max_tokens)
            rec["remote_off"] = complete(remote, oracle, site, False, args.max_tokens)
            rec["remote_on"] = complete(remote, oracle, site, True, args.max_tokens)
            records.append(rec)
            print(f"  [{i + 1}/{len(sites)}] {Path(site.path).name}:{site.base}.{site.attr} "
                  + " ".join(f"{k}={rec[k]['identifier']!r}" for k in ("local_on", "remote_off", "remote_on")),
                  flush=True)  # fmt: skip
    finally:
        server.stop()
        local.shutdown()
        remote.shutdown()
        oracle.close()
    summary = summarize(records)
    summary["config"] = {**{k: str(v) for k, v in vars(args).items()}, "server": server.command}
    summary["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary["load_average"] = [round(load_start, 1), round(os.getloadavg()[0], 1)]
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "records": records}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
