"""Issue 18 item 9: malformed framing, through a raw-frame client over a real `superpie serve` (stdio).

Every case is followed by a well-formed request that must be answered at once: the server stays
alive and in step with the stream. The reader itself (`superpie.lsp.framing`) is checked byte by byte
with a small size limit below.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from test_server import SERVE, tiny_dir  # noqa: F401  (a fixture)

from superpie.lsp.framing import FrameReader, Message, Unreadable, request_id_in

pytestmark = pytest.mark.asyncio(loop_scope="module")


class RawClient:
    """Writes any bytes to the server and reads its frames strictly (Content-Length, then the body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: Any, proc: asyncio.subprocess.Process | None = None):
        self.reader, self.writer, self.proc = reader, writer, proc
        self.seen: list[dict] = []  # every frame read, notifications included
        self._ids = iter(range(1000, 10**9))

    @classmethod
    async def stdio(cls, *args: str, env: dict[str, str] | None = None) -> RawClient:
        proc = await asyncio.create_subprocess_exec(
            *SERVE, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=env, limit=1 << 26,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None
        return cls(proc.stdout, proc.stdin, proc)

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def body(self, method: str, params: object = None, msg_id: object = None) -> dict:
        message: dict = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        if msg_id is not None:
            message["id"] = msg_id
        return message

    def request(self, method: str, params: object = None) -> int:
        msg_id = next(self._ids)
        self.send(self.body(method, params, msg_id))
        return msg_id

    async def frame(self, timeout: float) -> dict | None:
        """The next frame from the server; None at the end of its output."""
        length = None
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                return None
            if line == b"\r\n":
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        assert length is not None
        message = json.loads(await asyncio.wait_for(self.reader.readexactly(length), timeout))
        self.seen.append(message)
        return message

    async def response(self, msg_id: object, timeout: float = 10.0) -> dict:
        """The server's response to `msg_id` (notifications on the way are kept in `seen`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.frame(max(0.01, deadline - loop.time()))
            assert message is not None, "the server closed its output"
            if message.get("id", ...) == msg_id and ("result" in message or "error" in message):
                return message

    async def initialize(self, options: dict | None = None, root: Path | None = None) -> dict:
        params = {"processId": None, "capabilities": {}, "initializationOptions": options}
        if root is not None:
            params["rootUri"] = root.as_uri()
        answer = await self.response(self.request("initialize", params), 60)
        if "result" in answer:  # answered before the server proper is imported (issue 17): wait until it serves
            stats = {"command": "superpie.stats"}
            assert "result" in await self.response(self.request("workspace/executeCommand", stats), 60)
        return answer

    async def alive(self) -> None:
        """A well-formed request is answered at once."""
        msg_id = self.request("workspace/executeCommand", {"command": "superpie.stats"})
        answer = await self.response(msg_id, 10)
        assert "result" in answer, answer

    async def stop(self) -> int:
        """shutdown, exit; the exit status."""
        assert (await self.response(self.request("shutdown"), 30)).get("error") is None
        self.send(self.body("exit"))
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), 30)


def frame(body: bytes, length: int | str | None = None) -> bytes:
    """A frame with any Content-Length (the body's own by default)."""
    return b"Content-Length: %s\r\n\r\n" % str(len(body) if length is None else length).encode() + body


def stats_body(msg_id: int) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": msg_id, "method": "workspace/executeCommand", "params": {"command": "superpie.stats"}}
    ).encode()


# ----------------------------------------------------------------------------- the real server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def raw(tiny_dir: Path):  # noqa: F811
    client = await RawClient.stdio("--model", str(tiny_dir))
    answer = await client.initialize({"model": {"dtype": "float32"}})
    assert "result" in answer
    yield client
    assert await client.stop() == 0


async def test_a_non_numeric_length_loses_nothing_after_it(raw: RawClient) -> None:
    raw.send_bytes(frame(stats_body(1), "abc"))
    assert "result" in await raw.response(1, 5)  # the body after the bad header was still read
    await raw.alive()


async def test_a_length_shorter_than_the_body(raw: RawClient) -> None:
    raw.send_bytes(frame(stats_body(2), 10))
    assert "result" in await raw.response(2, 5)  # the rest of the body came before the next header
    raw.send_bytes(frame(stats_body(3), 10) + frame(stats_body(4)))
    assert "result" in await raw.response(3, 5)
    assert "result" in await raw.response(4, 5)
    await raw.alive()


async def test_a_length_longer_than_the_body(raw: RawClient) -> None:
    body = stats_body(5)
    raw.send_bytes(frame(body, len(body) + 40) + frame(stats_body(6)))  # the next message starts inside
    assert "result" in await raw.response(5, 5)
    assert "result" in await raw.response(6, 5)
    raw.send_bytes(frame(stats_body(7), len(body) + 400))  # and nothing after it: answered once quiet
    assert "result" in await raw.response(7, 5)
    await raw.alive()


async def test_a_body_cut_short_is_a_parse_error_and_the_next_message_is_read(raw: RawClient) -> None:
    raw.send_bytes(frame(stats_body(8)[:30]) + frame(stats_body(9)))
    assert "result" in await raw.response(9, 5)
    errors = [m for m in raw.seen if m.get("id", ...) is None and "error" in m]
    assert errors and errors[-1]["error"]["code"] == -32700
    await raw.alive()


async def test_a_huge_length_is_refused_without_reading_it(raw: RawClient) -> None:
    raw.send_bytes(frame(stats_body(10), 99999999999))
    assert "result" in await raw.response(10, 5)  # over the limit: its header is ignored, its body read
    await raw.alive()
    assert raw.proc is not None and raw.proc.returncode is None


async def test_garbage_between_messages_and_broken_header_lines(raw: RawClient) -> None:
    raw.send_bytes(b"hello\r\n\r\n" + frame(stats_body(11)))
    assert "result" in await raw.response(11, 5)
    raw.send_bytes(b"Content-Length: 12\r\nthis is no header\r\n\r\n" + frame(stats_body(12)))
    assert "result" in await raw.response(12, 5)
    raw.send_bytes(b"X" * 5000 + b"\r\n" + frame(stats_body(13)))  # a header line far too long
    assert "result" in await raw.response(13, 5)
    await raw.alive()
    s = (await raw.response(raw.request("workspace/executeCommand", {"command": "superpie.stats"}), 10))["result"]
    assert s["protocol"]["framing_problems"] >= 7


# ----------------------------------------------------------------------------- the reader, byte by byte


async def read_all(data: bytes, max_bytes: int = 1000, chunk: int = 7) -> list[Message | Unreadable]:
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] + [b""]

    async def read() -> bytes:
        return pieces.pop(0) if pieces else b""

    reader = FrameReader(read, max_bytes=max_bytes, settle_s=0.05)
    events = []
    while (event := await reader.next()) is not None:
        events.append(event)
    return events


