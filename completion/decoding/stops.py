"""Where a draft ends: the one place the stop rules are written.

A single-line draft ends with its line; a multi-line draft ends with the block it is written in (the
first logical line of code indented less than the block's first line ends it). Decoding applies the
rules as it goes (`DecodeTask.stop`, made by `stop_rule`) so it does not spend its token budget past
the end; post-processing applies them again through the same functions (`trim_to_line` calls
`line_end`, `trim_to_block` calls `block_extent`, `normalize_indentation` re-indents the lines
`block_window` reads), so a draft stopped early is cut exactly where post-processing cuts a longer one.

The block is judged on the draft as post-processing shapes it before the cut: the incomplete character
at its end dropped, a blank cursor line's leading blank lines skipped, its lines re-indented to the
document's unit. Re-indentation reads only the lines up to the one that closes the block
(`block_window`): lines past the block's end are never decoded, so they may not shape what is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from superpie.analysis import syntax
from superpie.completion.config import PostprocessConfig
from superpie.completion.postprocess.blank import skip_leading_blank_lines
from superpie.completion.postprocess.characters import strip_incomplete_character
from superpie.completion.postprocess.context import DraftContext
from superpie.completion.postprocess.reindent import reindent

StopRule = Callable[[str], int | None]  # text so far -> cut index where the draft ends, or None
_CONTENT = re.compile(r"\S")


def line_end(text: str) -> int | None:
    """Where a single-line draft ends: its first newline (None: the line goes on)."""
    nl = text.find("\n")
    return None if nl < 0 else nl


def line_end_stop(text: str) -> int | None:
    """Decode-time line stop: the line end that follows real content (a leading newline starts the draft).

    Decoding goes past leading blank lines because on a blank cursor line post-processing moves the
    draft's first real line onto the cursor's line (`skip_leading_blank_lines`) and then cuts it at
    its `line_end`; elsewhere it cuts at the leading newline and drops the blank draft.
    """
    body = text.lstrip()
    end = line_end(body) if body else None
    return None if end is None else len(text) - len(body) + end


def block_extent(context: DraftContext, text: str) -> tuple[int, bool]:
    """Where in `text` the block holding the draft's first line ends, and whether a dedented line of
    code closes it there (False: the text ran out first, so more text could extend the block).

    The block is the one the cursor's line is in when the draft's first line holds code, else the one
    its first real line starts (`syntax.block_extent`).
    """
    local, cursor = context.local(text)
    if text.split("\n", 1)[0].strip():
        at = cursor
    else:
        m = _CONTENT.search(text)
        if m is None:
            return len(text), False
        at = cursor + m.start()
    end, closed = syntax.block_extent(local, at)
    return end - cursor, closed


def block_window(
    context: DraftContext, text: str, reindented: bool = True, known_open: set[str] | None = None
) -> tuple[int, str] | None:
    """The first line at which the draft's block is closed, judged on the lines up to it (re-indented
    when `reindented`), and those lines as judged; None while the block is open.

    Each window is judged on its own lines only, so the answer for a draft never changes as more of it
    is decoded: what decides it is settled once the closing line's first character is there.
    `known_open`: windows already judged open (the block stop judges each once per request).
    """
    lines = text.split("\n")
    for j in range(1, len(lines)):
        if not lines[j].strip():  # a blank line closes nothing and re-indents nothing
            continue
        window = "\n".join(lines[: j + 1])
        if known_open is not None and window in known_open:
            continue
        shaped = reindent(window, context) if reindented else window
        if block_extent(context, shaped)[1]:
            return j, shaped
        if known_open is not None:
            known_open.add(window)
    return None


@dataclass(frozen=True)
class BlockStop:
    """Decode-time block stop: ends a multi-line draft once its block is closed.

    It keeps all the text decoded so far (the closing line's start included): post-processing reads
    that line to place the cut, as it would in a longer draft.
    """

    context: DraftContext
    reindented: bool = True  # post-processing re-indents drafts (`IndentConfig.enabled`)
    _open: set[str] = field(default_factory=set, compare=False, repr=False)  # windows judged open

    def __call__(self, text: str) -> int | None:
        """len(text) once the block is closed (stop, keep it all), else None."""
        draft = skip_leading_blank_lines(strip_incomplete_character(text), self.context)
        return None if block_window(self.context, draft, self.reindented, self._open) is None else len(text)


def stop_rule(text: str, offset: int, multiline: bool, config: PostprocessConfig = PostprocessConfig()) -> StopRule:
    """The stop rule of a request at `offset` of `text`: the line stop, or the block stop in its context."""
    if not multiline:
        return line_end_stop
    return BlockStop(DraftContext.at(text, offset, multiline=True), config.indent.enabled)
