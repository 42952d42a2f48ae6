"""Do the monitors help on code nobody tuned them on? Next identifier after `name.`, monitors on vs off.

Sites are every `name.attr` in code (not strings, comments or import lines; `mgd_deref.candidate_sites`)
of real projects: the running interpreter's standard library (each top-level module or package a
project) and the packages installed in the venv (each top-level package a project). The split is by
project and fixed: the projects of `mgd_deref.FILES`, on which the monitor settings were tuned, are
the tuning split; every other project is held out, and only held-out sites are run here (`--split
tune` runs the tuning projects instead, for tuning). Unlike
mgd_deref, sites are NOT filtered to those jedi resolves: an object jedi does not know is exactly where
a monitor can hurt.

Each held-out project gives up to `--files-per-project` files (each cut to its first `--doc-tokens`
tokens at a line end, as mgd_deref does). The document at a site is what an editor holds: that head
with the rest of the site's line removed after the cursor and the lines below kept, so jedi reads
the whole class around a `self.` (the model reads the prefix in the default layout). Each file
gives `--per-file` random sites (the random
sample: the headline figures) and up to `--unseen-per-file` more sites whose attribute is spelled
nowhere in the prompt (not as an identifier): with the random sample's unseen sites they make the
"unseen" subset, where the model cannot copy the name and only the analysis can know it.

Each site is completed twice by `--model` (SmolLM2 unless named: the default model depends on the CPU), in
the headless front doors' deterministic mode (jedi without a time budget), greedy, one line,
`--max-tokens`, monitors off then on, through `Engine.complete`. What the analysis said at the site is
the monitors' own state there (the same jedi question, answered from its cache): known (a positive
answer, the draft is constrained), silent (object_only / dynamic: see analysis.monitors), nothing, or
fell back. Reported: next-identifier exact match off vs on with Wilson 95% intervals, the paired
difference (wins, losses) with its 95% interval, by analysis state; valid first identifiers where the
analysis knew the type; every loss (off right, on wrong) with its reason.

    nice -n 10 .venv/bin/python benchmarks/monitor_quality.py                # ~600 held-out sites
    nice -n 10 .venv/bin/python benchmarks/monitor_quality.py --projects 6   # smoke run
    # n processes (--shard i/n, --out run_i.json), then the merged tables:
    .venv/bin/python benchmarks/monitor_quality.py --report run_0.json run_1.json
    # another code version's monitors on the same sites (--follow each run's log, with that version first
    # on PYTHONPATH), then before vs after:
    .venv/bin/python benchmarks/monitor_quality.py --report run_0.json run_1.json --compare old_0.log old_1.log
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from deadline import past  # noqa: E402
from mgd_deref import FILES, PURELIB, STDLIB, Site, candidate_sites, first_identifier, head, is_valid  # noqa: E402

from superpie.analysis.monitors import Analyzer, AnalyzerConfig, MonitorState  # noqa: E402
from superpie.completion.config import EngineConfig  # noqa: E402
from superpie.completion.engine import Engine  # noqa: E402
from superpie.completion.request import CompletionRequest  # noqa: E402
from superpie.lsp.replay import deterministic_config  # noqa: E402

OUT = Path(__file__).parent / "out"
# left out for time alone: jedi takes tens of seconds to load them (torch: 20 s for `torch.`), and a
# tiny vendored or generated tree is no project (pandas_sns_*: data, _distutils_hack: a shim)
SKIPPED = {"torch", "torchgen", "functorch", "transformers", "sympy", "_distutils_hack", "superpie"}
_STDLIB_SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "site-packages", "__pycache__"}
_IDENT = re.compile(r"[^\W\d]\w*")
Z95 = 1.959963984540054


def project_of(path: Path) -> tuple[str, str]:
    """(source, project): ("stdlib", top-level module) or ("site-packages", top-level package)."""
    if path.is_relative_to(PURELIB):
        return "site-packages", path.relative_to(PURELIB).parts[0].removesuffix(".py")
    return "stdlib", path.relative_to(STDLIB).parts[0].removesuffix(".py")


TUNING = {project_of(f) for f in FILES}


def held_out_projects(tuning: bool = False) -> dict[tuple[str, str], list[Path]]:
    """Every held-out project (tuning: every tuning project instead) and its .py files (at least 2 KB:
    a site needs 1000 chars of context)."""
    projects: dict[tuple[str, str], list[Path]] = {}
    for root, skipped in ((STDLIB, _STDLIB_SKIPPED), (PURELIB, SKIPPED)):
        for top in sorted(root.iterdir()):
            name = top.name.removesuffix(".py")
            if name in skipped or "." in name or name.startswith("__") or (root, name) == (STDLIB, "dist-packages"):
                continue
            key = project_of(top)
            if (key in TUNING) != tuning:
                continue
            files = [top] if top.suffix == ".py" else sorted(top.rglob("*.py")) if top.is_dir() else []
            for f in files:
                parts = f.relative_to(root).parts
                if "tests" in parts or "test" in parts:
                    continue
                try:
                    if f.stat().st_size < 2048:
                        continue
                except OSError:
                    continue
                projects.setdefault(key, []).append(f)
    return projects


@dataclass
class HeldOutSite:
    """A site and how it was sampled."""

    site: Site
    project: tuple[str, str]
    random_sample: bool  # drawn among all the file's sites (False: an extra unseen site)
    unseen: bool  # the attribute is spelled nowhere in the prompt as an identifier
    record: dict = field(default_factory=dict)


def sample_sites(engine: Engine, args: argparse.Namespace) -> list[HeldOutSite]:
    """Files of held-out projects, and per file random sites plus extra unseen ones, in file order."""
    rng = random.Random(args.seed)
    projects = held_out_projects(args.split == "tune")
    keys = sorted(projects)
    rng.shuffle(keys)
    out: list[HeldOutSite] = []
    used = 0
    for key in keys:
        if used >= args.projects:
            break
        files = list(projects[key])
        rng.shuffle(files)
        taken = 0
        for f in files:
            if taken >= args.files_per_project:
                break
            try:
                text = head(engine, f.read_text(encoding="utf-8"), args.doc_tokens)
            except (UnicodeDecodeError, OSError):
                continue
            pool = candidate_sites(f, text)
            if len(pool) < args.per_file:
                continue
            rng.shuffle(pool)
            chosen = [HeldOutSite(s, key, True, False) for s in pool[: args.per_file]]
            extra = [HeldOutSite(s, key, False, False) for s in pool[args.per_file :]]
            for h in chosen + extra:
                h.unseen = h.site.attr not in set(_IDENT.findall(h.site.text[: h.site.offset]))
            chosen += [h for h in extra if h.unseen][: args.unseen_per_file]
            out += sorted(chosen, key=lambda h: h.site.offset)
            taken += 1
        used += taken > 0
    return out


def analysis_kind(state: MonitorState | None) -> str:
    """What the analysis said at a site: known, a silent reason, nothing, fell_back, or other (not a dereference)."""
    if state is None:
        return "nothing"
    if state.monitor != "dereference":
        return "other"
    if state.fell_back:
        return "fell_back"
    return state.silent or "known"


def document(site: Site) -> str:
    """What an editor holds at the site: the file's head with the rest of the site's line removed after
    the cursor and every line below it kept (jedi sees them: attributes assigned later in a class)."""
    eol = site.text.find("\n", site.offset)
    return site.text[: site.offset] + ("" if eol < 0 else site.text[eol:])


def open_at(engine: Engine, site: Site, opened: set[str]) -> tuple[str, str]:
    """Sync the document to the site's cut, as an editor would; (uri, document). The cursor is `site.offset`."""
    doc = document(site)
    uri = Path(site.path).as_uri()
    opened.add(uri)  # jedi needs no warm-up without a budget
    engine.sync(uri, doc, anchor=site.offset)
    return uri, doc


