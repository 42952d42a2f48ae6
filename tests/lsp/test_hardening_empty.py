"""Issue 18 item 11: empty inline suggestions at the end of a file.

Why they were empty: at the end of a finished line (a sentence ended by `.`, a complete statement,
the last line of the document while typing) the model starts the next line. Decoding went on past
that leading newline to the end of the next line, and the single-line cut then kept the text before
the newline, nothing, so the draft was dropped: 6 of 27 keystroke requests on glob.py, every one at
the end of a docstring sentence. Now a single-line draft at the end of a finished line is that line
break and the next line. And every empty answer the server gives is counted with its reason.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as t
from pytest_lsp import LanguageClient
from test_server import LONG, TINY, Doc, ready, start, stats, stop, tiny_dir  # noqa: F401

from superpie.completion.config import PostprocessConfig
from superpie.completion.draft import Draft
from superpie.completion.postprocess.pipeline import DraftContext, postprocess


def kept(document: str, cursor: int, draft: str) -> list[str]:
    """What single-line post-processing keeps of one draft."""
    context = DraftContext.at(document, cursor, multiline=False)
    return [d.text for d in postprocess([Draft(draft)], context, PostprocessConfig())]


def test_at_the_end_of_a_finished_line_the_draft_is_the_next_line() -> None:
    doc = 'def f():\n    """Return paths matching a pattern.'
    assert kept(doc, len(doc), "\n\n    Args:") == ["\n\n    Args:"]
    code = "x = compute()\nprint(x)"
    assert kept(code, len(code), "\nreturn x\nmore") == ["\nreturn x"]


def test_elsewhere_the_single_line_cut_is_as_before() -> None:
    mid = "x = compute(a)\n"
    assert kept(mid, mid.index("(a)"), "\n    y") == []  # code after the cursor: a newline would split it
    blank = "def f():\n    "
    assert kept(blank, len(blank), "\n\n    return 1\n    x") == ["return 1"]  # a blank line: moved up
    repeated = "x = 1\ny = 2\n"
    assert kept(repeated, len("x = 1"), "\ny = 2") == []  # only what already follows


@pytest.mark.real_model
def test_the_docstring_sentences_of_glob_py_get_a_suggestion() -> None:
    from superpie.completion.config import EngineConfig, ModelConfig
    from superpie.completion.engine import Engine
    from superpie.completion.request import CompletionRequest

    source = Path(sysconfig.get_paths()["stdlib"], "glob.py").read_text()
    engine = Engine(EngineConfig(model=ModelConfig(path="smollm2-135m")))
    try:
        empty = []
        for at in (323, 399, 528, 626, 746):  # each right after a `.` that ends a docstring sentence
            text = source[:at]
            request = CompletionRequest("file:///virtual/glob.py", text, at, max_tokens=16, multiline=False)
            result = engine.complete(request)
            if not result.completions:
                empty.append(at)
        assert not empty
    finally:
        engine.shutdown()


# ----------------------------------------------------------------------------- every empty answer explained


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    client, _ = await start(["--model", str(tiny_dir)], tmp_path_factory.mktemp("ws"), {**TINY, **LONG})
    await ready(client)
    yield client
    assert await stop(client) == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_every_empty_answer_is_counted_with_its_reason(session: LanguageClient) -> None:
    import asyncio

    before = await stats(session)
    doc = Doc(session, "reasons.py", "def f(x):\n    return x\n\n\nvalue = f(")
    await doc.assert_in_step()
    answers = []
    older = doc.menu()  # decodes for seconds (LONG): the inline request below supersedes it
    await asyncio.sleep(0.3)
    doc.type("1")
    answers.append(await doc.inline())
    answers.append(await older)
    for position in (t.Position(0, 3), t.Position(1, 4), doc.end()):
        answers.append(await doc.inline(position))
    missing = Doc(session, "closed.py", "x = 1\n")
    session.text_document_did_close(t.DidCloseTextDocumentParams(t.TextDocumentIdentifier(missing.uri)))
    answers.append(await missing.inline())  # not open (any more)
    empty = sum(1 for a in answers if not list(a.items))
    after = await stats(session)
    assert empty >= 2  # superseded, not open
    grown = {k: v - before["empty"].get(k, 0) for k, v in after["empty"].items()}
    assert sum(grown.values()) == empty, grown
    assert grown["superseded"] >= 1 and grown["not_open"] == 1
    assert set(after["empty"]) <= {
        "not_open", "not_ready", "no_model", "superseded", "cancelled", "shutdown", "stopped", "blank", "cut",
    }  # fmt: skip
