"""Outlines: a class, a function or a module of another file in a few lines, for repository context.

A completion that calls into another file needs that file's names and signatures, not its bodies. The
first lines of a class show its docstring but rarely the method being called; a whole module does not
fit the budget. An outline keeps what a caller uses and elides every body as `...`, the way a stub file
(.pyi) reads, which code models have seen in training:

- a class: its decorators and header, its docstring's first line, its class attributes, the headers of
  its public methods (and `__init__`, with the `self.x = ...` lines that set its attributes), the headers
  of nested classes;
- a function: its decorators and header, its docstring's first line, `...`;
- a module: its star imports, the headers of its public functions and classes, then its public
  single-line assignments.

Plain `ast` over a text the caller read; this module reads no file and runs no model.
"""

from __future__ import annotations

import ast
import functools
import re
from typing import Literal

OutlineKind = Literal["class", "function", "module"]

MAX_LINES = 60  # an outline longer than this is cut (the context's budget usually cuts it sooner)
MAX_LINE_CHARS = 160  # a longer line (a long literal, a long signature) is cut at this width
_KEPT_DUNDERS = frozenset({"__init__", "__call__", "__enter__", "__exit__", "__iter__", "__getitem__"})
_Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def outline(text: str, start_line: int, kind: OutlineKind) -> str | None:
    """The outline of the class or function whose definition starts at 0-based `start_line` of `text` (its
    `class` or `def` line or its first decorator's), or of the whole module; None when `text` does not parse
    or no such definition starts there."""
    tree = _parse(text)
    if tree is None:
        return None
    lines = text.splitlines()
    if kind == "module":
        out = _module(tree, lines)
    else:
        wanted = ast.ClassDef if kind == "class" else (ast.FunctionDef, ast.AsyncFunctionDef)
        node = next((n for n in ast.walk(tree) if isinstance(n, wanted) and start_line in _starts(n)), None)
        if node is None:
            return None
        out = _class(node, lines) if isinstance(node, ast.ClassDef) else _function(node, lines)
    if not out:
        return None
    return "\n".join(_cut(line) for line in out[:MAX_LINES]) + "\n"


@functools.lru_cache(maxsize=32)
def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # a NUL byte; nesting too deep for the parser
        return None


def _starts(node: _Def) -> set[int]:
    return {node.lineno - 1, *(d.lineno - 1 for d in node.decorator_list)}


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3] + "..."


def _public(name: str) -> bool:
    return not name.startswith("_") or name in _KEPT_DUNDERS


def _header(node: _Def, lines: list[str]) -> list[str]:
    """The decorators and the header of a definition, up to the line where its body starts; a header that
    spans lines (one parameter per line) joined into one."""
    decorators = [lines[d.lineno - 1] for d in node.decorator_list]
    body = node.body[0].lineno - 1
    if body <= node.lineno - 1:  # `def f(): return 1` on one line: the line stands as it is
        return [*decorators, lines[node.lineno - 1]]
    return [*decorators, _joined(lines[node.lineno - 1 : body])]


def _joined(part: list[str]) -> str:
    """Lines of one statement as one line, keeping the first one's indentation."""
    if len(part) == 1:
        return part[0]
    text = " ".join(p.strip() for p in part if p.strip() and not p.strip().startswith("#"))
    text = re.sub(r"([(\[{])\s+", r"\1", text)
    text = re.sub(r",?\s+([)\]}])", r"\1", text)
    return _indent(part[0]) + text


def _stub(node: _Def, lines: list[str]) -> list[str]:
    """A definition's header with its body elided (`def f(x): ...`)."""
    head = _header(node, lines)
    if head and head[-1].rstrip().endswith(":"):
        head = [*head[:-1], head[-1].rstrip() + " ..."]
    return head


def _doc_line(node: _Def | ast.Module, lines: list[str]) -> list[str]:
    doc = ast.get_docstring(node, clean=True)
    if not doc or not node.body:
        return []
    first = doc.strip().splitlines()[0].strip()
    indent = _indent(lines[node.body[0].lineno - 1])
    return [f'{indent}"""{first}"""']


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _single(stmt: ast.stmt, lines: list[str]) -> list[str]:
    """A statement's line: a multi-line import joined into one, another multi-line statement only by its
    first line, ending in `...`."""
    end = stmt.end_lineno or stmt.lineno
    if end == stmt.lineno:
        return [lines[stmt.lineno - 1]]
    if isinstance(stmt, ast.ImportFrom):
        return [_joined(lines[stmt.lineno - 1 : end])]
    return [lines[stmt.lineno - 1].rstrip() + " ..."]


def _assigned(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def _class(node: ast.ClassDef, lines: list[str]) -> list[str]:
    out = [*_header(node, lines), *_doc_line(node, lines)]
    for stmt in node.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and any(_public(n) for n in _assigned(stmt)):
            out += _single(stmt, lines)
        elif isinstance(stmt, ast.ClassDef) and _public(stmt.name):
            out += _stub(stmt, lines)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(stmt.name):
            if stmt.name == "__init__":
                out += _header(stmt, lines) + _self_attributes(stmt, lines)
            else:
                out += _stub(stmt, lines)
    return out


def _self_attributes(init: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> list[str]:
    """The lines of `__init__` that set a public attribute of `self` (`self.x = ...`), each attribute once."""
    out: list[str] = []
    seen: set[str] = set()
    for stmt in ast.walk(init):
        if not isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            continue
        for t in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
            if (
                isinstance(t, ast.Attribute)
                and isinstance(t.value, ast.Name)
                and t.value.id == "self"
                and _public(t.attr)
                and t.attr not in seen
            ):
                seen.add(t.attr)
                out += _single(stmt, lines)
                break
    if not out:
        body = init.body[0]
        out = [_indent(lines[body.lineno - 1]) + "..."]
    return out


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> list[str]:
    head = _header(node, lines)
    if node.body[0].lineno == node.lineno:  # `def f(): return 1`: all of it is one line
        return head
    doc = _doc_line(node, lines)
    return [*head, *doc] if doc else _stub(node, lines)


def _module(tree: ast.Module, lines: list[str]) -> list[str]:
    """Its star imports first, then its definitions (what a caller of the module calls), then its values.

    A star import is part of what the module offers, as a stub file keeps it: `codecs` defines
    `CodecInfo` but its `charmap_decode` comes from `from _codecs import *`, and an outline without that
    line tells the model the module has no such function (benchmarks/RESULTS.md, quality 2026-12-02:
    with the outline alone, FIM wrote `codecs.CodecInfo(` where the line called `codecs.charmap_decode`).
    """
    stars: list[str] = []
    defs: list[str] = []
    values: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and any(alias.name == "*" for alias in stmt.names):
            stars += _single(stmt, lines)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _public(stmt.name):
            defs += _stub(stmt, lines)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and any(_public(n) for n in _assigned(stmt)):
            values += _single(stmt, lines)
    return [*_doc_line(tree, lines), *stars, *defs, *values] if stars or defs or values else []
