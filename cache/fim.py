"""The fill-in-the-middle layout of a document cache: `<pre> prefix <suf> suffix <mid> middle` around a cursor.

A FIM model reads the code after the cursor as well as before it. The cached sequence is then not the
document's tokens but the prefix-suffix-middle layout every FIM family superpie knows uses
(completion/model/fim.py): the prefix marker, the text before the middle, the suffix marker, the text
after the cursor, the middle marker, then the middle begun: what the cursor's line holds before the
cursor past its indentation. Decoding continues after it, as it would after a middle the model wrote.

Why the middle holds the line's start: typing at the cursor then appends to the end of the sequence, so
nothing cached behind it goes stale (with the cut at the cursor, each keystroke went before the suffix
marker and left the whole suffix's KV stale, about one top-1 in ten different from an exact re-encode).
A cursor on a blank line or in the indentation has an empty middle: the cut is at the cursor. A line's
start of more than `MIDDLE_TOKENS` tokens is cut at the cursor too (a minified line is no middle).

The layout is an ordinary token sequence, so the cache follows it the way it follows any edit (diff,
then PIE, exact or full): typing on a line appends to the middle; a new line moves the line typed into
the prefix (the suffix and markers move, their keys rotated, not re-encoded); moving the cursor moves the
suffix marker, small hunks where it left and where it lands, while the text between changes side without
being re-encoded. Their staleness is counted and refreshed like any edit's.

Budgets: at most `suffix_tokens` tokens of the suffix (the first ones), and the prefix cut so the whole
sequence fits `max_tokens`; the prefix's first kept token is a multiple of `window_step`, so typing
does not move the cut on every keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

Offsets = list[tuple[int, int]]

MIDDLE_TOKENS = 64  # a line's start longer than this is cut at the cursor instead


@dataclass(frozen=True)
class FimMarkers:
    """The three marker token ids of a model's FIM template, in the order they are cached."""

    prefix: int
    suffix: int
    middle: int


@dataclass(frozen=True)
class FimSequence:
    """A FIM layout of one text at one cursor: ids, their char spans (markers are empty spans: the suffix
    marker's at the cursor, the middle marker's where the middle begins), the index of the first document
    token kept before the middle, and the char offset where the middle begins (the cursor when it is empty)."""

    ids: list[int]
    offsets: Offsets
    prefix_start: int  # index into the prefix's tokens of the first one kept (the window start)
    middle_from: int


def middle_from(text: str, cursor: int) -> int:
    """Where the middle begins: the first non-blank character of the cursor's line if it is before the
    cursor, else the cursor (a blank line, or a cursor in the indentation)."""
    line = text.rfind("\n", 0, cursor) + 1
    head = text[line:cursor]
    body = head.lstrip()
    return cursor if not body else cursor - len(body)


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
    split = middle_from(text, cursor)
    mid = tokenizer.encode(text[split:cursor], add_special_tokens=False)
    if len(mid.ids) > min(MIDDLE_TOKENS, max_tokens // 4):
        split, mid = cursor, tokenizer.encode("", add_special_tokens=False)
    pre = tokenizer.encode(text[:split], add_special_tokens=False)
    suf = tokenizer.encode(text[cursor:], add_special_tokens=False)
    suffix_ids = list(suf.ids[: max(0, min(suffix_tokens, max_tokens // 2))])
    suffix_offsets = [(s + cursor, e + cursor) for s, e in suf.offsets[: len(suffix_ids)]]
    middle_offsets = [(s + split, e + split) for s, e in mid.offsets]
    room = max(1, max_tokens - len(suffix_ids) - len(mid.ids) - 3)
    pre_ids, pre_offsets = list(pre.ids), list(pre.offsets)
    start = 0
    if len(pre_ids) > room:
        start = min(len(pre_ids), -(-(len(pre_ids) - room) // window_step) * window_step)
    head = pre_offsets[start][0] if start < len(pre_offsets) else split
    ids = [markers.prefix, *pre_ids[start:], markers.suffix, *suffix_ids, markers.middle, *mid.ids]
    offsets = [(head, head), *pre_offsets[start:], (cursor, cursor)]
    offsets += [*suffix_offsets, (split, split), *middle_offsets]
    return FimSequence(ids, offsets, start, split)