def off_and_on(engine: Engine, site: Site, uri: str, doc: str, max_tokens: int) -> dict[str, dict]:
    """The completion with monitors off and on: its text, first identifier and whether that is the attribute."""
    out = {}
    for on in (False, True):
        req = CompletionRequest(uri, doc, site.offset, max_tokens=max_tokens, drafts=1, multiline=False, monitors=on)
        result = engine.complete(req)
        text = result.completions[0].text if result.completions else ""
        name = first_identifier(text)
        out["on" if on else "off"] = {"text": text, "identifier": name, "match": name == site.attr}
    return out


def run_site(engine: Engine, h: HeldOutSite, max_tokens: int, opened: set[str]) -> dict:
    """Complete one site with monitors off and on; what the analysis said there."""
    site = h.site
    uri, doc = open_at(engine, site, opened)
    prompt = doc[: site.offset]
    analyzer = engine.monitor_runtime().analyzer
    # the monitors' own question (answered from jedi's cache in the run)
    state = analyzer.monitors(site.path, doc[site.offset :]).trigger(prompt)
    kind = analysis_kind(state)
    names = state.candidates if state is not None else ()
    rec: dict = {
        "path": site.path,
        "line": prompt.count("\n") + 1,
        "offset": site.offset,
        "project": "/".join(h.project),
        "base": site.base,
        "attr": site.attr,
        "random_sample": h.random_sample,
        "unseen": h.unseen,
        "kind": kind,
        "candidates": len(names),
        "attr_listed": site.attr in names,
        # the attribute is spelled after the cursor (jedi reads it there; the prefix-only model does not)
        "spelled_after": site.attr in set(_IDENT.findall(doc[site.offset :])),
    }
    rec.update(off_and_on(engine, site, uri, doc, max_tokens))
    for run in ("off", "on"):
        out = rec[run]
        name = out["identifier"]
        out["valid"] = bool(name) and kind == "known" and is_valid(name, names, out["text"], 0)
    return rec


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of a proportion, in percent."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + Z95**2 / n
    c = (p + Z95**2 / (2 * n)) / d
    r = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / d
    return (round(100 * (c - r), 1), round(100 * (c + r), 1))


