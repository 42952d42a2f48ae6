"""How a draft's new lines are re-indented to the document's indentation unit.

The model may indent with its own unit (two spaces in a four-space document) or open its first new
line too deep; `reindent` maps the draft's levels onto the document's. It is a pure function of the
text it is given: the `normalize_indentation` filter and the block stop (`decoding.stops`) hand it
the same lines, so both see the same indentation.
"""

from __future__ import annotations

import math

from superpie.analysis import syntax
from superpie.completion.postprocess.context import DraftContext


def _cols(indent: str, tab: int) -> int:
    return sum(tab if c == "\t" else 1 for c in indent)


def _render(cols: int, unit: str, tab: int) -> str:
    return "\t" * (cols // tab) + " " * (cols % tab) if unit == "\t" else " " * cols


def _opens_block(line: str) -> bool:
    return line.split("#", 1)[0].rstrip().endswith(":")


def reindent(text: str, context: DraftContext) -> str:
    """The draft with its new lines in the document's unit and its first new line at most one level in.

    Statement lines (logical line starts) are re-levelled; a continuation line moves with its statement;
    lines shallower than the cursor's line are document levels already and keep their width.
    """
    lines = text.split("\n")
    if len(lines) < 2:
        return text
    unit, tab = context.indent_unit, context.indent_cols
    starts = context.statement_starts(text)
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    head = context.line_prefix + lines[0]
    base = _cols(syntax.line_indent(head), tab)
    width = {i: _cols(syntax.line_indent(lines[i]), tab) for i in range(1, len(lines)) if lines[i].strip()}
    stmts = [i for i in width if offsets[i] in starts]
    new = dict(width)
    seq = [base] + [width[i] for i in stmts]
    ups = [b - a for a, b in zip(seq, seq[1:], strict=False) if b > a]
    step = math.gcd(*ups) if ups else tab
    deeper = [i for i in stmts if width[i] >= base]  # shallower lines: already document levels
    if step != tab and all((width[i] - base) % step == 0 for i in deeper):  # the draft's own unit
        new.update({i: base + (width[i] - base) // step * tab for i in deeper})
    if width and min(width) in stmts:  # the first new line may open at most one level
        i0 = min(width)
        limit = base + (tab if _opens_block(head) else 0)
        excess = max(0, new[i0] - limit)
        new.update({i: max(0, new[i] - excess) for i in stmts})
    shift = 0
    for i in sorted(width):
        if i in stmts:
            shift = new[i] - width[i]
        else:  # a continuation line moves with its statement
            new[i] = max(0, width[i] + shift)
    out = [lines[0]] + [
        _render(new[i], unit, tab) + lines[i].lstrip(" \t\f") if i in new else "" for i in range(1, len(lines))
    ]
    return "\n".join(out)
