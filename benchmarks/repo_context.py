"""Repository context on vs off, on the sites that need another file: single-line infilling where the removed
line names something defined in another file of the same project (and not in its own file).

Two rules pick the sites (`--rule`):
- `imported`: the line uses a name its file imports (`from ... import name`) and another file defines at
  module level; the model already sees the name in the import, so context can add its signature only;
- `unseen`: the line names something another file of the project defines (a module-level name, a class's
  method or attribute, an attribute `self.x = ...` sets) that the text before the cursor never names, and
  that is not a builtin or a method of a builtin type; without context the model can only guess it.

Projects: installed packages, each one a workspace (its directory). A site is a single-line statement
(benchmarks/quality.py's rule) whose identifiers include a name the site's file imports (`from ... import
name`) and another file of the package defines at module level (a function, class or assignment). The
document is the file up to the removed line (its indentation kept, the cursor after it) and `--after`
lines below it, at the file's real path, so jedi resolves its imports (relative ones too); the model sees
the window of `--window` tokens around the cursor. Split by package: the `TUNE` packages were used while
building this benchmark (and for nothing else), the others are held out; the held-out table is the figure.

Both rows run the real engine in one process (the same model, the same sites, one draft, inline, monitors
off), differing only in `context.enabled`; the definitions lookup has a budget of `--jedi-ms` (questions
not asked by then are skipped; one already asked runs to its end), and the recent-activity memory is
cleared per site, so what context adds here is the definitions of the names near the cursor and of the
names the file imports, not the previous site's region.

    python benchmarks/repo_context.py --sites 400 --log /tmp/repo_context.jsonl
    python benchmarks/repo_context.py --report /tmp/repo_context.jsonl
    python benchmarks/repo_context.py --rule unseen --model qwen2.5-coder-0.5b --split heldout --shard 0/2 ...
"""

from __future__ import annotations

import argparse
import ast
import builtins
import io
import json
import os
import random
import re
import sys
import sysconfig
import time
import tokenize
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metrics import edit_similarity
from quality import mean_ci, single_line_statements
from quality_context import use_workspace
from tokenizers import Tokenizer

from superpie.completion.config import EngineConfig
from superpie.completion.context.activity import RecentActivity
from superpie.completion.context.builder import RepositoryContext
from superpie.completion.context.select import Snippet
from superpie.completion.engine import Engine
from superpie.completion.model.catalog import MODELS
from superpie.completion.model.loading import converted_dir
from superpie.completion.request import CompletionRequest

TUNE = ("click", "h11")
# packages whose imports lead jedi into torch or numpy (accelerate, gguf, huggingface_hub) are left out: one
# lookup there took minutes, and a jedi question cannot be stopped once asked
HELDOUT = ("jedi", "pygls", "lsprotocol", "cattrs", "anyio", "jinja2", "fsspec", "httpx2", "parso", "packaging",
           "platformdirs", "tqdm", "watchdog", "markdown_it", "pydantic", "rich", "pygments", "yaml")  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMON = set(dir(builtins)).union(*(dir(t) for t in (object, dict, list, str, bytes, set, int, float, tuple)))


@dataclass(frozen=True)
class Site:
    """One removed line of a package's file, and the names it uses that another file defines."""

    root: str
    path: str
    line: int
    text: str
    offset: int
    answer: str
    names: tuple[str, ...]
    split: str


def defined_names(tree: ast.Module) -> set[str]:
    """Names a file defines at module level (functions, classes, assignments)."""
    out: set[str] = set()
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            out |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {n for n in out if len(n) > 3 and not (n.startswith("__") and n.endswith("__"))}


def code_names(line: str) -> set[str]:
    """The identifiers a line of code uses, not the words of its strings and comments."""
    try:
        toks = tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline)
        return {t.string for t in toks if t.type == tokenize.NAME}
    except (tokenize.TokenError, SyntaxError):
        return set()