def paired(records: list[dict]) -> dict:
    """Match off vs on on the same sites: rates with Wilson intervals, wins/losses, the difference's 95% interval.

    The difference of paired proportions is (wins - losses) / n; its standard error is
    sqrt((wins + losses) / n - diff^2) / sqrt(n) (the matched-pairs normal interval).
    """
    n = len(records)
    off = sum(r["off"]["match"] for r in records)
    on = sum(r["on"]["match"] for r in records)
    wins = sum(r["on"]["match"] and not r["off"]["match"] for r in records)
    losses = sum(r["off"]["match"] and not r["on"]["match"] for r in records)
    if n == 0:
        return {"n": 0}
    diff = (wins - losses) / n
    se = math.sqrt(max((wins + losses) / n - diff * diff, 0.0) / n)
    return {
        "n": n,
        "off_pct": round(100 * off / n, 1),
        "off_ci": wilson(off, n),
        "on_pct": round(100 * on / n, 1),
        "on_ci": wilson(on, n),
        "wins": wins,
        "losses": losses,
        "diff_pts": round(100 * diff, 1),
        "diff_ci": (round(100 * (diff - Z95 * se), 1), round(100 * (diff + Z95 * se), 1)),
    }


def loss_reason(r: dict) -> str:
    """Why the monitors turned a correct unconstrained identifier into a wrong one."""
    if r["kind"] != "known":
        return f"analysis {r['kind']}: the monitor did not constrain, decoding differed anyway"
    if not r["attr_listed"]:
        return f"jedi's list ({r['candidates']} names) lacks the attribute: the type was inferred wrong or incomplete"
    return "the attribute was allowed; the constrained lookahead preferred another listed name"


