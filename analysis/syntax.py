"""Syntax facts at a position, for code that is usually unfinished.

Post-processing needs to know where the cursor's block ends, what the cursor is nested in, and
whether a draft adds syntax errors; monitors need to stay out of strings and comments. The tree comes
from tree-sitter; the region comes from a lexical scan (analysis.lexical) because tree-sitter guesses
badly after an unterminated string. Offsets in this API are Python str indices; tree-sitter counts
UTF-8 bytes, and the conversion happens here only.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import tree_sitter
import tree_sitter_python

from superpie.analysis import lexical

_LANGUAGE = tree_sitter.Language(tree_sitter_python.language())
_TREE_CACHE_SIZE = 8
_INDENT = re.compile(r"[ \t\f]*")
_local = threading.local()


@dataclass(frozen=True)
class SyntaxFacts:
    """What the syntax says about one position in a document."""

    region: str  # "code" | "string" | "comment"
    enclosing: tuple[str, ...]  # named node kinds, innermost first, ending with "module"
    indent: str  # leading whitespace of the line containing the position
    block_end: int  # str offset where the innermost indented block holding the position ends


def _thread_state() -> tuple[tree_sitter.Parser, OrderedDict[str, tuple[tree_sitter.Tree, bytes]]]:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = tree_sitter.Parser(_LANGUAGE)
        _local.trees = OrderedDict()
    return parser, _local.trees


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _parsed(text: str) -> tuple[tree_sitter.Tree, bytes]:
    parser, trees = _thread_state()
    hit = trees.get(text)
    if hit is not None:
        trees.move_to_end(text)
        return hit
    data = _encode(text)
    hit = trees[text] = (parser.parse(data), data)
    if len(trees) > _TREE_CACHE_SIZE:
        trees.popitem(last=False)
    return hit


def parse(text: str) -> tree_sitter.Tree:
    """Parse Python source with this thread's parser; recent trees are reused for identical text."""
    return _parsed(text)[0]


def error_count(text: str) -> int:
    """Number of ERROR and MISSING nodes, so that drafts which break the syntax rank lower."""
    count = 0
    stack = [parse(text).root_node]
    while stack:  # descend only into subtrees that hold an error
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        stack.extend(child for child in node.children if child.has_error or child.is_missing)
    return count


def region_at(text: str, offset: int) -> str:
    """Fast path of facts_at(...).region: "code", "string" or "comment" at a str offset."""
    return lexical.region_at(text, offset)


def line_indent(line: str) -> str:
    """Leading whitespace of a line, so drafts can be re-indented to match the document."""
    return line[: len(line) - len(line.lstrip(" \t\f"))]


def _width(indent: str) -> int:
    return len(indent.expandtabs(8))


def _enclosing(text: str, offset: int) -> tuple[str, ...]:
    tree, data = _parsed(text)
    if offset <= 0:
        return (tree.root_node.type,)
    # the character before the position decides: the cursor continues what it just typed
    end = len(_encode(text[:offset]))
    start = end - len(_encode(text[offset - 1]))
    node = tree.root_node.named_descendant_for_byte_range(start, end)
    kinds = []
    while node is not None:
        kinds.append(node.type)
        node = node.parent
    return tuple(kinds)


def _indent_at(text: str, pos: int) -> str:
    m = _INDENT.match(text, pos)
    return m.group() if m else ""


def _content_end(text: str, start: int, stop: int) -> int:
    """End of the last non-blank, non-comment-only physical line in text[start:stop], or -1."""
    chunk = text[start:stop].rstrip()
    while chunk:
        line_start = chunk.rfind("\n") + 1
        if not chunk[line_start:].lstrip().startswith("#"):
            return start + len(chunk)
        chunk = chunk[:line_start].rstrip()
    return -1


def block_extent(text: str, offset: int) -> tuple[int, bool]:
    """Where the indented block holding the position ends, and whether a dedented line ends it there.

    The end is the end of the block's last line of code (len(text) at module level); `closed` is
    False when the text runs out first, so more text could still extend the block (a draft being
    decoded).
    """
    starts = lexical.logical_line_starts(text)
    i = bisect.bisect_right(starts, offset) - 1
    line_start = text.rfind("\n", 0, offset) + 1
    line_stop = text.find("\n", offset)
    line = text[line_start : len(text) if line_stop < 0 else line_stop]
    if starts[i] == line_start and not line.strip():  # a blank line: the cursor column is the indent
        width = _width(text[line_start:offset])
    else:
        width = _width(_indent_at(text, starts[i]))
    if width == 0:
        return len(text), False
    last = max(offset, _content_end(text, starts[i], starts[i + 1] if i + 1 < len(starts) else len(text)))
    for k in range(i + 1, len(starts)):
        stop = starts[k + 1] if k + 1 < len(starts) else len(text)
        stripped = text[starts[k] : stop].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if _width(_indent_at(text, starts[k])) < width:
            return last, True
        last = max(last, _content_end(text, starts[k], stop))
    return last, False


def block_end(text: str, offset: int) -> int:
    """Str offset where the indented block holding the position ends (len(text) at module level)."""
    return block_extent(text, offset)[0]


def facts_at(text: str, offset: int) -> SyntaxFacts:
    """All syntax facts at a str offset, for post-processing and ranking of drafts."""
    offset = max(0, min(offset, len(text)))
    line_start = text.rfind("\n", 0, offset) + 1
    return SyntaxFacts(
        region=region_at(text, offset),
        enclosing=_enclosing(text, offset),
        indent=line_indent(text[line_start : line_start + 200].split("\n", 1)[0]),
        block_end=block_end(text, offset),
    )
