"""PIE benchmark: edit-to-ready time and quality of `pie`, `exact` and `full` after real edits.

Documents are windows of real Python files from the running interpreter's standard library, cut at
a line end so that they hold ~1k, 2k or 4k tokens. Each edit is one of the three kinds the PIE paper
evaluates (insertion of a line, deletion of a line, a multi-place edit of two lines) at random
line positions. For each edit, a copy of the document's cache is synced to the edited text in each
mode and timed (edit-to-ready). Quality, against the reference:
- top-1 next-token agreement over the 128 tokens that follow the document in the file (teacher forced);
- greedy next line at a cursor of its own for every edit: the start of a random non-blank line after
  the edit (so the stale, rotated tokens lie between the edit and the cursor); exact match and edit
  similarity against that line, which the cache holds but the cursor view hides.

The quality reference is the `exact` cache: it is the full recompute up to float error (the tests
check logits within 1e-4), and it costs half as much, which is what makes 200+ edits affordable.
`full` is timed on the first `--full-timings` edits of each length, and its agreement with `exact` is
the precision's noise floor (near-ties that flip between two exact recomputes: ~0 in fp32, ~1% in bf16).

    .venv/bin/python benchmarks/pie_edits.py            # ~15 min on 2 cores
    .venv/bin/python benchmarks/pie_edits.py --quick    # smoke run
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

import torch
from metrics import edit_similarity

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.completion.decoding.close_call import decode_guarded
from superpie.completion.decoding.greedy import chain_decode
from superpie.completion.decoding.stops import line_end_stop
from superpie.completion.decoding.task import DecodeTask, task_constraints
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel, load_model

OUT = Path(__file__).parent / "out"
HELD_OUT = 128


def stdlib_files(min_chars: int) -> list[Path]:
    """Big enough .py files of the running interpreter's standard library, in a fixed order."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(lib.glob("*.py")) if p.stat().st_size >= min_chars]
    return [p for p in files if "test" not in p.name]


def make_document(lm: LoadedModel, source: str, n_tokens: int, rng: random.Random) -> tuple[str, str] | None:
    """A window of `source` holding ~n_tokens tokens, cut at a line end; and the text that follows."""
    enc = lm.tokenizer.encode(source, add_special_tokens=False)
    if len(enc.ids) < n_tokens + HELD_OUT + 64:
        return None
    start_tok = rng.randrange(0, len(enc.ids) - n_tokens - HELD_OUT - 32)
    start = source.rfind("\n", 0, enc.offsets[start_tok][0]) + 1
    end = source.find("\n", enc.offsets[min(len(enc.ids) - 1, start_tok + n_tokens)][0])
    if end < 0:
        return None
    end += 1
    while end < len(source) and not source[end : source.find("\n", end)].strip():
        end = source.find("\n", end) + 1  # the next line must be real code
        if end <= 0:
            return None
    return source[start:end], source[end:]


def edit(text: str, kind: str, rng: random.Random) -> tuple[str, int, int]:
    """Apply one edit of `kind`; return the new text and the first and last edited line (new numbering)."""
    lines = text.splitlines(keepends=True)
    if kind == "multi":
        a, first_a, last_a = edit(text, "insertion", rng)
        b, first_b, last_b = edit(a, "deletion", rng)
        if first_b <= last_a:  # the deletion moved the inserted line up by one
            last_a -= 1
        return b, min(first_a, first_b), max(last_a, last_b)
    i = rng.randrange(1, len(lines) - 1)
    if kind == "insertion":
        donor = rng.choice([ln for ln in lines if ln.strip()])
        lines.insert(i, donor)
    else:
        del lines[i]
    return "".join(lines), i, i