def summarize(records: list[dict]) -> dict:
    """Every figure of the run (all held out)."""
    rand = [r for r in records if r["random_sample"]]
    unseen = [r for r in records if r["unseen"]]
    kinds = Counter(r["kind"] for r in rand)
    known = [r for r in records if r["kind"] == "known"]
    out: dict = {
        "sites_run": len(records),
        "random_sample": paired(rand),
        "unseen": paired(unseen),
        "unseen_in_random_sample": sum(r["unseen"] for r in rand),
        "by_kind_random_sample": {k: paired([r for r in rand if r["kind"] == k]) for k in sorted(kinds)},
        "by_source_random_sample": {
            s: paired([r for r in rand if r["project"].startswith(s)]) for s in ("stdlib", "site-packages")
        },
        "projects": len({r["project"] for r in records}),
        "files": len({r["path"] for r in records}),
        "valid_where_known": {
            "sites": len(known),
            "off_pct": round(100 * sum(r["off"]["valid"] for r in known) / len(known), 1) if known else None,
            "on_pct": round(100 * sum(r["on"]["valid"] for r in known) / len(known), 1) if known else None,
            "on_invalid": [f"{r['path']}:{r['line']} {r['on']['identifier']}" for r in known if not r["on"]["valid"]],
        },
        "losses": [
            {
                "site": f"{r['project']} {Path(r['path']).name}:{r['line']} {r['base']}.{r['attr']}",
                "off": r["off"]["identifier"],
                "on": r["on"]["identifier"],
                "kind": r["kind"],
                "reason": loss_reason(r),
            }
            for r in records
            if r["off"]["match"] and not r["on"]["match"]
        ],
    }
    return out


def _row(label: str, p: dict) -> str:
    if not p.get("n"):
        return f"| {label} | 0 | | | | |"
    return (
        f"| {label} | {p['n']} | {p['off_pct']} [{p['off_ci'][0]}, {p['off_ci'][1]}] "
        f"| {p['on_pct']} [{p['on_ci'][0]}, {p['on_ci'][1]}] | {p['wins']} / {p['losses']} "
        f"| {p['diff_pts']:+} [{p['diff_ci'][0]:+}, {p['diff_ci'][1]:+}] |"
    )


def markdown(summary: dict) -> str:
    """The figures as the tables of benchmarks/RESULTS.md."""
    lines = [
        "| held-out sites | n | match off % [95% CI] | match on % [95% CI] | wins / losses | on - off, pts [95% CI] |",
        "|---|---|---|---|---|---|",
        _row("random sample, all", summary["random_sample"]),
        *(_row(f"random sample, {k}", p) for k, p in summary["by_source_random_sample"].items()),
        *(_row(f"random sample, analysis: {k}", p) for k, p in summary["by_kind_random_sample"].items()),
        _row("unseen attribute (random + extra)", summary["unseen"]),
    ]
    v = summary["valid_where_known"]
    lines += [
        "",
        f"Valid first identifier where jedi knew the type ({v['sites']} sites, all run): "
        f"off {v['off_pct']} %, on {v['on_pct']} % (invalid with monitors on: {len(v['on_invalid'])}).",
        "",
        f"Losses (off right, on wrong), all {summary['sites_run']} sites run: {len(summary['losses'])}",
        "",
        "| site | off | on | analysis | reason |",
        "|---|---|---|---|---|",
        *(f"| `{x['site']}` | `{x['off']}` | `{x['on']}` | {x['kind']} | {x['reason']} |" for x in summary["losses"]),
    ]
    return "\n".join(lines)


