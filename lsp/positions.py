"""LSP positions (0-based line, UTF-16 code units, or UTF-8/UTF-32 when negotiated) <-> str offsets.

The index rules live here and nowhere else. LSP lines end at \\n, \\r\\n or \\r (not at the other
separators Python's `str.splitlines` knows). A character past the end of its line is clamped to the
line's end where the caller asks for it (`clamp`: the language server, as LSP says) and an error
otherwise (the headless CLI must say so rather than silently clamp). A line past the end of the
document, and a position inside a surrogate pair, are errors either way.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

_EOL = re.compile(r"\r\n|\r|\n")


def line_starts(text: str) -> list[int]:
    """Offsets where each LSP line begins."""
    return [0] + [m.end() for m in _EOL.finditer(text)]


def _line_content_end(text: str, starts: Sequence[int], line: int) -> int:
    if line + 1 < len(starts):
        end = starts[line + 1]
        while end > starts[line] and text[end - 1] in "\r\n":
            end -= 1
        return end
    return len(text)


def _units(ch: str, encoding: str) -> int:
    if encoding == "utf-16":
        return 2 if ord(ch) > 0xFFFF else 1
    if encoding == "utf-8":  # a lone surrogate counts as the U+FFFD it stands for (3 bytes)
        return 3 if "\ud800" <= ch <= "\udfff" else len(ch.encode("utf-8"))
    return 1


def offset_at(
    text: str,
    line: int,
    character: int,
    encoding: str = "utf-16",
    starts: Sequence[int] | None = None,
    clamp: bool = False,
) -> int:
    """Str offset of an LSP position; ValueError if it lies past the end of the document, or of its line
    unless `clamp` (then it is the line's end).

    `starts` (the text's `line_starts`) saves a scan of the text when several positions are converted.
    """
    if line < 0 or character < 0:
        raise ValueError(f"position {line}:{character} is negative")
    starts = line_starts(text) if starts is None else starts
    if line >= len(starts):
        raise ValueError(f"line {line} is past the end of the document ({len(starts)} lines)")
    start, end = starts[line], _line_content_end(text, starts, line)
    ascii_run = text[start : min(end, start + character)]
    if ascii_run.isascii():  # one unit a character in every encoding: no per-character loop on a long line
        units = len(ascii_run)
        i = start + units
    else:
        units, i = 0, start
    while i < end and units < character:
        units += _units(text[i], encoding)
        i += 1
    if units < character and not clamp:
        raise ValueError(f"character {character} is past the end of line {line} ({units} {encoding} units)")
    if units > character:
        raise ValueError(f"position {line}:{character} falls inside a character")
    return i


def position_at(text: str, offset: int, encoding: str = "utf-16") -> tuple[int, int]:
    """LSP (line, character) of a str offset."""
    if not 0 <= offset <= len(text):
        raise ValueError(f"offset {offset} is outside the document (length {len(text)})")
    starts = line_starts(text)
    line = bisect.bisect_right(starts, offset) - 1
    return line, sum(_units(c, encoding) for c in text[starts[line] : offset])


def apply_change(text: str, change: dict, encoding: str = "utf-16") -> str:
    """Apply one TextDocumentContentChangeEvent (dict shape); no `range` replaces the whole text."""
    if not isinstance(change, dict) or not isinstance(change.get("text"), str):
        raise ValueError("a change needs a string 'text'")
    rng = change.get("range")
    if rng is None:
        return change["text"]
    starts = line_starts(text)
    try:
        start = offset_at(text, int(rng["start"]["line"]), int(rng["start"]["character"]), encoding, starts)
        end = offset_at(text, int(rng["end"]["line"]), int(rng["end"]["character"]), encoding, starts)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed range {rng!r}") from exc
    if end < start:
        raise ValueError("range end is before its start")
    return text[:start] + change["text"] + text[end:]
