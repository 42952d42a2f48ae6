"""`superpie serve`: bytes from stdio or one authenticated TCP connection, through `framing`, to the protocol.

pygls' own loops are not used: they trusted the framing (see `framing`), gave every TCP connection
the session's writer (a second client read the first one's answers), and blocked SIGINT behind a
thread reading stdin. Here the reader answers what it cannot read, TCP takes one client with the
session's token (`auth`), and SIGINT or SIGTERM ends a server at any time, idle or not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from superpie.completion.config import LogLevel
from superpie.lsp.auth import authorizes, check_host, session_token
from superpie.lsp.framing import FrameReader, Message, Unreadable
from superpie.lsp.startup import Screen, configure_logging, early_answer, frame, reduced_params

if TYPE_CHECKING:  # the server proper is imported once initialize is answered (`serve_stdio`)
    from superpie.lsp.server import SuperpieServer

log = logging.getLogger("superpie.lsp")

_CHUNK = 1 << 16
AUTH_TIMEOUT_S = 10.0  # a TCP client must send its initialize this soon
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
    from pygls.exceptions import JsonRpcException  # loaded by then: the server is made

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


def serve_stdio(make_server: Callable[[], SuperpieServer], stdin_fd: int, stdout: Any) -> int | None:
    """Serve over stdio until `exit`, the end of stdin or a signal (returned).

    The first message is read before the server exists: a well-formed `initialize` is answered at
    once (`startup`), and only then are pygls, the engine, torch and jedi imported (`make_server`, in
    a thread: a signal still stops the process meanwhile). The server reads that initialize too;
    its own answer is held back (`startup.Screen`), and where pygls cannot read the client's
    capabilities it is given the params with only the encoding answered (`startup.reduced_params`).
    """
    reader_thread = ThreadPoolExecutor(1, thread_name_prefix="superpie-stdin")  # never joined: os._exit ends it
    import_thread = ThreadPoolExecutor(1, thread_name_prefix="superpie-import")  # nor this one (a signal mid-import)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        frames = FrameReader(lambda: loop.run_in_executor(reader_thread, os.read, stdin_fd, _CHUNK))
        first = await frames.next()
        if first is None:
            return
        answer = early_answer(first.value) if isinstance(first, Message) else None
        if answer is not None:
            stdout.write(frame(answer))
            stdout.flush()
            log.debug("initialize answered before the server was made")
        server = await loop.run_in_executor(import_thread, make_server)
        from pygls.io_ import StdoutWriter

        screen = Screen(StdoutWriter(stdout), answer) if answer is not None else None
        server.protocol.set_writer(screen or StdoutWriter(stdout))
        dispatch(server, first)
        if screen is not None and screen.held is not None and "error" in screen.held:
            assert answer is not None and isinstance(first, Message) and isinstance(first.value, dict)
            log.warning("the client's capabilities could not be read; the session goes on without them")
            screen.expect_again()
            dispatch(server, Message(reduced_params(first.value, answer)))
        await run_session(server, frames)

    return asyncio.run(until_signalled(main()))


def serve_tcp(
    server: SuperpieServer, host: str, port: int, token: str, announce: Callable[[int], None]
) -> int | None:
    """Serve one authenticated TCP client until `exit`, its disconnection or a signal (returned).

    `announce(port)` runs once the port listens (the port the system chose, for port 0).
    """

    async def main() -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        claimed = False

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal claimed
            peer = writer.get_extra_info("peername")
            frames = FrameReader(lambda: reader.read(_CHUNK))
            first = None
            if not claimed:
                try:
                    first = await asyncio.wait_for(frames.next(), AUTH_TIMEOUT_S)
                except asyncio.TimeoutError:
                    pass
            if claimed or not isinstance(first, Message) or not authorizes(first.value, token):
                why = "the server has its client" if claimed else "no initialize with the session's token"
                log.warning("refused a connection from %s: %s", peer, why)
                _refuse(writer, first)
                return
            claimed = True
            listener.close()  # one client per server: nobody else may connect now
            log.info("client connected from %s", peer)
            server.protocol.set_writer(writer)
            try:
                await run_session(server, frames, first)
            finally:
                if not done.done():
                    done.set_result(None)

        listener = await asyncio.start_server(connection, host, port)
        announce(listener.sockets[0].getsockname()[1])
        await done

    return asyncio.run(until_signalled(main()))


def _refuse(writer: asyncio.StreamWriter, first: object) -> None:
    """Answer a refused connection's initialize (so a client says why) and hang up."""
    value = first.value if isinstance(first, Message) else None
    msg_id = value.get("id") if isinstance(value, dict) else None
    if isinstance(msg_id, int | str) and not isinstance(msg_id, bool):
        body = json.dumps(
            {"jsonrpc": "2.0", "id": msg_id, "error": {"code": _INVALID_REQUEST, "message": "not authorized"}}
        ).encode()
        writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    writer.close()


def _parse_tcp(tcp: str) -> tuple[str, int]:
    host, sep, port = tcp.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port (printed)
        raise ValueError(f"--tcp expects HOST:PORT, got '{tcp}'")
    return host.strip("[]") or "127.0.0.1", int(port)


def _private_stdout() -> Any:
    """The LSP stream on a duplicate of fd 1; fd 1 itself goes to stderr, so stray prints cannot corrupt it."""
    lsp_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return lsp_out


def serve(
    tcp: str | None,
    model: str | None,
    log_level: LogLevel,
    allow_remote: bool = False,
    settings: Mapping[str, object] | None = None,
) -> int:
    """Run the language server on stdio (or TCP) until the client says exit; 0 after a clean shutdown.

    TCP listens on loopback only (unless `allow_remote`) and serves one client holding the session's
    token (`superpie.lsp.auth`). SIGINT or SIGTERM ends the server with 128 + the signal's number.
    After a session the process ends at once (`os._exit`): a helper thread still inside jedi or a
    reader blocked on stdin must not keep an editor waiting, and tearing down torch takes seconds.
    """
    configure_logging(log_level)
    try:
        if tcp:
            host, port = _parse_tcp(tcp)
            check_host(host, allow_remote)
            token, generated = session_token()
    except ValueError as exc:
        print(f"superpie: error: {exc}", file=sys.stderr)
        return 2
    made: list[SuperpieServer] = []

    def make_server() -> SuperpieServer:
        from superpie.lsp.handlers import create_server  # pygls, the engine, torch, jedi: seconds

        made.append(create_server(model=model, log_level=log_level, settings=settings))
        return made[-1]

    signalled = None
    try:
        if tcp:
            shown = token if generated else "$SUPERPIE_TOKEN"

            def announce(bound: int) -> None:
                print(f"superpie: listening on {host}:{bound} (token: {shown})", file=sys.stderr, flush=True)

            signalled = serve_tcp(make_server(), host, port, token, announce)
        else:
            signalled = serve_stdio(make_server, sys.stdin.fileno(), _private_stdout())
    except OSError as exc:
        print(f"superpie: error: {exc}", file=sys.stderr)
        signalled = None
    except SystemExit:  # `exit` from the client
        pass
    finally:
        for server in made:
            server.close(timeout=2.0)
    shut_down = any(server.protocol._shutdown for server in made)
    code = 128 + signalled if signalled else 0 if shut_down else 1
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)
