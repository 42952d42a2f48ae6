"""The fill-in-the-middle layout of a document cache: `<pre> prefix <suf> suffix <mid>` around a cursor.

A FIM model reads the code after the cursor as well as before it. The cached sequence is then not the
document's tokens but the prefix-suffix-middle layout every FIM family superpie knows uses
(completion/model/fim.py): the prefix marker, the text before the cursor, the suffix marker, the text
after it, the middle marker; decoding continues after the middle marker.

The layout is an ordinary token sequence, so the cache follows it the way it follows any edit (diff,
then PIE, exact or full): typing at the cursor inserts tokens before the suffix marker (the suffix and
the middle marker move and their keys are rotated, not re-encoded); moving the cursor moves the suffix
marker, two small hunks where it left and where it lands, while the text between changes side without
being re-encoded. Their staleness is counted and refreshed like any edit's.

Budgets: at most `suffix_tokens` tokens of the suffix (the first ones), and the prefix cut so the whole
sequence fits `max_tokens`; the prefix's first kept token is a multiple of `window_step`, so typing
does not move the cut on every keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

Offsets = list[tuple[int, int]]


@dataclass(frozen=True)
class FimMarkers:
    """The three marker token ids of a model's FIM template, in the order they are cached."""

    prefix: int
    suffix: int
    middle: int


@dataclass(frozen=True)
class FimSequence:
    """A FIM layout of one text at one cursor: ids, their char spans (markers are empty spans at the
    cursor), and the index of the first document token kept before the cursor."""

    ids: list[int]
    offsets: Offsets
    prefix_start: int  # index into the prefix's tokens of the first one kept (the window start)


def fim_sequence(
    tokenizer: Tokenizer,
    markers: FimMarkers,
    text: str,
    cursor: int,
    max_tokens: int,
    suffix_tokens: int,
    window_step: int,
) -> FimSequence:
    """The layout of `text` with the cursor at char `cursor` (see the module docstring for the budgets)."""
    if not 0 <= cursor <= len(text):
        raise ValueError(f"cursor {cursor} is outside the document (length {len(text)})")
    pre = tokenizer.encode(text[:cursor], add_special_tokens=False)
    suf = tokenizer.encode(text[cursor:], add_special_tokens=False)
    suffix_ids = list(suf.ids[: max(0, min(suffix_tokens, max_tokens // 2))])
    suffix_offsets = [(s + cursor, e + cursor) for s, e in suf.offsets[: len(suffix_ids)]]
    room = max(1, max_tokens - len(suffix_ids) - 3)
    pre_ids, pre_offsets = list(pre.ids), list(pre.offsets)
    start = 0
    if len(pre_ids) > room:
        start = min(len(pre_ids), -(-(len(pre_ids) - room) // window_step) * window_step)
    empty = (cursor, cursor)
    head = pre_offsets[start][0] if start < len(pre_offsets) else cursor
    ids = [markers.prefix, *pre_ids[start:], markers.suffix, *suffix_ids, markers.middle]
    offsets = [(head, head), *pre_offsets[start:], empty]
    offsets += [*suffix_offsets, empty]
    return FimSequence(ids, offsets, start)
