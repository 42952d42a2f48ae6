"""PIE with the fill-in-the-middle layout: top-1 agreement with an exact re-encode over sessions of typing,
cursor jumps and edits, and the time a cursor jump takes to be ready in a 4k-token document (issue 14).

With `model.layout` fim the cached sequence is `<pre> prefix <suf> suffix <mid> middle` around the cursor,
the middle begun being the cursor's line before the cursor past its indentation (cache/fim.py), so typing,
moving the cursor and editing are all edits of that sequence that PIE follows.

Documents: windows (~`--tokens` tokens, cut at line ends, pie_edits.make_document) of real Python files of
the standard library and installed packages (quality.source_files), taken round-robin over projects.

Quality (sessions): in each document, up to three real single-line statements have their text removed (the
indentation kept); the cursor starts at the first. Then, seeded, a mix of
- `type`: re-typing the removed line at the cursor, one character per step;
- `jump`: the cursor moves to another hole or to a random column of a random line (the text is unchanged: the
  suffix marker moves);
- `edit`: a line inserted (a copy of a nearby line) or deleted, 3 to 40 lines away from the cursor.
After every step one cache synced in `pie` mode (the engine's settings) and one in `exact` mode (re-encode
from the first changed token: the full recompute up to float error) give the next token after the middle
marker, read as decoding reads it (a CursorView at the split). A check agrees when both argmaxes are equal.
A disagreement is looked at: the exact cache's top-1/top-2 logit margin, the stale tokens in the pie cache,
and whether an exact refresh of the pie cache (what idle time does) brings its argmax back. Each session ends
with a fresh cache encoding the final layout from scratch (`full`) against `exact`: the precision's noise floor.

Timing (jumps): `--jump-docs` documents of `--jump-tokens` tokens are opened at a random cursor (a full encode,
timed: the re-encode a jump would cost without PIE), then the cursor jumps `--jumps` times to random places;
each jump's `sync` (tokenize, diff, rotate, encode the hunks) is timed in the same process, and told apart by
where it lands: before the cursor (`back`: the text between changes side, already cached), after it inside the
cached suffix, or past the suffix budget (those tokens were never cached and must be encoded). One thread
throughout (`--threads`).

Nothing is tuned: the caches run the engine's defaults (completion/config). Rows are appended to `--log` as
they come; `--rows-from` summarizes earlier logs.

    cd benchmarks
    nice -n 10 ../.venv/bin/python fim_pie.py --checks 0 --jump-docs 3 --jumps 17     # jump timing only (4k)
    nice -n 10 ../.venv/bin/python fim_pie.py --jump-docs 0 --checks 480 --tokens 1024 --suffix-tokens 128 \
        --until 19:53                                                                  # quality sessions only
    ../.venv/bin/python fim_pie.py --quick                                             # smoke run (minutes)
    ../.venv/bin/python fim_pie.py --rows-from out/fim_pie.jsonl                       # the summary of a log

SmolLM2-135M-Instruct has no FIM tokens (only `<repo_name>`, `<file_sep>`, `<filename>`), so only the code
model runs here.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from deadline import past
from pie_edits import line_draft, make_document
from quality import mean_ci, single_line_statements, source_files

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.completion.config import EngineConfig
from superpie.completion.model.loading import LoadedModel, load_model

OUT = Path(__file__).parent / "out"
KINDS = ("type", "jump", "edit")


@dataclass(frozen=True)
class Document:
    """A window of a real file and the lines in it that hold one whole simple statement (hole candidates)."""

    project: str
    path: str
    text: str
    statements: tuple[int, ...]  # 0-based lines of the window


@dataclass(frozen=True)
class Step:
    """One step of a session: what kind it was, the text after it and the cursor."""

    kind: str
    text: str
    cursor: int


def documents(lm: LoadedModel, n_tokens: int, count: int, seed: int) -> list[Document]:
    """`count` windows of ~n_tokens tokens, one per file, round-robin over projects, drawn by `seed`."""
    rng = random.Random(seed)
    by_project: dict[str, list[Path]] = {}
    for f, root in source_files():
        by_project.setdefault(root.name, []).append(f)
    for files in by_project.values():
        rng.shuffle(files)
    out: list[Document] = []
    while len(out) < count and any(by_project.values()):
        for project in sorted(by_project):
            if len(out) >= count or not by_project[project]:
                continue
            f = by_project[project].pop()
            try:
                source = f.read_text(encoding="utf-8")
                statements = single_line_statements(source)
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            if len(source) < 3 * n_tokens:  # too short for the window (a token is ~3-4 chars of code)
                continue
            got = make_document(lm, source, n_tokens, rng)
            if got is None:
                continue
            text, rest = got
            first = source.count("\n", 0, len(source) - len(rest) - len(text))
            lines = text.splitlines(keepends=True)
            inside = [i - first for i in statements if 0 <= i - first < len(lines) - 1]
            inside = [i for i in inside if 8 <= len(lines[i].strip()) <= 80]
            if len(inside) >= 3:
                out.append(Document(project, str(f), text, tuple(inside)))
    return out


def line_starts(text: str) -> list[int]:
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def random_column(text: str, rng: random.Random) -> int:
    """A cursor at a random column (after the indentation) of a random non-blank line."""
    lines = text.splitlines(keepends=True)
    starts = line_starts(text)
    i = rng.choice([j for j, ln in enumerate(lines) if ln.strip()])
    body = lines[i].rstrip("\n")
    indent = len(body) - len(body.lstrip())
    return starts[i] + rng.randint(indent, len(body))


def session_steps(doc: Document, n_steps: int, rng: random.Random) -> tuple[str, int, list[Step]]:
    """The opening text and cursor, and `n_steps` steps (see the module docstring), seeded."""
    lines = doc.text.splitlines(keepends=True)
    chosen = sorted(rng.sample(doc.statements, 3))
    holes: list[list] = []  # [offset where the next character goes, characters still to type]
    for i in chosen:
        body = lines[i].rstrip("\n")
        indent = body[: len(body) - len(body.lstrip())]
        holes.append([0, body[len(indent) :]])
        lines[i] = indent + "\n"
    starts = line_starts("".join(lines))
    for h, i in zip(holes, chosen):
        h[0] = starts[i] + len(lines[i]) - 1
    text = "".join(lines)
    cursor = holes[0][0]
    opening = (text, cursor)
    steps: list[Step] = []

    def shift(at: int, delta: int) -> None:  # everything at or after `at` moves by `delta`
        nonlocal cursor
        for h in holes:
            if h[0] >= at:
                h[0] += delta
        if cursor >= at:
            cursor += delta

    while len(steps) < n_steps:
        here = next((h for h in holes if h[0] == cursor and h[1]), None)
        r = rng.random()
        if here is not None and r < 0.55:
            for _ in range(min(rng.randint(1, 4), len(here[1]), n_steps - len(steps))):
                ch, here[1] = here[1][0], here[1][1:]
                text = text[:cursor] + ch + text[cursor:]
                shift(cursor, 1)
                steps.append(Step("type", text, cursor))
            holes = [h for h in holes if h[1]]
        elif r < 0.8:
            others = [h[0] for h in holes if h[0] != cursor]
            target = rng.choice(others) if others and rng.random() < 0.6 else random_column(text, rng)
            if target != cursor:
                cursor = target
                steps.append(Step("jump", text, cursor))
        else:
            at_line = text.count("\n", 0, cursor)
            busy = {text.count("\n", 0, h[0]) for h in holes} | {at_line}
            n_lines = text.count("\n")
            near = [j for j in range(max(0, at_line - 40), min(n_lines, at_line + 41)) if abs(j - at_line) >= 3]
            near = [j for j in near if j not in busy]
            if not near:
                continue
            j = rng.choice(near)
            cur_lines = text.splitlines(keepends=True)
            starts = line_starts(text)
            if rng.random() < 0.5:
                donor = rng.choice([ln for ln in cur_lines[max(0, j - 5) : j + 5] if ln.strip()] or ["\n"])
                text = text[: starts[j]] + donor + text[starts[j] :]
                shift(starts[j], len(donor))
            else:
                text = text[: starts[j]] + text[starts[j + 1] :]
                shift(starts[j + 1], starts[j] - starts[j + 1])
            steps.append(Step("edit", text, cursor))
    return opening[0], opening[1], steps


def new_cache(lm: LoadedModel, config: EngineConfig) -> DocumentCache:
    """A document cache with the engine's settings (Engine._new_cache) in the model's FIM layout."""
    c = config.cache
    assert lm.fim is not None, "the model has no FIM template"
    reserve = config.decoding.max_tokens + 64
    return DocumentCache(
        lm.model, lm.tokenizer, lm.rope, runner=lm.runner, mode=c.mode, stale_threshold=c.stale_threshold,
        max_tokens=max(64, min(c.context_tokens, lm.context_length - reserve)), window_step=c.window_step,
        fim=lm.fim.markers, fim_suffix_tokens=c.fim_suffix_tokens,
    )


def line(lm: LoadedModel, doc: DocumentCache, margin: float = 0.0, cap: int = 0) -> tuple[tuple[int, ...], int]:
    """The greedy line's tokens at the cursor (16 at most, as inline) and the stale tokens a close call re-encoded."""
    draft, refreshed = line_draft(lm, doc, doc.cursor, 16, margin, cap)
    return draft.tokens, refreshed


