"""Issue 17, start-up: `superpie serve` answers `initialize` before it imports anything heavy.

No timing here (benchmarks/startup.py measures it): the seam is checked by what is imported before
the answer. The server runs with `python -X importtime`, its stderr on the same pipe as its LSP
output, so every import line written before the answer's frame was imported before the answer.
The early answer (`superpie.lsp.startup`) is held to pygls' own answer for the same initialize.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from superpie.lsp.framing import Message
from superpie.lsp.startup import early_answer, position_encoding, reduced_params, server_version

SERVE = [sys.executable, "-X", "importtime", "-m", "superpie.lsp.cli", "serve"]
HEAVY = ("torch", "transformers", "jedi", "tree_sitter", "tree_sitter_python", "pygls", "lsprotocol", "numpy")


def initialize(capabilities: object, msg_id: object = 1, **params: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "initialize",
        "params": {"processId": None, "capabilities": capabilities, **params},
    }


def framed(message: object) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class MixedStream:
    """The server's LSP frames and its stderr (import lines, logs) on one pipe, in the order written."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stdin is not None
        self.proc, self.out, self.inp = proc, proc.stdout, proc.stdin
        self.buf = b""
        self.imported: list[str] = []  # top-level packages, in the order their import finished
        self.frames: list[dict] = []

    def send(self, message: object) -> None:
        self.inp.write(framed(message))

    async def frame(self, timeout: float = 120.0) -> dict:
        """The next frame; the import lines before it are added to `imported`."""
        while (start := self.buf.find(b"Content-Length:")) < 0 or (end := self.buf.find(b"\r\n\r\n", start)) < 0:
            await self._more(timeout)
        self._lines(self.buf[:start])
        length = int(self.buf[start:end].split(b":")[1].split(b"\r\n")[0])
        while len(self.buf) < end + 4 + length:
            await self._more(timeout)
        body, self.buf = self.buf[end + 4 : end + 4 + length], self.buf[end + 4 + length :]
        self.frames.append(json.loads(body))
        return self.frames[-1]

    async def answer(self, msg_id: object) -> dict:
        while True:
            message = await self.frame()
            if message.get("id") == msg_id and "method" not in message:
                return message

    async def _more(self, timeout: float) -> None:
        data = await asyncio.wait_for(self.out.read(1 << 16), timeout)
        assert data, f"the server ended its output; last bytes: {self.buf[-2000:]!r}"
        self.buf += data

    def _lines(self, text: bytes) -> None:
        for line in text.decode(errors="replace").splitlines():
            if line.startswith("import time:") and "|" in line:
                name = line.rsplit("|", 1)[1].strip()
                if name != "imported package":  # the column header
                    self.imported.append(name.split(".")[0])

    async def finish(self) -> int:
        """shutdown, exit; the exit status (every import line read)."""
        assert "error" not in await self.answer_to({"jsonrpc": "2.0", "id": "bye", "method": "shutdown"})
        self.send({"jsonrpc": "2.0", "method": "exit"})
        rest = await asyncio.wait_for(self.out.read(), 60)
        self._lines(self.buf + rest)
        return await asyncio.wait_for(self.proc.wait(), 30)

    async def answer_to(self, message: dict) -> dict:
        self.send(message)
        return await self.answer(message["id"])


async def serve(*args: str) -> MixedStream:
    proc = await asyncio.create_subprocess_exec(
        *SERVE, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, limit=1 << 26
    )
    return MixedStream(proc)


# ----------------------------------------------------------------------------- the import seam


