"""The stop rules (`completion.decoding.stops`): a draft ends at the same place whether decoding stops it
or post-processing cuts a longer one, for single lines and for blocks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import tiny_model

from superpie.analysis import syntax
from superpie.completion.config import DecodingConfig, EngineConfig, IndentConfig, PostprocessConfig
from superpie.completion.constraints.base import ConstraintContext
from superpie.completion.decoding.stops import BlockStop, StopRule, block_extent, line_end_stop, stop_rule
from superpie.completion.decoding.task import DecodeTask, Partial
from superpie.completion.draft import Draft
from superpie.completion.engine import Engine
from superpie.completion.postprocess.context import DraftContext
from superpie.completion.postprocess.pipeline import postprocess
from superpie.completion.request import CompletionRequest

CURSOR = "<|>"
NO_INDENT = PostprocessConfig(indent=IndentConfig(enabled=False))


def ctx(document: str, multiline: bool = True) -> DraftContext:
    return DraftContext.at(document.replace(CURSOR, "", 1), document.index(CURSOR), multiline)


def block_stop(document: str, config: PostprocessConfig = PostprocessConfig()) -> StopRule:
    return stop_rule(document.replace(CURSOR, "", 1), document.index(CURSOR), True, config)


def decoded(stop: StopRule, draft: str, chunks: list[int] | None = None) -> str:
    """The draft as decoding leaves it: fed in chunks (tokens), cut where the stop rule first ends it."""
    sizes = iter(chunks or [])
    end = 0
    while end < len(draft):
        end = min(len(draft), end + max(1, next(sizes, 1)))
        cut = stop(draft[:end])
        if cut is not None:
            return draft[:cut]
    return draft


def final(texts: list[str], context: DraftContext, config: PostprocessConfig = PostprocessConfig()) -> list:
    """What the user sees: texts and scores (incoming scores differ, so the order is the drafts')."""
    drafts = [Draft(t, score=-0.1 * i, id=i) for i, t in enumerate(texts)]
    return [(d.text, d.score) for d in postprocess(drafts, context, config)]


# ---- the line stop ------------------------------------------------------------------------------


def test_line_end_stop_cuts_at_the_newline_after_content() -> None:
    assert line_end_stop("x = 1\ny") == 5
    assert line_end_stop("\n    return 1\nz") == len("\n    return 1")
    assert line_end_stop("\n   ") is None and line_end_stop("x = 1") is None


def test_stop_rule_is_the_line_stop_or_a_block_stop_in_context() -> None:
    assert stop_rule("x = 1\n", 5, multiline=False) is line_end_stop
    rule = stop_rule("def f():\n    \n", 13, multiline=True)
    assert isinstance(rule, BlockStop) and rule.context.line_prefix == "    " and rule.reindented
    assert not stop_rule("x\n", 1, True, NO_INDENT).reindented


# ---- the block stop, rule by rule -----------------------------------------------------------------


def test_block_stop_fires_at_the_first_character_of_a_dedented_line() -> None:
    doc = "def f(x):\n    <|>\n"
    draft = "y = x + 1\n    return y\nprint(f(1))\n"
    stopped = decoded(block_stop(doc), draft)
    assert stopped == "y = x + 1\n    return y\np"
    assert final([stopped], ctx(doc)) == final([draft], ctx(doc)) == [("y = x + 1\n    return y", 0.0)]


def test_block_stop_reads_past_blank_comment_continuation_and_string_lines() -> None:
    doc = "def f():\n    <|>\n"
    draft = "y = g(\n1)\n\n# flush-left\n    s = '''\nno indent\n'''\n    return y\nz = 2"
    assert decoded(block_stop(doc), draft) == draft[: draft.index("z") + 1]


def test_block_stop_never_fires_at_module_level() -> None:
    assert decoded(block_stop("<|>\n"), "a = 1\nb = 2\nc") == "a = 1\nb = 2\nc"


def test_block_stop_judges_the_draft_as_post_processing_reindents_it() -> None:
    doc, draft = "x = 1<|>\n", "\n    y = 2\nz = 3\nw"
    # re-indented, the too-deep first line moves to module level: no block to end
    assert decoded(block_stop(doc), draft) == draft
    assert final([draft], ctx(doc)) == [("\ny = 2\nz = 3\nw", 0.0)]
    # without re-indentation the draft's own block ends at z, decoding and post-processing alike
    stopped = decoded(block_stop(doc, NO_INDENT), draft)
    assert stopped == "\n    y = 2\nz"
    assert final([stopped], ctx(doc), NO_INDENT) == final([draft], ctx(doc), NO_INDENT) == [("\n    y = 2", 0.0)]


def test_block_stop_waits_for_a_whole_character() -> None:
    stop = block_stop("def f():\n    <|>\n")
    assert stop("x\n\ufffd") is None  # the first byte of "é": nothing decided yet
    assert stop("x\né") == len("x\né")


def test_block_stop_on_a_blank_cursor_line_skips_leading_blank_lines() -> None:
    doc = "def f():\n    if a:\n        <|>\n"
    draft = "\n\n        b = 1\n        c = 2\n    d = 3"
    stopped = decoded(block_stop(doc), draft)
    assert stopped == draft[: draft.index("d") + 1]
    assert final([stopped], ctx(doc)) == final([draft], ctx(doc)) == [("b = 1\n        c = 2", 0.0)]


def test_lines_past_the_block_do_not_reindent_the_lines_kept() -> None:
    doc = "def f():\n    if a:<|>\n"
    draft = "\n      b\n        c\n    d\n     e"  # the draft's own unit is 2; "e" past the block is odd
    stopped = decoded(block_stop(doc), draft)
    assert stopped == "\n      b\n        c\n    d"
    # b and c move to the document's unit (4) as two-space levels, whatever follows the block
    assert final([draft], ctx(doc)) == final([stopped], ctx(doc)) == [("\n        b\n            c", 0.0)]


# ---- decode-time cut and post-processing trim agree -----------------------------------------------

DOCS = [
    "def f(x):\n    <|>\n",
    "def f(x):<|>\n",
    "class A:\n    def m(self):\n        if x:\n            <|>\n        return 1\n",
    "x = 1<|>\n",
    "<|>\n",
    "def f(a):\n    if a<|>\n",
    "def f():\n    y = foo(<|>\n    return y\n",
    "def f():\n  if a:\n    <|>\n  b = 2\n",
    "def f():\n\tif a:\n\t\t<|>\n",
    "s = '''doc\n<|>\n",
    "def f():\n    x = 1  # note<|>\n",
    "for i in range(3):\n    total += i<|>\n    print(total)\n",
    "def g():\n    return [\n        1,<|>\n",
]
INDENTS = ["", "", " ", "  ", "   ", "    ", "     ", "      ", "        ", "            ", "\t", "\t\t", "  \t"]
PIECES = ["x = 1", "if a:", "return y", "# c", "foo(", ")", '"""', "'s'", "else:", "", "y = [1,", "2]",
          "def g():", "pass", "z = f(a, \\", "b)", "print(x)", "for k in v:", "é = 'ü'", "   ", "\ufffd"]  # fmt: skip

drafts = st.builds(
    lambda lines, lead: lead + "\n".join(i + p for i, p in lines),
    st.lists(st.tuples(st.sampled_from(INDENTS), st.sampled_from(PIECES)), min_size=1, max_size=9),
    st.sampled_from(["", "", "", " ", "\n", "\n\n"]),
)
chunks = st.lists(st.integers(1, 6), max_size=80)
# statements at any column: what re-indentation and the block's end depend on
indented = st.builds(
    lambda lines, lead: lead + "\n".join(" " * n + p for n, p in lines),
    st.lists(st.tuples(st.integers(0, 13), st.sampled_from(["x = 1", "if a:", "pass", "# c"])), min_size=2, max_size=7),
    st.sampled_from(["", "\n"]),
)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(st.sampled_from(DOCS), st.lists(st.one_of(drafts, indented), min_size=1, max_size=3), chunks, st.booleans())
def test_the_block_stop_cuts_where_post_processing_would(doc: str, texts: list[str], sizes: list[int], reindent: bool):
    config = PostprocessConfig() if reindent else NO_INDENT
    stop = block_stop(doc, config)  # one rule for all the drafts of a request, as decoding shares it
    stopped = [decoded(stop, t, sizes) for t in texts]
    assert final(stopped, ctx(doc), config) == final(texts, ctx(doc), config)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.sampled_from(DOCS), drafts, chunks)