@torch.inference_mode()
def middle_top(doc: DocumentCache) -> tuple[int, int, float]:
    """The next token after the middle marker as decoding reads it: argmax, runner-up, and their logit gap."""
    split = doc.split_at(doc.cursor)
    view = CursorView(doc, split.prefix_len - 1, reserve=4)
    logits = view.step(input_ids=torch.tensor([doc.ids[split.prefix_len - 1]]))[-1].float()
    top = torch.topk(logits, 2)
    return int(top.indices[0]), int(top.indices[1]), float(top.values[0] - top.values[1])


def run_session(
    lm: LoadedModel, config: EngineConfig, doc: Document, n_steps: int, seed: int, log: Path, lines: bool = False
) -> list:
    """Follow one session with a pie cache and an exact cache; one row per step (appended to `log`). `lines`:
    also decode the greedy line from each, and from a copy of pie's under `cache.close_call_margin`."""
    margin = config.cache.close_call_margin
    rng = random.Random(f"{seed}:{doc.path}")
    text, cursor, steps = session_steps(doc, n_steps, rng)
    pie = new_cache(lm, config)
    pie.sync(text, anchor=cursor, mode="full")
    exact = pie.clone()
    rows = []
    for k, step in enumerate(steps):
        sp = pie.sync(step.text, anchor=step.cursor)
        se = exact.sync(step.text, anchor=step.cursor, mode="exact")
        assert pie.ids == exact.ids, "pie and exact cache different sequences"
        p1, _, p_gap = middle_top(pie)
        e1, e2, e_gap = middle_top(exact)
        row = {
            "project": doc.project, "path": doc.path, "step": k, "kind": step.kind, "agree": p1 == e1,
            "pie_top1": p1, "exact_top1": e1, "exact_top2": e2, "exact_gap": round(e_gap, 4),
            "pie_gap": round(p_gap, 4), "layout_tokens": pie.length, "stale": pie.stale_count,
            "stale_load": pie.stale_load, "pie_encoded": sp.encoded, "pie_rotated": sp.rotated, "hunks": sp.hunks,
            "pie_refreshed": sp.refreshed, "pie_ms": round(sp.ms, 1), "exact_encoded": se.encoded,
            "suffix_tokens": config.cache.fim_suffix_tokens,
        }
        if pie.stale_count or p1 != e1:  # what an exact refresh of the pie cache answers (idle time, a close call)
            twin = pie.clone()
            row["refresh_tokens"] = twin.refresh()
            row["refresh_top1"] = middle_top(twin)[0]
            twin.release()
        if p1 != e1:
            row["pie_top1_text"] = lm.tokenizer.decode([p1])
            row["exact_top1_text"] = lm.tokenizer.decode([e1])
        if lines:  # whole greedy lines: exact's, pie's as it stands, pie's with the close-call margin
            row["line_exact"] = line(lm, exact)[0]
            row["line_pie"] = line(lm, pie)[0]
            twin = pie.clone()
            row["line_guarded"], row["guard_refreshed"] = line(lm, twin, margin, config.cache.close_call_tokens)
            row["margin"] = margin
            twin.release()
        rows.append(row)
    full = new_cache(lm, config)
    full.sync(steps[-1].text, anchor=steps[-1].cursor, mode="full")
    f1 = middle_top(full)[0]
    rows[-1]["full_top1"] = f1
    rows[-1]["full_agrees_exact"] = f1 == rows[-1]["exact_top1"]
    if lines:  # the precision's noise floor for whole lines: a fresh encode against exact's incremental one
        rows[-1]["full_line_agrees_exact"] = line(lm, full)[0] == rows[-1]["line_exact"]
    for c in (pie, exact, full):
        c.release()
    with log.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def run_jumps(lm: LoadedModel, config: EngineConfig, doc: Document, n_jumps: int, seed: int, log: Path) -> list:
    """Open `doc` at a random cursor (a full encode of its layout, timed), then jump `n_jumps` times to random
    places (each sync timed); one row per jump."""
    rng = random.Random(f"{seed}:jumps:{doc.path}")
    cursor = random_column(doc.text, rng)
    pie = new_cache(lm, config)
    t0 = time.perf_counter()
    pie.sync(doc.text, anchor=cursor, mode="full")
    open_ms = (time.perf_counter() - t0) * 1000
    open_tokens = pie.length
    rows = []
    for k in range(n_jumps):
        target = random_column(doc.text, rng)
        if target == pie.cursor:
            continue
        cached_end, window = pie.offsets[-2][1], pie.window_start  # the last suffix token's end
        where = "back" if target < pie.cursor else "forward_in_suffix"
        where = where if target <= cached_end else "forward_past_suffix"
        t0 = time.perf_counter()
        stats = pie.sync(doc.text, anchor=target)
        ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        middle_top(pie)
        step_ms = (time.perf_counter() - t0) * 1000
        rows.append({
            "timing": True, "project": doc.project, "path": doc.path, "jump": k, "ms": round(ms, 1), "where": where,
            "window_moved": pie.window_start != window,
            "lines_moved": abs(doc.text.count("\n", 0, target) - doc.text.count("\n", 0, cursor)),
            "encoded": stats.encoded, "rotated": stats.rotated, "hunks": stats.hunks, "refreshed": stats.refreshed,
            "layout_tokens": pie.length, "one_step_ms": round(step_ms, 1),
            "open_full_ms": round(open_ms, 1), "open_tokens": open_tokens,
            "suffix_tokens": config.cache.fim_suffix_tokens,
        })
        cursor = target
    pie.release()
    with log.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def pct_ci(values: list[float]) -> list[float]:
    m, lo, hi = mean_ci(values)
    return [round(100 * m, 2), round(100 * lo, 2), round(100 * hi, 2)]


