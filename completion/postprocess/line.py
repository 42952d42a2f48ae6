"""The single-line cut: a single-line request gets the rest of the current line only."""

from __future__ import annotations

from superpie.completion.decoding.stops import line_end
from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter


def trim_to_line() -> Filter:
    """A single-line request gets the rest of the current line only (`stops.line_end`, the rule decoding
    stops by)."""

    def trim_to_line(draft: Draft, context: DraftContext) -> Draft | None:
        if context.multiline:
            return draft
        end = line_end(draft.text)
        return draft.with_text(draft.text if end is None else draft.text[:end])  # drops tokens cut mid-way

    return trim_to_line