def member_names(tree: ast.Module) -> set[str]:
    """Names a file defines anywhere: functions, classes, methods, assignments, attributes of `self`."""
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            for t in n.targets if isinstance(n, ast.Assign) else [n.target]:
                if isinstance(t, ast.Name):
                    out.add(t.id)
                elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    out.add(t.attr)
    return {n for n in out if len(n) > 3 and not (n.startswith("__") and n.endswith("__")) and n not in _COMMON}


def imported_names(tree: ast.Module) -> set[str]:
    """Names a file binds by `from ... import name` (what it takes from elsewhere)."""
    return {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}


def package_sites(root: Path, split: str, rng: random.Random, per_file: int, after: int, rule: str) -> list[Site]:
    """Sites of one package: lines naming something only another of its files defines (`rule`: module docstring)."""
    sources: dict[Path, str] = {}
    trees: dict[Path, ast.Module] = {}
    for f in sorted(root.rglob("*.py")):
        if "tests" in f.relative_to(root).parts or "test" in f.relative_to(root).parts:
            continue
        try:
            text = f.read_text(encoding="utf-8")
            if len(text) < 200_000:
                trees[f] = ast.parse(text)
                sources[f] = text
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
    where: dict[str, set[Path]] = defaultdict(set)
    for f, tree in trees.items():
        for name in defined_names(tree) if rule == "imported" else member_names(tree):
            where[name].add(f)
    sites: list[Site] = []
    for f, text in sources.items():
        lines = text.splitlines(keepends=True)
        imported = imported_names(trees[f])
        picks = []
        for i in single_line_statements(text):
            if i < 10 or not 8 <= len(lines[i].strip()) <= 100:
                continue
            used = set(_IDENT.findall(lines[i]))
            if rule == "imported":
                other = sorted(n for n in used & imported if where.get(n) and f not in where[n])
            else:
                seen = set(_IDENT.findall("".join(lines[:i])))
                other = sorted(n for n in code_names(lines[i]) - seen if where.get(n) and f not in where[n])
            if other:
                picks.append((i, tuple(other)))
        for i, names in rng.sample(picks, min(per_file, len(picks))):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            head = "".join(lines[:i]) + indent
            tail = "\n" + "".join(lines[i + 1 : i + 1 + after])
            sites.append(Site(str(root), str(f), i, head + tail, len(head), lines[i].strip(), names, split))
    return sites


def make_sites(count: int, seed: int, per_file: int, after: int, rule: str = "imported") -> list[Site]:
    """Up to `count` sites over the packages, shuffled by `seed`, the held-out ones and the tune ones mixed."""
    site_dir = Path(sysconfig.get_paths()["purelib"])
    rng = random.Random(seed)
    sites: list[Site] = []
    for split, names in (("tune", TUNE), ("heldout", HELDOUT)):
        for name in names:
            if (site_dir / name).is_dir():
                sites += package_sites(site_dir / name, split, rng, per_file, after, rule)
    rng.shuffle(sites)
    return sites[:count]