def pctl(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1)


def summarize(rows: list[dict]) -> dict:
    """Agreement with 95% CIs overall and per step kind, stale tokens, the disagreements, and jump timings."""
    checks = [r for r in rows if not r.get("timing")]
    jumps = [r for r in rows if r.get("timing")]
    out: dict = {}
    if checks:
        sessions = {(r["project"], r["path"]) for r in checks}
        out["checks"] = len(checks)
        out["sessions"] = len(sessions)
        out["projects"] = sorted({r["project"] for r in checks})
        out["agreement_pct_ci"] = pct_ci([float(r["agree"]) for r in checks])
        out["by_kind"] = {
            k: {"checks": len(rs), "agreement_pct_ci": pct_ci([float(r["agree"]) for r in rs])}
            for k in KINDS if (rs := [r for r in checks if r["kind"] == k])
        }
        changed = [r for r in checks if r["hunks"] > 0]
        out["steps_that_changed_the_layout"] = len(changed)
        out["agreement_changed_only_pct_ci"] = pct_ci([float(r["agree"]) for r in changed])
        out["stale_tokens"] = {
            "median": statistics.median(r["stale"] for r in checks), "max": max(r["stale"] for r in checks),
            "checks_with_stale": sum(r["stale"] > 0 for r in checks),
            "median_stale_load": statistics.median(r["stale_load"] for r in checks),
        }
        out["pie_refreshes_by_threshold"] = sum(r["pie_refreshed"] > 0 for r in checks)
        out["median_encoded_per_step"] = {
            "pie": statistics.median(r["pie_encoded"] for r in checks),
            "exact": statistics.median(r["exact_encoded"] for r in checks),
        }
        out["median_layout_tokens"] = statistics.median(r["layout_tokens"] for r in checks)
        floor = [r for r in checks if "full_agrees_exact" in r]
        out["noise_floor_full_vs_exact"] = {"checks": len(floor), "agree": sum(r["full_agrees_exact"] for r in floor)}
        bad = [r for r in checks if not r["agree"]]
        out["disagreements"] = [
            {k: r.get(k) for k in ("project", "kind", "step", "stale", "stale_load", "exact_gap", "pie_gap",
                                   "pie_top1_text", "exact_top1_text", "refresh_tokens")}
            | {"refresh_fixes": r.get("refresh_top1") == r["exact_top1"]}
            for r in bad
        ]
        if bad:
            out["disagreement_median_exact_gap"] = statistics.median(r["exact_gap"] for r in bad)
        out["agreement_median_exact_gap"] = statistics.median(r["exact_gap"] for r in checks if r["agree"])
        bins = {"gap<0.5": lambda r: r["exact_gap"] < 0.5, "gap>=0.5": lambda r: r["exact_gap"] >= 0.5,
                "gap>=1": lambda r: r["exact_gap"] >= 1.0, "stale_load<=1000": lambda r: r["stale_load"] <= 1000,
                "stale_load>1000": lambda r: r["stale_load"] > 1000}
        out["agreement_by_bin"] = {
            name: {"checks": len(rs), "agree": sum(r["agree"] for r in rs)}
            for name, keep in bins.items() if (rs := [r for r in changed if keep(r)])
        }
        # the close-call margin on the first token, offline: a check whose pie cache has stale tokens and whose
        # pie top-1/top-2 gap is under the margin answers what the refreshed copy answers
        full_rows = [r for r in checks if "refresh_top1" in r or not r["stale"]]
        if len(full_rows) == len(checks):
            out["first_token_with_margin"] = {}
            for margin in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0):
                close = [r["stale"] > 0 and r["pie_gap"] < margin for r in checks]
                got = [r["refresh_top1"] if c else r["pie_top1"] for r, c in zip(checks, close)]
                out["first_token_with_margin"][str(margin)] = {
                    "agreement_pct_ci": pct_ci([float(g == r["exact_top1"]) for g, r in zip(got, checks)]),
                    "refreshed_checks": sum(close),
                    "refreshed_tokens_median": statistics.median(
                        [r["refresh_tokens"] for r, c in zip(checks, close) if c] or [0]
                    ),
                }
        lined = [r for r in checks if "line_exact" in r]
        if lined:
            refreshed = [r["guard_refreshed"] for r in lined if r["guard_refreshed"]]
            out["lines"] = {
                "checks": len(lined), "margin": lined[0]["margin"],
                "pie_equals_exact_pct_ci": pct_ci([float(r["line_pie"] == r["line_exact"]) for r in lined]),
                "guarded_equals_exact_pct_ci": pct_ci([float(r["line_guarded"] == r["line_exact"]) for r in lined]),
                "first_token_guarded_pct_ci": pct_ci(
                    [float(r["line_guarded"][:1] == r["line_exact"][:1]) for r in lined]
                ),
                "checks_with_stale_kv": sum(r["stale"] > 0 for r in lined),
                "close_call_refreshes": len(refreshed),
                "refreshed_tokens_median": statistics.median(refreshed) if refreshed else 0,
                "noise_floor_full_vs_exact": [
                    sum(r["full_line_agrees_exact"] for r in lined if "full_line_agrees_exact" in r),
                    sum("full_line_agrees_exact" in r for r in lined),
                ],
                "guarded_lost_vs_pie": sum(
                    r["line_pie"] == r["line_exact"] != r["line_guarded"] for r in lined
                ),
            }
        moves = [r["pie_ms"] for r in checks if r["kind"] == "jump" and r["hunks"] > 0]
        if moves:
            out["session_jump_sync_ms"] = {"jumps": len(moves), "p50": pctl(moves, 0.5), "p95": pctl(moves, 0.95)}
    if jumps:
        opens = {(r["path"]): (r["open_full_ms"], r["open_tokens"]) for r in jumps}
        ms = [r["ms"] for r in jumps]
        fulls = [v[0] for v in opens.values()]
        out["jumps"] = {
            "jumps": len(jumps), "documents": len(opens),
            "ms_p50": pctl(ms, 0.5), "ms_p95": pctl(ms, 0.95), "ms_max": max(ms),
            "full_encode_ms_p50": pctl(fulls, 0.5), "full_encodes": len(fulls),
            "full_encode_tokens_median": statistics.median(v[1] for v in opens.values()),
            "full_over_jump_p50": round(pctl(fulls, 0.5) / pctl(ms, 0.5), 1),
            "encoded_median": statistics.median(r["encoded"] for r in jumps),
            "encoded_max": max(r["encoded"] for r in jumps),
            "rotated_median": statistics.median(r["rotated"] for r in jumps),
            "hunks_median": statistics.median(r["hunks"] for r in jumps),
            "layout_tokens_median": statistics.median(r["layout_tokens"] for r in jumps),
            "one_decode_step_ms_p50": pctl([r["one_step_ms"] for r in jumps], 0.5),
            "under_100ms": sum(m < 100 for m in ms),
            "window_moved": sum(r["window_moved"] for r in jumps),
        }
        for where in ("back", "forward_in_suffix", "forward_past_suffix"):
            rs = [r for r in jumps if r["where"] == where]
            if rs:
                out["jumps"][where] = {
                    "jumps": len(rs), "ms_p50": pctl([r["ms"] for r in rs], 0.5),
                    "ms_p95": pctl([r["ms"] for r in rs], 0.95),
                    "encoded_median": statistics.median(r["encoded"] for r in rs),
                }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="a named model with FIM tokens")
    ap.add_argument("--dtype", default=None, help="weight precision (default: the engine's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=4096, help="document size for the quality sessions (tokens)")
    ap.add_argument("--checks", type=int, default=450, help="quality checks (steps) in all")
    ap.add_argument("--steps", type=int, default=24, help="steps per session")
    ap.add_argument("--skip-sessions", type=int, default=0, help="start at this session (a later part of a run)")
    ap.add_argument("--jump-docs", type=int, default=5, help="documents for the jump timing (0: none)")
    ap.add_argument("--jump-tokens", type=int, default=4096)
    ap.add_argument("--jumps", type=int, default=11, help="jumps per timing document")
    ap.add_argument("--suffix-tokens", type=int, default=None, help="FIM suffix budget (default: the engine's)")
    ap.add_argument("--until", default=None, help="stop starting sessions at this UTC time (HH:MM)")
    ap.add_argument("--lines", action="store_true", help="also compare whole greedy lines (and the close-call margin)")
    ap.add_argument("--margin", type=float, default=None, help="cache.close_call_margin (default: the engine's)")
    ap.add_argument("--log", type=Path, default=OUT / "fim_pie.jsonl", help="rows (appended)")
    ap.add_argument("--rows-from", type=Path, nargs="+", default=None, help="summarize earlier logs' rows (no run)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 timing document, 2 short sessions")
    args = ap.parse_args()
    if args.quick:
        args.jump_docs, args.jumps, args.checks, args.steps, args.tokens = 1, 4, 16, 8, 1024
    OUT.mkdir(exist_ok=True)
    if args.rows_from is not None:
        rows = [json.loads(x) for f in args.rows_from for x in f.read_text().splitlines() if x.startswith("{")]
        print(json.dumps(summarize(rows), indent=1))
        return
    config = EngineConfig()
    config.model.threads = args.threads
    if args.margin is not None:
        config.cache.close_call_margin = args.margin
    if args.suffix_tokens is not None:
        config.cache.fim_suffix_tokens = args.suffix_tokens
    lm = load_model(args.model, dtype=args.dtype or config.model.dtype, threads=args.threads, layout="fim")
    print(f"{lm.name}, precision {lm.precision}, {torch.get_num_threads()} thread(s)", file=sys.stderr, flush=True)
    rows: list[dict] = []
    started = time.time()
    if args.jump_docs:
        for doc in documents(lm, args.jump_tokens, args.jump_docs, args.seed + 1):
            if past(args.until, started):
                break
            rows += run_jumps(lm, config, doc, args.jumps, args.seed, args.log)
            print(json.dumps(summarize(rows).get("jumps")), file=sys.stderr, flush=True)
    n_sessions = -(-args.checks // args.steps) if args.checks else 0
    docs = documents(lm, args.tokens, args.skip_sessions + n_sessions, args.seed)[args.skip_sessions :]
    for doc in docs:
        if past(args.until, started):
            print(f"stopped at {args.until} UTC", file=sys.stderr)
            break
        got = run_session(lm, config, doc, args.steps, args.seed, args.log, args.lines)
        rows += got
        agree = sum(r["agree"] for r in got)
        print(f"{doc.project} {Path(doc.path).name}: {agree}/{len(got)}", file=sys.stderr, flush=True)
    summary = summarize(rows)
    (OUT / "fim_pie.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
