"""The single-line cut: a single-line request gets the rest of the current line only."""

from __future__ import annotations

from superpie.completion.decoding.stops import line_end, line_end_stop
from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter


def trim_to_line() -> Filter:
    """A single-line request gets the rest of the current line only (`stops.line_end`, the rule decoding
    stops by); at the end of a finished line, where the model starts the next one, that line break and
    the next line (`stops.line_end_stop`: decoding went on to its end anyway). Cut there before, such a
    draft was empty: no suggestion at the end of a document after a finished statement or sentence.
    """

    def trim_to_line(draft: Draft, context: DraftContext) -> Draft | None:
        if context.multiline:
            return draft
        end = line_end_stop(draft.text) if _line_done(context) else line_end(draft.text)
        return draft.with_text(draft.text if end is None else draft.text[:end])  # drops tokens cut mid-way

    return trim_to_line


def trim_to_next_line() -> Filter:
    """At the end of a finished line, the cut of `trim_to_line` made before re-indentation: the lines after
    the next one are never decoded (`stops.line_end_stop` ends decoding there), so they may not shape it."""

    def trim_to_next_line(draft: Draft, context: DraftContext) -> Draft | None:
        if context.multiline or not _line_done(context):
            return draft
        end = line_end_stop(draft.text)
        return draft if end is None else draft.with_text(draft.text[:end])

    return trim_to_next_line


def _line_done(context: DraftContext) -> bool:
    """The cursor ends a line that holds code (or text): a draft starting a new line suggests the next one."""
    return not context.line_suffix.strip() and not context.at_blank_line