def rerun(engine: Engine, records: list[dict], kinds: set[str], args: argparse.Namespace) -> list[dict]:
    """The sites of a finished run whose analysis kind is in `kinds`, completed again off and on.

    Run with another version of the package first on the path (the code before a change) to see what
    that version's monitors did on the same sites; the analysis kind is the finished run's.
    """
    texts: dict[str, str] = {}
    seen: Counter[tuple] = Counter()
    out = []
    opened: set[str] = set()
    for r in records:
        key = (r["path"], r["line"], r["base"], r["attr"])
        seen[key] += 1
        if r["kind"] not in kinds:
            continue
        if r["path"] not in texts:
            texts[r["path"]] = head(engine, Path(r["path"]).read_text(encoding="utf-8"), args.doc_tokens)
        text = texts[r["path"]]
        if "offset" in r:
            offset = r["offset"]
        else:  # a run from before offsets were recorded: the n-th such site on its line
            same = [
                c.offset
                for c in candidate_sites(Path(r["path"]), text)
                if (c.base, c.attr, text[: c.offset].count("\n") + 1) == (r["base"], r["attr"], r["line"])
            ]
            offset = sorted(same)[seen[key] - 1]
        site = Site(r["path"], text, offset, r["base"], r["attr"])
        out.append(_again(engine, site, r, opened, args.max_tokens))
    return out


def _again(engine: Engine, site: Site, meta: dict, opened: set[str], max_tokens: int) -> dict:
    uri, doc = open_at(engine, site, opened)
    again = {k: meta[k] for k in ("path", "line", "project", "base", "attr", "random_sample", "unseen", "kind")}
    again.update(off_and_on(engine, site, uri, doc, max_tokens))
    off, on = again["off"]["identifier"], again["on"]["identifier"]
    print(f"  {meta['project']} {site.base}.{site.attr} {meta['kind']} off={off!r} on={on!r}", flush=True)
    return again


_LOG_LINE = re.compile(r"^  \[(\d+)/\d+\] \S+ (\S+) (\S+)  off=", re.MULTILINE)


def follow(engine: Engine, log: Path, kinds: set[str], args: argparse.Namespace) -> list[dict]:
    """`rerun` while a run is going: its sites sampled again (the same seed and options give the same
    sites in the same order), each completed when the run's log shows its analysis kind is in `kinds`.
    Stops when the run printed its summary, or after 10 minutes without a new site in the log."""
    sites = shard(sample_sites(engine, args), args.shard)
    out: list[dict] = []
    opened: set[str] = set()
    last = time.monotonic()
    for i, h in enumerate(sites, 1):
        while True:
            text = log.read_text()
            kinds_seen = {int(m.group(1)): m.group(3) for m in _LOG_LINE.finditer(text)}
            names = {int(m.group(1)): m.group(2) for m in _LOG_LINE.finditer(text)}
            if i in kinds_seen or '"sites_run"' in text or max(kinds_seen, default=0) > i:
                break
            if time.monotonic() - last > 600:
                return out
            time.sleep(5)
        last = time.monotonic()
        kind = kinds_seen.get(i)
        if kind not in kinds:
            continue
        if names[i] != f"{h.site.base}.{h.site.attr}":
            raise RuntimeError(f"site {i}: {names[i]} in the log, {h.site.base}.{h.site.attr} here (other sites)")
        prompt = h.site.text[: h.site.offset]
        meta = {"path": h.site.path, "line": prompt.count("\n") + 1, "project": "/".join(h.project), "kind": kind}
        meta.update(base=h.site.base, attr=h.site.attr, random_sample=h.random_sample, unseen=h.unseen)
        out.append(_again(engine, h.site, meta, opened, args.max_tokens))
    return out


def shard(sites: list[HeldOutSite], spec: str, reverse: bool = False) -> list[HeldOutSite]:
    """The sites of shard i of n ("i/n"): whole projects, every n-th in sampling order (run n processes at once);
    reverse: its projects last first (a second process that meets the first one in the middle)."""
    i, n = (int(x) for x in spec.split("/"))
    order = list(dict.fromkeys(h.project for h in sites))
    mine = [p for p in order if order.index(p) % n == i]
    if reverse:
        mine.reverse()
    return [h for p in mine for h in sites if h.project == p]


