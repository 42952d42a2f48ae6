"""Lexical scanner for Python source that may be unfinished.

tree-sitter recovers from an unterminated string by guessing an ERROR node, so it cannot say whether
a cursor right after `"abc` is inside a string. This scanner follows Python's own lexical rules
(string prefixes, triple quotes, escapes, f-string replacement fields and format specs, comments,
brackets, backslash continuations) from the start of the text, so its answer at a position depends
only on the text before it. f-strings follow PEP 701 (3.12+): a replacement field may hold strings
with the same quote. It answers: the region ("code" | "string" | "comment") at a position, where
the logical lines start (used for block ends), and which brackets are code (post-processing balances
them).

The public API is `LexState` (where the lexer stands after a text, so a scan can resume there),
`lex_state`, `region_at`, `logical_line_starts`, `code_brackets` and `open_brackets`. The frames inside
a `LexState` are this module's business: callers resume from a state, they never read it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_CODE = re.compile(r"[#'\"]")
_CODE_LINES = re.compile(r"[#'\"()\[\]{}\n\\]")
_FIELD = re.compile(r"[#'\"()\[\]{}:]")
_PREFIXES = frozenset({"r", "u", "f", "b", "t", "br", "rb", "fr", "rf", "tr", "rt"})
_BRACKET = re.compile(r"[()\[\]{}]")
_OPEN = "([{"
_CLOSE = ")]}"

# A frame is a tuple: ("code", depth) | ("field", depth) | ("str", quote, raw, fmt) | ("spec", quote).
# Tuples, not objects: the scan rewrites the top frame at every bracket, and it runs per keystroke.
# Only this module reads them (callers hold a `LexState`).
Frame = tuple[Any, ...]
_MEMO_SLOTS = 4
_memo = threading.local()


def _string_pattern(quote: str, raw: bool, fmt: bool) -> re.Pattern[str]:
    key = (quote, raw, fmt)
    pat = _STRING_PATTERNS.get(key)
    if pat is None:
        parts = []
        if fmt and not raw:
            parts.append(r"\\N\{[^}\n]*\}?")  # \N{NAME}: its braces are no replacement field
        parts.append(r"\\[^{}]" if fmt else r"\\[\s\S]")
        parts.append(re.escape(quote))
        if len(quote) == 1:
            parts.append(r"\n")
        if fmt:
            parts.append(r"\{\{|\}\}|\{|\}")
        pat = _STRING_PATTERNS[key] = re.compile("|".join(parts))
    return pat


def _spec_pattern(quote: str) -> re.Pattern[str]:
    pat = _SPEC_PATTERNS.get(quote)
    if pat is None:
        extra = r"|\n" if len(quote) == 1 else ""
        pat = _SPEC_PATTERNS[quote] = re.compile(r"\{|\}|" + re.escape(quote) + extra)
    return pat


_STRING_PATTERNS: dict[tuple[str, bool, bool], re.Pattern[str]] = {}
_SPEC_PATTERNS: dict[str, re.Pattern[str]] = {}


def _is_word_char(c: str) -> bool:
    return c == "_" or c.isalnum()


def _string_prefix(text: str, quote_at: int) -> str:
    """Lowercased string prefix letters right before the quote ('' when there are none)."""
    j = quote_at
    while j > 0 and quote_at - j < 3 and _is_word_char(text[j - 1]):
        j -= 1
    run = text[j:quote_at].lower()
    if j > 0 and _is_word_char(text[j - 1]):
        return ""
    return run if run in _PREFIXES else ""


def _open_string(text: str, at: int, end: int, stack: list[Frame]) -> int:
    c = text[at]
    quote = c * 3 if text.startswith(c * 3, at, end) else c
    prefix = _string_prefix(text, at)
    stack.append(("str", quote, "r" in prefix, "f" in prefix or "t" in prefix))
    return at + len(quote)


def _step_code(text: str, m: re.Match[str], end: int, stack: list[Frame], lines: list[int] | None) -> int:
    """Handle one match in code or a replacement field; the new position, or -1 inside a comment."""
    tok, pos = m.group(), m.end()
    kind, depth = stack[-1]
    if tok == "#":
        nl = text.find("\n", pos, end)
        return -1 if nl < 0 else nl
    if tok == "'" or tok == '"':
        return _open_string(text, m.start(), end, stack)
    if tok in _OPEN:
        stack[-1] = (kind, depth + 1)
    elif tok in _CLOSE:
        if kind == "field" and tok == "}" and depth == 0:
            stack.pop()
        else:
            stack[-1] = (kind, max(0, depth - 1))
    elif tok == ":":  # only matched in a field
        if depth == 0:
            stack.append(("spec", stack[-2][1]))
    elif tok == "\n":
        if depth == 0 and lines is not None:
            lines.append(pos)
    elif tok == "\\" and text.startswith(("\n", "\r\n"), pos, end):
        pos = text.index("\n", pos) + 1  # backslash continuation: the next line is no logical line start
    return pos


def _step_string(m: re.Match[str], stack: list[Frame]) -> int:
    tok = m.group()
    quote = stack[-1][1]
    if tok == quote:
        stack.pop()
    elif tok == "\n":  # an unterminated single-quoted string ends at the line end
        stack.pop()
        return m.start()
    elif tok == "{":
        stack.append(("field", 0))
    return m.end()


def _step_spec(m: re.Match[str], stack: list[Frame]) -> int:
    tok = m.group()
    if tok == "{":
        stack.append(("field", 0))
        return m.end()
    del stack[-2:]  # "}" closes the replacement field
    if tok != "}":  # the enclosing string's quote or a line end: the string ends too
        stack.pop()
        return m.start() if tok == "\n" else m.end()
    return m.end()


def _scan(text: str, pos: int, end: int, stack: list[Frame], lines: list[int] | None = None) -> bool:
    """Advance the frame stack over text[pos:end]; True when `end` lies inside a comment."""
    checkpoint = -1
    while True:
        top = stack[-1]
        kind = top[0]
        if len(stack) == 1 and pos <= end - 3:
            checkpoint = pos
        if kind == "code":
            m = (_CODE if lines is None else _CODE_LINES).search(text, pos, end)
        elif kind == "field":
            m = _FIELD.search(text, pos, end)
        elif kind == "str":
            m = _string_pattern(top[1], top[2], top[3]).search(text, pos, end)
        else:
            m = _spec_pattern(top[1]).search(text, pos, end)
        if m is None:
            _memo.last_checkpoint = checkpoint
            return False
        if kind in ("code", "field"):
            pos = _step_code(text, m, end, stack, lines)
            if pos < 0:
                _memo.last_checkpoint = checkpoint
                return True
        elif kind == "str":
            pos = _step_string(m, stack)
        else:
            pos = _step_spec(m, stack)


def _region_of(stack: list[Frame], in_comment: bool) -> str:
    if in_comment:
        return "comment"
    return "string" if stack[-1][0] in ("str", "spec") else "code"


def _memo_slots() -> list[tuple[str, int]]:
    slots = getattr(_memo, "slots", None)
    if slots is None:
        slots = _memo.slots = []
    return slots


def region_at(text: str, offset: int) -> str:
    """Region at a position: "code", "string" or "comment", judged from the text before it only."""
    offset = max(0, min(offset, len(text)))
    slots = _memo_slots()
    start = 0
    # resume where an earlier scan of the same text was in top-level code; strictly before the offset,
    # since a checkpoint may sit on the newline that ends a comment
    for prefix, ckpt in slots:
        if start < ckpt < offset and text.startswith(prefix):
            start = ckpt
    stack: list[Frame] = [("code", 0)]
    in_comment = _scan(text, start, offset, stack)
    ckpt = _memo.last_checkpoint
    if ckpt > start:
        slots.insert(0, (text[:ckpt], ckpt))
        del slots[_MEMO_SLOTS:]
    return _region_of(stack, in_comment)


@dataclass(frozen=True)
class LexState:
    """Where the lexer stands after some text: a scan of a longer text that begins with it resumes here.

    Post-processing scans the document's prefix once per request and each draft from there, instead
    of the whole document per draft (and per decoding step, for the block stop). The state takes the
    text to end where it ends: a quote or a backslash continued after it (`"` then `""`) reads as the
    scan of the whole text would not. Code bracket depth is counted only by `logical_line_starts`.
    """

    frames: tuple[Frame, ...] = (("code", 0),)  # open strings, fields and bracket depths (this module's)
    in_comment: bool = False  # a comment runs to the end of the line

    @property
    def region(self) -> str:
        """"code", "string" or "comment" at this point."""
        return _region_of(list(self.frames), self.in_comment)


CODE = LexState()  # the start of a file, or of any logical line


def _resume(text: str, start: int, end: int, state: LexState) -> tuple[int, list[Frame]] | None:
    """Where scanning text[start:end] from `state` goes on, and a stack to advance; None: it all lies
    in the comment the state is in."""
    if state.in_comment:
        nl = text.find("\n", start, end)
        if nl < 0:
            return None
        start = nl  # the newline itself is scanned: it may start a logical line
    return start, list(state.frames)


def lex_state(text: str, start: int = 0, end: int | None = None, state: LexState = CODE) -> LexState:
    """The lexer's state at `end` (default: the end of text), scanning from `start` in `state`."""
    end = len(text) if end is None else end
    resumed = _resume(text, start, end, state)
    if resumed is None:
        return state
    pos, stack = resumed
    in_comment = _scan(text, pos, end, stack)
    return LexState(tuple(stack), in_comment)


