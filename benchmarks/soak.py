"""Soak: the real `superpie serve` under a careless and hostile client for a while (issue 18).

Several documents get edit sessions replayed from real code (stdlib files typed in a line at a
time, with inline and menu requests at line starts and after dots, and now and then an edit further
up: a line inserted, deleted or rewritten, non-ASCII and astral characters, batches of changes),
mixed with: random malformed frames (bad lengths, junk, bodies cut short), cancels of requests in
flight, protocol junk (object ids, changes that do not fit), a huge document (past
`cache.maxDocumentKb`) edited and completed from the start, a second huge one opened and closed
now and then, and workspace file churn (files created, modified, removed, and one burst of
`--burst-files` files at once, past the kernel's inotify queue by default, so the watcher must
rescan; the churn then pauses until the server has seen the burst, since during a rescan a file
created and changed counts once).

Reported: requests answered (every request must get a response, result or error, within
`--answer-timeout`), documents diverged (the server's sha256 against the client's text, for every
document still open at the end and for each huge one before it closes: must be 0), peak RSS of the
server (sampled twice a second) beside the configured KV budget, and watcher events lost (changes
and removals made on disk that the server's counters never saw, once they stop moving: must be 0,
the burst included), with the events the model worker applied to the index beside them. The exit
status is 1 when any of these fails. Figures go to benchmarks/RESULTS.md, the report to
benchmarks/out/soak.json.

    .venv/bin/python benchmarks/soak.py                 # 10 minutes, the default model
    nice -n 10 .venv/bin/python benchmarks/soak.py --minutes 3 --burst-files 2000   # a short run
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import psutil

from superpie.lsp.positions import position_at

SERVE = [sys.executable, "-m", "superpie.lsp.cli", "serve"]
FILES = ["glob.py", "fnmatch.py", "textwrap.py", "shlex.py", "bisect.py", "heapq.py"]
BAD_FRAMES = [
    b"Content-Length: abc\r\n\r\n{}",
    b'Content-Length: 5\r\n\r\n{"jsonrpc": "2.0"}',  # shorter than the body
    b"Content-Length: 99999999999\r\n\r\n",
    b"garbage without a header\r\n",
    b'Content-Length: 30\r\n\r\n{"jsonrpc": "2.0", "id": ',  # cut short (the next frame's header follows)
    b"Content-Length: 2\r\nno header here\r\n\r\n",
]
INSERTS = [
    "x = 1\n",
    "# caf\u00e9 \u00fcber na\u00efve\n",
    "s = '\U0001f600\U0001f680'  # astral: two UTF-16 units each\n",
    "\n",
]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Client:
    """A raw JSON-RPC client over the server's stdio: any bytes out, strict frames in."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pending: dict[object, asyncio.Future] = {}
        self.sent = self.answered = self.errors = 0
        self._ids = iter(range(1, 10**9))
        self.reader = asyncio.ensure_future(self._read())

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def notify(self, method: str, params: object) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: object) -> tuple[int, asyncio.Future]:
        msg_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = future
        self.sent += 1
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id, future

    async def call(self, method: str, params: object, timeout: float = 600) -> dict:
        return await asyncio.wait_for(self.request(method, params)[1], timeout)

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while True:
            length = None
            while (line := await stdout.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if not line or length is None:
                return
            message = json.loads(await stdout.readexactly(length))
            if "method" in message:
                if "id" in message:  # a request from the server (progress, configuration): answer it
                    self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
                continue
            future = self.pending.pop(message.get("id"), None)
            if future is not None and not future.done():
                self.answered += 1
                self.errors += "error" in message
                future.set_result(message)


class Document:
    """A document on the client side; every change is applied here too (the reference text)."""

    def __init__(self, client: Client, uri: str, text: str) -> None:
        self.client, self.uri, self.text, self.version = client, uri, text, 1
        self.end = position_at(text, len(text))  # kept as text is appended: no rescan of a huge text
        item = {"uri": uri, "languageId": "python", "version": 1, "text": text}
        client.notify("textDocument/didOpen", {"textDocument": item})

    def insert_at_end(self, chunk: str) -> None:
        at = {"line": self.end[0], "character": self.end[1]}
        self.text += chunk
        self.version += 1
        last = chunk.rsplit("\n", 1)[-1]
        units = len(last.encode("utf-16-le", "surrogatepass")) // 2
        self.end = (self.end[0] + chunk.count("\n"), units if "\n" in chunk else self.end[1] + units)
        change = {"range": {"start": at, "end": at}, "text": chunk}
        params = {"textDocument": {"uri": self.uri, "version": self.version}, "contentChanges": [change]}
        self.client.notify("textDocument/didChange", params)

    def edit(self, changes: list[tuple[int, int, str]]) -> None:
        """A batch of changes (str offsets into the text as each change finds it), applied in order."""
        lsp_changes = []
        for start, end, new in changes:
            at = [position_at(self.text, o) for o in (start, end)]
            rng = {"start": {"line": at[0][0], "character": at[0][1]}, "end": {"line": at[1][0], "character": at[1][1]}}
            lsp_changes.append({"range": rng, "text": new})
            self.text = self.text[:start] + new + self.text[end:]
        self.version += 1
        self.end = position_at(self.text, len(self.text))
        params = {"textDocument": {"uri": self.uri, "version": self.version}, "contentChanges": lsp_changes}
        self.client.notify("textDocument/didChange", params)

    def ask(self, kind: str) -> tuple[int, asyncio.Future]:
        params: dict = {"textDocument": {"uri": self.uri}, "position": {"line": self.end[0], "character": self.end[1]}}
        method = "textDocument/inlineCompletion" if kind == "inline" else "textDocument/completion"
        if kind == "inline":
            params["context"] = {"triggerKind": 1}
        return self.client.request(method, params)


def line_bounds(text: str, rng: random.Random, lo: int = 0) -> tuple[int, int]:
    """A random whole line of `text` at or after offset `lo`: (start, end) with its newline."""
    start = text.rfind("\n", 0, rng.randrange(lo, max(lo + 1, len(text)))) + 1
    end = text.find("\n", start)
    return start, len(text) if end < 0 else end + 1


def edit_up(doc: Document, rng: random.Random, stats: dict) -> None:
    """An edit above the end: a line inserted, deleted or rewritten, or a batch of two such changes."""
    lo = max(0, len(doc.text) - 20_000)  # near the cursor (a huge document's window moves with it)
    changes = []
    for _ in range(2 if rng.random() < 0.25 else 1):
        text = doc.text
        for start, end, new in changes:  # each change sees the text the earlier ones left
            text = text[:start] + new + text[end:]
        start, end = line_bounds(text, rng, min(lo, len(text)))
        kind = rng.choice(["insert", "delete", "rewrite"])
        if kind == "insert":
            changes.append((start, start, rng.choice(INSERTS)))
        elif kind == "delete":
            changes.append((start, end, ""))
        else:
            changes.append((start, end, text[start:end].replace("=", "= ", 1) or "pass\n"))
    doc.edit(changes)
    stats["edits_up"] += 1


async def answered(future: asyncio.Future, timeout: float, stats: dict) -> None:
    """Wait for a request's answer; one that never comes is counted, not waited on forever."""
    done, _ = await asyncio.wait({future}, timeout=timeout)
    stats["unanswered"] += not done


async def type_session(
    doc: Document, source: str, rng: random.Random, deadline: float, stats: dict, timeout: float
) -> None:
    """Type `source` a line at a time, asking at line starts and after dots; cancel some requests."""
    for line in source.splitlines(keepends=True):
        if time.monotonic() > deadline:
            return
        head, dot, tail = line.partition(".")
        doc.insert_at_end(head + dot)
        if dot or rng.random() < 0.3:
            msg_id, future = doc.ask(rng.choice(["inline", "inline", "menu"]))
            if rng.random() < 0.15:  # the user typed on: the editor cancels
                await asyncio.sleep(rng.uniform(0, 0.3))
                doc.client.notify("$/cancelRequest", {"id": msg_id})
                stats["cancels"] += 1
            await answered(future, timeout, stats)
        doc.insert_at_end(tail)
        if rng.random() < 0.1:
            edit_up(doc, rng, stats)
        await asyncio.sleep(rng.uniform(0.05, 0.4))


async def diverged(client: Client, doc: Document, timeout: float) -> bool:
    """Whether the server's copy of the document differs from the client's (or the server cannot say)."""
    params = {"command": "superpie.document", "arguments": [doc.uri]}
    try:
        state = (await client.call("workspace/executeCommand", params, timeout)).get("result")
    except asyncio.TimeoutError:
        return True
    return state is None or state["sha256"] != sha(doc.text)


async def huge_visit(client: Client, big: str, rng: random.Random, stats: dict, timeout: float) -> None:
    """A second huge document: opened, edited, completed in, checked, closed."""
    stats["huge_visits"] += 1
    doc = Document(client, f"file:///virtual/visit{stats['huge_visits']}.py", big)
    for _ in range(3):
        edit_up(doc, rng, stats)
        doc.insert_at_end("value = ")
        await answered(doc.ask("inline")[1], timeout, stats)
    stats["diverged"] += await diverged(client, doc, timeout)
    stats["checked"] += 1
    client.notify("textDocument/didClose", {"textDocument": {"uri": doc.uri}})


async def mischief(
    client: Client, docs: list[Document], big: str, rng: random.Random, deadline: float, stats: dict, timeout: float
) -> None:
    """Malformed frames, protocol junk and huge documents, now and then; each followed by a request that must
    be answered."""
    while time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(1, 4))
        choice = rng.random()
        if choice < 0.08:
            await huge_visit(client, big, rng, stats, timeout)
        elif choice < 0.5:
            client.write(rng.choice(BAD_FRAMES))
            stats["bad_frames"] += 1
        elif choice < 0.7:
            client.send({"jsonrpc": "2.0", "id": {"an": "object"}, "method": "workspace/executeCommand"})
            stats["bad_ids"] += 1
        else:  # a change past the document's last line: refused whole, the texts stay equal
            doc = rng.choice(docs)
            far = {"line": 10**6, "character": 0}
            change = {"range": {"start": far, "end": far}, "text": "?"}
            params = {"textDocument": {"uri": doc.uri, "version": doc.version}, "contentChanges": [change]}
            client.notify("textDocument/didChange", params)
            stats["bad_changes"] += 1
        await answered(client.request("workspace/executeCommand", {"command": "superpie.stats"})[1], timeout, stats)


