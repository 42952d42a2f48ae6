"""End to end: pytest-lsp drives the real `superpie serve` process over stdio (and once over TCP).

A tiny random-weight model (saved as a Hugging Face directory) keeps behaviour tests fast; one test uses
the real default model. Document state is checked against a local replay of the same edits (sha256 of
the text, via the `superpie.document` command).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import paths
import pytest
import pytest_asyncio
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcMethodNotFound, JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient

from superpie.lsp.positions import apply_change, position_at

pytestmark = pytest.mark.asyncio(loop_scope="module")

DATA = paths.DATA / "server"
SERVE = [sys.executable, "-m", "superpie.lsp.cli", "serve"]
TINY = {"model": {"dtype": "float32"}}  # random weights: keep them exact
LONG = {"completion": {"maxTokensMenu": 2000, "menuMultiline": True}}  # a decode that runs for seconds


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama model saved as a Hugging Face model directory the server can load."""
    from tiny import tiny_model
    from transformers import PreTrainedTokenizerFast

    from superpie.completion.model.loading import load_model

    path = tmp_path_factory.mktemp("tiny-llama")
    lm = tiny_model("llama")
    lm.model.save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=lm.tokenizer, eos_token="<|endoftext|>").save_pretrained(path)
    assert load_model(path, dtype="float32").name == path.name
    return path


def capabilities(encodings: list[str] | None = None) -> t.ClientCapabilities:
    """What a modern editor announces: progress, markdown docs, configuration, position encodings."""
    return t.ClientCapabilities(
        general=t.GeneralClientCapabilities(position_encodings=encodings) if encodings else None,
        window=t.WindowClientCapabilities(work_done_progress=True),
        workspace=t.WorkspaceClientCapabilities(configuration=True),
        text_document=t.TextDocumentClientCapabilities(
            completion=t.CompletionClientCapabilities(
                completion_item=t.ClientCompletionItemOptions(documentation_format=[t.MarkupKind.Markdown])
            )
        ),
    )


async def start(
    args: list[str], workspace: Path, options: dict | None = None, encodings: list[str] | None = None
) -> tuple[LanguageClient, t.InitializeResult]:
    """Start the server process and initialize a session."""
    client = await ClientServerConfig(server_command=[*SERVE, *args]).start()
    result = await client.initialize_session(
        t.InitializeParams(
            capabilities=capabilities(encodings),
            root_uri=workspace.as_uri(),
            workspace_folders=[t.WorkspaceFolder(uri=workspace.as_uri(), name="ws")],
            initialization_options=options,
        )
    )
    # initialize is answered before the server proper is imported (issue 17): wait until it serves
    serving = client.workspace_execute_command_async(t.ExecuteCommandParams(command="superpie.stats"))
    await asyncio.wait_for(serving, 120)
    return client, result


async def stop(client: LanguageClient) -> int | None:
    """Shut down and exit; return the server's exit status."""
    await asyncio.wait_for(client.shutdown_session(), 30)
    code = client._server.returncode if client._server else None
    await client.stop()
    return code


async def command(client: LanguageClient, name: str, *args: Any) -> Any:
    """Run a `workspace/executeCommand`."""
    params = t.ExecuteCommandParams(command=name, arguments=list(args) or None)
    return await asyncio.wait_for(client.workspace_execute_command_async(params), 30)


async def stats(client: LanguageClient) -> dict:
    """The `superpie.stats` answer."""
    return await command(client, "superpie.stats")


