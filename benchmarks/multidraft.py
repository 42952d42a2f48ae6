"""Multi-draft benchmark: what k drafts cost next to one greedy draft, and what they buy, on real code.

Sites come from several real projects: the standard library's top-level modules and the packages
installed in the virtualenv's site-packages (each top-level module or package is one project). The
projects are split once, by a fixed hash of their name (`split_of`), into a TUNING part (about a
third, plus every stdlib module the earlier stdlib-only runs of this benchmark tuned on) and a
HELD-OUT part; settings are chosen on `--split tuning` only, figures are reported on `--split heldout`.
Each sampled project gives one file (cut to its first ~`--doc-tokens` tokens at a line end) and
`--per-file` sites. A site is a real non-blank line: the editor's view is the file with that line's
text removed but its indentation and line break kept (the user pressed Enter and is about to type
the line), the cursor after the indentation, the code after it present; the target is the removed
line. Strategies, all through `Engine.complete` with the same post-processing and ranking:

- greedy, 1 draft (the reference cost);
- superposed, k drafts, verified exactly in one tree-masked forward;
- beam search, width k (tree mask: one forward of k tokens per step);
- k independent chain decodes (the greedy one and k-1 sampled at T=0.8).

The n-gram index of superposed decoding is built over stdlib files of the TUNING split (the
"workspace") plus the open document; no held-out file is in it, nor the files the sites are in.
Cursor positions of one file are visited bottom-up, so each PIE sync's first hunk sits at the cursor.
Each site runs every strategy side by side (their order rotates from site to site); cost is the
time of `Engine.complete` (decode + verify + post-processing; the cache is already in sync), wall
and CPU time, one thread; the machine is shared, so CPU time is the steadier figure. Intervals:
paired bootstrap over sites (95%). Shards (`--shard I/N`) run side by side; `--merge` sums them up.

    nice -n 10 .venv/bin/python benchmarks/multidraft.py --split heldout --projects 52 --per-file 8 \
        --doc-tokens 1024 --runs greedy,beam,superposed --shard 0/3 --tag heldout_0    # and 1/3, 2/3
    .venv/bin/python benchmarks/multidraft.py --runs greedy,beam,superposed --merge benchmarks/out/heldout_?.jsonl
    .venv/bin/python benchmarks/multidraft.py --projects 2 --per-file 3   # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from metrics import edit_similarity

from superpie.completion.config import EngineConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest

OUT = Path(__file__).parent / "out"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
PURELIB = Path(sysconfig.get_paths()["purelib"])
RUNS = {  # name -> (strategy, drafts)
    "greedy": ("greedy", 1),
    "superposed": ("superposed", 4),
    "beam": ("beam", 4),
    "beam_free": ("beam", 4),  # beam search without `decoding.beam_keep_greedy` (the search before it)
    "independent": ("greedy", 4),
}
# the stdlib modules of the earlier stdlib-only runs (seeds 0-5, 10 files each) that set today's defaults
EARLIER_TUNED = {
    *"enum warnings asynchat shutil pickle modulefinder filecmp uuid string gettext".split(),
    *"locale cgi wave cgitb threading datetime asyncore imp compileall ast code bdb smtplib aifc".split(),
    *"tracemalloc argparse platform posixpath queue nntplib tarfile mailcap types tokenize pathlib".split(),
    *"shlex tempfile fileinput statistics configparser traceback optparse sunau functools hashlib bz2".split(),
    *"socketserver random".split(),
}
_STDLIB_SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "site-packages", "this"}
_SITE_SKIPPED = {"superpie", "_distutils_hack", "pip", "setuptools", "pkg_resources"}  # the project itself; shims


def split_of(source: str, name: str) -> str:
    """'tuning' or 'heldout', fixed by the project's name (5 of 16 hash buckets tune)."""
    if source == "stdlib" and name in EARLIER_TUNED:
        return "tuning"
    digest = hashlib.sha256(f"multidraft:{source}/{name}".encode()).hexdigest()
    return "tuning" if int(digest[-1], 16) < 5 else "heldout"