def run(
    sites: list[Site],
    window: int,
    tokens: int,
    jedi_ms: float,
    log: Path | None,
    model: str = "smollm2-135m",
    threads: int | None = None,
    dtype: str = "fp16w",
) -> list[dict]:
    """Each site completed with context off and on, by one engine; a record per site."""
    config = EngineConfig()
    config.model.path = model
    config.model.threads = threads
    config.model.dtype = dtype  # pinned, so a change of `auto` cannot mix runs
    config.cache.context_tokens = window
    config.monitors.enabled = False
    config.monitors.jedi_budget_ms = jedi_ms
    config.context.tokens = tokens
    engine = Engine(config)
    print(f"loaded in {engine.ensure_loaded() / 1000:.1f} s", file=sys.stderr)
    records = []
    for k, site in enumerate(sites):
        rec: dict = {"path": site.path, "line": site.line, "split": site.split, "answer": site.answer,
                     "names": site.names}  # fmt: skip
        for row in ("off", "on"):
            use_workspace(engine, site.root, enabled=row == "on")
            uri = Path(site.path).as_uri()
            t0 = time.perf_counter()
            result = engine.complete(CompletionRequest(uri=uri, text=site.text, offset=site.offset, max_tokens=24))
            ms = (time.perf_counter() - t0) * 1000
            engine.close(uri)
            got = result.completions[0].text.split("\n")[0].strip() if result.completions else ""
            rec[row] = {"got": got, "exact": float(got == site.answer),
                        "similarity": edit_similarity(got, site.answer), "ms": ms}  # fmt: skip
            if row == "on":
                rec["context_tokens"] = sum(len(s.ids) for s in engine.repository_context().last)
                rec["snippets"] = [s.path for s in engine.repository_context().last]
                rec["in_context"] = in_context(site.names, engine.repository_context().last)
        records.append(rec)
        if log is not None:
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        if (k + 1) % 20 == 0:
            off = sum(r["off"]["exact"] for r in records) / len(records)
            on = sum(r["on"]["exact"] for r in records) / len(records)
            print(f"  {k + 1}/{len(sites)} exact off {off:.3f} on {on:.3f}", file=sys.stderr)
    return records


def in_context(names: tuple[str, ...], snippets: list[Snippet]) -> list[str]:
    """The site's other-file names that the chosen snippets show (as identifiers)."""
    shown = set().union(*(_IDENT.findall(s.code) for s in snippets)) if snippets else set()
    return [n for n in names if n in shown]


def coverage(sites: list[Site], log: Path, tokens: int, jedi_ms: float, model: str, out: Path) -> None:
    """For the sites of an earlier run's `log`: the context alone (no model), and whether it showed the
    site's other-file names; each record of `log` is written to `out` with `in_context` added. The context
    is chosen again (one `RepositoryContext` per project, its recent activity cleared per site, as in the
    run), so a jedi lookup that the budget cut may differ from the run's."""
    by_place = {(s.path, s.line): s for s in sites}
    contexts: dict[str, RepositoryContext] = {}
    folder = converted_dir(MODELS[model]) if model in MODELS else Path(model)  # converted by an earlier run
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        site = by_place[(rec["path"], rec["line"])]
        if site.root not in contexts:  # one per project: jedi's project and the definitions cache persist
            contexts[site.root] = RepositoryContext(site.root)
        context = contexts[site.root]
        context.activity = RecentActivity()
        context.ids(tokenizer, Path(site.path).as_uri(), site.text, site.offset, tokens, jedi_ms / 1000)
        rec["in_context"] = in_context(site.names, context.last)
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")


def names_hit(record: dict, row: str) -> float:
    """The share of the site's other-file names that the completion of `row` names (as identifiers)."""
    got = set(_IDENT.findall(record[row]["got"]))
    return sum(n in got for n in record["names"]) / len(record["names"])


Measure = Callable[[dict, str], float]  # (record, "off" | "on") -> a site's score
MEASURES: dict[str, Measure] = {
    "exact": lambda r, row: r[row]["exact"],
    "similarity": lambda r, row: r[row]["similarity"],
    "names named": names_hit,
}


def paired(part: list[dict], label: str, indent: str = "") -> None:
    """Print on - off of one measure over `part`, paired by site, with won/lost counts."""
    value = MEASURES[label]
    d = mean_ci([value(r, "on") - value(r, "off") for r in part])
    won = sum(value(r, "on") > value(r, "off") for r in part)
    lost = sum(value(r, "on") < value(r, "off") for r in part)
    print(f"{indent}on - off (paired) {label}: {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]; won {won}, lost {lost}")


