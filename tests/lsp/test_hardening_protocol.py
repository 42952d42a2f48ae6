"""Issue 18 items 8 and 10: text and protocol details a careless client gets wrong, over a real server.

pytest-lsp drives `superpie serve` (the tiny random model); raw frames where the client library
would not send what a careless client sends (ids that are objects, requests after shutdown).
"""

from __future__ import annotations

import asyncio
import json
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