def merged(paths: list[Path]) -> dict:
    """The summary of one run, or of shards' runs recomputed over all their records (jedi's counts summed)."""
    runs = [json.loads(p.read_text()) for p in paths]
    if len(runs) == 1 and "summary" in runs[0]:
        return runs[0]["summary"]
    unique = {(r["path"], r["offset"]): r for run in reversed(runs) for r in run["records"]}  # first run wins
    summary = summarize(list(unique.values()))
    silenced: Counter[str] = Counter()
    for run in runs:
        silenced.update((run.get("summary", {}).get("jedi") or {}).get("silenced") or {})
    summary["jedi"] = {"silenced": dict(silenced)}
    return summary


def replay(run: Path, until: str | None) -> list[dict]:
    """A finished run's sites analysed again by this code version, with no model: its completions are reused.

    The run's layout is kept (the document ended at the cursor, as before the editor layout). Valid only
    for a change that makes monitors silent where they constrained and changes nothing else: where the
    analysis is still a positive answer (the same number of names) the monitors constrain as they did,
    so `on` is the run's; where it is now silent, decoding is unconstrained and `on` is the run's `off`
    (the runs show silent states give the unconstrained identifier: 0 wins, 0 losses there). The run's
    own `on` is kept as `before`.
    """
    analyzer = Analyzer(STDLIB, AnalyzerConfig(budget_ms=math.inf))
    texts: dict[str, str] = {}
    seen: Counter[tuple] = Counter()
    out = []
    started = time.time()
    for i, r in enumerate(json.loads(run.read_text())["records"], 1):
        if past(until, started):
            print(f"  stopped at {until} UTC after {len(out)} sites", flush=True)
            break
        key = (r["path"], r["line"], r["base"], r["attr"])
        seen[key] += 1
        if r["path"] not in texts:
            texts[r["path"]] = Path(r["path"]).read_text(encoding="utf-8")
        text = texts[r["path"]]
        same = [  # the site: the n-th `base.attr` on its line (the run kept no offsets)
            c.offset
            for c in candidate_sites(Path(r["path"]), text, min_offset=0)
            if (c.base, c.attr, text[: c.offset].count("\n") + 1) == (r["base"], r["attr"], r["line"])
        ]
        offset = sorted(same)[seen[key] - 1]
        state = analyzer.monitors(r["path"], "").trigger(text[:offset])
        kind = analysis_kind(state)
        again = {**r, "offset": offset, "kind": kind, "kind_before": r["kind"], "before": r["on"]}
        # jedi listing another number of names than in the run: the reused `on` may not be this version's
        again["list_changed"] = kind == "known" and state is not None and len(state.candidates) != r["candidates"]
        if r["kind"] == "known" and kind != "known":
            again["on"] = {**r["off"], "valid": False}
        out.append(again)
        print(f"  [{i}] {r['project']} {r['base']}.{r['attr']} {r['kind']} -> {kind}", flush=True)
    analyzer.close()
    return out


_AGAIN_LINE = re.compile(r"^  (\S+) (\S+) (\S+) off=(.*) on=(.*)$", re.MULTILINE)


