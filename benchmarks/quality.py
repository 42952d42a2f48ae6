"""Single-line infilling quality through superpie: a real line removed, the cursor at its start, the code
after it present; exact match and edit similarity of the first line completed, with 95% confidence intervals.

Sites: single-line statements (ast) of real sources, one per file, from the standard library and
installed packages, chosen by a seeded RNG. Each file belongs to one split by a hash of its path:
`tune` (a third) is where a layout is chosen, `heldout` (the rest) is what is reported. The document
a site is completed in is the file's `--before` lines above the removed line and `--after` lines
below it; the removed line keeps its indentation (an editor re-indents) and the cursor is after it.
`--cursor word` keeps the line's first word and the character after it too (`return `, `self.`, `x `), as
a user who has begun the line: the answer is the rest of the line (a FIM layout then has a middle begun).

Every row runs the real engine (`Engine.complete`: sync, plan, greedy decode, post-processing) with
one draft, inline (the line), monitors off (jedi's time budget would make a run depend on the machine's
load), on a fresh document per site, its weights at a pinned `--dtype`. Rows: `model:layout`, and
`model:layout+ctx` for repository context on (the site's file at its real path, its project - the package's
directory or the standard library's - as the workspace; benchmarks/quality_context.py). Per site: the cold
time (sync of the document's window + decode), then the keystroke latency: the answer's first character
typed at the cursor and `Engine.complete` timed again on the warm cache (sync of the keystroke + decode).
Rows given to one process run interleaved site by site, so a run stopped early leaves them on the same sites.

    python benchmarks/quality.py --sites 400 --split heldout --rows qwen:prefix smollm2:prefix --log-dir /tmp/q
    python benchmarks/quality.py --sites 400 --split heldout --rows qwen:fim qwen:fim+ctx --log-dir /tmp/q
    python benchmarks/quality.py --report /tmp/q/*.jsonl  # tables over the sites every row finished, paired
    python benchmarks/quality.py --carry /tmp/q/qwen-prefix.jsonl /tmp/qw/qwen-prefix.jsonl  # indent vs word logs

`--carry` reads a row's log at line starts (`--cursor indent`) and the same row's at the same sites with the
first word typed (`--cursor word`) and asks what `completion.carry` does: where the line-start suggestion began
with the typed word, is its rest what a fresh decode after the word gave?
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from metrics import edit_similarity
from quality_context import SKIPPED, cross_file, use_workspace

from superpie.completion.config import EngineConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest, CompletionResult

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
    root: str = ""  # the project the file belongs to (a package's directory, or the standard library's)
    indent: str = ""  # the removed line's indentation when the cursor is at the line's start (`--cursor line`)


def project_roots() -> list[Path]:
    """The projects sites come from: the standard library and the installed `PACKAGES`."""
    site = Path(sysconfig.get_paths()["purelib"])
    return [Path(sysconfig.get_paths()["stdlib"]), *(site / p for p in PACKAGES if (site / p).is_dir())]


def root_of(path: str) -> str:
    """The project a site's file belongs to (the longest root that holds it)."""
    return str(max((r for r in project_roots() if path.startswith(f"{r}/")), key=lambda r: len(str(r))))


def source_files() -> list[tuple[Path, Path]]:
    """(file, its project's root) for the Python files of the standard library and of a few installed
    packages, in a fixed order."""
    files: list[tuple[Path, Path]] = []
    for root in project_roots():
        for f in sorted(root.rglob("*.py")):
            parts = set(f.relative_to(root).parts)
            if parts & SKIPPED:
                continue
            files.append((f, root))
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


