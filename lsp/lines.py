"""Where each line of an open document starts, kept up to date edit by edit.

Converting an LSP position to an offset needs the line starts; recomputing them for every change
scans the whole text (a 50 MB document: a million lines, a second, per keystroke). A `LineIndex`
is built once when a document opens; an edit rescans only the lines it touches (one more on each
side, where a `\\r` and a `\\n` may join or split) and shifts the starts after it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from superpie.lsp.positions import line_starts, offset_at, position_at

_EOL = re.compile(r"\r\n|\r|\n")


class LineIndex:
    """The line starts of one text (a numpy array: 8 bytes a line)."""

    def __init__(self, starts: np.ndarray) -> None:
        self.starts = starts

    @classmethod
    def of(cls, text: str) -> LineIndex:
        """The index of a whole text."""
        return cls(np.asarray(line_starts(text), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.starts)

    def line_of(self, offset: int) -> int:
        """The line holding a str offset."""
        return int(np.searchsorted(self.starts, offset, side="right")) - 1

    def offset(self, text: str, line: int, character: int, encoding: str, clamp: bool = True) -> int:
        """Str offset of an LSP position in `text` (the text this index describes)."""
        return int(offset_at(text, line, character, encoding, _Starts(self.starts), clamp=clamp))

    def position(self, text: str, offset: int, encoding: str) -> tuple[int, int]:
        """LSP (line, character) of a str offset of `text`."""
        line = self.line_of(offset)
        start = int(self.starts[line])
        return line, position_at(text[start:offset], offset - start, encoding)[1]

    def replaced(self, new_text: str, start: int, end: int, inserted: int) -> LineIndex:
        """The index after `old[start:end]` was replaced by `inserted` characters, giving `new_text`.

        `start` and `end` lie within lines (never inside a line break), as LSP positions do.
        """
        starts = self.starts
        first = max(0, self.line_of(start) - 1)  # a line back: a `\r` there may meet a `\n` inserted here
        last = self.line_of(end) + 2  # the start of the line after the next one (or the end)
        delta = inserted - (end - start)
        lo = int(starts[first])
        if last < len(starts):
            hi = int(starts[last]) + delta  # a line start in the new text too: its break lies after `end`
            tail = starts[last:] + delta
        else:
            hi, tail = len(new_text), np.empty(0, dtype=np.int64)
        found = [m.end() for m in _EOL.finditer(new_text, lo, hi)]
        if last < len(starts) and found and found[-1] == hi:
            found.pop()  # that start is the tail's first
        middle = np.asarray([lo, *found], dtype=np.int64)
        return LineIndex(np.concatenate([starts[:first], middle, tail]))


class _Starts(Sequence[int]):
    """The index as the list of ints `positions.offset_at` reads."""

    def __init__(self, starts: np.ndarray) -> None:
        self._starts = starts

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i):
        return int(self._starts[i])


def range_offsets(
    index: LineIndex, text: str, start: tuple[int, int], end: tuple[int, int], encoding: str
) -> tuple[int, int]:
    """(start, end) str offsets of an LSP range in `text`; ValueError past the last line or when reversed."""
    a = index.offset(text, start[0], start[1], encoding)
    b = index.offset(text, end[0], end[1], encoding)
    if b < a:
        raise ValueError(f"range end {end[0]}:{end[1]} is before its start")
    return a, b
