"""Issue 18 item 4: a huge document is completed through a window, its memory and edit time bounded.

The line index is held to a full rescan on random edits (line breaks of every kind); the window to
its rules; and a real server with a 12 MB document to a memory bound, quick edits and answers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types as t
from pytest_lsp import LanguageClient
from test_server import SOURCE, TINY, Doc, ready, start, stats, stop, tiny_dir  # noqa: F401

from superpie.lsp.documents import WINDOW_BEFORE, WINDOW_STEP, Document
from superpie.lsp.positions import apply_change, line_starts, position_at

pieces = st.sampled_from(["a", "bc", " ", "\n", "\r", "\r\n", "é", "🐍", "\n\n", "x\r"])
texts = st.lists(pieces, max_size=40).map("".join)


def change_at(text: str, start: int, end: int, new: str) -> t.TextDocumentContentChangePartial:
    (l0, c0), (l1, c1) = position_at(text, start), position_at(text, end)
    return t.TextDocumentContentChangePartial(range=t.Range(t.Position(l0, c0), t.Position(l1, c1)), text=new)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(texts, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), texts), min_size=1, max_size=8))
def test_the_line_index_follows_edits_as_a_rescan_would(text: str, edits: list[tuple[int, int, str]]) -> None:
    doc = Document("file:///x.py", text)
    expected = text
    for a, b, new in edits:
        a, b = sorted((a % (len(expected) + 1), b % (len(expected) + 1)))
        a, b = (o - 1 if expected[o - 1 : o + 1] == "\r\n" else o for o in (a, b))  # not inside a line break
        (l0, c0), (l1, c1) = position_at(expected, a), position_at(expected, b)
        change = t.TextDocumentContentChangePartial(range=t.Range(t.Position(l0, c0), t.Position(l1, c1)), text=new)
        rng = {"start": {"line": l0, "character": c0}, "end": {"line": l1, "character": c1}}
        try:
            expected = apply_change(expected, {"range": rng, "text": new})
        except ValueError:  # a position inside a surrogate pair: refused by both
            with pytest.raises(ValueError):
                doc.apply([change], "utf-16")
            continue
        doc.apply([change], "utf-16")
        assert doc.text == expected
        assert doc.lines.starts.tolist() == line_starts(expected)


def test_a_batch_that_does_not_fit_leaves_the_document_as_it_was() -> None:
    doc = Document("file:///x.py", "a\nb\n")
    good, bad = change_at(doc.text, 0, 1, "x"), t.TextDocumentContentChangePartial(
        range=t.Range(t.Position(9, 0), t.Position(9, 0)), text="?"
    )
    with pytest.raises(ValueError, match="change 2 of 2"):
        doc.apply([good, bad], "utf-16")
    assert doc.text == "a\nb\n" and doc.lines.starts.tolist() == [0, 2, 4]


def test_the_window_of_a_huge_document() -> None:
    text = "".join(f"line_{i} = {i}\n" for i in range(40_000))  # ~600k characters
    doc = Document("file:///big.py", text, max_chars=100_000)
    assert doc.huge
    cursor = text.index("line_30000 =")
    view = doc.view(cursor)
    assert view.start <= cursor <= view.start + len(view.text)
    assert view.start == 0 or text[view.start - 1] == "\n"  # a line start
    assert text[view.start : view.start + len(view.text)] == view.text
    assert view.first_line == text.count("\n", 0, view.start)
    assert cursor - view.start >= WINDOW_BEFORE - WINDOW_STEP - 20
    assert len(view.text) <= WINDOW_BEFORE + 3 * WINDOW_STEP
    near = doc.view(cursor + 100)  # typing on: the same window, so the engine's cache follows edit by edit
    assert (near.start, near.text) == (view.start, view.text)
    small = Document("file:///small.py", "x = 1\n", max_chars=100_000)
    assert small.view(3).text == "x = 1\n" and small.view(3).start == 0


# ----------------------------------------------------------------------------- a real server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    client, _ = await start(["--model", str(tiny_dir)], tmp_path_factory.mktemp("ws"), TINY)
    await ready(client)
    yield client
    assert await stop(client) == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_a_12mb_document_stays_within_memory_and_edits_stay_quick(session: LanguageClient) -> None:
    small = Doc(session, "warm.py", SOURCE)  # the model's working memory is in the baseline
    await small.inline()
    base = (await stats(session))["memory"]["rss_bytes"]
    lines = SOURCE.splitlines(keepends=True)
    big = "".join(lines[i % len(lines)] for i in range(12_000_000 // 40))[:12_000_000]
    doc = Doc(session, "huge.py", big)
    line, col = big.count("\n"), len(big) - big.rfind("\n") - 1  # the end, tracked here: no rescans client-side
    t0 = time.perf_counter()
    for i in range(30):  # typing at the end, and an edit at the top now and then
        changes = []
        if i % 10 == 0:
            top = t.Range(t.Position(0, 0), t.Position(0, 0))
            changes.append(t.TextDocumentContentChangePartial(range=top, text="#\n"))
            line += 1
        end = t.Position(line, col)
        changes.append(t.TextDocumentContentChangePartial(range=t.Range(end, end), text="x"))
        col += 1
        doc.version += 1
        session.text_document_did_change(
            t.DidChangeTextDocumentParams(t.VersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version), changes)
        )
        doc.text = ("#\n" if i % 10 == 0 else "") + doc.text + "x"
    state = await doc.state()
    edits_s = time.perf_counter() - t0
    assert edits_s < 15, edits_s  # was minutes: a full rescan, tokenization and jedi parse per edit
    doc.replace(len(doc.text), len(doc.text), "\nvalue = Square(3).")
    inline = await asyncio.wait_for(doc.inline(), 120)
    assert isinstance(inline, t.InlineCompletionList)
    menu = await asyncio.wait_for(doc.menu(), 120)
    for item in menu.items:  # positions are the document's, not the window's
        assert item.text_edit.range.end == doc.end()
    await doc.assert_in_step()
    assert state is not None
    s = await stats(session)
    grown = s["memory"]["rss_bytes"] - base
    # the text (12 MB), a copy per edit, the message it came in, its line index: a few times its size
    assert grown < 8 * len(big) + 200 * 2**20, grown / 2**20
    session.text_document_did_close(t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(doc.uri)))
