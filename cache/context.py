"""Repository context ahead of a document in its cache: snippets of other files, then the document.

The cached sequence of a document with context is `context ids + layout ids`: the snippets chosen by
`completion/context/` (already in the model's repository format, headers included) and then the
document's own layout (its text, or the FIM layout at the cursor, cache/fim.py). The cache sees one
token sequence and follows it the way it follows any edit: when the chosen snippets change, the token
diff (cache/diff.py) finds the changed snippets as hunks at the start of the sequence; PIE encodes
those hunks only and moves everything behind them (the other snippets and the whole document) by a key
rotation instead of re-encoding it. Their staleness is counted and refreshed like any edit's.

Context tokens belong to no character of the document: their char spans are empty, at the start of the
document's window, so a cursor split never falls inside them (`DocumentCache.split_at`).
"""

from __future__ import annotations

from collections.abc import Sequence

Offsets = list[tuple[int, int]]


def with_context(context: Sequence[int], ids: list[int], offsets: Offsets, head: int) -> tuple[list[int], Offsets]:
    """The cached sequence: `context` ahead of the layout `ids`; context tokens get the empty span at `head`
    (the first character the layout covers)."""
    if not context:
        return ids, offsets
    return [*context, *ids], [(head, head)] * len(context) + offsets