def projects(split: str) -> dict[str, list[Path]]:
    """'source/name' -> the project's .py files of 8-200 KB outside tests, for one split."""
    out: dict[str, list[Path]] = {}
    for source, root, skipped in (("stdlib", STDLIB, _STDLIB_SKIPPED), ("site-packages", PURELIB, _SITE_SKIPPED)):
        for top in sorted(root.iterdir()):
            name = top.name.removesuffix(".py")
            if name in skipped or "." in name or "-" in name or name.startswith("_") or split_of(source, name) != split:
                continue
            files = [top] if top.suffix == ".py" else sorted(top.rglob("*.py")) if top.is_dir() else []
            ok = [f for f in files if not {"test", "tests"} & set(f.parts) and 8_000 <= f.stat().st_size <= 200_000]
            if ok:
                out[f"{source}/{name}"] = ok
    return out


def pick_projects(split: str, n: int, rng: random.Random) -> list[tuple[str, Path]]:
    """n projects of the split, stdlib and site-packages alternating, and one random file of each."""
    by_source: dict[str, list[str]] = {"stdlib": [], "site-packages": []}
    table = projects(split)
    for key in table:
        by_source[key.split("/")[0]].append(key)
    for keys in by_source.values():
        rng.shuffle(keys)
    order = [k for pair in zip(by_source["site-packages"], by_source["stdlib"]) for k in pair]
    longer = max(by_source.values(), key=len)
    order += longer[min(map(len, by_source.values())) :]
    return [(key, rng.choice(table[key])) for key in order[:n]]


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


def tuning_stdlib_files(limit: int) -> list[Path]:
    """Stdlib modules of the tuning split, for the n-gram workspace (no held-out file)."""
    files = [f for key, fs in sorted(projects("tuning").items()) if key.startswith("stdlib/") for f in fs]
    return files[:limit]


def build_engine(args: argparse.Namespace, workspace: Path) -> Engine:
    """An engine as the benchmark runs it: n-gram over `workspace`, fed the document on every request."""
    config = EngineConfig(workspace=str(workspace))
    config.model.path = "smollm2-135m"  # its figures in RESULTS are SmolLM2's; the default depends on the CPU
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
        ngram_by_share=bool(args.ngram_by_share),
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


def run_one(engine: Engine, uri: str, text: str, offset: int, strategy: str, k: int, free: bool = False) -> dict:
    """One request: its completions and what it cost (`free`: beam search without keep_greedy)."""
    keep = engine.config.decoding.beam_keep_greedy
    engine.config.decoding.beam_keep_greedy = keep and not free
    t0, c0 = time.perf_counter(), time.process_time()
    result = engine.complete(CompletionRequest(uri, text, offset, drafts=k, strategy=strategy))
    wall, cpu = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
    engine.config.decoding.beam_keep_greedy = keep
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


def samples(args: argparse.Namespace, engine: Engine, rng: random.Random) -> Iterator[tuple[str, ...]]:
    """(project, uri, document, offset, target, next line) per site, bottom-up within each file."""
    index, count = (int(x) for x in args.shard.split("/"))
    for j, (project, path) in enumerate(pick_projects(args.split, args.projects, rng)[index::count]):
        text = head(engine, path.read_text(encoding="utf-8", errors="replace"), args.doc_tokens)
        lines = text.splitlines(keepends=True)
        chosen = cursor_lines(text, rng, args.per_file)  # drawn even when skipped: later files get the same sites
        for line in chosen if j >= args.from_project else []:
            real = lines[line]
            indent = real[: len(real) - len(real.lstrip())].rstrip("\n")
            start = len("".join(lines[:line]))
            doc = text[:start] + indent + "\n" + text[start + len(real) :]
            after = next((x for x in lines[line + 1 :] if x.strip()), "")
            yield project, path.resolve().as_uri(), doc, str(start + len(indent)), real, after


def bootstrap(rows: list[dict], stat, n: int = 2000, seed: int = 1) -> tuple[float, float]:
    """95% paired bootstrap interval of stat(rows) over sites."""
    rng = random.Random(seed)
    vals = sorted(stat([rows[rng.randrange(len(rows))] for _ in rows]) for _ in range(n))
    return round(vals[int(0.025 * n)], 4), round(vals[int(0.975 * n) - 1], 4)


def _ratio(num, den):
    def f(rs: list[dict]) -> float:
        d = sum(den(r) for r in rs)
        return sum(num(r) for r in rs) / d if d else float("nan")

    return f


