"""Issue 18 item 3: TCP mode takes one client, holding the session's token, on loopback only.

The real `superpie serve --tcp 127.0.0.1:0` process: it prints the port it listens on and the token
it made; a connection without the token, with a wrong one, or after the client connected, is
refused and hears nothing of the session; a non-loopback address is refused unless allowed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import pytest
from test_hardening_framing import RawClient
from test_server import SERVE, tiny_dir  # noqa: F401  (a fixture)

pytestmark = pytest.mark.asyncio

_LISTENING = re.compile(r"listening on ([\d.]+):(\d+) \(token: (\S+)\)")


async def start_tcp(*args: str, env: dict[str, str] | None = None) -> tuple[asyncio.subprocess.Process, int, str]:
    """`superpie serve --tcp ...`; (the process, its port, the token it printed)."""
    proc = await asyncio.create_subprocess_exec(
        *SERVE, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "the server ended before it listened"
            m = _LISTENING.search(line)
            if m:
                asyncio.ensure_future(_drain(proc.stderr))
                return proc, int(m.group(2)), m.group(3)
    except BaseException:
        await stop(proc)
        raise


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def connect(port: int) -> RawClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return RawClient(reader, writer)


async def closed_without_answer(client: RawClient, timeout: float = 15) -> list[dict]:
    """Read until the server hangs up; the frames it sent meanwhile."""
    frames = []
    while (message := await client.frame(timeout)) is not None:
        frames.append(message)
    return frames


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def test_one_client_with_the_token_and_nobody_else(tiny_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k != "SUPERPIE_TOKEN"}
    proc, port, token = await start_tcp("--tcp", "127.0.0.1:0", "--model", str(tiny_dir), env=env)
    try:
        assert len(token) >= 32
        # no token: refused, and told why, before anyone else connected
        stranger = await connect(port)
        stranger.send(stranger.body("initialize", {"processId": None, "capabilities": {}}, 1))
        (answer,) = await closed_without_answer(stranger)
        assert answer["id"] == 1 and answer["error"]["code"] == -32600
        # a wrong token: refused too
        guesser = await connect(port)
        options = {"token": token[:-1] + ("A" if token[-1] != "A" else "B")}
        params = {"processId": None, "capabilities": {}, "initializationOptions": options}
        guesser.send(guesser.body("initialize", params, 1))
        assert [m["error"]["code"] for m in await closed_without_answer(guesser)] == [-32600]
        # something that is not even initialize
        other = await connect(port)
        other.send(other.body("workspace/executeCommand", {"command": "superpie.stats"}, 1))
        assert "result" not in str(await closed_without_answer(other))

        owner = await connect(port)
        answer = await owner.initialize({"token": token, "model": {"dtype": "float32"}}, tmp_path)
        assert "capabilities" in answer["result"]
        assert not [m for m in owner.seen if m.get("method") == "window/showMessage"]  # the token is no option
        # now nobody else gets in, even with the token
        try:
            late = await connect(port)
        except ConnectionRefusedError:
            pass  # the port no longer listens
        else:
            params = {"processId": None, "capabilities": {}, "initializationOptions": {"token": token}}
            late.send(late.body("initialize", params, 1))
            assert all("error" in m for m in await closed_without_answer(late))
        await owner.alive()
        assert (await owner.response(owner.request("shutdown"), 30)).get("error") is None
        owner.send(owner.body("exit"))
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await stop(proc)


async def test_the_token_from_the_environment(tiny_dir: Path) -> None:  # noqa: F811
    token = "editor-made-token-0123456789"
    env = {**os.environ, "SUPERPIE_TOKEN": token}
    proc, port, shown = await start_tcp("--tcp", "127.0.0.1:0", "--model", str(tiny_dir), env=env)
    try:
        assert token not in shown
        client = await connect(port)
        answer = await client.initialize({"token": token})
        assert "result" in answer
        await client.alive()
    finally:
        await stop(proc)


async def test_a_non_loopback_address_is_refused_unless_allowed(tiny_dir: Path) -> None:  # noqa: F811
    proc = await asyncio.create_subprocess_exec(
        *SERVE, "--tcp", "0.0.0.0:0", stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and b"refusing to listen on 0.0.0.0" in err
    proc, port, _ = await start_tcp("--tcp", "0.0.0.0:0", "--allow-remote", "--model", str(tiny_dir))
    try:
        assert port > 0
    finally:
        await stop(proc)
    assert proc.returncode == 128 + signal.SIGTERM