async def test_reader_well_formed_frames_with_content_type() -> None:
    one, two = b'{"a": 1}', b'{"b": [1, 2]}'
    data = frame(one) + b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n" + frame(two)
    assert await read_all(data) == [Message({"a": 1}), Message({"b": [1, 2]})]


async def test_reader_over_the_limit_drops_the_body_and_keeps_its_id() -> None:
    big = json.dumps({"jsonrpc": "2.0", "id": 42, "method": "x", "params": {"t": "y" * 5000}}).encode()
    events = await read_all(frame(big) + frame(b'{"ok": true}'))
    assert isinstance(events[0], Unreadable) and events[0].too_large and events[0].msg_id == 42
    assert events[-1] == Message({"ok": True})
    assert request_id_in(b'{"jsonrpc": "2.0", "params": {"id": 3}, "id": 4}') is None  # nested: not sure
    assert request_id_in(b'{"jsonrpc": "2.0", "id": "a\\"b", "method"') == 'a"b'


async def test_reader_every_malformation_still_finds_the_next_frame() -> None:
    ok = frame(b'{"ok": 1}')
    cases = [
        frame(b'{"x": 1}', "abc"),
        frame(b'{"x": 1}', 3),
        frame(b'{"x": 1}', 30),
        frame(b'{"x": 1', None),
        b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n{}",
        b"garbage without end",
        b"Content-Length: 2\n\n{}",  # LF only
        b"\x00\xff\xfe" * 100,
    ]
    for bad in cases:
        events = await read_all(bad + ok, chunk=1 << 16)  # all at once
        assert events[-1] == Message({"ok": 1}), (bad, events)
        events = await read_all(bad + ok)
        assert events[-1] == Message({"ok": 1}), (bad, events)
        assert all(isinstance(e, Message | Unreadable) for e in events)


async def test_reader_memory_stays_bounded_on_an_endless_body() -> None:
    chunks = iter([b"Content-Length: 99999999999\r\n\r\n", *([b"y" * (1 << 16)] * 1024)])

    async def read() -> bytes:
        return next(chunks, b"")

    tracemalloc.start()
    try:
        reader = FrameReader(read, max_bytes=1 << 20, settle_s=0.05)
        event = await reader.next()  # 64 MB of body read past the 1 MB limit
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(event, Unreadable) and event.too_large
    assert await reader.next() is None
    assert peak < 8 << 20