def logical_line_starts(text: str, start: int = 0, state: LexState | None = None) -> list[int]:
    """Offsets where logical lines start (not inside brackets, strings or after a backslash).

    From the start of a text (the default): [0, ...]. With a `state`, the starts after `start`
    only, scanning text[start:] from that state; `start` at a logical line start with no state
    is the same as scanning text[start:] as a file of its own.
    """
    if state is None:
        lines = [start]
        _scan(text, start, len(text), [("code", 0)], lines)
        return lines
    lines = []
    resumed = _resume(text, start, len(text), state)
    if resumed is not None:
        _scan(text, resumed[0], len(text), resumed[1], lines)
    return lines


def code_brackets(
    text: str, start: int = 0, end: int | None = None, state: LexState = CODE
) -> Iterator[tuple[int, str]]:
    """(offset, bracket) for each bracket of text[start:end] that is code, not in a string or comment.

    A "}" that ends an f-string replacement field is not one (it closes no bracket of the code).
    """
    end = len(text) if end is None else end
    resumed = _resume(text, start, end, state)
    if resumed is None:
        return
    pos, stack = resumed
    for m in _BRACKET.finditer(text, pos, end):
        at = m.start()
        if at < pos:  # inside a comment skipped below
            continue
        if _scan(text, pos, at, stack):
            nl = text.find("\n", at, end)
            if nl < 0:
                return
            pos = nl
            continue
        pos = at  # the next scan steps over this bracket itself
        top, ch = stack[-1], text[at]
        if top[0] == "code" or (top[0] == "field" and not (ch == "}" and top[1] == 0)):
            yield at, ch


def open_brackets(text: str) -> tuple[str, ...]:
    """Brackets open in code at the end of text, outermost first."""
    last = logical_line_starts(text)[-1]  # every bracket still open was opened after the last line start
    stack: list[str] = []
    for _, ch in code_brackets(text, last):
        if ch in _OPEN:
            stack.append(ch)
        elif stack:
            stack.pop()
    return tuple(stack)
