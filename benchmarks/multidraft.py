"""Multi-draft benchmark: what k drafts cost next to one greedy draft, and what they buy.

Documents are real Python files of the running interpreter's standard library (each cut to its first
~`--doc-tokens` tokens at a line end). A cursor sits at the start of a real line; the document the
engine sees is the file with that line removed (the user is about to write it), so the line after
the cursor is the following real line, and the target is the removed one. Strategies, all through
`Engine.complete` with the same post-processing and ranking:

- greedy, 1 draft (the reference cost);
- superposed, k drafts, verified exactly in one tree-masked forward;
- beam search, width k (tree mask: one forward of k tokens per step);
- k independent chain decodes (the greedy one and k-1 sampled at T=0.8).

The n-gram index of superposed decoding is built over a different set of stdlib files (the
"workspace") plus the open document; the test files are never in it. Cursor positions of one file are
visited bottom-up, so each PIE sync's first hunk sits at the cursor and the prefix the model reads is
exact. Cost is the time of `Engine.complete` (decode + verify + post-processing; the cache is already
in sync), wall and CPU time; the machine is shared, so CPU time is the steadier figure.

    .venv/bin/python benchmarks/multidraft.py --samples 80 --files 8   # ~6 min on 2 busy cores
    .venv/bin/python benchmarks/multidraft.py --samples 8     # smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sysconfig
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from metrics import edit_similarity

from superpie.completion.config import EngineConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest

OUT = Path(__file__).parent / "out"
RUNS = {  # name -> (strategy, drafts)
    "greedy": ("greedy", 1),
    "superposed": ("superposed", 4),
    "beam": ("beam", 4),
    "independent": ("greedy", 4),
}


def stdlib_files() -> list[Path]:
    """Plain-module .py files of the standard library with some substance, in a fixed order."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(lib.glob("*.py")) if 8_000 <= p.stat().st_size <= 200_000]
    return [p for p in files if "test" not in p.name and not p.name.startswith("_")]


def head(engine: Engine, source: str, n_tokens: int) -> str:
    """The first ~n_tokens tokens of a file, cut at a line end."""
    enc = engine.lm.tokenizer.encode(source, add_special_tokens=False)
    if len(enc.ids) <= n_tokens:
        return source
    return source[: source.rfind("\n", 0, enc.offsets[n_tokens][0]) + 1]


def cursor_lines(text: str, rng: random.Random, n: int, min_line: int = 20) -> list[int]:
    """n line indices of non-blank lines past the first min_line, bottom-up."""
    lines = text.splitlines(keepends=True)
    ok = [i for i in range(min_line, len(lines) - 1) if lines[i].strip() and lines[i].endswith("\n")]
    return sorted(rng.sample(ok, min(n, len(ok))), reverse=True)


def build_engine(args: argparse.Namespace, workspace: Path) -> Engine:
    """An engine as the benchmark runs it: n-gram over `workspace`, fed the document on every request."""
    config = EngineConfig(workspace=str(workspace))
    config.model.threads = args.threads
    config.cache.context_tokens = args.doc_tokens + 256
    config.decoding.max_tokens = args.max_tokens
    config.decoding.ngram_debounce_s = 0.0  # the index must see this request's document, not the last one's
    config.decoding.superposed = replace(
        config.decoding.superposed,
        ngram_weight=args.ngram_weight,
        branch_ratio=args.branch_ratio,
        top_m=args.top_m,
        weight_temperature=args.weight_temperature,
        ngram_by_share=args.ngram_by_share,
        spare=args.spare,
        exact_lead=bool(args.exact_lead),
        patience=args.sup_patience if args.sup_patience >= 0 else None,
    )
    config.decoding.verify = replace(
        config.decoding.verify, cut_confidence=args.cut_confidence, repair=args.repair, repair_tokens=args.repair_tokens
    )
    config.decoding.beam_patience = args.beam_patience if args.beam_patience > 0 else None
    config.ngram = replace(config.ngram, persist=False)
    config.monitors.enabled = bool(args.monitors)  # off by default: this measures the decoding strategies
    return Engine(config)


