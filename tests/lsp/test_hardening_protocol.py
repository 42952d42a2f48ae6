"""Issue 18 items 8 and 10: text and protocol details a careless client gets wrong, over a real server.

pytest-lsp drives `superpie serve` (the tiny random model); raw frames where the client library
would not send what a careless client sends (ids that are objects, requests after shutdown).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient
from test_server import TINY, Doc, command, ready, sha, start, stats, stop, tiny_dir  # noqa: F401
from test_server import send_raw as send_frame

from superpie.lsp.positions import offset_at, position_at

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    client, _ = await start(["--model", str(tiny_dir)], tmp_path_factory.mktemp("ws"), TINY)
    await ready(client)
    yield client
    assert await stop(client) == 0


# ----------------------------------------------------------------------------- item 8: lone surrogates


async def test_a_lone_surrogate_in_the_text_is_completed_anyway(session: LanguageClient) -> None:
    doc = Doc(session, "surrogate.py", "s = '\ud800'\nx = s.")
    result = await doc.inline()  # was -32603 "TextInputSequence must be str"
    assert isinstance(result, t.InlineCompletionList)
    doc.type("\ny = '\udfff' + s")  # typed in, too
    menu = await doc.menu()
    assert isinstance(menu, t.CompletionList)
    await doc.assert_in_step()  # the server keeps the client's text, surrogate and all
    assert (await doc.state())["sha256"] == sha(doc.text)


def test_positions_count_a_lone_surrogate_as_one_unit_in_every_encoding() -> None:
    text = "a\ud800b\n"
    for encoding, units in (("utf-16", 1), ("utf-8", 3), ("utf-32", 1)):
        assert offset_at(text, 0, 1 + units, encoding) == 2
        assert position_at(text, 2, encoding) == (0, 1 + units)


# ----------------------------------------------------------------------------- item 10: protocol details


def did_change(client: LanguageClient, uri: str, version: object, changes: list[dict]) -> None:
    """A raw didChange (the client library would not send a null version)."""
    body = {
        "jsonrpc": "2.0",
        "method": "textDocument/didChange",
        "params": {"textDocument": {"uri": uri, "version": version}, "contentChanges": changes},
    }
    send_frame(client, json.dumps(body).encode())


def at(line: int, start: int, end: int, text: str) -> dict:
    rng = {"start": {"line": line, "character": start}, "end": {"line": line, "character": end}}
    return {"range": rng, "text": text}


async def test_a_position_past_the_end_of_its_line_is_clamped_to_the_line_end(session: LanguageClient) -> None:
    doc = Doc(session, "clamp.py", "value = 1\nother = value\n")
    past = await doc.menu(t.Position(line=1, character=99))  # LSP: a character past the line means its end
    assert isinstance(past, t.CompletionList)
    assert all(item.text_edit.range.end == t.Position(1, 13) for item in past.items)
    did_change(session, doc.uri, 2, [at(0, 50, 60, " + 1")])  # a change past the line end, too
    doc.text, doc.version = "value = 1 + 1\nother = value\n", 2
    await doc.assert_in_step()


async def test_a_change_with_a_null_version_is_applied(session: LanguageClient) -> None:
    doc = Doc(session, "unversioned.py", "a = 1\n")
    did_change(session, doc.uri, None, [at(0, 4, 5, "2")])
    doc.text = "a = 2\n"
    await asyncio.sleep(0.2)
    state = await doc.state()
    assert state["sha256"] == sha(doc.text) and state["version"] is None
    assert (await stats(session))["documents"]["unversioned_changes"] >= 1


async def test_a_batch_with_a_bad_change_is_rejected_whole_and_says_which(session: LanguageClient) -> None:
    doc = Doc(session, "batch.py", "a = 1\nb = 2\n")
    before = (await stats(session))["documents"]["bad_changes"]
    did_change(session, doc.uri, 2, [at(0, 0, 1, "x"), at(9, 0, 1, "?"), at(1, 0, 1, "y")])
    doc.version = 2  # the server follows the client's version; the text stays as it was
    await doc.assert_in_step()
    assert (await stats(session))["documents"]["bad_changes"] == before + 1
    said = [m.message for m in session.log_messages if "batch.py" in m.message]
    assert any("change 2 of 3" in m and "none of the 3 changes was applied" in m for m in said), said
    did_change(session, doc.uri, 3, [at(0, 0, 1, "x"), at(1, 0, 1, "y")])  # a good batch: every change applied
    doc.text, doc.version = "x = 1\ny = 2\n", 3
    await doc.assert_in_step()


async def test_a_second_initialize_is_refused_and_the_model_stays(session: LanguageClient) -> None:
    reply = expect(session, "init-again")
    params = {"processId": None, "capabilities": {}, "initializationOptions": {"model": {"path": "/nowhere"}}}
    body = {"jsonrpc": "2.0", "id": "init-again", "method": "initialize", "params": params}
    send_frame(session, json.dumps(body).encode())
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(reply, 10)
    assert err.value.code == -32600
    s = await stats(session)
    assert s["model"]["loaded"] and s["model"]["error"] is None
    doc = Doc(session, "after-init.py", "import os\nos.")
    assert isinstance(await doc.inline(), t.InlineCompletionList)


async def test_ids_that_are_objects_or_arrays_get_an_error_with_a_null_id(session: LanguageClient) -> None:
    for bad in ({"a": 1}, [1], True, 1.5):
        reply = expect(session, None)
        params = {"command": "superpie.stats"}
        body = {"jsonrpc": "2.0", "id": bad, "method": "workspace/executeCommand", "params": params}
        send_frame(session, json.dumps(body).encode())
        with pytest.raises(JsonRpcException) as err:
            await asyncio.wait_for(reply, 10)
        assert err.value.code == -32600, bad
    assert (await stats(session))["model"]["loaded"]


def test_an_internal_error_is_answered_without_a_traceback() -> None:
    from concurrent.futures import Future

    from superpie.lsp.handlers import create_server

    class Sink:
        def __init__(self) -> None:
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += data

    server = create_server()
    try:
        sink = Sink()
        server.protocol.set_writer(sink)
        future: Future = Future()
        try:
            raise TypeError("TextInputSequence must be str")
        except TypeError as exc:
            future.set_exception(exc)
        server.protocol._send_handler_result(future, msg_id=7)
        message = json.loads(sink.data.split(b"\r\n\r\n", 1)[1])
        assert message["id"] == 7 and message["error"]["code"] == -32603
        assert "traceback" not in json.dumps(message) and "Traceback" not in json.dumps(message)
        assert "TextInputSequence must be str" in message["error"]["message"]
    finally:
        server.close()


def expect(client: LanguageClient, msg_id: object) -> asyncio.Future:
    from test_server import expect_response

    return expect_response(client, msg_id)


# ----------------------------------------------------------------------------- a server of its own


async def test_a_request_after_shutdown_is_invalid_and_sigint_stops_an_idle_server(tiny_dir: Path) -> None:  # noqa: F811
    from test_hardening_framing import RawClient

    raw = await RawClient.stdio("--model", str(tiny_dir))
    assert "result" in await raw.initialize({"model": {"dtype": "float32"}})
    assert "result" in await raw.response(raw.request("shutdown"), 30)
    late = await raw.response(raw.request("workspace/executeCommand", {"command": "superpie.stats"}), 10)
    assert late["error"]["code"] == -32600
    raw.send(raw.body("exit"))
    assert await asyncio.wait_for(raw.proc.wait(), 30) == 0

    idle = await RawClient.stdio("--model", str(tiny_dir))
    assert "result" in await idle.initialize({"model": {"dtype": "float32"}})
    idle.send(idle.body("initialized", {}))
    await idle.alive()
    await asyncio.sleep(1.0)  # idle: the model loads, the reader waits on stdin
    idle.proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(idle.proc.wait(), 15) == 128 + signal.SIGINT
