"""The document around the cursor, as post-processing and the stop rules see it.

A `DraftContext` is made once per request; what it learns about the prefix (the lexer's state at the
cursor, the logical line starts, the open brackets) is computed once and cached, because every draft,
and the block stop at every decoding step, asks again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

from superpie.analysis import lexical, syntax
from superpie.completion.draft import Draft


@dataclass(frozen=True)
class DraftContext:
    """The document around the cursor, as post-processing sees it."""

    prefix: str  # text before the cursor
    suffix: str  # text after the cursor
    multiline: bool = False  # False: the draft ends with the current line
    indent_unit: str = "    "  # the document's indentation step: "\t", "  ", "    ", ...

    @classmethod
    def at(
        cls, text: str, offset: int, multiline: bool = False, indent_unit: str | None = None
    ) -> DraftContext:
        """Context for a cursor at a str offset of a document (indentation unit detected unless given)."""
        unit = indent_unit if indent_unit is not None else detect_indent_unit(text)
        return cls(text[:offset], text[offset:], multiline, unit)

    @property
    def line_prefix(self) -> str:
        """Text between the start of the cursor's line and the cursor."""
        return self.prefix[self.prefix.rfind("\n") + 1 :]

    @property
    def line_suffix(self) -> str:
        """Text between the cursor and the end of its line."""
        return self.suffix.split("\n", 1)[0]

    @property
    def at_blank_line(self) -> bool:
        """True when the cursor's line holds nothing but whitespace: the draft writes a whole line."""
        return not self.line_prefix.strip() and not self.line_suffix.strip()

    @property
    def indent_cols(self) -> int:
        """Columns of one indentation step (a tab counts as 4)."""
        return 4 if self.indent_unit == "\t" else max(1, len(self.indent_unit))

    @cached_property
    def lex(self) -> lexical.LexState:
        """The lexer's state at the cursor: drafts are scanned from here, not from the document's start."""
        return lexical.lex_state(self.prefix)

    @cached_property
    def _tail(self) -> str:
        """The prefix from its last logical line start: what the cursor's line can still depend on."""
        return self.prefix[lexical.logical_line_starts(self.prefix)[-1] :]

    def local(self, text: str) -> tuple[str, int]:
        """The draft after the cursor's logical line (the lexer's own start state there), and the cursor's
        offset in it: scans of the draft need no more of the document than that."""
        tail = self._tail
        return tail + text, len(tail)

    def statement_starts(self, text: str) -> set[int]:
        """Offsets in the draft where logical lines start (not inside brackets or strings)."""
        local, cursor = self.local(text)
        return {p - cursor for p in lexical.logical_line_starts(local, cursor, self.lex)}

    def code_brackets(self, text: str) -> Iterator[tuple[int, str]]:
        """(offset in the draft, bracket) for each bracket of the draft that is code."""
        local, cursor = self.local(text)
        return ((at - cursor, ch) for at, ch in lexical.code_brackets(local, cursor, state=self.lex))

    @cached_property
    def open_brackets(self) -> tuple[str, ...]:
        """Brackets open in code at the cursor, outermost first."""
        return lexical.open_brackets(self.prefix)

    @cached_property
    def closed_by_line_suffix(self) -> int:
        """How many of the open brackets the rest of the cursor's line already closes."""
        depth = closes = 0
        for _, ch in self.code_brackets(self.line_suffix):
            if ch in "([{":
                depth += 1
            elif depth:
                depth -= 1
            else:
                closes += 1
        return min(closes, len(self.open_brackets))


Filter = Callable[[Draft, DraftContext], Draft | None]


def keep(draft: Draft, context: DraftContext) -> Draft | None:
    """The filter a disabled step becomes."""
    return draft


def detect_indent_unit(text: str) -> str:
    """The document's indentation step, so drafts can be re-indented to match it."""
    tabs = spaces = 0
    steps: Counter[int] = Counter()
    prev = 0
    for line in text.splitlines()[:2000]:
        if not line.strip():
            continue
        indent = syntax.line_indent(line)
        if indent.startswith("\t"):
            tabs += 1
            continue
        width = len(indent)
        spaces += width > 0
        if width > prev:
            steps[width - prev] += 1
        prev = width
    if tabs > spaces:
        return "\t"
    step = steps.most_common(1)[0][0] if steps else 4
    return " " * step if step in (2, 3, 4, 8) else "    "