async def caught_up(client: Client, expect: dict, limit_s: float = 180.0) -> None:
    """Wait until the server has seen every workspace event made so far (or `limit_s` passed), then 3 s more.

    The burst's rescan reports what differs from what the watcher knew, so a file created and changed
    (or created and removed) while the rescan is pending counts once (or not at all): churn waits for the
    rescan to be over, which keeps the counts exact and a lost event visible.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        seen = (await client.call("workspace/executeCommand", {"command": "superpie.stats"}))["result"]["workspace"]
        if seen["changed"] >= expect["changed"] and seen["removed"] >= expect["removed"]:
            break
        await asyncio.sleep(1.0)
    await asyncio.sleep(3.0)


async def churn(
    client: Client, root: Path, rng: random.Random, deadline: float, expect: dict, debounce_s: float, burst_files: int
) -> None:
    """Create, modify and remove workspace files in rounds (each round settles past the debounce); one burst."""
    sources = [Path(sysconfig.get_paths()["stdlib"], name).read_text() for name in FILES]
    n, burst_done = 0, False
    halfway = time.monotonic() + (deadline - time.monotonic()) / 2
    while time.monotonic() < deadline:
        if not burst_done and time.monotonic() > halfway:
            burst = root / "burst"
            burst.mkdir()
            for i in range(burst_files):
                (burst / f"b{i}.py").write_text(f"value = {i}\n")
            expect["changed"] += burst_files
            burst_done = True
            await caught_up(client, expect)
            continue
        made = []
        for _ in range(5):
            path = root / f"churn_{n}.py"
            n += 1
            path.write_text(rng.choice(sources)[: rng.randrange(200, 4000)])
            made.append(path)
        expect["changed"] += len(made)
        await asyncio.sleep(3 * debounce_s)
        for path in made[:2]:
            with path.open("a") as f:
                f.write("\n# edited\n")
        expect["changed"] += 2
        await asyncio.sleep(3 * debounce_s)
        made[-1].unlink()
        expect["removed"] += 1
        await asyncio.sleep(rng.uniform(0.5, 2.0))


async def progress(client: Client, stats: dict, expect: dict, deadline: float) -> None:
    """A line on stderr every 30 s: a long soak shows that it moves."""
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(30)
        left = max(0.0, deadline - time.monotonic())
        print(
            f"soak {time.monotonic() - t0:.0f} s ({left:.0f} s left): requests {client.answered}/{client.sent} "
            f"answered, {stats['edits_up']} edits up, {stats['bad_frames']} bad frames, files {expect}",
            file=sys.stderr,
            flush=True,
        )


async def sample_rss(pid: int, deadline: float, peak: list[int]) -> None:
    proc = psutil.Process(pid)
    while time.monotonic() < deadline + 60:
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.Error:
            return
        await asyncio.sleep(0.5)


async def settled(client: Client, quiet_s: float = 10.0, limit_s: float = 300.0) -> dict:
    """`superpie.stats` once the workspace counters (seen and applied) have not moved for `quiet_s`."""
    last, still_since, t0 = None, time.monotonic(), time.monotonic()
    while True:
        final = (await client.call("workspace/executeCommand", {"command": "superpie.stats"}))["result"]
        now = (final["workspace"]["changed"], final["workspace"]["removed"], final["workspace"]["applied"])
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet_s or time.monotonic() - t0 > limit_s:
            return final
        await asyncio.sleep(1.0)


async def run(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="superpie-soak-"))
    proc = await asyncio.create_subprocess_exec(
        *SERVE, *(["--model", args.model] if args.model else []), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, limit=1 << 26,
    )  # fmt: skip
    client = Client(proc)
    debounce_s = 0.2
    options = {
        "cache": {"memoryBudgetMb": args.budget_mb, "maxDocumentKb": 1024},
        "watcher": {"debounceMs": int(debounce_s * 1000)},
        "model": {"dtype": "float32"} if args.model else {},
    }
    init = {"processId": os.getpid(), "rootUri": root.as_uri(), "capabilities": {}, "initializationOptions": options}
    await client.call("initialize", init)
    client.notify("initialized", {})
    t_load = time.monotonic()
    while not (await client.call("workspace/executeCommand", {"command": "superpie.stats"}))["result"]["model"][
        "loaded"
    ]:
        await asyncio.sleep(0.5)
    load_s = time.monotonic() - t_load
    deadline = time.monotonic() + args.minutes * 60
    peak = [0]
    sampler = asyncio.ensure_future(sample_rss(proc.pid, deadline, peak))
    stats = dict.fromkeys(
        [
            "cancels",
            "bad_frames",
            "bad_ids",
            "bad_changes",
            "edits_up",
            "huge_visits",
            "unanswered",
            "diverged",
            "checked",
        ],
        0,
    )
    expect = {"changed": 0, "removed": 0}
    sources = [Path(sysconfig.get_paths()["stdlib"], name).read_text() for name in FILES]
    docs = [Document(client, f"file:///virtual/soak{i}.py", "") for i in range(args.documents)]
    lines = sources[0].splitlines(keepends=True)
    big = "".join(lines * (args.huge_mb * 2**20 // len(sources[0]) + 1))[: args.huge_mb * 2**20]
    huge = Document(client, "file:///virtual/huge.py", big)
    timeout = args.answer_timeout
    tasks = [
        type_session(d, sources[i % len(sources)], random.Random(args.seed + i), deadline, stats, timeout)
        for i, d in enumerate(docs)
    ]
    tasks += [type_session(huge, sources[1], random.Random(args.seed + 99), deadline, stats, timeout)]
    tasks += [
        mischief(client, [*docs, huge], big, rng, deadline, stats, timeout),
        churn(client, root, rng, deadline, expect, debounce_s, args.burst_files),
    ]
    t0 = time.monotonic()
    reporter = asyncio.ensure_future(progress(client, stats, expect, deadline))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    for doc in [*docs, huge]:
        stats["diverged"] += await diverged(client, doc, timeout)
        stats["checked"] += 1
    final = await settled(client)
    await client.call("shutdown", None)
    client.notify("exit", None)
    code = await asyncio.wait_for(proc.wait(), 60)
    sampler.cancel()
    reporter.cancel()
    shutil.rmtree(root, ignore_errors=True)
    seen = final["workspace"]
    return {
        "minutes": round(elapsed / 60, 2),
        "model": final["model"]["name"],
        "load_s": round(load_s, 1),
        "requests": {
            "sent": client.sent,
            "answered": client.answered,
            "errors": client.errors,
            "unanswered": stats["unanswered"],
        },
        "documents": {
            "checked": stats["checked"],
            "diverged": stats["diverged"],
            "huge_mb": round(len(huge.text) / 2**20, 1),
        },
        "memory": {
            "peak_rss_mb": round(peak[0] / 2**20),
            "budget_mb": args.budget_mb,
            "kv_mb_at_end": round(final["memory"]["kv_bytes"] / 2**20),
        },
        "watcher": {
            "expected": expect,
            "seen": {"changed": seen["changed"], "removed": seen["removed"]},
            "lost": max(0, expect["changed"] - seen["changed"]) + max(0, expect["removed"] - seen["removed"]),
            # more seen than made would hide a loss: the counts are exact only when this is 0
            "surplus": max(0, seen["changed"] - expect["changed"]) + max(0, seen["removed"] - expect["removed"]),
            "applied_by_worker": seen["applied"],
            "coalesced_by_worker": seen["coalesced"],  # a newer event for the same file took its place
            "not_applied": seen["changed"] + seen["removed"] - seen["applied"] - seen["coalesced"],
        },
        "mischief": stats,
        "server": {
            "empty": final["empty"],
            "protocol": final["protocol"],
            "bad_changes": final["documents"]["bad_changes"],
            "rss_mb_at_end": round((final["memory"]["rss_bytes"] or 0) / 2**20),
        },
        "exit_status": code,
        "cpus": os.cpu_count(),
        "loadavg_at_end": list(os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default=None, help="model directory (default: the embedded default model)")
    parser.add_argument("--documents", type=int, default=3, help="documents typed into at once")
    parser.add_argument("--huge-mb", type=int, default=8, help="size of the huge document")
    parser.add_argument("--budget-mb", type=int, default=512, help="cache.memoryBudgetMb")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--burst-files", type=int, default=20_000, help="files created at once (the issue's 20,000)")
    parser.add_argument("--answer-timeout", type=float, default=300.0, help="seconds a request may go unanswered")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "soak.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    watcher = report["watcher"]
    ok = report["documents"]["diverged"] == 0 and watcher["lost"] == 0 and watcher["not_applied"] == 0
    ok = ok and report["requests"]["unanswered"] == 0 and report["exit_status"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