async def until(client: LanguageClient, check, timeout: float = 30.0) -> dict:
    """Poll `superpie.stats` until `check(stats)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        s = await stats(client)
        if check(s):
            return s
        assert time.monotonic() < deadline, s
        await asyncio.sleep(0.05)


async def ready(client: LanguageClient) -> None:
    """Wait until the model is loaded."""
    await until(client, lambda s: s["model"]["loaded"])


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Doc:
    """A document on the client side: sends open/change, keeps the client's text by replaying each change."""

    def __init__(self, client: LanguageClient, name: str, text: str, encoding: str = "utf-16") -> None:
        self.client, self.uri, self.text, self.version, self.encoding = (
            client,
            f"file:///virtual/{name}",
            text,
            1,
            encoding,
        )
        client.text_document_did_open(
            t.DidOpenTextDocumentParams(t.TextDocumentItem(uri=self.uri, language_id="python", version=1, text=text))
        )

    def position(self, offset: int) -> t.Position:
        return t.Position(*position_at(self.text, offset, self.encoding))

    def end(self) -> t.Position:
        return self.position(len(self.text))

    def replace(self, start: int, end: int, new: str) -> None:
        """Replace text[start:end] with `new` (one incremental change)."""
        rng = t.Range(self.position(start), self.position(end))
        change = {"range": {"start": {"line": rng.start.line, "character": rng.start.character},
                            "end": {"line": rng.end.line, "character": rng.end.character}}, "text": new}  # fmt: skip
        self.text = apply_change(self.text, change, self.encoding)
        self.version += 1
        self.client.text_document_did_change(
            t.DidChangeTextDocumentParams(
                text_document=t.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
                content_changes=[t.TextDocumentContentChangePartial(range=rng, text=new)],
            )
        )

    def type(self, chars: str) -> None:
        """Type at the end of the document, one change per character."""
        for ch in chars:
            self.replace(len(self.text), len(self.text), ch)

    async def state(self) -> dict | None:
        return await command(self.client, "superpie.document", self.uri)

    async def assert_in_step(self) -> None:
        """The server's text equals the client's (and the engine's cache catches up with it)."""
        state = await self.state()
        assert state is not None and (state["sha256"], state["version"]) == (sha(self.text), self.version)
        deadline = time.monotonic() + 30
        while not (await self.state())["cache_current"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

    def inline(self, position: t.Position | None = None) -> asyncio.Future:
        pos = position or self.end()
        ctx = t.InlineCompletionContext(trigger_kind=t.InlineCompletionTriggerKind.Invoked)
        params = t.InlineCompletionParams(context=ctx, text_document=t.TextDocumentIdentifier(self.uri), position=pos)
        return asyncio.ensure_future(self.client.text_document_inline_completion_async(params))  # sent now

    def menu(self, position: t.Position | None = None) -> asyncio.Future:
        pos = position or self.end()
        params = t.CompletionParams(text_document=t.TextDocumentIdentifier(self.uri), position=pos)
        return asyncio.ensure_future(self.client.text_document_completion_async(params))  # sent now


def send_raw(client: LanguageClient, body: bytes) -> None:
    """Write one framed message, whatever its body, to the server's stdin."""
    client.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)


