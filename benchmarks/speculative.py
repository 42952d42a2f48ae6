"""Speculative greedy decoding vs plain greedy decoding: decode time per completion on real code, same output.

Sites are real cursors in Python files of the running interpreter's standard library (files picked by a
seeded shuffle; none of them was used to choose speculation's settings). A single-line site cuts a
line after a random point of its first half and removes the rest of that line from the document (what
the user has not typed yet); a multi-line site cuts at a line's indentation and removes that line and
the next three. Each site's document is synced once, then completed with speculation on and off (the
order alternates site by site, so drift in the machine's load falls on both alike) through the
`Engine`, SmolLM2 unless `--model` names another, 1 thread, deterministic
configuration (jedi waits for every answer), after one warm-up completion each way. Reported per
kind: mean decode time per completion (`timings_ms["decode"]`: planning, monitors and decoding),
speedup off/on with a 95% bootstrap interval over sites, acceptance rate, positions decided per
forward, and how many sites gave identical drafts (tokens and text). `--rows` adds the cost of a
verification forward by rows fed.

    nice -n 10 .venv/bin/python benchmarks/speculative.py --single 150 --multi 50
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import sysconfig
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"


def stdlib_files(seed: int, count: int) -> list[Path]:
    """`count` stdlib modules of 3-60 kB, in a seeded order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if 3_000 <= p.stat().st_size <= 60_000 and not p.name.startswith("_"))
    random.Random(seed).shuffle(files)
    return files[:count]


