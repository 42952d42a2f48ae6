"""Choosing the snippets that fit the context budget: by priority, without duplicates, in a stable order.

Candidates come best first (definitions of the names nearest the cursor, then recently edited regions,
then recently visited ones). Each is taken while the budget allows, its lines cut from the end when it
alone does not fit; a candidate inside a region already taken is a duplicate and is dropped, one that
overlaps it is merged with it. The chosen snippets are cached in file and line order, not priority
order: the next request's choice is mostly the same set, and in a stable order a changed choice is a
few hunks in the cache (PIE encodes those and rotates the rest) rather than a reshuffle.

An outline (a class or module of another file with its bodies elided, `analysis/outline.py`) is a
candidate whose text is the outline itself: it is taken or cut like the others but never merged with a
region of its file's lines (their line numbers are not the outline's), only dropped when the same outline
is already in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """Lines [start, end) of a file's text, offered as a snippet."""

    path: str  # as shown in the snippet's header (relative to the workspace)
    text: str  # the whole file's text, or an outline's
    start: int
    end: int
    outline: bool = False  # `text` is an outline of the file, not the file


@dataclass(frozen=True)
class Snippet:
    """A chosen snippet: its header path, its code and the ids it costs."""

    path: str
    start: int
    end: int
    code: str
    ids: tuple[int, ...]
    outline: bool = False


Spell = Callable[[str, str], list[int]]  # (path, code) -> the snippet's ids in the model's format


def choose(candidates: list[Candidate], budget: int, spell: Spell, min_lines: int = 2) -> list[Snippet]:
    """The snippets to cache: best candidates first while `budget` tokens last, in file and line order."""
    taken: list[Snippet] = []
    left = budget
    for c in candidates:
        lines = c.text.splitlines(keepends=True)
        start, end = max(0, c.start), min(len(lines), c.end)
        if c.outline:
            if any(s.outline and s.path == c.path and c.text.startswith(s.code[:-1]) for s in taken):
                continue  # this outline (or its start, cut to fit) is already in
            if (snippet := _fit(c.path, lines, start, end, left, spell, min_lines, outline=True)) is not None:
                taken.append(snippet)
                left -= len(snippet.ids)
            continue
        same = [s for s in taken if not s.outline and s.path == c.path and s.start < end and start < s.end]
        if any(s.start <= start and end <= s.end for s in same):
            continue  # already in
        if same:  # overlapping: one snippet over both
            start, end = min(start, *(s.start for s in same)), max(end, *(s.end for s in same))
            left += sum(len(s.ids) for s in same)
            taken = [s for s in taken if s not in same]
        snippet = _fit(c.path, lines, start, end, left, spell, min_lines)
        if snippet is None:
            taken.extend(same)  # the merge did not fit: keep what was there
            left -= sum(len(s.ids) for s in same)
            continue
        taken.append(snippet)
        left -= len(snippet.ids)
    return sorted(taken, key=lambda s: (s.path, s.outline, s.start))


def _fit(
    path: str, lines: list[str], start: int, end: int, budget: int, spell: Spell, min_lines: int, outline: bool = False
) -> Snippet | None:
    """Lines [start, end) spelled, cut from the end until they fit `budget` (None: not even `min_lines` do)."""
    while end > start:
        code = "".join(lines[start:end])
        if not code.strip():
            return None
        ids = spell(path, code)
        if len(ids) <= budget:
            return Snippet(path, start, end, code, tuple(ids), outline)
        end = min(end - 1, start + (end - start) * budget // len(ids))
        if end - start < min_lines:
            return None
    return None