def expect_response(client: LanguageClient, msg_id: int | str | None) -> asyncio.Future:
    """A future for the response to a message the client did not send itself (raw bytes)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    client.protocol._request_futures[msg_id] = future
    return asyncio.wrap_future(future)


SOURCE = (DATA / "shapes.py").read_text()


# ----------------------------------------------------------------------------- the shared session


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    workspace = tmp_path_factory.mktemp("workspace")
    client, result = await start(["--model", str(tiny_dir)], workspace, options={**TINY, "watcher": {"debounceMs": 50}})
    client.init_result, client.workspace = result, workspace
    yield client
    assert await stop(client) == 0


async def test_initialize_answers_at_once_and_the_model_loads_with_progress(session: LanguageClient) -> None:
    caps = session.init_result.capabilities
    assert caps.position_encoding == t.PositionEncodingKind.Utf16
    assert caps.text_document_sync.change == t.TextDocumentSyncKind.Incremental
    assert caps.inline_completion_provider is not None
    assert list(caps.completion_provider.trigger_characters) == ["."]
    assert set(caps.execute_command_provider.commands) >= {"superpie.stats", "superpie.accept", "superpie.document"}
    await ready(session)
    (reports,) = [r for token, r in session.progress_reports.items() if str(token).startswith("superpie-load")]
    assert [r.kind for r in reports] == ["begin", "end"]
    assert reports[-1].message.startswith("model ready")


async def test_open_edit_and_inline_completion(session: LanguageClient) -> None:
    await ready(session)
    doc = Doc(session, "inline.py", SOURCE)
    doc.type("\n\ndef perimeter(shape):\n    return shape.")
    result = await doc.inline()
    await doc.assert_in_step()
    assert isinstance(result, t.InlineCompletionList) and len(result.items) == 1
    (item,) = result.items
    assert item.range == t.Range(doc.end(), doc.end())
    assert isinstance(item.insert_text, str) and item.insert_text and "\n" not in item.insert_text  # single line
    assert item.command.command == "superpie.accept"
    assert item.command.arguments[0]["kind"] == "inline"


async def test_menu_completion_items(session: LanguageClient) -> None:
    await ready(session)
    doc = Doc(session, "menu.py", SOURCE + "\n\nsquare = Square(2)\nprint(square.are")
    result = await doc.menu()
    assert isinstance(result, t.CompletionList) and result.is_incomplete
    assert result.items
    for rank, item in enumerate(result.items):
        edit = item.text_edit
        start = doc.position(len(doc.text) - len("are"))  # the word being typed is replaced
        assert edit.range == t.Range(start, doc.end())
        assert edit.new_text.startswith("are")
        assert item.label == next(line.strip() for line in edit.new_text.splitlines() if line.strip())
        assert item.filter_text == item.label
        assert item.kind == t.CompletionItemKind.Snippet
        assert item.insert_text_format == t.InsertTextFormat.PlainText
        assert item.sort_text == f"~superpie{rank:03d}"
        assert "score" in item.detail and item.label_details.description == "superpie"
        assert item.documentation.kind == t.MarkupKind.Markdown and edit.new_text in item.documentation.value
        assert item.data == {"id": item.command.arguments[0]["id"], "rank": rank}


async def test_accept_command_is_counted(session: LanguageClient) -> None:
    await command(session, "superpie.accept", {"id": "r1", "rank": 0, "kind": "inline"})
    await command(session, "superpie.accept", {"id": "r1", "rank": 0, "kind": "inline", "partial": True})
    accepts = (await stats(session))["accepts"]
    assert accepts["inline"] >= 1 and accepts["inline_partial"] >= 1


async def test_non_ascii_positions_are_utf16(session: LanguageClient) -> None:
    await ready(session)
    text = (DATA / "unicode.py").read_text()
    doc = Doc(session, "unicode.py", text)
    for needle in ("🐍", "中文", "e\u0301", "👍🏽"):  # astral, CJK, combining, emoji + modifier
        at = doc.text.index(needle) + len(needle)
        doc.replace(at, at, "X")  # UTF-16 columns past astral characters count 2 per character
    doc.replace(0, doc.text.index("\n"), "# ✓ edited")
    await doc.assert_in_step()
    line = doc.text.splitlines()[2]
    assert "🐍X" in line
    result = await doc.menu(doc.position(doc.text.index("🐍X") + 3))
    assert isinstance(result, t.CompletionList)
    inside_pair = doc.position(doc.text.index("🐍") + 1)  # str offset +1 ends on a whole character ...
    inside_pair.character -= 1  # ... one UTF-16 unit back lands between the two surrogates
    with pytest.raises(JsonRpcInvalidParams):
        await doc.menu(inside_pair)


async def test_close_frees_the_cache(session: LanguageClient) -> None:
    await ready(session)
    doc = Doc(session, "closing.py", SOURCE * 2)  # a size no other test's document has
    await doc.assert_in_step()
    # a document opened window-first grows its KV in idle steps: sample once every opening has finished
    before = await until(session, lambda s: s["documents"]["opening"] == 0)
    session.text_document_did_close(t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(doc.uri)))
    after = await until(session, lambda s: s["documents"]["cached"] == before["documents"]["cached"] - 1)
    assert after["documents"]["open"] == before["documents"]["open"] - 1
    # other documents' caches may grow meanwhile (idle refresh, evicted ones re-encoded): poll, do not sample once
    await until(session, lambda s: s["memory"]["kv_bytes"] < before["memory"]["kv_bytes"])
    assert await doc.state() is None
    assert list((await doc.inline()).items) == []  # not open: empty, not an error


async def test_workspace_watcher_reports_disk_changes(session: LanguageClient) -> None:
    before = (await stats(session))["workspace"]
    path = session.workspace / "written.py"
    path.write_text("def written():\n    return 1\n")
    await until(session, lambda s: s["workspace"]["changed"] > before["changed"])
    path.rename(path.with_name("moved.py"))
    path.with_name("moved.py").unlink()
    s = await until(session, lambda s: s["workspace"]["removed"] >= before["removed"] + 2)
    assert s["workspace"]["applied"] >= before["applied"] + 1


async def test_stats_report_latency_cache_reuse_and_memory(session: LanguageClient) -> None:
    await ready(session)
    doc = Doc(session, "stats.py", SOURCE)
    await doc.assert_in_step()
    await doc.inline()
    await doc.menu()
    s = await stats(session)
    assert s["latency_ms"]["all"]["count"] >= 2
    assert 0 < s["latency_ms"]["all"]["p50"] <= s["latency_ms"]["all"]["p95"]
    assert 0 <= s["cache"]["current_share"] <= 1 and s["cache"]["syncs"] >= 1
    assert s["memory"]["kv_bytes"] > 0 and s["memory"]["rss_bytes"] > 0
    assert s["model"]["name"].startswith("tiny-llama")
    assert "fallbacks" in s["monitors"]
    assert set(s["latency_parts_ms"]) == {"queued", "engine"}


async def test_memory_budget_evicts_least_recently_used_caches(session: LanguageClient) -> None:
    await ready(session)
    one = Doc(session, "budget0.py", SOURCE * 8)  # ~2k tokens of KV, more than half the budget below
    await one.assert_in_step()
    single = (await stats(session))["memory"]["kv_bytes"]
    session.workspace_did_change_configuration(
        t.DidChangeConfigurationParams(settings={"cache": {"memoryBudgetMb": 1}})
    )
    docs = [Doc(session, f"budget{i}.py", SOURCE * 8 + f"# {i}\n") for i in range(1, 3)]
    for doc in docs:
        await doc.assert_in_step()
    s = await stats(session)
    assert s["memory"]["budget_mb"] == 1
    assert single > 512 * 1024  # so three caches cannot fit in 1 MB together
    assert s["memory"]["kv_bytes"] < 2 * single  # the least recently used caches were released
    session.workspace_did_change_configuration(
        t.DidChangeConfigurationParams(settings={"cache": {"memoryBudgetMb": 2048}})
    )
    for doc in [one, *docs]:
        session.text_document_did_close(t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(doc.uri)))


# ----------------------------------------------------------------------------- bad input


async def test_malformed_messages_are_answered_and_the_server_keeps_serving(session: LanguageClient) -> None:
    parse_error = expect_response(session, None)
    send_raw(session, b'{"jsonrpc": "2.0", "id": 77, "method": ')  # not JSON
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(parse_error, 10)
    assert err.value.code == -32700

    invalid = expect_response(session, 78)
    send_raw(session, json.dumps({"id": 78, "method": "textDocument/completion"}).encode())  # no "jsonrpc"
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(invalid, 10)
    assert err.value.code == -32600

    bad_params = expect_response(session, 79)
    body = {"jsonrpc": "2.0", "id": 79, "method": "textDocument/completion", "params": {"position": "top"}}
    send_raw(session, json.dumps(body).encode())
    with pytest.raises(JsonRpcInvalidParams):
        await asyncio.wait_for(bad_params, 10)

    send_raw(session, b"[1, 2, 3]")
    send_raw(session, json.dumps({"jsonrpc": "2.0", "method": "superpie/noSuchNotification"}).encode())
    with pytest.raises(JsonRpcMethodNotFound):
        await session.protocol.send_request_async("superpie/noSuchMethod", {})
    assert (await stats(session))["model"]["loaded"]  # still serving


async def test_positions_past_the_end_and_unknown_documents(session: LanguageClient) -> None:
    await ready(session)
    doc = Doc(session, "short.py", "x = 1\n")
    # a character past its line is the line's end (LSP says clamp; issue 18 item 10) ...
    assert isinstance(await doc.menu(t.Position(line=0, character=99)), t.CompletionList)
    with pytest.raises(JsonRpcInvalidParams):  # ... a line past the document is an error
        await doc.inline(t.Position(line=7, character=0))
    bad_before = (await stats(session))["documents"]["bad_changes"]
    session.text_document_did_change(
        t.DidChangeTextDocumentParams(
            text_document=t.VersionedTextDocumentIdentifier(uri="file:///virtual/never-opened.py", version=2),
            content_changes=[t.TextDocumentContentChangeWholeDocument(text="y = 2\n")],
        )
    )
    # A change whose range lies past the last line is refused (and reported), not clamped.
    session.text_document_did_change(
        t.DidChangeTextDocumentParams(
            text_document=t.VersionedTextDocumentIdentifier(uri=doc.uri, version=2),
            content_changes=[
                t.TextDocumentContentChangePartial(range=t.Range(t.Position(9, 0), t.Position(9, 1)), text="z")
            ],
        )
    )
    doc.version = 2
    s = await until(session, lambda s: s["documents"]["bad_changes"] == bad_before + 2)
    assert s["documents"]["open"] >= 1
    assert await command(session, "superpie.document", "file:///virtual/never-opened.py") is None
    await doc.assert_in_step()


async def test_a_5mb_document(session: LanguageClient) -> None:
    await ready(session)
    lines = SOURCE.splitlines(keepends=True)
    big = "".join(lines[i % len(lines)] for i in range(5_000_000 // 40))[:5_000_000]
    doc = Doc(session, "big.py", big)
    doc.replace(0, 0, "# header\n")
    doc.replace(len(doc.text), len(doc.text), "\nvalue = Square(3).")
    result = await asyncio.wait_for(doc.inline(), 60)
    assert isinstance(result, t.InlineCompletionList)
    await doc.assert_in_step()
    session.text_document_did_close(t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(doc.uri)))


async def test_a_storm_of_edits_while_a_completion_runs(session: LanguageClient) -> None:
    await ready(session)
    doc = Doc(session, "storm.py", SOURCE)
    await doc.assert_in_step()
    pending = doc.inline()
    rng = random.Random(5)
    t0 = time.perf_counter()
    for i in range(1000):
        start = rng.randrange(len(doc.text) + 1)
        if rng.random() < 0.3 and start < len(doc.text):
            doc.replace(start, min(len(doc.text), start + rng.randrange(1, 4)), "")
        else:
            doc.replace(start, start, rng.choice(["a", "_", " ", "\n", "(", "é", "🙂", "self."]))
        if i % 50 == 49:
            await asyncio.sleep(0.04)  # 1,000 edits spread over about a second
    assert time.perf_counter() - t0 < 3
    result = await asyncio.wait_for(pending, 60)
    assert isinstance(result, t.InlineCompletionList)
    await doc.assert_in_step()
    after = await doc.inline()  # and it still completes, on the new text
    assert isinstance(after, t.InlineCompletionList)


# ----------------------------------------------------------------------------- cancellation, configuration


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def long_session(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server whose menu requests decode for seconds (so a cancel is observable)."""
    client, _ = await start(["--model", str(tiny_dir)], tmp_path_factory.mktemp("ws-long"), {**TINY, **LONG})
    await ready(client)
    yield client
    assert await stop(client) == 0


