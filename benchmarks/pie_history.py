"""PIE on real edit histories: next-line quality of `pie`, `exact` and `full` after a real commit's hunks.

Sessions come from the git histories of public Python projects (mirrors on this machine, read with
`git show`; no network at run time). For a commit and one of its modified source files:
- the document is a window (~`--window` tokens, cut at line ends) of the file as it was before the commit,
  opened in the cache (one full encode, not timed);
- the commit's hunks that fall inside the window (up to `--max-hunks`, top to bottom) are applied one
  sync per hunk, as an editor sends didChange after each edit;
- the cursor goes after the indentation of the first non-blank line after the last hunk; that real line
  is the target, and the last sync also removes it from the cursor on (the user is about to type it).
Three caches then complete the line greedily (one line, the line stop, token healing as the engine does):
`pie` (incremental sync: kept tokens rotated, stale), `exact` (re-encode from the first hunk on) and `full`
(a fresh cache that encodes the final text from scratch). Reported: next-line exact match of each with
95% bootstrap intervals, pie - full with its paired interval, line-level agreement of pie's and exact's
line with full's, and edit-to-ready time per sync.

The split is by project: `TUNING` projects are where this script was tried out; everything reported is on
the held-out projects. Nothing is tuned on either (the caches run their defaults).

The projects' histories must be on this machine first (the agent tool `fetch` brings a GitHub mirror to
/work/.mirror/<owner>+<name>/repo). Sessions are built from a seeded shuffle of each project's commits and
taken round-robin over projects; benchmarks/data/pie_history/heldout_sessions.jsonl lists seed 0's 400.

    nice -n 10 .venv/bin/python benchmarks/pie_history.py --sessions 400 --until 17:08        # rows to out/*.jsonl
    nice -n 10 .venv/bin/python benchmarks/pie_history.py --skip 200 --log benchmarks/out/b.jsonl  # a 2nd process
    .venv/bin/python benchmarks/pie_history.py --rows-from benchmarks/out/pie_history.jsonl benchmarks/out/b.jsonl \
        --markdown                                                                              # the table
    .venv/bin/python benchmarks/pie_history.py --split tuning --sessions 4                      # smoke run
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deadline import past
from metrics import edit_similarity
from pie_edits import line_draft, next_line, timed_sync
from quality import mean_ci

from superpie.cache.document import DocumentCache
from superpie.completion.config import EngineConfig
from superpie.completion.model.loading import LoadedModel, load_model

OUT = Path(__file__).parent / "out"
MIRRORS = Path("/work/.mirror")
TUNING = ("pytest-dev/pluggy", "pallets/itsdangerous")
HELD_OUT = (
    "pallets/click",
    "psf/requests",
    "encode/httpx",
    "PyCQA/pyflakes",
    "andialbrecht/sqlparse",
    "python-attrs/attrs",
    "Textualize/rich",
)
MODES = ("pie", "exact", "full")


@dataclass(frozen=True)
class Session:
    """One edit session: the window before the commit, the texts after each hunk, and the cursor."""

    project: str
    commit: str
    path: str
    first_line: int  # 1-based line of the window's start in the old file
    texts: tuple[str, ...]  # texts[0]: the window before; texts[i]: after i hunks (the last without the target)
    cursor: int  # char offset in texts[-1]
    target: str  # the real line (stripped)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def repo_dir(project: str) -> Path:
    return MIRRORS / project.replace("/", "+") / "repo"


def is_source(path: str) -> bool:
    """Library code only: tests, docs and examples are left out (their edits are mostly data)."""
    parts = path.lower().split("/")
    return path.endswith(".py") and not any(p.startswith(("test", "doc", "example", "bench")) for p in parts)


def candidate_commits(repo: Path) -> list[tuple[str, list[str]]]:
    """Non-merge commits with the library .py files they modified (oldest first)."""
    log = git(repo, "log", "--no-merges", "--reverse", "--diff-filter=M", "--name-only", "--format=@%H", "HEAD")
    out: list[tuple[str, list[str]]] = []
    for block in log.split("@")[1:]:
        sha, *paths = block.strip().splitlines()
        files = [p for p in paths if is_source(p)]
        if files:
            out.append((sha, files))
    return out


def line_hunks(old: list[str], new: list[str]) -> list[tuple[int, int, int, int]]:
    """Changed (old_start, old_end, new_start, new_end) line ranges of a line diff."""
    ops = difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
    return [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in ops if tag != "equal"]


def make_session(
    lm: LoadedModel, project: str, sha: str, path: str, old_src: str, new_src: str, args: argparse.Namespace,
    rng: random.Random,
) -> Session | None:
    """A session from one file of one commit, or None if the change does not make one (too big, no cursor)."""
    old, new = old_src.splitlines(keepends=True), new_src.splitlines(keepends=True)
    hunks = [h for h in line_hunks(old, new) if h[1] - h[0] + h[3] - h[2] <= args.max_hunk_lines]
    if not hunks:
        return None
    counts = [len(lm.tokenizer.encode(ln, add_special_tokens=False).ids) for ln in old]
    first = rng.choice(hunks)
    # The window: ~`window` tokens of the old file with the chosen hunk at a random place in its first 2/3.
    budget = args.window
    lead = int(budget * rng.uniform(0.15, 0.66))
    start, toks = first[0], 0
    while start > 0 and toks + counts[start - 1] <= lead:
        start -= 1
        toks += counts[start]
    end, toks = start, 0
    while end < len(old) and toks + counts[end] <= budget:
        toks += counts[end]
        end += 1
    inside = [h for h in hunks if h[0] >= start and h[1] <= end][: args.max_hunks]
    if not inside or toks < args.min_tokens:
        return None
    texts, lines, shift = ["".join(old[start:end])], old[start:end], 0
    for i1, i2, j1, j2 in inside:  # top to bottom; `shift` moves later old indices into the edited window
        a, b = i1 - start + shift, i2 - start + shift
        lines = lines[:a] + new[j1:j2] + lines[b:]
        shift += (j2 - j1) - (i2 - i1)
        texts.append("".join(lines))
    last_new_end = inside[-1][1] - start + shift  # index in `lines` of the first line after the last hunk
    after = [k for k in range(last_new_end, min(len(lines), last_new_end + 8)) if lines[k].strip()]
    if not after or after[0] == len(lines) - 1:
        return None
    k = after[0]
    line = lines[k]
    i1, i2, j1, j2 = inside[-1]
    if lines[last_new_end - (j2 - j1) : k + 1] != new[j1 : j2 + k - last_new_end + 1]:
        return None  # a hunk left out (too big, or past max_hunks) lies between: the target is not the new text
    target = line.strip()
    if not (2 <= len(target) <= args.max_target_chars):
        return None
    indent = line[: len(line) - len(line.lstrip())]
    before = "".join(lines[:k]) + indent
    final = before + "\n" + "".join(lines[k + 1 :])
    texts[-1] = final
    return Session(project, sha, path, start + 1, tuple(texts), len(before), target)


def sessions_of(lm: LoadedModel, project: str, args: argparse.Namespace) -> list[Session]:
    """Up to `per_project` sessions from a seeded sample of the project's commits (one file per commit)."""
    repo = repo_dir(project)
    rng = random.Random(f"{args.seed}:{project}")
    commits = candidate_commits(repo)
    rng.shuffle(commits)
    out: list[Session] = []
    for sha, files in commits:
        if len(out) >= args.per_project:
            break
        path = rng.choice(files)
        try:
            old_src = git(repo, "show", f"{sha}^:{path}")
            new_src = git(repo, "show", f"{sha}:{path}")
        except (subprocess.CalledProcessError, UnicodeDecodeError):
            continue
        s = make_session(lm, project, sha, path, old_src, new_src, args, rng)
        if s is not None:
            out.append(s)
    return out