def test_the_line_stop_cuts_where_post_processing_would(doc: str, text: str, sizes: list[int]):
    text = text.replace("\ufffd", "")  # an invalid byte left before the newline is kept there, not at the end
    context = ctx(doc, multiline=False)
    assert final([decoded(line_end_stop, text, sizes)], context) == final([text], context)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.sampled_from(DOCS), drafts)
def test_block_extent_scans_as_much_as_the_whole_document(doc: str, text: str):
    context = ctx(doc)
    if not text.strip():
        assert block_extent(context, text) == (len(text), False)
        return
    cursor = len(context.prefix)  # the block of the cursor's line, or of the draft's first real line
    at = cursor if text.split("\n", 1)[0].strip() else cursor + len(text) - len(text.lstrip())
    end, closed = syntax.block_extent(context.prefix + text, at)
    assert block_extent(context, text) == (end - cursor, closed)


# ---- decoding and the engine stop there -------------------------------------------------------------


def test_a_decoded_draft_stops_at_the_token_that_starts_the_dedented_line() -> None:
    lm = tiny_model("llama")
    doc = "def f(x):\n    <|>\n"
    draft = "y = x + 1\n    return y\nprint(f(1))\nprint(2)\n"
    ids = lm.tokenizer.encode(draft, add_special_tokens=False).ids
    task = DecodeTask(first_input=0, max_tokens=len(ids), stop=block_stop(doc))
    partial, stopped = Partial.start(task), False
    for token in ids:
        partial, stopped = partial.extend(lm, task, token, -1.0)
        if stopped:
            break
    assert stopped and len(partial.ids) < len(ids)
    assert "print" not in lm.decode(list(partial.ids[:-1]))  # the last token is the one that starts it
    assert final([partial.text], ctx(doc)) == final([draft], ctx(doc)) == [("y = x + 1\n    return y", 0.0)]