def test_the_serve_path_imports_nothing_heavy() -> None:
    """What `superpie serve` imports before its first answer: the CLI, the transport, the start-up module."""
    code = (
        "import sys, superpie.lsp.cli, superpie.lsp.transport, superpie.lsp.startup; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", f"imported on the serve path before initialize: {out.stdout.strip()}"


@pytest.mark.asyncio
async def test_initialize_is_answered_before_the_heavy_imports() -> None:
    server = await serve()
    message = initialize({"general": {"positionEncodings": ["utf-16", "utf-8"]}}, rootUri=None)
    server.send(message)
    answer = await server.frame()
    before = set(server.imported)
    assert answer["id"] == 1 and answer["result"]["capabilities"]["positionEncoding"] == "utf-8", answer
    assert "superpie" in before  # the import lines are seen at all
    assert not before & set(HEAVY), f"imported before initialize was answered: {sorted(before & set(HEAVY))}"
    stats = await server.answer_to(
        {"jsonrpc": "2.0", "id": 2, "method": "workspace/executeCommand", "params": {"command": "superpie.stats"}}
    )
    assert "result" in stats, stats  # the server proper was made after the answer, and serves
    assert await server.finish() == 0
    assert {"pygls", "torch"} <= set(server.imported)
    assert [f for f in server.frames if f.get("id") == 1] == [answer]  # pygls' own answer held back


@pytest.mark.asyncio
async def test_capabilities_pygls_cannot_read_still_make_one_session() -> None:
    """Deep in `capabilities` pygls refuses what the early answer accepted: it gets the encoding answered."""
    server = await serve()
    bad = {"general": {"positionEncodings": ["utf-32"], "staleRequestSupport": {"cancel": True}}}
    server.send(initialize(bad))
    answer = await server.frame()
    assert answer["result"]["capabilities"]["positionEncoding"] == "utf-32", answer
    again = await server.answer_to(initialize({}, msg_id=2))  # the session was initialized (once)
    assert again["error"]["code"] == -32600, again
    assert await server.finish() == 0
    assert [f for f in server.frames if f.get("id") == 1] == [answer]


@pytest.mark.asyncio
async def test_an_initialize_the_early_answer_declines_is_answered_by_pygls() -> None:
    server = await serve()
    refused = await server.answer_to(initialize({}, processId="not a pid"))
    assert refused["error"]["code"] == -32602, refused
    accepted = await server.answer_to(initialize({}, msg_id=2))
    assert accepted["result"]["capabilities"]["positionEncoding"] == "utf-16", accepted
    assert await server.finish() == 0


# ----------------------------------------------------------------------------- the early answer


VSCODE_LIKE = {
    "general": {"positionEncodings": ["utf-16"], "markdown": {"parser": "marked", "version": "1.1.0"}},
    "window": {"workDoneProgress": True, "showMessage": {"messageActionItem": {"additionalPropertiesSupport": True}}},
    "workspace": {"configuration": True, "workspaceFolders": True, "didChangeConfiguration": {}},
    "textDocument": {
        "synchronization": {"willSave": True, "willSaveWaitUntil": True, "didSave": True},
        "completion": {"completionItem": {"documentationFormat": ["markdown", "plaintext"], "snippetSupport": True}},
        "inlineCompletion": {"dynamicRegistration": True},
    },
    "notebookDocument": {"synchronization": {"dynamicRegistration": True}},
}


@pytest.mark.parametrize(
    "capabilities",
    [
        {},
        VSCODE_LIKE,
        {"general": {"positionEncodings": ["utf-32", "utf-16"]}},
        {"general": {"positionEncodings": ["utf-32", "utf-8"]}},
        {"general": {"positionEncodings": ["latin-1"]}},
        {"general": {"positionEncodings": []}},
        {"general": None},
        {"textDocument": {"synchronization": {"willSave": False, "willSaveWaitUntil": None}}},
        {"textDocument": {"synchronization": None}},
        {"general": {"positionEncodings": ["utf-32"], "staleRequestSupport": {"cancel": True}}},  # pygls refuses
        {"general": {"staleRequestSupport": {"cancel": 1}}, "textDocument": {"synchronization": {"willSave": 1}}},
    ],
)
def test_the_early_answer_is_what_pygls_answers(capabilities: dict) -> None:
    from superpie.lsp.handlers import create_server
    from superpie.lsp.transport import dispatch

    written: list[dict] = []

    class Writer:
        def write(self, data: bytes) -> None:
            written.append(json.loads(data.partition(b"\r\n\r\n")[2]))

        def close(self) -> None:
            pass

    message = initialize(capabilities, msg_id="init", rootUri=None, clientInfo={"name": "an editor"})
    early = early_answer(message)
    assert early is not None
    server = create_server()
    try:
        server.protocol.set_writer(Writer())
        dispatch(server, Message(message))
        if "error" in written[-1]:  # the transport's fallback
            dispatch(server, Message(reduced_params(message, early)))
        assert written[-1] == early
    finally:
        server.close(timeout=2.0)


@pytest.mark.parametrize(
    "message",
    [
        [initialize({})],  # a batch
        initialize({}, msg_id=True),
        initialize({}, msg_id=1.5),
        initialize({}, msg_id=None),
        {**initialize({}), "jsonrpc": "1.0"},
        {**initialize({}), "params": None},
        {**initialize({}), "params": {"processId": None}},
        initialize([]),
        initialize({}, processId="1"),
        initialize({}, processId=True),
        initialize({}, rootUri=3),
        initialize({}, workspaceFolders=[{"uri": 1, "name": "x"}]),
        initialize({}, workspaceFolders={"uri": "file:///x", "name": "x"}),
        initialize({}, trace="loud"),
        initialize({}, clientInfo={"version": "1"}),
        initialize({}, workDoneToken=[1]),
        initialize({"general": []}),
        initialize({"general": {"positionEncodings": "utf-8"}}),
        initialize({"general": {"positionEncodings": [8]}}),
        initialize({"textDocument": 5}),
        initialize({"textDocument": {"synchronization": []}}),
        {"jsonrpc": "2.0", "id": 1, "method": "shutdown"},
    ],
)
def test_the_early_answer_leaves_anything_unusual_to_the_server(message: object) -> None:
    assert early_answer(message) is None


def test_the_version_is_importlib_metadata_s() -> None:
    from importlib.metadata import version

    assert server_version() == version("superpie")


def test_utf8_is_chosen_whenever_offered() -> None:
    assert position_encoding(None) == "utf-16"
    assert position_encoding(["utf-32", "utf-8"]) == "utf-8"
    assert position_encoding(["latin-1", "utf-32", "utf-16"]) == "utf-32"
    assert position_encoding(["latin-1"]) == "utf-16"
