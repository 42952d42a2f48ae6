"""The server's open documents: the client's text as the client sent it, and the text the engine is given.

The two differ where the client's text is not something a tokenizer takes: a lone surrogate
(`s = '\\ud800'`, legal in a JSON string, not in Unicode) becomes U+FFFD. One code point stands for
one, so every offset means the same in both texts and positions need no mapping back.

They also differ for a document longer than `cache.maxDocumentKb` (thousands of characters): the
server keeps its whole text, but the engine only ever sees a window of it around the cursor (or the
last edit), `WINDOW_BEFORE` characters before it and `WINDOW_AFTER` after, cut at line starts. Its
ends move in steps of `WINDOW_STEP`, so typing keeps the same window and the engine's cache follows
it edit by edit. Nothing tokenizes, parses or indexes the whole text: a huge document costs its
text (held once, copied once per edit) and its line index (8 bytes a line), beside the window's KV,
which the memory budget bounds like any other document's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lsprotocol import types

from superpie.lsp.lines import LineIndex, range_offsets

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"
WINDOW_BEFORE = 64 * 1024  # characters before the cursor a huge document's window holds (the model sees 4k tokens)
WINDOW_AFTER = 8 * 1024
WINDOW_STEP = 32 * 1024


def engine_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (same length, same offsets)."""
    return _SURROGATE.sub(REPLACEMENT, text) if _SURROGATE.search(text) else text


@dataclass(frozen=True)
class View:
    """What the engine is given of a document: its engine text from `start` (a line start) on."""

    start: int  # offset in the document of the view's first character
    first_line: int  # the document line at `start`
    text: str

    def offset(self, document_offset: int) -> int:
        """A document offset as an offset in the view."""
        return document_offset - self.start


@dataclass
class Document:
    """An open document as the client sees it, with its line index and the engine's view of it."""

    uri: str
    text: str
    version: int | None = None
    max_chars: int | None = None  # longer: the engine sees a window (None: never)
    anchor: int = 0  # where the last edit ended: the window a background sync brings the cache to
    lines: LineIndex = field(init=False, repr=False)
    _view: View | None = field(default=None, repr=False)
    _view_of: tuple[str, int, int] | None = field(default=None, repr=False)  # (text, start, end) of `_view`

    def __post_init__(self) -> None:
        self.lines = LineIndex.of(self.text)

    @property
    def huge(self) -> bool:
        """Whether the engine sees a window of the document rather than all of it."""
        return self.max_chars is not None and len(self.text) > self.max_chars

    def offset(self, position: types.Position, encoding: str) -> int:
        """Str offset of an LSP position (a character past its line: the line's end); ValueError past the end."""
        return self.lines.offset(self.text, position.line, position.character, encoding)

    def apply(self, changes: Sequence[types.TextDocumentContentChangeEvent], encoding: str) -> None:
        """Apply a didChange's changes in order, all or none: ValueError names the change that did not fit."""
        text, lines, anchor = self.text, self.lines, self.anchor
        for number, change in enumerate(changes, start=1):
            if isinstance(change, types.TextDocumentContentChangeWholeDocument):
                text, lines, anchor = change.text, LineIndex.of(change.text), 0
                continue
            rng = change.range
            try:
                start, end = range_offsets(
                    lines, text, (rng.start.line, rng.start.character), (rng.end.line, rng.end.character), encoding
                )
            except ValueError as exc:
                raise ValueError(f"change {number} of {len(changes)} does not fit the text ({exc})") from None
            text = text[:start] + change.text + text[end:]
            lines = lines.replaced(text, start, end, len(change.text))
            anchor = start + len(change.text)
        self.text, self.lines, self.anchor = text, lines, anchor

    def view(self, around: int | None = None) -> View:
        """The engine's view: all of the document's engine text, or for a huge one the window around
        `around` (default: the last edit)."""
        if not self.huge:
            start, end = 0, len(self.text)
        else:
            start, end = self._window(self.anchor if around is None else around)
        made = self._view_of
        if self._view is None or made is None or made[0] is not self.text or made[1:] != (start, end):
            first = self.lines.line_of(start) if start else 0
            self._view = View(start, first, engine_text(self.text[start:end]))
            self._view_of = (self.text, start, end)
        return self._view

    def engine_text(self) -> str:
        """The text a background sync gives the engine (`view` around the last edit)."""
        return self.view().text

    def _window(self, at: int) -> tuple[int, int]:
        """[start, end) of the window around offset `at`: line starts, on a grid of `WINDOW_STEP`."""
        n, starts = len(self.text), self.lines.starts
        lo = max(0, at - WINDOW_BEFORE) // WINDOW_STEP * WINDOW_STEP
        hi = min(n, -(-(at + WINDOW_AFTER) // WINDOW_STEP) * WINDOW_STEP)
        first = int(starts[self.lines.line_of(lo)]) if lo else 0
        if first < lo:  # the line holding `lo` starts before it: the next line, unless that passes `at`
            nxt = self.lines.line_of(lo) + 1
            first = int(starts[nxt]) if nxt < len(starts) and int(starts[nxt]) <= at else first
        after = self.lines.line_of(hi) + 1
        last = int(starts[after]) if hi < n and after < len(starts) else n
        return first, last