def before_after(runs: list[Path], follows: list[Path]) -> str:
    """Before (another code version's monitors, from `--follow` logs) vs after (the run's) on the same sites.

    runs[i] is a run's JSON (or its partial file), follows[i] the log of the `--follow` run beside it,
    read line by line, so a follow stopped early still counts its sites. Per analysis kind: the old
    monitors on vs off there, the new ones, and after (new on) vs before (old on); `off agree` counts the
    sites where both processes' unconstrained identifier was the same (their caches' histories differ).
    """
    pairs: list[tuple[dict, str, str]] = []
    for run, log in zip(runs, follows, strict=True):
        lines = _AGAIN_LINE.findall(log.read_text())
        kinds = {m[2] for m in lines}
        again = iter(lines)
        for r in json.loads(run.read_text())["records"]:
            if r["kind"] not in kinds:
                continue
            m = next(again, None)
            if m is None:
                break
            if m[:3] != (r["project"], f"{r['base']}.{r['attr']}", r["kind"]):
                raise ValueError(f"{log}: {m[:3]} where the run has {r['project']} {r['base']}.{r['attr']}")
            pairs.append((r, ast.literal_eval(m[3]), ast.literal_eval(m[4])))

    kinds_seen = sorted({r["kind"] for r, _, _ in pairs})

    def row(label: str, chosen: list[tuple[dict, str, str]]) -> str:
        old = paired([{"off": {"match": o == r["attr"]}, "on": {"match": n == r["attr"]}} for r, o, n in chosen])
        new = paired([r for r, _, _ in chosen])
        after = paired([{"off": {"match": n == r["attr"]}, "on": r["on"]} for r, _, n in chosen])
        agree = sum(o == r["off"]["identifier"] for r, o, _ in chosen)
        cells = [
            f"{p['diff_pts']:+} [{p['diff_ci'][0]:+}, {p['diff_ci'][1]:+}] ({p['wins']} / {p['losses']})"
            for p in (old, new, after)
        ]
        return f"| {label} | {len(chosen)} | " + " | ".join(cells) + f" | {agree} |"

    lines_out = [
        "| sites | n | old on - off, pts (wins / losses) | new on - off | after - before (new on - old on) "
        "| off agree |",
        "|---|---|---|---|---|---|",
        row("all followed", pairs),
        row("random sample", [p for p in pairs if p[0]["random_sample"]]),
        row("unseen", [p for p in pairs if p[0]["unseen"]]),
        *(row(f"analysis: {k}", [p for p in pairs if p[0]["kind"] == k]) for k in kinds_seen),
        "",
        "Sites where the old monitors' identifier differs in correctness from the new ones':",
        "",
        *(
            f"- `{r['project']} {Path(r['path']).name}:{r['line']} {r['base']}.{r['attr']}` ({r['kind']}): "
            f"old on `{n}`, new on `{r['on']['identifier']}`, off `{r['off']['identifier']}`"
            for r, _, n in pairs
            if (n == r["attr"]) != r["on"]["match"]
        ),
    ]
    return "\n".join(lines_out)


