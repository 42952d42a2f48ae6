"""Multi-line menu requests: how many tokens decoding spends per request, and the drafts they return.

A menu request as the language server makes it by default (multi-line, up to `max_tokens_menu` = 48
tokens, `completion.drafts` = 1 draft) at statements inside indented blocks of standard-library files
(not comments, not lines of strings): the cursor's line emptied to its indentation, the code after it
kept; one open document per file, each cursor an edit of it. Counted per request: the tokens decoding
appended to drafts (every strategy builds its drafts with `Partial.extend`), the decode time, and the
ranked drafts. Two runs of different code on the same cursors compare with `--compare`: mean tokens
decoded, and whether each request returned the same drafts.

    .venv/bin/python benchmarks/menu_tokens.py --samples 20 --monitors 0 --out benchmarks/out/menu_after.json
    .venv/bin/python benchmarks/menu_tokens.py --compare benchmarks/out/menu_before.json benchmarks/out/menu_after.json

Run it once per code version (e.g. with PYTHONPATH pointing at a checkout of the older code).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sysconfig
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"
FILES = ["argparse.py", "textwrap.py", "json/decoder.py", "json/encoder.py", "difflib.py", "shlex.py",
         "ftplib.py", "configparser.py", "calendar.py", "pprint.py"]  # fmt: skip


def cursors(n: int, seed: int, max_lines: int) -> list[tuple[str, str, str, int]]:
    """(file, cursor name, document, offset) at the indentation of emptied lines inside indented blocks,
    bottom-up within each file (so each request's document is an edit of the one before)."""
    from superpie.analysis import lexical

    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    per_file = -(-n // len(FILES))
    for name in FILES:
        lines = (stdlib / name).read_text(encoding="utf-8").splitlines(keepends=True)[:max_lines]
        starts = [sum(map(len, lines[:i])) for i in range(len(lines) + 1)]
        text = "".join(lines)
        statements = set(lexical.logical_line_starts(text))
        ok = [  # a statement of an indented block: not a comment, a string, a line of a string or of brackets
            i
            for i in range(20, len(lines) - 1)
            if lines[i].strip()
            and lines[i][0] == " "
            and not lines[i].lstrip().startswith(("#", '"', "'"))
            and starts[i] in statements
            and lexical.region_at(text, starts[i] + 1) == "code"
        ]
        for i in sorted(rng.sample(ok, min(per_file, len(ok))), reverse=True):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            before = "".join(lines[:i]) + indent
            out.append((name, f"{name}:{i + 1}", before + "\n" + "".join(lines[i + 1 :]), len(before)))
    return out[:n]


def run(args: argparse.Namespace) -> dict:
    from superpie.completion.config import EngineConfig
    from superpie.completion.decoding import task as task_module
    from superpie.completion.engine import Engine

    try:
        from superpie.completion.request import CompletionRequest
    except ImportError:  # older code: the request lived in the engine module
        from superpie.completion.engine import CompletionRequest  # type: ignore[no-redef]

    counted = [0]
    extend = task_module.Partial.extend

    def counting_extend(self, *a, **kw):  # type: ignore[no-untyped-def]
        counted[0] += 1
        return extend(self, *a, **kw)

    task_module.Partial.extend = counting_extend  # type: ignore[method-assign]
    config = EngineConfig()
    config.model.path = "smollm2-135m"  # its figures in RESULTS are SmolLM2's; the default depends on the CPU
    config.decoding.max_tokens = args.max_tokens  # what the server sets: the longer of inline and menu
    config.monitors.enabled = bool(args.monitors)
    engine = Engine(config)
    engine.ensure_loaded()
    rows = []
    for file, name, text, offset in cursors(args.samples, args.seed, args.max_lines):
        uri = f"mem://{file}"  # one document per file: each cursor is an edit of it, synced as the editor would
        engine.sync(uri, text)
        counted[0] = 0
        t0 = time.perf_counter()
        result = engine.complete(
            CompletionRequest(uri, text, offset, max_tokens=args.max_tokens, drafts=args.drafts, multiline=True)
        )
        wall = (time.perf_counter() - t0) * 1000
        rows.append(
            {
                "cursor": name,
                "tokens": counted[0],
                "decode_ms": round(result.timings_ms["decode"], 1),
                "wall_ms": round(wall, 1),
                "texts": [c.text for c in result.completions],
                "scores": [c.score for c in result.completions],
            }
        )
        print(f"{name:28s} {counted[0]:3d} tokens {wall:7.0f} ms  {rows[-1]['texts'][:1]!r:.70}", flush=True)
        save(args, rows)  # after every request: a long run stopped early still leaves its rows
    engine.shutdown()
    return save(args, rows)


def save(args: argparse.Namespace, rows: list[dict]) -> dict:
    """Write the run so far to args.out."""
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "mean_tokens": statistics.fmean(r["tokens"] for r in rows),
        "mean_decode_ms": statistics.fmean(r["decode_ms"] for r in rows),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


def compare(before_path: Path, after_path: Path) -> None:
    before, after = (json.loads(Path(p).read_text()) for p in (before_path, after_path))
    pairs = list(zip(before["rows"], after["rows"], strict=False))  # a run stopped early: the cursors both ran
    assert all(b["cursor"] == a["cursor"] for b, a in pairs), "not the same cursors"
    for run_, rows in ((before, [b for b, _ in pairs]), (after, [a for _, a in pairs])):
        run_["mean_tokens"] = statistics.fmean(r["tokens"] for r in rows)
        run_["mean_decode_ms"] = statistics.fmean(r["decode_ms"] for r in rows)
    same_texts = sum(b["texts"] == a["texts"] for b, a in pairs)
    same_scores = sum(b["texts"] == a["texts"] and b["scores"] == a["scores"] for b, a in pairs)
    full = sum(b["tokens"] >= before["args"]["max_tokens"] * before["args"]["drafts"] for b, _ in pairs)
    print(f"cursors: {len(pairs)}")
    print(f"mean tokens decoded: before {before['mean_tokens']:.1f}  after {after['mean_tokens']:.1f}")
    print(f"mean decode ms: before {before['mean_decode_ms']:.0f}  after {after['mean_decode_ms']:.0f}")
    print(f"requests that decoded the whole budget before: {full}")
    print(f"same drafts (texts, in order): {same_texts}; same texts and scores: {same_scores}")
    for b, a in pairs:
        if b["texts"] != a["texts"] or b["scores"] != a["scores"]:
            print(f"  {b['cursor']}\n    before {b['texts']} {b['scores']}\n    after  {a['texts']} {a['scores']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=48, help="the server's max_tokens_menu")
    parser.add_argument("--drafts", type=int, default=1, help="the server's completion.drafts")
    parser.add_argument("--monitors", type=int, default=1)
    parser.add_argument("--max-lines", type=int, default=150, help="document: the file's first lines")
    parser.add_argument("--out", type=Path, default=OUT / "menu_tokens.json")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    result = run(args)
    print(f"mean tokens decoded {result['mean_tokens']:.1f}, mean decode {result['mean_decode_ms']:.0f} ms")


if __name__ == "__main__":
    main()