def run_one(engine: Engine, uri: str, text: str, offset: int, strategy: str, k: int) -> dict:
    """One request: its completions and what it cost."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = engine.complete(CompletionRequest(uri, text, offset, drafts=k, strategy=strategy))
    wall, cpu = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
    return {
        "texts": [c.text for c in result.completions],
        "scores": [c.score for c in result.completions],
        "wall_ms": wall,
        "cpu_ms": cpu,
        "t": result.timings_ms,
    }


def score(texts: list[str], target: str, after: str) -> dict:
    """Quality of one request's ranked drafts against the real line."""
    want = target.strip()
    got = [t.strip() for t in texts]
    sims = [edit_similarity(g, want) for g in got] or [0.0]
    return {
        "em_top": float(bool(got) and got[0] == want),
        "em_best": float(want in got),
        "es_top": sims[0],
        "es_best": max(sims),
        "distinct": len(set(got)),
        "repeats_suffix": sum(1 for g in got if g and g == after.strip()),
    }


def samples(args: argparse.Namespace, engine: Engine, files: list[Path], rng: random.Random):
    """(uri, document, offset, target, next line) per cursor, bottom-up within each file."""
    per_file = max(1, -(-args.samples // args.files))
    count = 0
    for path in files:
        text = head(engine, path.read_text(encoding="utf-8"), args.doc_tokens)
        lines = text.splitlines(keepends=True)
        for line in cursor_lines(text, rng, per_file):
            if count >= args.samples:
                return
            offset = len("".join(lines[:line]))
            after = next((x for x in lines[line + 1 :] if x.strip()), "")
            yield path.resolve().as_uri(), text[:offset] + text[offset + len(lines[line]) :], offset, lines[line], after
            count += 1


def summarize(rows: list[dict], runs: list[str]) -> dict:
    """Per strategy: means of the quality figures, and costs relative to greedy on the same cursors."""
    out: dict[str, dict] = {}
    for name in runs:
        have = [r for r in rows if name in r]
        if not have:
            continue
        s = {"n": len(have)}
        for key in ("em_top", "em_best", "es_top", "es_best", "distinct", "repeats_suffix"):
            s[key] = round(statistics.fmean(r[name]["q"][key] for r in have), 4)
        for unit in ("wall_ms", "cpu_ms"):
            s[unit] = round(statistics.fmean(r[name][unit] for r in have), 1)
            s[f"{unit[:-3]}_x_greedy"] = round(
                sum(r[name][unit] for r in have) / sum(r["greedy"][unit] for r in have), 3
            )
            s[f"{unit[:-3]}_x_greedy_median"] = round(
                statistics.median(r[name][unit] / r["greedy"][unit] for r in have), 3
            )
        s["tokens_top"] = round(statistics.fmean(r[name]["tokens_top"] for r in have), 2)
        out[name] = s
    g = out.get("greedy", {})
    for name, s in out.items():
        if name != "greedy" and g.get("em_top"):
            greedy_same = statistics.fmean(r["greedy"]["q"]["em_top"] for r in rows if name in r)
            s["em_best_x_greedy"] = round(s["em_best"] / greedy_same, 3) if greedy_same else None
    return out


def plot(summary: dict, path: Path) -> None:
    """Cost next to greedy, and exact match of the top draft and of the best of k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(names, [summary[n]["cpu_x_greedy"] for n in names], color="tab:blue", label="CPU time")
    a.plot(names, [summary[n]["wall_x_greedy"] for n in names], "o", color="tab:red", label="wall time")
    a.axhline(1.5, ls="--", color="gray", lw=1)
    a.set_ylabel("cost / one greedy draft")
    a.legend()
    x = range(len(names))
    b.bar([i - 0.2 for i in x], [summary[n]["em_top"] for n in names], width=0.4, label="top-ranked EM")
    b.bar([i + 0.2 for i in x], [summary[n]["em_best"] for n in names], width=0.4, label="best-of-k EM")
    b.set_xticks(list(x), names)
    b.set_ylabel("next-line exact match")
    b.legend()
    fig.suptitle("k = 4 drafts vs one greedy draft (stdlib, cursor at line start)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def tokens_of(engine: Engine, text: str) -> int:
    """Token count of a draft (for the 'same length' context of the cost figures)."""
    return len(engine.lm.tokenizer.encode(text, add_special_tokens=False).ids) if text else 0


def run(args: argparse.Namespace) -> dict:
    """Run every strategy at every cursor; return the summary and the per-cursor rows."""
    rng = random.Random(args.seed)
    files = stdlib_files()
    rng.shuffle(files)
    test, pool = files[: args.files], files[args.files :]
    runs = [r for r in args.runs.split(",") if r]
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        for p in pool[: args.workspace_files]:
            shutil.copyfile(p, workspace / p.name)  # copies: links out of the workspace are not read
        engine = build_engine(args, workspace)
        engine.ensure_loaded()
        t0 = time.perf_counter()
        engine.workspace.built(engine.lm, engine.config.ngram)
        ngram_ms = (time.perf_counter() - t0) * 1000
        rows = []
        for i, (uri, text, offset, target, after) in enumerate(samples(args, engine, test, rng)):
            engine.sync(uri, text, anchor=offset)
            row: dict = {"uri": uri, "offset": offset, "target": target}
            for name in runs:
                if name in ("beam", "independent") and i % args.baseline_every:
                    continue
                strategy, k = RUNS[name]
                out = run_one(engine, uri, text, offset, strategy, k)
                out["q"] = score(out["texts"], target, after)
                out["tokens_top"] = tokens_of(engine, out["texts"][0]) if out["texts"] else 0
                row[name] = out
            rows.append(row)
            shown = {n: row[n]["texts"][:4] for n in runs if n in row}
            print(json.dumps({"i": i, "target": target.strip()[:60], **shown}), flush=True)
    summary = summarize(rows, runs)
    return {
        "config": {k: v for k, v in vars(args).items()},
        "ngram_build_ms": round(ngram_ms, 1),
        "test_files": [p.name for p in test],
        "summary": summary,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--files", type=int, default=6, help="test files (positions are spread over them)")
    parser.add_argument("--workspace-files", type=int, default=60, help="other stdlib files in the n-gram index")
    parser.add_argument("--doc-tokens", type=int, default=1536)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is meaningful)")
    parser.add_argument("--ngram-weight", type=float, default=EngineConfig().decoding.superposed.ngram_weight)
    parser.add_argument("--branch-ratio", type=float, default=EngineConfig().decoding.superposed.branch_ratio)
    parser.add_argument(
        "--weight-temperature", type=float, default=EngineConfig().decoding.superposed.weight_temperature
    )
    parser.add_argument("--ngram-by-share", type=int, default=int(EngineConfig().decoding.superposed.ngram_by_share))
    parser.add_argument("--top-m", type=int, default=EngineConfig().decoding.superposed.top_m)
    parser.add_argument("--cut-confidence", type=float, default=EngineConfig().decoding.verify.cut_confidence)
    parser.add_argument(
        "--beam-patience",
        type=float,
        default=EngineConfig().decoding.beam_patience or 0.0,
        help="beam: steps after the first ended beam, as a share of its steps (0: until k ended)",
    )
    parser.add_argument("--repair", default=EngineConfig().decoding.verify.repair, choices=("best", "all", "off"))
    parser.add_argument("--repair-tokens", type=int, default=EngineConfig().decoding.verify.repair_tokens)
    parser.add_argument("--spare", type=int, default=EngineConfig().decoding.superposed.spare, help="superposed")
    sup = EngineConfig().decoding.superposed
    parser.add_argument(
        "--exact-lead", type=int, default=int(sup.exact_lead), help="superposed: 1 feeds greedy exactly"
    )
    parser.add_argument(
        "--sup-patience",
        type=float,
        default=-1.0 if sup.patience is None else sup.patience,
        help="superposed: steps after the greedy line ended, as a share of its steps (< 0: until they fall behind)",
    )
    parser.add_argument("--monitors", type=int, default=0, help="1: jedi monitors on (as the server runs)")
    parser.add_argument("--runs", default="greedy,superposed,beam,independent")
    parser.add_argument("--baseline-every", type=int, default=1, help="beam/independent on every n-th cursor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="multidraft")
    args = parser.parse_args()
    result = run(args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.tag}.json").write_text(json.dumps(result, indent=1))
    if "greedy" in result["summary"]:
        plot(result["summary"], OUT / f"{args.tag}.png")
    print(json.dumps({"summary": result["summary"], "ngram_build_ms": result["ngram_build_ms"]}, indent=1))


if __name__ == "__main__":
    main()
