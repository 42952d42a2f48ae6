"""Single-line infilling quality through superpie: a real line removed, the cursor at its start, the code
after it present; exact match and edit similarity of the first line completed, with 95% confidence intervals.

Sites: single-line statements (ast) of real sources, one per file, from the standard library and
installed packages, chosen by a seeded RNG. Each file belongs to one split by a hash of its path:
`tune` (a third) is where a layout is chosen, `heldout` (the rest) is what is reported. The document
a site is completed in is the file's `--before` lines above the removed line and `--after` lines
below it; the removed line keeps its indentation (an editor re-indents) and the cursor is after it.

Every row runs the real engine (`Engine.complete`: sync, plan, greedy decode, post-processing) with
one draft, inline (the line), monitors off (jedi's time budget would make a run depend on the machine's
load), on a fresh document per site. Time per site is the cold completion (sync of the whole
document + decode), not a keystroke.

    python benchmarks/quality.py --sites 400 --rows smollm2:prefix qwen:prefix qwen:fim --out /tmp/q.json
    python benchmarks/quality.py --rows qwen:fim --log-dir /tmp/q   # one row per process, records as they come
    python benchmarks/quality.py --report /tmp/q/*.jsonl            # tables over the sites every row finished
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from metrics import edit_similarity

from superpie.completion.config import EngineConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest

PACKAGES = ("jedi", "pygls", "lsprotocol", "watchdog", "platformdirs", "tqdm", "attr", "cattrs", "packaging")
MODELS = {"smollm2": "smollm2-135m", "qwen": "qwen2.5-coder-0.5b"}


@dataclass(frozen=True)
class Site:
    """One removed line: the document around it, the cursor, and the line that was there."""

    path: str
    line: int  # 0-based line of the removed statement in the file
    text: str
    offset: int
    answer: str  # the line without its indentation
    split: str  # "tune" | "heldout"


def source_files() -> list[Path]:
    """Python files of the standard library and of a few installed packages, in a fixed order."""
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    site = Path(sysconfig.get_paths()["purelib"])
    roots += [site / p for p in PACKAGES if (site / p).is_dir()]
    files: list[Path] = []
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            parts = set(f.relative_to(root).parts)
            if parts & {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__"}:
                continue
            files.append(f)
    return files


def single_line_statements(source: str) -> list[int]:
    """0-based lines holding a whole simple statement (not a docstring, not a bare pass or import)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt) or isinstance(node, (ast.Pass, ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if node.end_lineno == node.lineno and not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.If):
            lines.append(node.lineno - 1)
    return sorted(set(lines))


def split_of(path: Path) -> str:
    """A file's split, fixed by its path: a third tune, the rest held out."""
    return "tune" if int(hashlib.sha256(path.name.encode()).hexdigest(), 16) % 3 == 0 else "heldout"


def make_sites(count: int, seed: int, before: int, after: int) -> list[Site]:
    """`count` sites, one per file, files and lines drawn by `seed`."""
    rng = random.Random(seed)
    files = source_files()
    rng.shuffle(files)
    sites: list[Site] = []
    for f in files:
        if len(sites) >= count:
            break
        try:
            source = f.read_text(encoding="utf-8")
            candidates = single_line_statements(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines(keepends=True)
        candidates = [i for i in candidates if i >= 20 and 8 <= len(lines[i].strip()) <= 100]
        if len(lines) < 60 or not candidates:
            continue
        i = rng.choice(candidates)
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        head = "".join(lines[max(0, i - before) : i]) + indent
        tail = "\n" + "".join(lines[i + 1 : i + 1 + after])
        sites.append(Site(str(f), i, head + tail, len(head), lines[i].strip(), split_of(f)))
    return sites


def mean_ci(values: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """Mean and its 95% percentile-bootstrap interval."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return sum(values) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def run_row(
    model: str, layout: str, sites: list[Site], threads: int | None, context: int, suffix: int, log: Path | None
) -> list[dict]:
    """Complete every site with one model and layout; one record per site (appended to `log` as it goes)."""
    config = EngineConfig()
    config.model.path = MODELS[model]
    config.model.layout = layout
    config.model.threads = threads
    config.cache.context_tokens = context
    config.cache.fim_suffix_tokens = suffix
    config.monitors.enabled = False
    engine = Engine(config)
    load_ms = engine.ensure_loaded()
    print(f"{model}:{layout} loaded in {load_ms / 1000:.1f} s", file=sys.stderr)
    records = []
    for k, site in enumerate(sites):
        uri = f"file:///quality/{k}.py"
        t0 = time.perf_counter()
        result = engine.complete(CompletionRequest(uri=uri, text=site.text, offset=site.offset, max_tokens=24))
        ms = (time.perf_counter() - t0) * 1000
        engine.close(uri)
        got = result.completions[0].text.split("\n")[0].strip() if result.completions else ""
        records.append(
            {
                "path": site.path, "line": site.line, "split": site.split, "answer": site.answer, "got": got,
                "exact": float(got == site.answer), "similarity": edit_similarity(got, site.answer), "ms": ms,
            }
        )  # fmt: skip
        if log is not None:
            with log.open("a") as f:
                f.write(json.dumps(records[-1]) + "\n")
        if (k + 1) % 25 == 0:
            done = [r["exact"] for r in records]
            print(f"  {model}:{layout} {k + 1}/{len(sites)} em {sum(done) / len(done):.3f}", file=sys.stderr)
    return records


def summary(records: list[dict], split: str) -> dict:
    """Exact match and edit similarity with 95% CIs, and time per site, over one split."""
    part = [r for r in records if r["split"] == split]
    em = mean_ci([r["exact"] for r in part])
    es = mean_ci([r["similarity"] for r in part])
    ms = sorted(r["ms"] for r in part) or [float("nan")]
    return {
        "sites": len(part), "exact": em, "similarity": es,
        "p50_ms": statistics.median(ms), "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
    }  # fmt: skip


def main() -> None:
    """Build the sites, run each row, print a table per split, write every record as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", type=int, default=40, help="lines of the file above the removed line")
    ap.add_argument("--after", type=int, default=15, help="lines of the file below it")
    ap.add_argument("--context", type=int, default=1024, help="cache.context_tokens")
    ap.add_argument("--suffix", type=int, default=256, help="cache.fim_suffix_tokens")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rows", nargs="+", default=["smollm2:prefix", "qwen:prefix", "qwen:fim"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--log-dir", type=Path, default=None, help="append each row's records here as JSON lines")
    ap.add_argument("--report", type=Path, nargs="+", default=None, help="only summarize these JSON-lines logs")
    args = ap.parse_args()
    if args.report:
        report({f.stem: [json.loads(ln) for ln in f.read_text().splitlines()] for f in args.report})
        return
    sites = make_sites(args.sites, args.seed, args.before, args.after)
    print(f"{len(sites)} sites ({sum(s.split == 'heldout' for s in sites)} held out)", file=sys.stderr)
    started, load = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    rows = {}
    for row in args.rows:
        model, layout = row.split(":")
        log = None if args.log_dir is None else args.log_dir / f"{row.replace(':', '-')}.jsonl"
        rows[row] = run_row(model, layout, sites, args.threads, args.context, args.suffix, log)
    report(rows)
    print(f"\nstarted {started}, load average {load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1))


def report(rows: dict[str, list[dict]]) -> None:
    """A table per split over the sites every row completed (rows stopped early compare on the same sites)."""
    common = set.intersection(*({(r["path"], r["line"]) for r in records} for records in rows.values()))
    rows = {row: [r for r in records if (r["path"], r["line"]) in common] for row, records in rows.items()}
    for split in ("tune", "heldout"):
        print(f"\n{split}: row | sites | exact match [95% CI] | edit similarity [95% CI] | p50 / p95 ms per site")
        for row, records in rows.items():
            s = summary(records, split)
            em, es = s["exact"], s["similarity"]
            print(
                f"{row} | {s['sites']} | {em[0]:.3f} [{em[1]:.3f}, {em[2]:.3f}] | "
                f"{es[0]:.3f} [{es[1]:.3f}, {es[2]:.3f}] | {s['p50_ms']:.0f} / {s['p95_ms']:.0f}"
            )


if __name__ == "__main__":
    main()