def send_menu(doc: Doc, msg_id: str) -> asyncio.Future:
    params = t.CompletionParams(text_document=t.TextDocumentIdentifier(doc.uri), position=doc.end())
    return asyncio.ensure_future(
        doc.client.protocol.send_request_async(t.TEXT_DOCUMENT_COMPLETION, params, msg_id=msg_id)
    )


async def test_cancel_request_stops_the_decode_loop(long_session: LanguageClient) -> None:
    doc = Doc(long_session, "cancel.py", SOURCE + "\n\ndef main():\n")
    await doc.assert_in_step()
    before = (await stats(long_session))["requests"]
    pending = send_menu(doc, "cancel-me")  # up to 2,000 tokens: seconds of decoding
    await asyncio.sleep(0.3)
    t0 = time.perf_counter()
    long_session.protocol.notify(t.CANCEL_REQUEST, t.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(pending, 30)
    after = await until(long_session, lambda s: s["requests"]["stopped_decodes"] > before["stopped_decodes"], 10)
    assert after["requests"]["cancelled"] == before.get("cancelled", 0) + 1
    assert isinstance(await doc.inline(), t.InlineCompletionList)  # the worker is free again
    assert time.perf_counter() - t0 < 10


async def test_a_newer_request_supersedes_an_older_one(long_session: LanguageClient) -> None:
    doc = Doc(long_session, "supersede.py", SOURCE + "\n\ndef main():\n")
    await doc.assert_in_step()
    before = (await stats(long_session))["requests"]
    older = doc.menu()
    await asyncio.sleep(0.3)
    doc.type("    ")
    newer = await asyncio.wait_for(doc.inline(), 30)
    first = await asyncio.wait_for(older, 30)
    assert (first.is_incomplete, list(first.items)) == (True, [])  # answered, empty
    assert isinstance(newer, t.InlineCompletionList)
    after = await stats(long_session)
    assert after["requests"]["superseded"] == before.get("superseded", 0) + 1
    assert after["requests"]["stopped_decodes"] == before["stopped_decodes"] + 1


async def test_configuration_changes(long_session: LanguageClient, tiny_dir: Path) -> None:
    doc = Doc(long_session, "config.py", SOURCE + "\n\nsquare = Square(2)\nprint(square.")
    await doc.assert_in_step()
    settings = {
        "completion": {"maxTokensMenu": 3, "menuMultiline": False},
        "cache": {"mode": "exact", "memoryBudgetMb": 64},
        "logLevel": "debug",
        "noSuchOption": 1,
        "monitors": {"jediBudgetMs": "fast"},
    }
    for _ in range(2):  # the same problems twice: reported once
        long_session.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings={"superpie": settings}))
    await doc.assert_in_step()  # the caches were rebuilt for the new mode
    (warning,) = [m for m in long_session.messages if "noSuchOption" in m.message]
    assert warning.type == t.MessageType.Warning and "monitors.jediBudgetMs" in warning.message
    result = await doc.menu()
    assert all(len(item.text_edit.new_text) <= 3 * 16 and "\n" not in item.text_edit.new_text for item in result.items)
    await command(long_session, "superpie.accept", {"id": "x", "rank": 0, "kind": "menu"})
    await until(long_session, lambda s: True)
    assert any(m.type == t.MessageType.Log and "accepted" in m.message for m in long_session.log_messages)
    assert (await stats(long_session))["memory"]["budget_mb"] == 64

    # Pulled with workspace/configuration when the notification carries none; a model that cannot load.
    long_session.set_configuration({"model": {"path": str(tiny_dir / "missing")}}, section="superpie")
    long_session.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings=None))
    s = await until(long_session, lambda s: s["model"]["error"] is not None)
    assert "does not exist" in s["model"]["error"]
    assert any("cannot load the model" in m.message for m in long_session.messages)
    assert list((await doc.inline()).items) == []  # no model: empty, not an error storm
    long_session.workspace_did_change_configuration(
        t.DidChangeConfigurationParams(settings={"model": {"path": str(tiny_dir)}})
    )
    await until(long_session, lambda s: s["model"]["loaded"] and s["model"]["error"] is None)
    await doc.assert_in_step()
    assert isinstance(await doc.inline(), t.InlineCompletionList)