def summarize(rows: list[dict], runs: list[str]) -> dict:
    """Per strategy: rates with intervals, and costs relative to greedy on the same sites."""
    out: dict[str, dict] = {}
    for name in runs:
        have = [r for r in rows if name in r and "greedy" in r]
        if have:
            out[name] = _strategy_summary(have, name)
    return out


def _strategy_summary(have: list[dict], name: str) -> dict:
    s: dict = {"n": len(have)}
    for key in ("em_top", "em_best", "es_top", "es_best", "distinct", "repeats_suffix"):
        s[key] = round(statistics.fmean(r[name]["q"][key] for r in have), 4)
    for key in ("em_top", "em_best"):
        s[f"{key}_ci"] = bootstrap(have, lambda rs, key=key: statistics.fmean(r[name]["q"][key] for r in rs))
        s[f"{key}_count"] = int(sum(r[name]["q"][key] for r in have))
    for unit in ("wall_ms", "cpu_ms"):
        s[unit] = round(statistics.fmean(r[name][unit] for r in have), 1)
        cost = _ratio(lambda r, u=unit: r[name][u], lambda r, u=unit: r["greedy"][u])
        s[f"{unit[:-3]}_x_greedy"] = round(cost(have), 3)
        per_site = [r[name][unit] / r["greedy"][unit] for r in have]
        s[f"{unit[:-3]}_x_greedy_median"] = round(statistics.median(per_site), 3)
    s["cpu_x_greedy_ci"] = bootstrap(have, _ratio(lambda r: r[name]["cpu_ms"], lambda r: r["greedy"]["cpu_ms"]))
    s["tokens_top"] = round(statistics.fmean(r[name]["tokens_top"] for r in have), 2)
    if name == "greedy":
        return s

    def g(r: dict) -> float:
        return r["greedy"]["q"]["em_top"]

    for key in ("em_best", "em_top"):
        ratio = _ratio(lambda r, key=key: r[name]["q"][key], g)
        s[f"{key}_x_greedy"] = round(ratio(have), 3)
        s[f"{key}_x_greedy_ci"] = bootstrap(have, ratio)
        diff = lambda rs, key=key: statistics.fmean(r[name]["q"][key] - g(r) for r in rs)  # noqa: E731
        s[f"{key}_minus_greedy"] = round(diff(have), 4)
        s[f"{key}_minus_greedy_ci"] = bootstrap(have, diff)
    s["top_wins_losses_vs_greedy"] = (
        sum(1 for r in have if r[name]["q"]["em_top"] > g(r)),
        sum(1 for r in have if r[name]["q"]["em_top"] < g(r)),
    )
    return s


