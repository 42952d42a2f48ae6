"""Running a session: bytes from stdio, through `framing`, to the protocol.

pygls' own loop is not used for stdio: it trusted the framing (see `framing`) and blocked SIGINT
behind a thread reading stdin. Here the reader answers what it cannot read, and SIGINT or SIGTERM
ends a server at any time, idle or not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter

from superpie.lsp.framing import FrameReader, Message, Unreadable

if TYPE_CHECKING:
    from superpie.lsp.server import SuperpieServer

log = logging.getLogger("superpie.lsp")

_CHUNK = 1 << 16
_PARSE_ERROR, _INVALID_REQUEST = -32700, -32600
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def structured(value: Any, hook: Callable[[dict[str, Any]], Any]) -> Any:
    """`value` with `hook` applied to every object, innermost first (what `json.loads(object_hook=)` does)."""
    if isinstance(value, dict):
        return hook({k: structured(v, hook) for k, v in value.items()})
    if isinstance(value, list):
        return [structured(v, hook) for v in value]
    return value


def dispatch(server: SuperpieServer, event: Message | Unreadable) -> None:
    """Hand one message to the protocol, or answer what could not be read."""
    protocol = server.protocol
    if isinstance(event, Unreadable):
        server.stats.framing_problems += 1
        log.warning("unreadable input: %s", event.problem)
        if event.too_large:
            protocol.send_raw_error(event.msg_id, _INVALID_REQUEST, "message too large")
        else:
            protocol.send_raw_error(None, _PARSE_ERROR, "Parse error")
        return
    if event.problem:
        server.stats.framing_problems += 1
        log.warning("malformed framing (%s); the message in it was read", event.problem)
    try:
        protocol.handle_message(structured(event.value, protocol.structure_message))
    except JsonRpcException as exc:
        log.warning("message dropped: %s", exc)
    except Exception:  # a handler must never end the session
        log.exception("message could not be handled")


async def run_session(server: SuperpieServer, frames: FrameReader, first: Message | None = None) -> None:
    """Handle messages until the stream ends (or `exit` raises SystemExit)."""
    if first is not None:
        dispatch(server, first)
    while (event := await frames.next()) is not None:
        dispatch(server, event)


async def until_signalled(session: Awaitable[None]) -> int | None:
    """Run `session` until it ends, or until SIGINT / SIGTERM; return the signal's number (None: it ended)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(session)
    received: list[int] = []

    def stop(sig: int) -> None:
        log.info("stopping on signal %d", sig)
        received.append(sig)
        task.cancel()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        await task
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    return received[0] if received else None


def serve_stdio(server: SuperpieServer, stdin_fd: int, stdout: Any) -> int | None:
    """Serve over stdio until `exit`, the end of stdin or a signal (returned)."""
    reader_thread = ThreadPoolExecutor(1, thread_name_prefix="superpie-stdin")  # never joined: os._exit ends it

    async def main() -> None:
        loop = asyncio.get_running_loop()
        frames = FrameReader(lambda: loop.run_in_executor(reader_thread, os.read, stdin_fd, _CHUNK))
        server.protocol.set_writer(StdoutWriter(stdout))
        await run_session(server, frames)

    return asyncio.run(until_signalled(main()))
