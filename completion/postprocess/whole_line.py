"""A finished line written before code on the cursor's line goes in as a line of its own."""

from __future__ import annotations

import dataclasses

from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter


def normalize_whole_line() -> Filter:
    """A finished line written where the cursor's line already holds code after it goes in as a line
    of its own (its newline, then the cursor line's indentation again), not glued onto that code.

    The model wrote that newline: the line stop cut it. Without it, accepting the draft would join
    it to the code after the cursor, and the syntax check would judge that joined line: a complete
    statement would rank as broken, and a draft ending in a comment (which swallows the rest of the
    line) as valid.
    """

    def normalize_whole_line(draft: Draft, context: DraftContext) -> Draft | None:
        if context.multiline or not draft.finished or "\n" in draft.text:
            return draft
        if context.line_prefix.strip() or not context.line_suffix.strip():
            return draft
        return dataclasses.replace(draft, text=draft.text + "\n" + context.line_prefix)

    return normalize_whole_line