def cursor_after(text: str, last_edited: int, rng: random.Random) -> tuple[int, str] | None:
    """A cursor at the start of a random non-blank line after `last_edited`: its offset and that line."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln))
    candidates = [j for j in range(last_edited + 1, len(lines)) if lines[j].strip()]
    if not candidates:
        return None
    j = rng.choice(candidates)
    return starts[j], lines[j].strip()




@torch.inference_mode()
def heldout_top1(doc: DocumentCache, follow_ids: list[int]) -> torch.Tensor:
    """Top-1 predictions for the next tokens, teacher forced behind the cached document."""
    view = CursorView(doc, doc.length - 1, reserve=HELD_OUT + 2)
    inputs = torch.tensor([doc.ids[-1], *follow_ids[: HELD_OUT - 1]])
    return view.step(input_ids=inputs, logits_for=inputs.numel()).argmax(-1)


def next_line(lm: LoadedModel, doc: DocumentCache, offset: int) -> str:
    """The greedy line at char `offset` of the document (with token healing, as the engine does)."""
    return line_draft(lm, doc, offset, 48)[0].text.strip()


def line_draft(
    lm: LoadedModel, doc: DocumentCache, offset: int, max_tokens: int, margin: float = 0.0, cap: int = 0
) -> tuple[Draft, int]:
    """The greedy line at char `offset` as the engine decodes it (healing, the line stop; no monitors, no
    speculation), and how many stale tokens it re-encoded: with `margin` > 0 and at most `cap` stale tokens
    in view, a close call refreshes them exactly and decodes again (`decode_guarded`, as the engine does)."""
    split = doc.split_at(offset)
    reads = split.prefix_len - 1
    task = DecodeTask(doc.ids[reads], max_tokens, split.typed, line_end_stop, task_constraints(lm, split.typed))
    guarded = decode_guarded(
        lambda t: chain_decode(lm, CursorView(doc, reads, reserve=max_tokens + 2), t), task, doc, reads, margin, cap
    )
    return guarded.result, guarded.refreshed


def timed_sync(doc: DocumentCache, text: str, mode: str) -> tuple[float, object]:
    t0 = time.perf_counter()
    stats = doc.sync(text, mode=mode)
    return (time.perf_counter() - t0) * 1000, stats


def run(args: argparse.Namespace) -> dict:
    lm = load_model("smollm2-135m", dtype=args.dtype, threads=args.threads)
    rng = random.Random(args.seed)
    files = stdlib_files(20_000)
    plan = {1024: (args.docs_1k, args.edits), 2048: (args.docs_2k, args.edits), 4096: (args.docs_4k, args.edits)}
    plan = {n: plan[n] for n in args.lengths}
    rows = []
    kinds = ["insertion", "deletion", "multi"]
    for n_tokens, (n_docs, n_edits) in plan.items():
        made, full_timed = 0, 0
        while made < n_docs:
            got = make_document(lm, rng.choice(files).read_text(encoding="utf-8"), n_tokens, rng)
            if got is None:
                continue
            text, follow = got
            made += 1
            base = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="full", stale_threshold=10**9,
                                 max_tokens=n_tokens + 512)
            base.sync(text)
            for e in range(n_edits):
                kind = kinds[e % 3]
                new_text, first, last = edit(text, kind, rng)
                cursor = cursor_after(new_text, last, rng)
                if cursor is None:
                    continue
                offset, truth_line = cursor
                n_lines = new_text.count("\n")
                follow_ids = lm.tokenizer.encode(new_text + follow, add_special_tokens=False).ids
                row = {
                    "tokens": n_tokens,
                    "kind": kind,
                    "where": round(first / n_lines, 3),
                    "cursor": round(new_text.count("\n", 0, offset) / n_lines, 3),
                }
                caches = {}
                for mode in ("pie", "exact"):
                    doc = base.clone()
                    ms, stats = timed_sync(doc, new_text, mode)
                    row[f"{mode}_ms"] = ms
                    row[f"{mode}_encoded"] = stats.encoded
                    row[f"{mode}_rotated"] = stats.rotated
                    caches[mode] = doc
                if full_timed < args.full_timings:
                    caches["full"] = base.clone()
                    row["full_ms"], _ = timed_sync(caches["full"], new_text, "full")
                    full_timed += 1
                follow_ids = follow_ids[caches["exact"].length :][:HELD_OUT]
                ref = heldout_top1(caches["exact"], follow_ids)
                got_pie = heldout_top1(caches["pie"], follow_ids)
                row["pie_top1_agree"] = float((got_pie == ref).float().mean())
                if "full" in caches:  # two exact recomputes: the precision's own noise floor
                    row["full_top1_agree"] = float((heldout_top1(caches.pop("full"), follow_ids) == ref).float().mean())
                for mode in ("pie", "exact"):
                    line = next_line(lm, caches[mode], offset)
                    row[f"{mode}_em"] = float(line == truth_line)
                    row[f"{mode}_es"] = edit_similarity(line, truth_line)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def mean_of(xs: list[float]) -> float | None:
    return round(statistics.mean(xs), 4) if xs else None


def p50(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 2) if xs else None


def summarize(rows: list[dict]) -> dict:
    """Per context length: p50 edit-to-ready per mode, speed-ups, agreement, EM and ES."""
    out = {"edits": len(rows), "by_tokens": {}}
    for n in sorted({r["tokens"] for r in rows}):
        rs = [r for r in rows if r["tokens"] == n]
        fq = [r for r in rs if r["where"] < 0.25]
        full = [r["full_ms"] for r in rs if "full_ms" in r]
        s = {
            "edits": len(rs),
            "p50_ms": {m: p50([r[f"{m}_ms"] for r in rs]) for m in ("pie", "exact")} | {"full": p50(full)},
            "first_quarter_p50_ms": {m: p50([r[f"{m}_ms"] for r in fq]) for m in ("pie", "exact")},
            "first_quarter_edits": len(fq),
            "pie_top1_agreement": round(statistics.mean(r["pie_top1_agree"] for r in rs), 4),
            "full_vs_exact_top1_agreement": mean_of([r["full_top1_agree"] for r in rs if "full_top1_agree" in r]),
            "next_line_em": {m: round(statistics.mean(r[f"{m}_em"] for r in rs), 4) for m in ("pie", "exact")},
            "next_line_es": {m: round(statistics.mean(r[f"{m}_es"] for r in rs), 4) for m in ("pie", "exact")},
        }
        if full and s["p50_ms"]["pie"]:
            s["full_over_pie"] = round(s["p50_ms"]["full"] / s["p50_ms"]["pie"], 1)
        if full and s["first_quarter_p50_ms"]["pie"]:
            s["full_over_pie_first_quarter"] = round(s["p50_ms"]["full"] / s["first_quarter_p50_ms"]["pie"], 1)
        out["by_tokens"][str(n)] = s
    out["overall"] = {
        "pie_top1_agreement": round(statistics.mean(r["pie_top1_agree"] for r in rows), 4),
        "next_line_em": {m: round(statistics.mean(r[f"{m}_em"] for r in rows), 4) for m in ("pie", "exact")},
        "next_line_es": {m: round(statistics.mean(r[f"{m}_es"] for r in rows), 4) for m in ("pie", "exact")},
        "note": "exact is the quality reference for full (same logits within 1e-4, see tests)",
    }
    out["rows"] = rows
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(int(n) for n in summary["by_tokens"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, style in (("pie", "o-"), ("exact", "s-"), ("full", "^-")):
        ys = [summary["by_tokens"][str(n)]["p50_ms"][mode] for n in ns]
        ax.plot(ns, ys, style, label=mode)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("document length (tokens)")
    ax.set_ylabel("edit-to-ready p50 (ms)")
    ax.set_title("superpie: edit-to-ready after one edit (2-core CPU)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", help="weight precision (fp32: the exactness reference)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: the allowed cores minus one)")
    ap.add_argument("--edits", type=int, default=6, help="edits per document")
    ap.add_argument("--docs-1k", type=int, default=24)
    ap.add_argument("--docs-2k", type=int, default=8)
    ap.add_argument("--docs-4k", type=int, default=4)
    ap.add_argument("--full-timings", type=int, default=5, help="edits per length whose full re-encode is timed")
    ap.add_argument("--lengths", type=int, nargs="*", default=[1024, 2048, 4096], help="context lengths to run")
    ap.add_argument("--quick", action="store_true", help="a smoke run (1 document per length, 3 edits)")
    ap.add_argument(
        "--rows-from", nargs="*", default=[], metavar="LOG",
        help="also summarize the per-edit JSON rows an earlier run printed on stderr (runs can be combined)",
    )
    args = ap.parse_args()
    if args.quick:
        args.docs_1k = args.docs_2k = args.docs_4k = 1
        args.edits, args.full_timings = 3, 1
    logs = [line for f in args.rows_from for line in Path(f).read_text().splitlines()]
    rows = [json.loads(line) for line in logs if line.startswith("{")]
    rows += run(args) if args.lengths else []
    summary = summarize(rows)
    OUT.mkdir(exist_ok=True)
    (OUT / "pie_edits.json").write_text(json.dumps(summary, indent=1))
    plot(summary, OUT / "pie_edits.png")
    printed = {k: v for k, v in summary.items() if k != "rows"}
    print(json.dumps(printed, indent=1))


if __name__ == "__main__":
    main()