# ----------------------------------------------------------------------------- TCP, UTF-8, the real model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_tcp_with_utf8_positions_and_exit(tiny_dir: Path, tmp_path: Path) -> None:
    from pytest_lsp.client import make_test_lsp_client

    port, token = free_port(), "a-token-the-editor-made-0123"
    env = {**os.environ, "SUPERPIE_TOKEN": token}  # TCP needs the session's token (issue 18)
    proc = await asyncio.create_subprocess_exec(
        *SERVE, "--tcp", f"127.0.0.1:{port}", "--model", str(tiny_dir), env=env
    )
    client = make_test_lsp_client()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.start_tcp("127.0.0.1", port)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.returncode is None
                await asyncio.sleep(0.1)
        result = await client.initialize_session(
            t.InitializeParams(
                capabilities=capabilities(["utf-16", "utf-8"]),
                root_uri=tmp_path.as_uri(),
                initialization_options={**TINY, "completion": {"readyTimeoutMs": 0}, "token": token},
            )
        )
        assert result.capabilities.position_encoding == t.PositionEncodingKind.Utf8
        doc = Doc(client, "unicode8.py", (DATA / "unicode.py").read_text(), encoding="utf-8")
        early = await doc.inline()  # the model is still loading: answered empty at once, not an error
        assert list(early.items) == []
        assert (await stats(client))["requests"]["not_ready"] == 1
        await ready(client)
        at = doc.text.index("🐍") + 1
        doc.replace(at, at, "✓")  # UTF-8 columns: the snake is 4 bytes
        doc.type("\nx = snake.")
        await doc.assert_in_step()
        assert isinstance(await doc.inline(), t.InlineCompletionList)
        await client.shutdown_async(None)
        client.exit(None)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await client.stop()


@pytest.mark.real_model
async def test_the_default_model_completes_over_lsp(tmp_path: Path) -> None:
    from superpie.completion.model.loading import default_model

    client, _ = await start([], tmp_path, {"completion": {"maxTokensMenu": 8}})
    try:
        await until(client, lambda s: s["model"]["loaded"], timeout=120)
        doc = Doc(client, "real.py", SOURCE + '\n\ndef describe(shape):\n    return f"{shape.')
        inline = await asyncio.wait_for(doc.inline(), 60)
        assert inline.items and inline.items[0].insert_text.strip()
        menu = await asyncio.wait_for(doc.menu(), 60)
        assert menu.items and menu.items[0].label
        s = await stats(client)
        assert s["model"]["name"] == default_model().display  # the code model on a CPU with bf16 units
    finally:
        assert await stop(client) == 0