def report(records: list[dict]) -> None:
    """Per split: exact match, edit similarity and the other-file names named, off/on with 95% CIs, and the
    paired differences; with `in_context` (a --coverage-of log), the same on the sites whose context showed
    a needed name."""
    for split in ("tune", "heldout"):
        part = [r for r in records if r["split"] == split]
        if not part:
            continue
        print(f"\n{split}: {len(part)} sites ({sum(1 for r in part if r['snippets'])} got a snippet)")
        print("row | exact match [95% CI] | edit similarity [95% CI] | names named [95% CI] | p50 / p95 ms per site")
        for row in ("off", "on"):
            cis = [mean_ci([MEASURES[m](r, row) for r in part]) for m in MEASURES]
            ms = sorted(r[row]["ms"] for r in part)
            print(f"context {row} | " + " | ".join(f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]" for c in cis)
                  + f" | {ms[len(ms) // 2]:.0f} / {ms[min(len(ms) - 1, int(0.95 * len(ms)))]:.0f}")  # fmt: skip
        for label in MEASURES:
            paired(part, label)
        if all("in_context" in r for r in part):
            shown = [r for r in part if r["in_context"]]
            print(f"the context showed a needed name at {len(shown)} of {len(part)} sites; there:")
            for row in ("off", "on"):
                em, nh = (mean_ci([MEASURES[m](r, row) for r in shown]) for m in ("exact", "names named"))
                print(f"  context {row}: exact {em[0]:.3f} [{em[1]:.3f}, {em[2]:.3f}], "
                      f"names named {nh[0]:.3f} [{nh[1]:.3f}, {nh[2]:.3f}]")  # fmt: skip
            for label in ("exact", "names named"):
                paired(shown, label, indent="  ")


def main() -> None:
    """Build the sites, complete each with context off and on, print the tables, write the records."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-file", type=int, default=2, help="sites drawn per file at most")
    ap.add_argument("--after", type=int, default=15, help="lines of the file below the removed line")
    ap.add_argument("--window", type=int, default=512, help="cache.context_tokens: the document's window")
    ap.add_argument("--tokens", type=int, default=1024, help="context.tokens")
    ap.add_argument("--jedi-ms", type=float, default=2000.0, help="the definitions lookup's budget (inf: none)")
    ap.add_argument("--log", type=Path, default=None, help="append each site's record here (JSON lines)")
    ap.add_argument("--report", type=Path, default=None, help="only summarize this JSON-lines log")
    ap.add_argument("--coverage-of", type=Path, default=None, help="this log's sites: the context alone, to --log")
    ap.add_argument("--model", default="smollm2-135m", help="a named model (catalog) or a model directory")
    ap.add_argument("--rule", choices=("imported", "unseen"), default="imported", help="which lines are sites")
    ap.add_argument("--split", choices=("all", "tune", "heldout"), default="all", help="only this split's sites")
    ap.add_argument("--shard", default="0/1", help="i/n: every n-th site from the i-th (parallel processes)")
    ap.add_argument("--dtype", default="fp16w", help="model.dtype")
    ap.add_argument("--threads", type=int, default=None, help="model.threads (None: the engine's choice)")
    args = ap.parse_args()
    if args.report:
        report([json.loads(ln) for ln in args.report.read_text().splitlines()])
        return
    if args.coverage_of:
        sites = make_sites(100_000, args.seed, args.per_file, args.after, args.rule)
        coverage(sites, args.coverage_of, args.tokens, args.jedi_ms, args.model, args.log or Path("coverage.jsonl"))
        return
    sites = make_sites(100_000, args.seed, args.per_file, args.after, args.rule)
    sites = [s for s in sites if args.split in ("all", s.split)][: args.sites]
    i, n = (int(x) for x in args.shard.split("/"))
    sites = sites[i::n]
    print(f"{len(sites)} sites ({sum(s.split == 'heldout' for s in sites)} held out)", file=sys.stderr)
    started, load = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    records = run(sites, args.window, args.tokens, args.jedi_ms, args.log, args.model, args.threads, args.dtype)
    report(records)
    print(f"\nstarted {started}, load average {load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