@dataclass(frozen=True)
class Script:
    """A constraint that lets decoding choose only the next token of a script (and counts the steps)."""

    ids: tuple[int, ...]
    steps: list[int] = field(default_factory=list)

    def mask(self, vocab: int) -> torch.Tensor | None:
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[self.ids[0]] = True
        return mask

    def advance(self, token_text: str) -> Script | None:
        self.steps.append(self.ids[0])
        return Script(self.ids[1:], self.steps) if len(self.ids) > 1 else None


@pytest.mark.parametrize(("multiline", "expected"), [(True, " = x + 1\n    return y"), (False, " = x + 1")])
def test_a_request_stops_decoding_where_its_draft_ends(multiline: bool, expected: str) -> None:
    lm = tiny_model("llama")
    text = "def f(x):\n    y\n"
    rest = " = x + 1\n    return y\nprint(f(1))\nprint(2)\nprint(3)\n"
    scripts: list[Script] = []

    def factory(c: ConstraintContext) -> list[Script]:  # the typed characters first: token healing wants them
        scripts.append(Script(tuple(lm.tokenizer.encode(c.typed + rest, add_special_tokens=False).ids)))
        return scripts[-1:]

    config = EngineConfig()
    config.decoding = DecodingConfig(max_tokens=64)
    engine = Engine(config, lm=lm, constraint_factory=factory)
    result = engine.complete(CompletionRequest("mem://s.py", text, text.index("y") + 1, drafts=1, multiline=multiline))
    assert [c.text for c in result.completions] == [expected]
    decoded_text = lm.decode(list(scripts[0].steps))
    assert len(scripts[0].steps) < len(scripts[0].ids)  # the rest of the script, and of the budget, is never decoded
    if multiline:  # up to the token that starts the dedented line
        assert "\np" in decoded_text and "print(2)" not in decoded_text
    else:
        assert "return" not in decoded_text