def sites(files: list[Path], n_single: int, n_multi: int, seed: int) -> list[dict]:
    """Cursor sites: (kind, document text with the completion removed, cursor offset, file)."""
    rng = random.Random(seed)
    out: list[dict] = []
    per_file_single = max(1, -(-n_single // len(files)))
    per_file_multi = max(1, -(-n_multi // len(files)))
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))
        code = [
            i for i, line in enumerate(lines) if 12 <= len(line.strip()) <= 100 and not line.strip().startswith("#")
        ]
        if i_code := code[20:]:  # not the module's header
            code = i_code
        for kind, want in (("single", per_file_single), ("multi", per_file_multi)):
            for i in rng.sample(code, min(want, len(code))):
                line = lines[i]
                indent = len(line) - len(line.lstrip())
                body = line.rstrip("\n")
                if kind == "single":
                    cut = indent + rng.randrange(1, max(2, (len(body) - indent) // 2 + 1))
                    cursor = starts[i] + cut
                    doc = text[:cursor] + text[starts[i] + len(body) :]
                else:
                    cursor = starts[i] + indent
                    end = starts[min(i + 4, len(lines))]
                    doc = text[:cursor] + "\n" + text[end:]
                out.append({"kind": kind, "file": path.name, "line": i, "text": doc, "offset": cursor})
    rng.shuffle(out)
    singles = [s for s in out if s["kind"] == "single"][:n_single]
    multis = [s for s in out if s["kind"] == "multi"][:n_multi]
    return singles + multis


def bootstrap_ratio(off: list[float], on: list[float], seed: int = 0, rounds: int = 2000) -> tuple[float, float]:
    """95% interval of mean(off) / mean(on), sites resampled in pairs."""
    rng = random.Random(seed)
    n = len(off)
    ratios = []
    for _ in range(rounds):
        idx = [rng.randrange(n) for _ in range(n)]
        ratios.append(sum(off[i] for i in idx) / sum(on[i] for i in idx))
    ratios.sort()
    return ratios[int(0.025 * rounds)], ratios[int(0.975 * rounds) - 1]


def run_sites(engine, all_sites: list[dict], monitors: bool, partial: Path | None = None) -> list[dict]:
    from superpie.completion.request import CompletionRequest

    warm = all_sites[-1]  # the first forwards of a process pay one-time costs: not on a measured site
    for speculate in (True, False):
        engine.complete(CompletionRequest("file:///bench/warm.py", warm["text"], warm["offset"], speculate=speculate))
    rows = []
    for j, site in enumerate(all_sites):
        uri = f"file:///bench/{site['file']}"
        multiline = site["kind"] == "multi"
        max_tokens = 48 if multiline else 16
        engine.sync(uri, site["text"], anchor=site["offset"])
        results = {}
        for speculate in (True, False) if j % 2 == 0 else (False, True):
            req = CompletionRequest(
                uri=uri,
                text=site["text"],
                offset=site["offset"],
                max_tokens=max_tokens,
                multiline=multiline,
                monitors=monitors,
                speculate=speculate,
            )
            results[speculate] = engine.complete(req)
        on, off = results[True], results[False]
        same_tokens = [d.tokens for d in on.completions] == [d.tokens for d in off.completions]
        same_text = [d.text for d in on.completions] == [d.text for d in off.completions]
        stats = on.speculation.counts() if on.speculation is not None else {}
        rows.append(
            {
                "kind": site["kind"],
                "file": site["file"],
                "line": site["line"],
                "on_ms": on.timings_ms["decode"],
                "off_ms": off.timings_ms["decode"],
                "identical": same_tokens and same_text,
                "tokens": len(off.completions[0].tokens) if off.completions else 0,
                **stats,
            }
        )
        r = rows[-1]
        if partial is not None:  # every site as it comes, so a cut-short run still reports
            partial.write_text(json.dumps(rows))
        print(
            f"{j:4d} {r['kind']:6s} off {r['off_ms']:7.1f} on {r['on_ms']:7.1f} same {r['identical']} "
            f"fw {stats.get('forwards')}/{stats.get('plain_forwards')} "
            f"acc {stats.get('accepted')}/{stats.get('proposed')}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def summarize(rows: list[dict]) -> dict:
    off = [r["off_ms"] for r in rows]
    on = [r["on_ms"] for r in rows]
    lo, hi = bootstrap_ratio(off, on)
    total = {
        k: sum(r.get(k, 0) for r in rows)
        for k in ("forwards", "plain_forwards", "proposed", "accepted", "replays", "replayed")
    }
    return {
        "sites": len(rows),
        "mean_off_ms": round(statistics.fmean(off), 1),
        "mean_on_ms": round(statistics.fmean(on), 1),
        "speedup": round(statistics.fmean(off) / statistics.fmean(on), 3),
        "speedup_ci95": [round(lo, 3), round(hi, 3)],
        "acceptance": round(total["accepted"] / total["proposed"], 3) if total["proposed"] else None,
        "tokens_per_forward": round(total["plain_forwards"] / total["forwards"], 3) if total["forwards"] else None,
        "identical": sum(r["identical"] for r in rows),
        "mean_tokens": round(statistics.fmean(r["tokens"] for r in rows), 1),
        **total,
    }


def row_costs(engine, text: str, rows: tuple[int, ...] = (1, 2, 3, 4, 6, 8), repeats: int = 30) -> dict[int, float]:
    """Median ms of one forward of n rows (a chain) at the end of a ~2k-token document."""
    import torch

    from superpie.cache.cursor import CursorView

    engine.sync("file:///bench/rows.py", text)
    doc = engine.documents.get("file:///bench/rows.py").cache
    out = {}
    for n in rows:
        times = []
        for _ in range(repeats):
            view = CursorView(doc, doc.length, reserve=16)
            t0 = time.perf_counter()
            view.step(input_ids=torch.tensor(doc.ids[-n:]), logits_for=n)
            times.append((time.perf_counter() - t0) * 1000)
        out[n] = round(statistics.median(times), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--single", type=int, default=150)
    ap.add_argument("--multi", type=int, default=50)
    ap.add_argument("--files", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--monitors", choices=["on", "off"], default="on")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="smollm2-135m", help="a named model or a path (default: SmolLM2, as in RESULTS)")
    ap.add_argument("--rows", action="store_true", help="also time verification forwards by rows")
    ap.add_argument("--out", type=Path, default=OUT / "speculative.json")
    args = ap.parse_args()

    from superpie.completion.config import EngineConfig
    from superpie.completion.config.fields import replaced
    from superpie.completion.engine import Engine
    from superpie.lsp.replay import deterministic_config

    config = deterministic_config(replaced(EngineConfig(), "model.threads", args.threads))
    config.model.path = args.model  # named, since the default depends on the CPU
    engine = Engine(config)
    engine.ensure_loaded()
    files = stdlib_files(args.seed, args.files)
    all_sites = sites(files, args.single, args.multi, args.seed)
    t0 = time.time()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = run_sites(engine, all_sites, args.monitors == "on", args.out.with_suffix(".partial.json"))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": {k: str(v) for k, v in vars(args).items()},
        "files": [f.name for f in files],
        "wall_s": round(time.time() - t0),
        "all": summarize(rows),
        **{
            kind: summarize([r for r in rows if r["kind"] == kind])
            for kind in ("single", "multi")
            if any(r["kind"] == kind for r in rows)
        },
        "row_cost_ratio_learnt": {n: round(engine.speculation.cost.ratio(n), 3) for n in range(1, 9)},
        "rows": rows,
    }
    if args.rows:
        report["row_cost_ms"] = row_costs(engine, (files[0]).read_text(encoding="utf-8")[:8000])
    engine.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