def interleave(groups: list[list[Session]]) -> list[Session]:
    """Round-robin over projects, so a run cut short still covers every project about equally."""
    out: list[Session] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def new_cache(lm: LoadedModel, config: EngineConfig) -> DocumentCache:
    """A document cache as the engine builds one (runner, stale threshold, window step), big enough to hold
    the whole window (no sliding)."""
    c = config.cache
    return DocumentCache(lm.model, lm.tokenizer, lm.rope, runner=lm.runner, mode=c.mode,
                         stale_threshold=c.stale_threshold, max_tokens=8192, window_step=c.window_step)


def run_session(lm: LoadedModel, config: EngineConfig, s: Session) -> dict:
    """Sync the three caches through the session and complete the line with each."""
    base = new_cache(lm, config)
    base.sync(s.texts[0], mode="full")
    row: dict = {"project": s.project, "commit": s.commit[:10], "path": s.path, "line": s.first_line,
                 "syncs": len(s.texts) - 1, "tokens": base.length, "target": s.target}
    caches: dict[str, DocumentCache] = {}
    for mode in ("pie", "exact"):
        doc = base.clone()
        times, encoded, rotated, refreshed = [], 0, 0, 0
        for text in s.texts[1:]:
            ms, stats = timed_sync(doc, text, mode)
            times.append(ms)
            encoded, rotated, refreshed = encoded + stats.encoded, rotated + stats.rotated, refreshed + stats.refreshed
        row |= {f"{mode}_ms": times, f"{mode}_encoded": encoded, f"{mode}_rotated": rotated,
                f"{mode}_refreshed": refreshed}
        caches[mode] = doc
    base.release()
    caches["full"] = new_cache(lm, config)
    ms, _ = timed_sync(caches["full"], s.texts[-1], "full")
    row["full_ms"] = [ms]
    row["stale_before_cursor"] = sum(caches["pie"].stale[: caches["pie"].split_at(s.cursor).prefix_len])
    for mode in MODES:
        row[f"{mode}_line"] = next_line(lm, caches[mode], s.cursor)
    twin = caches["pie"].clone()  # with the engine's close-call margin (cache.close_call_margin)
    guarded, row["guard_refreshed"] = line_draft(lm, twin, s.cursor, 48, config.cache.close_call_margin,
                                                 config.cache.close_call_tokens)
    row["pie_guarded_line"] = guarded.text.strip()
    twin.release()
    if row["pie_line"] != row["full_line"]:  # stale context, or something else? Re-encode the stale tokens and see.
        row["pie_refreshed_tokens"] = caches["pie"].refresh()
        row["pie_refreshed_line"] = next_line(lm, caches["pie"], s.cursor)
    for doc in caches.values():
        doc.release()
    return row


