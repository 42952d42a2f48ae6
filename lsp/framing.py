"""The LSP base protocol (`Content-Length: N\\r\\n\\r\\n` + N bytes of JSON), read from an untrusted stream.

pygls' reader trusts its input: a malformed header left it waiting for a body that never came, a
length past the body swallowed the next message, and `Content-Length: 99999999999` asked for that
many bytes at once (MemoryError, exit 1). This reader keeps memory bounded and always finds the next
message again:

- a length is at most `max_bytes`; a header block at most `MAX_HEADER_LINES` lines of
  `MAX_HEADER_LINE` bytes each;
- bytes that are not a header where one should start (`junk`: the rest of a body whose length was
  too short, the body of a frame whose header was malformed) run up to the next header line and are
  decoded as one JSON value if they hold one ("answer what can be answered"), else answered with a
  Parse error; past `max_bytes` they are dropped as they arrive, keeping only their head;
- a length longer than its body is noticed when the next header appears inside the body, or when the
  stream goes quiet for `settle_s` with a complete JSON value read.

A header line (`Content-Length: 12\\r\\n`) can never occur inside JSON text: JSON strings hold no raw
carriage return, and outside strings no JSON token has that shape. That is what makes the search for
the next header safe in the middle of a broken body.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

MAX_MESSAGE_BYTES = 128 * 1024 * 1024  # one message's JSON; a document larger than this cannot be opened
MAX_HEADER_LINE = 1024
MAX_HEADER_LINES = 16
_HEAD = 4096  # bytes of dropped junk kept to find the request id in
_HEADER_LINE = re.compile(rb"content-(?:length|type)[ \t]*:[^\r\n]*\r\n", re.IGNORECASE)
_ANY_HEADER = re.compile(rb"[A-Za-z][A-Za-z0-9-]*[ \t]*:[^\r\n]*")
_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*([^\r\n]*?)[ \t]*", re.IGNORECASE)
# the id of a request whose body was dropped: a flat top-level key ahead of any nested value
_HEAD_ID = re.compile(rb'\A\s*\{[^{}\[\]]*?"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")\s*[,}]')


@dataclass(frozen=True)
class Message:
    """One JSON value to handle; `problem` says what was wrong with its framing (None: nothing)."""

    value: object
    problem: str | None = None


@dataclass(frozen=True)
class Unreadable:
    """Bytes that held no JSON value: answered with a Parse error, or Invalid Request when too large."""

    problem: str
    too_large: bool = False
    msg_id: int | str | None = None  # found in the head of a body dropped for its size


Event = Message | Unreadable


def request_id_in(head: bytes) -> int | str | None:
    """The id of a request from the first bytes of its body (None when it is not plainly there)."""
    m = _HEAD_ID.match(head)
    if m is None:
        return None
    try:
        value = json.loads(m.group(1))
    except ValueError:
        return None
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None


def _json(data: bytes | bytearray) -> tuple[bool, object]:
    """(True, value) when `data` is one JSON text, else (False, None)."""
    try:
        return True, json.loads(data)
    except (ValueError, RecursionError):
        return False, None


def _first_value(data: bytes | bytearray) -> tuple[bool, object]:
    """The first JSON value in junk: from its first `{` or `[`, trailing bytes ignored."""
    starts = [i for i in (data.find(b"{"), data.find(b"[")) if i >= 0]
    if not starts:
        return False, None
    try:
        text = bytes(data[min(starts) :]).decode("utf-8", errors="replace")
        return True, json.JSONDecoder().raw_decode(text)[0]
    except (ValueError, RecursionError):
        return False, None


class FrameReader:
    """Reads framed messages from `read` (an awaitable of the next bytes, b"" at the end of the stream)."""

    def __init__(
        self, read: Callable[[], Awaitable[bytes]], max_bytes: int = MAX_MESSAGE_BYTES, settle_s: float = 0.5
    ) -> None:
        self._read = read
        self.max_bytes = max_bytes
        self.settle_s = settle_s
        self._buf = bytearray()
        self._eof = False
        self._pending: asyncio.Future[bytes] | None = None  # a read in flight outlives a timeout
        self._carry: bytes | None = None  # a body that did not parse: the junk after it may complete it
        self._problem: str | None = None  # a malformed header: the junk after it is its body

    async def _fill(self, timeout: float | None = None) -> bool:
        """More bytes into the buffer; False at the end of the stream or when none came within `timeout`."""
        if self._eof:
            return False
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._read())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return False
        data, self._pending = self._pending.result(), None
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def next(self) -> Event | None:
        """The next message, or what was unreadable; None at the end of the stream."""
        while True:
            if not self._buf and not await self._fill():
                return self._flush_at_end()
            if _HEADER_LINE.match(self._buf) is None:
                event = await self._junk()
            else:
                event = await self._frame()
            if event is not None:
                return event

    def _flush_at_end(self) -> Event | None:
        if self._carry is not None:
            self._carry = None
            return Unreadable("the last message was cut short")
        return None

    # ------------------------------------------------------------------ a frame

    async def _frame(self) -> Event | None:
        """A header block at the start of the buffer, then its body."""
        lines: list[bytes] = []
        pos = 0
        while True:
            eol = self._buf.find(b"\r\n", pos, pos + MAX_HEADER_LINE + 2)
            if eol < 0:
                if len(self._buf) - pos <= MAX_HEADER_LINE and await self._fill():
                    continue
                self._bad_header(pos, "a header line without its end")
                return None
            line = bytes(self._buf[pos:eol])
            if not line:
                del self._buf[: eol + 2]
                break
            if _ANY_HEADER.fullmatch(line) is None or len(lines) >= MAX_HEADER_LINES:
                self._bad_header(pos, f"malformed header line {line[:80]!r}")
                return None
            lines.append(line)
            pos = eol + 2
        lengths = [m.group(1) for m in map(_LENGTH.fullmatch, lines) if m is not None]
        if len(lengths) != 1 or not lengths[0].isdigit():
            self._problem = f"bad Content-Length {b', '.join(lengths)[:80]!r}" if lengths else "no Content-Length"
            return None
        length = int(lengths[0])
        if length > self.max_bytes:
            self._problem = f"Content-Length {length} is over the limit of {self.max_bytes} bytes"
            return None
        return await self._body(length)

    def _bad_header(self, pos: int, problem: str) -> None:
        """Drop the header lines read so far; what follows is junk (maybe this frame's body)."""
        del self._buf[: max(pos, 1)]  # at least one byte, so a broken first line cannot be found again
        self._problem = problem

    async def _body(self, length: int) -> Event | None:
        scanned = 0
        while True:
            header = _HEADER_LINE.search(self._buf, max(0, scanned - MAX_HEADER_LINE), length + MAX_HEADER_LINE)
            if header is not None and header.start() < length:  # the next message began inside this one
                return self._short_body(header.start(), length)
            if len(self._buf) >= length:
                break
            scanned = len(self._buf)
            if await self._fill(self.settle_s):
                continue
            if self._eof:
                return self._short_body(len(self._buf), length)
            ok, value = _json(self._buf)
            if ok:  # the stream went quiet with a whole message read
                del self._buf[:]
                return Message(value, f"Content-Length {length} is longer than the body ({scanned} bytes)")
        body = bytes(self._buf[:length])
        del self._buf[:length]
        ok, value = _json(body)
        if ok:
            return Message(value)
        # too short a length, maybe: the rest of the body comes before the next header
        if not self._buf and not await self._fill(self.settle_s) or _HEADER_LINE.match(self._buf):
            return Unreadable("the message is not JSON")
        self._carry = body
        return None

    def _short_body(self, end: int, length: int) -> Event:
        body = bytes(self._buf[:end])
        del self._buf[:end]
        ok, value = _json(body)
        problem = f"Content-Length {length} is longer than the body ({end} bytes)"
        return Message(value, problem) if ok else Unreadable(problem)

    # ------------------------------------------------------------------ junk

    async def _junk(self) -> Event | None:
        """Bytes up to the next header: decoded as a message if they hold one."""
        kept = bytearray()
        head, dropped = b"", 0
        while True:
            header = _HEADER_LINE.search(self._buf)
            end = header.start() if header is not None else max(0, len(self._buf) - MAX_HEADER_LINE)
            kept += self._buf[:end]
            del self._buf[:end]
            if len(kept) > self.max_bytes:  # too much to decode: keep its head, count the rest
                head = head or bytes(kept[:_HEAD])
                dropped += len(kept)
                kept.clear()
            if header is not None or not await self._fill(self.settle_s):
                break
        if header is None:  # quiet or ended: a partial header line at the end is junk too
            kept += self._buf
            del self._buf[:]
        return self._junk_event(bytes(kept), head, dropped)

    def _junk_event(self, kept: bytes, head: bytes, dropped: int) -> Event | None:
        carry, self._carry = self._carry, None
        problem, self._problem = self._problem, None
        if dropped:
            msg_id = request_id_in(head)
            return Unreadable(problem or f"{dropped} bytes that are not a message", too_large=True, msg_id=msg_id)
        if carry is not None:
            ok, value = _json(carry + kept)
            if ok:
                return Message(value, "Content-Length shorter than the body")
            return Unreadable("the message is not JSON")
        if not kept.strip():  # a malformed header and nothing after it: reported, nothing to decode
            return Unreadable(problem) if problem else None
        ok, value = _first_value(kept)
        detail = problem or f"{len(kept)} bytes outside any message"
        return Message(value, detail) if ok else Unreadable(detail)