def make_sites(
    count: int, seed: int, before: int, after: int, only: str | None = None, cursor: str = "indent"
) -> list[Site]:
    """`count` sites, one per file, files and lines drawn by `seed`; with `only`, `count` sites of that split
    (the same sites a run of both splits draws: the draws do not depend on `only` nor on `cursor`).

    `cursor`: "indent", after the removed line's indentation (an editor re-indents); "line", at the line's
    start, the model writing the indentation too (a FIM layout whose prefix ends at a line boundary); "word",
    after the line's first word and the character after it (`begun`), the answer the rest."""
    rng = random.Random(seed)
    files = source_files()
    rng.shuffle(files)
    sites: list[Site] = []
    for f, root in files:
        if sum(only in (None, s.split) for s in sites) >= count:
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
        code = lines[i].strip()
        start = begun(code) if cursor == "word" else ""
        head = "".join(lines[max(0, i - before) : i]) + ("" if cursor == "line" else indent + start)
        tail = "\n" + "".join(lines[i + 1 : i + 1 + after])
        sites.append(
            Site(str(f), i, head + tail, len(head), code[len(start):], split_of(f), str(root),
                 indent if cursor == "line" else "")
        )  # fmt: skip
    return [s for s in sites if only in (None, s.split)]


def begun(code: str) -> str:
    """The start of a line a user has typed at `--cursor word`: its first word and the character after it
    when that is a space, `.`, `(` or `[` ("" when the line does not start so, or that is all of it)."""
    m = re.match(r"[A-Za-z_]\w*[ .(\[]", code)
    return m.group(0) if m and len(m.group(0)) < len(code) else ""