def pct_ci(values: list[float]) -> list[float]:
    m, lo, hi = mean_ci(values)
    return [round(100 * m, 1), round(100 * lo, 1), round(100 * hi, 1)]


def summarize(rows: list[dict]) -> dict:
    """Exact match per mode, pie - full (paired), agreement with full, and edit-to-ready medians."""
    em = {m: [float(r[f"{m}_line"] == r["target"]) for r in rows] for m in MODES}
    out: dict = {"sessions": len(rows), "projects": sorted({r["project"] for r in rows})}
    out["exact_match_pct_ci"] = {m: pct_ci(em[m]) for m in MODES}
    out["pie_minus_full_pts_ci"] = pct_ci([p - f for p, f in zip(em["pie"], em["full"])])
    out["exact_minus_full_pts_ci"] = pct_ci([e - f for e, f in zip(em["exact"], em["full"])])
    out["edit_similarity_mean"] = {m: round(statistics.mean(edit_similarity(r[f"{m}_line"], r["target"])
                                                            for r in rows), 4) for m in MODES}
    out["close_call_margin"] = {
        "pie_guarded_agrees_with_full_pct_ci": pct_ci([float(r["pie_guarded_line"] == r["full_line"]) for r in rows]),
        "exact_match_pct_ci": pct_ci([float(r["pie_guarded_line"] == r["target"]) for r in rows]),
        "refreshes": sum(r["guard_refreshed"] > 0 for r in rows),
        "refreshed_tokens_median": statistics.median(
            [r["guard_refreshed"] for r in rows if r["guard_refreshed"]] or [0]
        ),
        "lost_vs_pie": sum(r["pie_line"] == r["full_line"] != r["pie_guarded_line"] for r in rows),
        "won_vs_pie": sum(r["pie_line"] != r["full_line"] == r["pie_guarded_line"] for r in rows),
    }
    for m in ("pie", "exact"):
        out[f"{m}_agrees_with_full_pct_ci"] = pct_ci([float(r[f"{m}_line"] == r["full_line"]) for r in rows])
    # Only where PIE left stale tokens before the cursor can its line differ for a reason other than float error.
    stale = [r for r in rows if r["stale_before_cursor"] > 0]
    out["stale_subset"] = {"sessions": len(stale)}
    if stale:
        out["stale_subset"] |= {
            "exact_match_pct_ci": {m: pct_ci([float(r[f"{m}_line"] == r["target"]) for r in stale]) for m in MODES},
            "pie_agrees_with_full_pct_ci": pct_ci([float(r["pie_line"] == r["full_line"]) for r in stale]),
            "exact_agrees_with_full_pct_ci": pct_ci([float(r["exact_line"] == r["full_line"]) for r in stale]),
            "pie_guarded_agrees_with_full_pct_ci": pct_ci(
                [float(r["pie_guarded_line"] == r["full_line"]) for r in stale]
            ),
            "median_stale_tokens": statistics.median(r["stale_before_cursor"] for r in stale),
        }
    out["median_ms_per_sync"] = {m: round(statistics.median(t for r in rows for t in r[f"{m}_ms"]), 1) for m in MODES}
    out["median_ms_session"] = {m: round(statistics.median(sum(r[f"{m}_ms"]) for r in rows), 1) for m in MODES}
    out["syncs_per_session"] = dict(sorted({n: sum(r["syncs"] == n for r in rows)
                                            for n in {r["syncs"] for r in rows}}.items()))
    out["median_tokens"] = statistics.median(r["tokens"] for r in rows)
    out["sessions_with_stale_before_cursor"] = sum(r["stale_before_cursor"] > 0 for r in rows)
    out["refreshed_tokens_pie"] = sum(r["pie_refreshed"] for r in rows)
    out["by_project"] = {}
    for p in out["projects"]:
        rs = [r for r in rows if r["project"] == p]
        hits = {m: sum(r[f"{m}_line"] == r["target"] for r in rs) for m in MODES}
        out["by_project"][p] = {"sessions": len(rs)} | hits
    keys = ("project", "commit", "path", "line", "syncs", "stale_before_cursor", "target", "pie_line", "exact_line",
            "full_line", "pie_refreshed_tokens", "pie_refreshed_line")
    out["pie_full_disagree"] = [{k: r[k] for k in keys if k in r}
                                for r in rows if r["pie_line"] != r["full_line"]]
    out["exact_full_disagree"] = [{k: r[k] for k in ("project", "commit", "target", "exact_line", "full_line")}
                                  for r in rows if r["exact_line"] != r["full_line"]]
    return out