def main(argv: list[str] | None = None) -> int:
    """Sample held-out sites, complete each off and on, write JSON, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=90, help="held-out projects sampled")
    ap.add_argument("--files-per-project", type=int, default=1)
    ap.add_argument("--per-file", type=int, default=5, help="random sites per file")
    ap.add_argument("--unseen-per-file", type=int, default=2, help="extra sites per file whose attribute is unseen")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--doc-tokens", type=int, default=1024, help="each file is cut to its first ~N tokens")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared machine steady)")
    ap.add_argument("--model", default="smollm2-135m", help="a named model or a model directory")
    ap.add_argument("--lookahead", type=int, default=None, help="monitors.lookahead_width (default: the config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reverse", action="store_true", help="the shard's projects last first")
    ap.add_argument("--until", help="HH:MM UTC: run no site after this time (the figures cover the sites run)")
    ap.add_argument("--split", choices=("held-out", "tune"), default="held-out", help="tune: the tuning projects")
    ap.add_argument("--out", type=Path, default=OUT / "monitor_quality.json")
    ap.add_argument(
        "--report", type=Path, nargs="+", help="print the tables of finished runs' JSON (shards: merged) and stop"
    )
    ap.add_argument("--replay", type=Path, help="a finished run's JSON: analyse its sites again, no model (see replay)")
    ap.add_argument("--compare", type=Path, nargs="+", help="--report's runs' `--follow` logs: before vs after")
    ap.add_argument("--shard", default="0/1", help="i/n: run only the projects whose sampled index is i mod n")
    ap.add_argument("--rerun", type=Path, help="a finished run's JSON: complete its silent sites again (see rerun)")
    ap.add_argument("--follow", type=Path, help="a running run's log: complete its silent sites as it logs them")
    ap.add_argument("--kinds", default="object_only,dynamic", help="--rerun/--follow: the analysis kinds to run again")
    args = ap.parse_args(argv)
    if args.report is not None:
        print(before_after(args.report, args.compare) if args.compare else markdown(merged(args.report)))
        return 0

    if args.replay is not None:
        again = replay(args.replay, args.until)
        summary = summarize(again)
        summary["before_after"] = paired([{"off": r["before"], "on": r["on"]} for r in again if r["random_sample"]])
        summary["before_after_unseen"] = paired([{"off": r["before"], "on": r["on"]} for r in again if r["unseen"]])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "records": again}, indent=1, default=str))
        print(json.dumps({k: summary[k] for k in ("before_after", "before_after_unseen")}))
        print(markdown(summary))
        return 0
    t0 = time.perf_counter()
    config = EngineConfig(workspace=str(STDLIB))
    config.model.path = args.model  # not the default, which depends on the CPU
    config.model.threads = args.threads
    config.cache.context_tokens = args.doc_tokens + 256  # the whole head fits: the window never slides
    if args.lookahead is not None:
        config.monitors.lookahead_width = args.lookahead
    engine = Engine(deterministic_config(config))
    engine.ensure_loaded()
    if args.rerun is not None or args.follow is not None:
        kinds = set(args.kinds.split(","))
        if args.follow is not None:
            again = follow(engine, args.follow, kinds, args)
        else:
            again = rerun(engine, json.loads(args.rerun.read_text())["records"], kinds, args)
        engine.shutdown()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        config_json = {k: str(v) for k, v in vars(args).items()}
        args.out.write_text(json.dumps({"config": config_json, "records": again}, indent=1))
        print(json.dumps({k: paired([r for r in again if r["kind"] == k]) for k in args.kinds.split(",")}, indent=1))
        print("all:", json.dumps(paired(again)))
        return 0
    sites = shard(sample_sites(engine, args), args.shard, args.reverse)
    print(f"{len(sites)} held-out sites from {len({h.project for h in sites})} projects", flush=True)
    records: list[dict] = []
    opened: set[str] = set()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial.json")
    started = time.time()
    for i, h in enumerate(sites):
        if past(args.until, started):
            print(f"  stopped at {args.until} UTC after {len(records)} sites", flush=True)
            break
        t_site = time.perf_counter()
        try:
            rec = run_site(engine, h, args.max_tokens, opened)
        except Exception as exc:  # a file jedi or the tokenizer cannot take: say so and go on
            print(f"  [{i + 1}] {h.site.path}: {exc!r}", flush=True)
            continue
        records.append(rec)
        partial.write_text(json.dumps({"records": records}))  # what a run stopped early leaves (--report reads it)
        print(
            f"  [{i + 1}/{len(sites)}] {rec['project']} {h.site.base}.{h.site.attr} {rec['kind']}"
            f"  off={rec['off']['identifier']!r} on={rec['on']['identifier']!r}  {time.perf_counter() - t_site:.1f} s",
            flush=True,
        )
    stats = engine.jedi.stats_snapshot() if engine.jedi is not None else None
    engine.shutdown()
    summary = summarize(records)
    summary["jedi"] = None if stats is None else {"fallbacks": stats.fallbacks, "silenced": stats.silenced}
    summary["config"] = {**vars(args), "out": str(args.out), "model": engine.lm.name}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "records": records}, indent=1))
    print(json.dumps(summary, indent=1))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