def _common(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def why_missed(rows: list[dict], name: str = "superposed", against: str = "beam") -> dict:
    """Where `against` holds the real line among its drafts and `name` does not: why `name` missed it.

    Greedy leaves the real line at character c (its common prefix with the line). A draft that goes
    further along the line took the right branch: then it is the line cut short (a prefix of it), or
    it left the line again later (its continuation went wrong). No draft going further: `name` never
    branched where the line leaves greedy's, with fewer than k drafts (pruned) or with k (its branches
    went elsewhere). Also counted: how many of `against`'s hits are the line at its top draft."""
    out: dict[str, int] = {}
    for r in rows:
        want = r["target"].strip()
        if want not in [t.strip() for t in r[against]["texts"]] or want in [t.strip() for t in r[name]["texts"]]:
            continue
        greedy = r["greedy"]["texts"][0].strip() if r["greedy"]["texts"] else ""
        c = _common(greedy, want)
        drafts = [t.strip() for t in r[name]["texts"]]
        further = [d for d in drafts if _common(d, want) > c]
        if further:
            why = "right branch, cut short" if any(want.startswith(d) for d in further) else "right branch, went wrong"
        else:
            why = "never branched there: fewer drafts" if len(drafts) < 4 else "never branched there: k drafts"
        out[why] = out.get(why, 0) + 1
    out["total"] = sum(out.values())
    return out


def branch_points(rows: list[dict], names: tuple[str, ...] = ("beam", "superposed")) -> dict:
    """Where drafts leave the greedy line, next to where real lines do: the share of greedy's text
    (characters) a draft or the real line shares with it before leaving it (only those that differ
    from it), as a mean and as the share that leave it within its first quarter."""
    out: dict[str, dict] = {}
    series: dict[str, list[float]] = {"real line": []}
    for r in rows:
        greedy = r["greedy"]["texts"][0].strip() if r["greedy"]["texts"] else ""
        if not greedy:
            continue
        want = r["target"].strip()
        if want != greedy:
            series["real line"].append(_common(greedy, want) / len(greedy))
        for name in names:
            if name in r:
                others = [t.strip() for t in r[name]["texts"] if t.strip() != greedy]
                series.setdefault(name, []).extend(_common(greedy, t) / len(greedy) for t in others)
    for name, xs in series.items():
        if xs:
            early = sum(x < 0.25 for x in xs) / len(xs)
            out[name] = {"n": len(xs), "mean": round(statistics.fmean(xs), 3), "early": round(early, 3)}
    return out


def tokens_of(engine: Engine, text: str) -> int:
    """Token count of a draft (for the 'same length' context of the cost figures)."""
    return len(engine.lm.tokenizer.encode(text, add_special_tokens=False).ids) if text else 0


class SuperposedTrace:
    """What superposed decoding handed to verification and what verification gave back, per request
    (`--trace 1`): wraps the two names `decoding.strategies` calls, so the engine runs unchanged."""

    def __init__(self) -> None:
        from superpie.completion.decoding import strategies

        self.decoded: list[str] = []
        self.verified: list[str] = []
        decode, check = strategies.superposed_decode, strategies.verify

        def traced_decode(*a, **kw):  # type: ignore[no-untyped-def]
            out = decode(*a, **kw)
            self.decoded = [d.text for d in out.drafts]
            return out

        def traced_verify(*a, **kw):  # type: ignore[no-untyped-def]
            out = check(*a, **kw)
            self.verified = [d.text for d in out]
            return out

        strategies.superposed_decode, strategies.verify = traced_decode, traced_verify

    def take(self) -> dict:
        """The texts of the last superposed request, then forget them."""
        out = {"decoded": self.decoded, "verified": self.verified}
        self.decoded, self.verified = [], []
        return out


def traced_loss(row: dict) -> str | None:
    """Where superposed decoding lost the real line (None: it is among the final drafts): never
    decoded along it past greedy's departure, decoded off it after taking the right branch, decoded
    whole but cut or changed by verification, or verified whole but lost in post-processing/ranking."""
    want = row["target"].strip()
    tr = row["superposed"].get("trace")
    if tr is None or want in [t.strip() for t in row["superposed"]["texts"]]:
        return None
    greedy = row["greedy"]["texts"][0].strip() if row["greedy"]["texts"] else ""
    c = _common(greedy, want)
    decoded = [t.strip() for t in tr["decoded"]]
    if want in decoded:
        return "ranked away" if want in [t.strip() for t in tr["verified"]] else "decoded whole, cut by verify"
    further = [d for d in decoded if _common(d, want) > c]
    if not further:
        return "never branched there" if len(decoded) >= 4 else "never branched there (< k drafts)"
    return "right branch, ended early" if any(want.startswith(d) for d in further) else "right branch, went wrong"


def run(args: argparse.Namespace) -> dict:
    """Run every strategy at every site; return the summary and the per-site rows."""
    rng = random.Random(args.seed)
    trace = SuperposedTrace() if args.trace else None
    runs = [r for r in args.runs.split(",") if r]
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        index, count = (int(x) for x in args.shard.split("/"))
        sites = {f for _, f in pick_projects(args.split, args.projects, random.Random(args.seed))[index::count]}
        for i, p in enumerate(f for f in tuning_stdlib_files(args.workspace_files) if f not in sites):
            shutil.copyfile(p, workspace / f"{i:03d}_{p.name}")  # copies: links out of the workspace are not read
        engine = build_engine(args, workspace)
        engine.ensure_loaded()
        t0 = time.perf_counter()
        engine.workspace.built(engine.lm, engine.config.ngram)
        ngram_ms = (time.perf_counter() - t0) * 1000
        rows = []
        log = (OUT / f"{args.tag}.jsonl").open("w")
        for i, (project, uri, text, off, target, after) in enumerate(samples(args, engine, rng)):
            offset = int(off)
            engine.sync(uri, text, anchor=offset)
            row: dict = {"project": project, "uri": uri, "offset": offset, "target": target}
            for name in runs[i % len(runs) :] + runs[: i % len(runs)]:  # rotate: no strategy always runs first
                strategy, k = RUNS[name]
                out = run_one(engine, uri, text, offset, strategy, k, free=name == "beam_free")
                if trace is not None and name == "superposed":
                    out["trace"] = trace.take()
                out["q"] = score(out["texts"], target, after)
                out["tokens_top"] = tokens_of(engine, out["texts"][0]) if out["texts"] else 0
                row[name] = out
            if trace is not None and "superposed" in row and "greedy" in row:
                row["lost"] = traced_loss(row)
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            shown = {n: row[n]["texts"][:4] for n in runs}
            print(json.dumps({"i": i, "project": project, "target": target.strip()[:60], **shown}), flush=True)
    return {
        "config": dict(vars(args)),
        "ngram_build_ms": round(ngram_ms, 1),
        "projects": sorted({r["project"] for r in rows}),
        "summary": summarize(rows, runs),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="tuning", choices=("tuning", "heldout"))
    parser.add_argument("--projects", type=int, default=40, help="projects sampled (one file each)")
    parser.add_argument("--per-file", type=int, default=4, help="sites per file")
    parser.add_argument("--workspace-files", type=int, default=60, help="tuning-split stdlib files in the n-gram index")
    parser.add_argument("--doc-tokens", type=int, default=1536)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is meaningful)")
    sup, dec = EngineConfig().decoding.superposed, EngineConfig().decoding
    parser.add_argument("--ngram-weight", type=float, default=sup.ngram_weight)
    parser.add_argument("--branch-ratio", type=float, default=sup.branch_ratio)
    parser.add_argument("--weight-temperature", type=float, default=sup.weight_temperature)
    parser.add_argument("--ngram-by-share", type=int, default=int(sup.ngram_by_share))
    parser.add_argument("--top-m", type=int, default=sup.top_m)
    parser.add_argument("--cut-confidence", type=float, default=dec.verify.cut_confidence)
    parser.add_argument(
        "--beam-patience",
        type=float,
        default=dec.beam_patience or 0.0,
        help="beam: steps after the first ended beam, as a share of its steps (0: until k ended)",
    )
    parser.add_argument("--repair", default=dec.verify.repair, choices=("best", "all", "off"))
    parser.add_argument("--repair-tokens", type=int, default=dec.verify.repair_tokens)
    parser.add_argument("--spare", type=int, default=sup.spare, help="superposed")
    parser.add_argument("--exact-lead", type=int, default=int(sup.exact_lead), help="superposed: 1: greedy fed exactly")
    parser.add_argument(
        "--sup-patience",
        type=float,
        default=-1.0 if sup.patience is None else sup.patience,
        help="superposed: steps after the greedy line ended, as a share of its steps (< 0: until they fall behind)",
    )
    parser.add_argument("--monitors", type=int, default=0, help="1: jedi monitors on (as the server runs)")
    parser.add_argument("--runs", default="greedy,superposed,beam")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-project", type=int, default=0, help="skip this shard's first projects (same sites)")
    parser.add_argument("--trace", type=int, default=0, help="1: record superposed drafts before/after verify")
    parser.add_argument("--shard", default="0/1", help="I/N: this process runs every N-th project from the I-th")
    parser.add_argument("--tag", default="multidraft")
    parser.add_argument("--merge", nargs="*", help="only summarize these .jsonl row logs (shards) together")
    args = parser.parse_args()
    if args.merge:
        every = [json.loads(line) for f in args.merge for line in Path(f).read_text().splitlines()]
        rows = list({(r["uri"], r["offset"]): r for r in reversed(every)}.values())  # a site run twice: once
        runs = [r for r in args.runs.split(",") if r]
        missed = why_missed(rows) if {"superposed", "beam", "greedy"} <= set(runs) else {}
        lost = [r["lost"] for r in rows if r.get("lost")]
        missed["traced"] = {why: lost.count(why) for why in sorted(set(lost))}
        missed["branch_points"] = branch_points(rows)
        print(json.dumps({"sites": len(rows), "summary": summarize(rows, runs), "superposed_missed": missed}, indent=1))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (OUT / f"{args.tag}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({"summary": result["summary"], "ngram_build_ms": result["ngram_build_ms"]}, indent=1))


if __name__ == "__main__":
    main()