def mean_ci(values: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """Mean and its 95% percentile-bootstrap interval."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return sum(values) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


@dataclass(frozen=True)
class Row:
    """One table row: a model, a layout, and whether repository context is on (`model:layout[+ctx]`)."""

    model: str
    layout: str
    context: bool

    @staticmethod
    def parse(spec: str) -> Row:
        """`qwen:fim+ctx` -> Row("qwen", "fim", True)."""
        model, layout = spec.split(":")
        return Row(model, layout.removesuffix("+ctx"), layout.endswith("+ctx"))

    def __str__(self) -> str:
        return f"{self.model}:{self.layout}{'+ctx' if self.context else ''}"


def first_line(result: CompletionResult) -> str:
    """The first line of the best draft, stripped ("" when there is none)."""
    return result.completions[0].text.split("\n")[0].strip() if result.completions else ""


def make_engine(model: str, layout: str, args: argparse.Namespace) -> Engine:
    """A loaded engine for one model and layout, with the run's budgets (one draft, monitors off)."""
    config = EngineConfig()
    config.model.path = MODELS[model]
    config.model.layout = layout
    config.model.dtype = args.dtype
    config.model.threads = args.threads
    config.cache.context_tokens = args.context
    config.cache.fim_suffix_tokens = args.suffix
    config.cache.window_step = args.window_step
    config.monitors.enabled = False
    config.monitors.jedi_budget_ms = args.jedi_ms  # the definitions lookup's budget (context rows)
    config.context.tokens = args.context_tokens
    config.completion.carry = False  # the keystroke below is timed as a decode, even where it types along the answer
    engine = Engine(config)
    print(f"{model}:{layout} loaded in {engine.ensure_loaded() / 1000:.1f} s", file=sys.stderr)
    return engine


def run_site(engine: Engine, row: Row, site: Site, k: int, args: argparse.Namespace) -> dict:
    """One site with one row: the cold completion (a fresh document: sync of its window + decode), then, at
    the first `--keystrokes` sites, one keystroke (the answer's first character typed at the cursor, as a user
    would) completed again on the now-warm cache."""
    if row.context:  # the file at its real path in its own project, so jedi finds the other files' definitions
        use_workspace(engine, site.root)
        uri = Path(site.path).as_uri()
    else:
        engine.config.context.enabled = False
        uri = f"file:///quality/{k}.py"
    t0 = time.perf_counter()
    result = engine.complete(CompletionRequest(uri=uri, text=site.text, offset=site.offset, max_tokens=24))
    ms = (time.perf_counter() - t0) * 1000
    got = first_line(result)
    record = {
        "path": site.path, "line": site.line, "split": site.split, "answer": site.answer, "got": got,
        "exact": float(got == site.answer), "similarity": edit_similarity(got, site.answer), "ms": ms,
        "doc_chars": len(site.text), "encoded": result.cache.encoded,
    }  # fmt: skip
    if k < args.keystrokes:  # the first character of the answer typed (after the indentation, if missing)
        typed = site.indent + site.answer[0]
        text = site.text[: site.offset] + typed + site.text[site.offset :]
        t0 = time.perf_counter()
        key = engine.complete(CompletionRequest(uri, text, site.offset + len(typed), max_tokens=24))
        record |= {"key_ms": (time.perf_counter() - t0) * 1000, "key_got": typed.strip() + first_line(key)}
    if row.context:
        record["context_tokens"] = sum(len(s.ids) for s in engine.repository_context().last)
    engine.close(uri)
    return record


def run_rows(specs: list[str], sites: list[Site], args: argparse.Namespace) -> dict[str, list[dict]]:
    """Every site with every row, the rows interleaved site by site (so a run stopped early leaves every row
    on the same sites, timed under the same load); rows of one model and layout share one engine (`+ctx`
    only turns `context.enabled` on). Each record is appended to `--log-dir`/<row>.jsonl as it comes."""
    rows = [Row.parse(spec) for spec in specs]
    engines: dict[tuple[str, str], Engine] = {}
    for row in rows:
        if (row.model, row.layout) not in engines:
            engines[row.model, row.layout] = make_engine(row.model, row.layout, args)
    records: dict[str, list[dict]] = {spec: [] for spec in specs}
    logged: dict[str, dict[tuple[str, int], dict]] = {spec: {} for spec in specs}  # --resume: sites already done
    for spec in specs if args.resume and args.log_dir is not None else ():
        log = args.log_dir / f"{spec.replace(':', '-')}.jsonl"
        if log.exists():
            logged[spec] = {(r["path"], r["line"]): r for r in map(json.loads, log.read_text().splitlines())}
    for k, site in enumerate(sites):
        for spec, row in zip(specs, rows, strict=True):
            if (site.path, site.line) in logged[spec]:
                records[spec].append(logged[spec][site.path, site.line])
                continue
            records[spec].append(run_site(engines[row.model, row.layout], row, site, k, args))
            if args.log_dir is not None:
                with (args.log_dir / f"{spec.replace(':', '-')}.jsonl").open("a") as f:
                    f.write(json.dumps(records[spec][-1]) + "\n")
        if (k + 1) % 25 == 0:
            ems = " ".join(f"{spec} {sum(r['exact'] for r in recs) / len(recs):.3f}" for spec, recs in records.items())
            print(f"  {k + 1}/{len(sites)} exact: {ems}", file=sys.stderr)
    return records


def pct(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank below), nan when empty."""
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def summary(records: list[dict], split: str) -> dict:
    """Exact match and edit similarity with 95% CIs, cold and keystroke times, over one split."""
    part = [r for r in records if r["split"] == split]
    ms, key = [r["ms"] for r in part], [r["key_ms"] for r in part if "key_ms" in r]
    return {
        "sites": len(part), "exact": mean_ci([r["exact"] for r in part]),
        "similarity": mean_ci([r["similarity"] for r in part]),
        "cold": (pct(ms, 0.5), pct(ms, 0.95)), "key": (pct(key, 0.5), pct(key, 0.95)),
        "tokens": pct([r["encoded"] for r in part if "encoded" in r], 0.5),
    }  # fmt: skip


def ratio_ci(a: list[float], b: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """mean(a) / mean(b) over paired sites, with its 95% paired-bootstrap interval (sites resampled together)."""
    rng = random.Random(seed)
    n = len(a)
    if not n or not sum(b):
        return float("nan"), float("nan"), float("nan")
    ratios = []
    for _ in range(resamples):
        idx = rng.choices(range(n), k=n)
        den = sum(b[i] for i in idx)
        ratios.append(sum(a[i] for i in idx) / den if den else float("inf"))
    ratios.sort()
    return sum(a) / sum(b), ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def compare(rows: dict[str, list[dict]], split: str, a: str, b: str, shown: int = 8) -> None:
    """Row `a` against row `b` on the same sites: paired differences, their ratio, exact wins and losses (the
    first `shown` sites `a` loses listed)."""
    if a not in rows or b not in rows:
        return
    ra = {(r["path"], r["line"]): r for r in rows[a] if r["split"] == split}
    rb = {(r["path"], r["line"]): r for r in rows[b] if r["split"] == split}
    keys = sorted(ra.keys() & rb.keys())
    if not keys:
        return
    ea, eb = [ra[k]["exact"] for k in keys], [rb[k]["exact"] for k in keys]
    dem = mean_ci([x - y for x, y in zip(ea, eb, strict=True)])
    des = mean_ci([ra[k]["similarity"] - rb[k]["similarity"] for k in keys])
    ratio = ratio_ci(ea, eb)
    won, lost = sum(x > y for x, y in zip(ea, eb, strict=True)), sum(x < y for x, y in zip(ea, eb, strict=True))
    print(
        f"{split}: {a} vs {b} ({len(keys)} sites, paired): exact {dem[0]:+.3f} [{dem[1]:+.3f}, {dem[2]:+.3f}], "
        f"ratio {ratio[0]:.2f}x [{ratio[1]:.2f}, {ratio[2]:.2f}]; similarity {des[0]:+.3f} [{des[1]:+.3f}, "
        f"{des[2]:+.3f}]; exact won {won}, lost {lost}"
    )
    for k in [k for k in keys if ra[k]["exact"] < rb[k]["exact"]][:shown]:
        print(f"    lost {Path(k[0]).name}:{k[1] + 1}: {rb[k]['answer']!r} -> {a} wrote {ra[k]['got']!r}")


def main() -> None:
    """Build the sites, run each row, print a table per split, write every record as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=400, help="sites to draw (of `--split` when it is given)")
    ap.add_argument("--split", choices=("tune", "heldout"), default=None, help="only this split's sites")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", type=int, default=40, help="lines of the file above the removed line")
    ap.add_argument("--after", type=int, default=15, help="lines of the file below it")
    ap.add_argument("--context", type=int, default=1024, help="cache.context_tokens")
    ap.add_argument("--suffix", type=int, default=256, help="cache.fim_suffix_tokens")
    ap.add_argument("--window-step", type=int, default=32, help="cache.window_step (the default 256 with a small "
                    "--context would leave the model anywhere from 0 to --context tokens before the cursor)")
    ap.add_argument("--context-tokens", type=int, default=512, help="context.tokens (the +ctx rows)")
    ap.add_argument("--jedi-ms", type=float, default=2000.0, help="the definitions lookup's budget (the +ctx rows)")
    ap.add_argument("--cursor", choices=("indent", "line", "word"), default="indent",
                    help="after the indentation, before it, or after the line's first word")
    ap.add_argument("--keystrokes", type=int, default=1_000_000, help="time a keystroke at the first N sites only")
    ap.add_argument("--dtype", default="fp16w", help="model.dtype, pinned so a change of `auto` cannot mix runs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rows", nargs="+", default=["smollm2:prefix", "qwen:prefix", "qwen:fim"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--log-dir", type=Path, default=None, help="append each row's records here as JSON lines")
    ap.add_argument("--resume", action="store_true", help="keep the sites `--log-dir` already holds, run the rest")
    ap.add_argument("--shard", default="0/1", help="i/n: every n-th site from the i-th (parallel processes)")
    ap.add_argument("--report", type=Path, nargs="+", default=None, help="only summarize these JSON-lines logs")
    ap.add_argument("--carry", type=Path, nargs=2, default=None, metavar=("LINE_START_LOG", "WORD_LOG"),
                    help="only compare a carried line-start answer with a fresh decode after the first word")
    args = ap.parse_args()
    if args.carry:
        carry_report(*([json.loads(ln) for ln in f.read_text().splitlines()] for f in args.carry))
        return
    if args.report:
        report({f.stem: [json.loads(ln) for ln in f.read_text().splitlines()] for f in args.report})
        return
    sites = make_sites(args.sites, args.seed, args.before, args.after, args.split, args.cursor)
    i, n = (int(x) for x in args.shard.split("/"))
    sites = sites[i::n]
    print(f"{len(sites)} sites ({sum(s.split == 'heldout' for s in sites)} held out)", file=sys.stderr)
    started, load = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    rows = run_rows(args.rows, sites, args)
    report(rows)
    print(f"\nstarted {started}, load average {load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))  # (paths as text)


def carry_report(line_start: list[dict], word: list[dict]) -> None:
    """At the sites of both logs: the line-start answer less the typed word (what `completion.carry` shows) vs the
    fresh answer after the word, and both against the real rest of the line."""
    starts = {(r["path"], r["line"]): r for r in line_start}
    pairs = [(starts[(r["path"], r["line"])], r) for r in word if (r["path"], r["line"]) in starts]
    typed_along = []
    for start, after in pairs:
        typed = start["answer"][: len(start["answer"]) - len(after["answer"])]
        assert start["answer"].endswith(after["answer"]), "the same line at both cursors"
        rest = start["got"][len(typed) :]
        if typed and start["got"].startswith(typed) and rest.strip():
            typed_along.append((rest, after["got"], after["answer"]))
    same = sum(rest == fresh for rest, fresh, _ in typed_along)
    carried = mean_ci([float(rest == answer) for rest, _, answer in typed_along])
    fresh = mean_ci([float(fresh == answer) for _, fresh, answer in typed_along])
    print(f"{len(pairs)} sites in both logs; at {len(typed_along)} the line-start answer began with the typed word")
    print(f"there the carried rest equals the fresh decode at {same} of {len(typed_along)}")
    print(f"exact match of the rest: carried {carried[0]:.3f} [{carried[1]:.3f}, {carried[2]:.3f}], "
          f"fresh {fresh[0]:.3f} [{fresh[1]:.3f}, {fresh[2]:.3f}]")  # fmt: skip
    for rest, fresh_got, answer in typed_along:
        if rest != fresh_got:
            print(f"  differs: carried {rest!r}, fresh {fresh_got!r}, real {answer!r}")


def report(rows: dict[str, list[dict]]) -> None:
    """A table per split over the sites every row completed (rows stopped early compare on the same sites), then
    the paired comparisons of the rows present, each over the sites both rows finished (log names: `qwen-fim+ctx`
    for the row `qwen:fim+ctx`)."""
    full = rows  # a pair of rows compares on the sites both finished
    common = set.intersection(*({(r["path"], r["line"]) for r in records} for records in rows.values()))
    rows = {row: [r for r in records if (r["path"], r["line"]) in common] for row, records in rows.items()}
    for split in ("tune", "heldout"):
        if not any(r["split"] == split for records in rows.values() for r in records):
            continue
        print(f"\n{split}: row | sites | exact match [95% CI] | edit similarity [95% CI] | cold p50 / p95 ms | "
              "keystroke p50 / p95 ms | tokens encoded cold (p50)")  # fmt: skip
        for row, records in rows.items():
            s = summary(records, split)
            em, es = s["exact"], s["similarity"]
            print(
                f"{row} | {s['sites']} | {em[0]:.3f} [{em[1]:.3f}, {em[2]:.3f}] | "
                f"{es[0]:.3f} [{es[1]:.3f}, {es[2]:.3f}] | {s['cold'][0]:.0f} / {s['cold'][1]:.0f} | "
                f"{s['key'][0]:.0f} / {s['key'][1]:.0f} | {s['tokens']:.0f}"
            )
        names = sorted(rows)
        for a in names:  # the code model against SmolLM2, FIM against prefix-only, context on against off
            for b in names:
                if a != b and (a.startswith("qwen") and b.startswith("smollm2") or a == b.replace("prefix", "fim")
                               or a == f"{b}+ctx"):  # fmt: skip
                    compare(full, split, a, b)
        if any(name.endswith("+ctx") for name in names):
            cross = {(r["path"], r["line"]) for r in next(iter(rows.values())) if r["split"] == split
                     and cross_file(r["path"], root_of(r["path"]), r["answer"])}  # fmt: skip
            subset = {row: [r for r in records if (r["path"], r["line"]) in cross] for row, records in rows.items()}
            print(f"{split}, the {len(cross)} sites whose line names another file's definition (imported):")
            for row, records in subset.items():
                s = summary(records, split)
                print(f"  {row} | {s['sites']} | exact {s['exact'][0]:.3f} [{s['exact'][1]:.3f}, {s['exact'][2]:.3f}]"
                      f" | similarity {s['similarity'][0]:.3f} [{s['similarity'][1]:.3f}, {s['similarity'][2]:.3f}]")
            for a in names:
                if a.endswith("+ctx") and a.removesuffix("+ctx") in subset:
                    compare(subset, split, a, a.removesuffix("+ctx"))


if __name__ == "__main__":
    main()