def markdown(summary: dict) -> str:
    """The summary as the table benchmarks/RESULTS.md shows."""

    def ci(v: list[float], sign: str = "") -> str:
        return f"{v[0]:{sign}.1f} [{v[1]:{sign}.1f}, {v[2]:{sign}.1f}]"

    st = summary["stale_subset"]
    lines = [
        "| held-out sessions | n | pie | exact | full |",
        "|---|---|---|---|---|",
        f"| next-line exact match, % [95% CI] | {summary['sessions']} | "
        + " | ".join(ci(summary["exact_match_pct_ci"][m]) for m in MODES) + " |",
        f"| exact match minus full's, pts [95% CI] (paired) | {summary['sessions']} | "
        f"{ci(summary['pie_minus_full_pts_ci'], '+')} | "
        f"{ci(summary['exact_minus_full_pts_ci'], '+')} | |",
        f"| line identical to full's, % [95% CI] | {summary['sessions']} | {ci(summary['pie_agrees_with_full_pct_ci'])}"
        f" | {ci(summary['exact_agrees_with_full_pct_ci'])} | |",
        "| edit similarity to the real line, mean | {} | {} |".format(
            summary["sessions"], " | ".join(str(summary["edit_similarity_mean"][m]) for m in MODES)),
    ]
    if st["sessions"]:
        lines += [
            f"| stale tokens before the cursor: exact match, % | {st['sessions']} | "
            + " | ".join(ci(st["exact_match_pct_ci"][m]) for m in MODES) + " |",
            f"| stale tokens before the cursor: line identical to full's, % | {st['sessions']} | "
            f"{ci(st['pie_agrees_with_full_pct_ci'])} | {ci(st['exact_agrees_with_full_pct_ci'])} | |",
        ]
    lines += [
        "| edit-to-ready per sync, median ms (full: one encode of the final text) | {} | {} |".format(
            sum(int(k) * v for k, v in summary["syncs_per_session"].items()),
            " | ".join(str(summary["median_ms_per_sync"][m]) for m in MODES)),
        "| edit-to-ready per session (all its syncs), median ms | {} | {} |".format(
            summary["sessions"], " | ".join(str(summary["median_ms_session"][m]) for m in MODES)),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("held-out", "tuning"), default="held-out")
    ap.add_argument("--sessions", type=int, default=120, help="sessions to run (round-robin over projects)")
    ap.add_argument("--skip", type=int, default=0, help="start at this session (a second process takes a later part)")
    ap.add_argument("--only", nargs="*", default=[], help="run only the sessions of these commits (sha prefixes)")
    ap.add_argument("--per-project", type=int, default=40, help="sessions built per project")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=1024, help="tokens of the old file in the document")
    ap.add_argument("--min-tokens", type=int, default=384, help="smallest document (tokens)")
    ap.add_argument("--max-hunks", type=int, default=4, help="hunks applied per session (one sync each)")
    ap.add_argument("--max-hunk-lines", type=int, default=30, help="skip hunks that change more lines")
    ap.add_argument("--max-target-chars", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default=None, help="weight precision (default: the engine's)")
    ap.add_argument("--model", default="smollm2-135m", help="a named model or a model directory")
    ap.add_argument("--until", default=None, help="stop starting sessions at this UTC time (HH:MM)")
    ap.add_argument("--log", type=Path, default=OUT / "pie_history.jsonl", help="per-session rows (appended)")
    ap.add_argument("--rows-from", type=Path, nargs="+", default=None, help="summarize earlier logs' rows (no run)")
    ap.add_argument("--markdown", action="store_true", help="with --rows-from: print RESULTS.md's table")
    ap.add_argument("--list", type=Path, default=None, help="write the session list (project, commit, path, line)")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.rows_from is not None:
        rows = [json.loads(x) for f in args.rows_from for x in f.read_text().splitlines() if x.startswith("{")]
        summary = summarize(rows)
        print(markdown(summary) if args.markdown else json.dumps(summary, indent=1))
        return
    config = EngineConfig()
    config.model.threads = args.threads
    lm = load_model(args.model, dtype=args.dtype or config.model.dtype, threads=args.threads)
    projects = TUNING if args.split == "tuning" else HELD_OUT
    sessions = interleave([sessions_of(lm, p, args) for p in projects])
    if args.only:
        sessions = [s for s in sessions if s.commit.startswith(tuple(args.only))]
    sessions = sessions[args.skip : args.skip + args.sessions]
    print(f"{len(sessions)} sessions, precision {lm.precision}", file=sys.stderr, flush=True)
    if args.list is not None:
        args.list.write_text("".join(
            json.dumps({k: v for k, v in asdict(s).items() if k != "texts"} | {"syncs": len(s.texts) - 1}) + "\n"
            for s in sessions))
    rows = []
    started = time.time()
    for s in sessions:
        if past(args.until, started):
            print(f"stopped at {args.until} UTC after {len(rows)} sessions", file=sys.stderr)
            break
        row = run_session(lm, config, s)
        rows.append(row)
        with args.log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in ("project", "commit", "target", "pie_line", "full_line")}),
              file=sys.stderr, flush=True)
    summary = summarize(rows)
    (OUT / f"pie_history_{args.split}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
