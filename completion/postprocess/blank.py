"""Blank drafts and blank leading lines: whitespace is no suggestion, and on a blank line the draft's
first real line belongs on the cursor's line."""

from __future__ import annotations

from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter


def drop_blank() -> Filter:
    """Drafts with nothing but whitespace are no suggestion."""

    def drop_blank(draft: Draft, context: DraftContext) -> Draft | None:
        return draft if draft.text.strip() else None

    return drop_blank


def skip_leading_blank_lines(text: str, context: DraftContext) -> str:
    """On a blank cursor line, the draft from its first real line on, that line without the indentation
    already typed; elsewhere the draft as it is. (The block stop reads drafts through this too.)"""
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), 0)
    if not context.at_blank_line or first == 0:
        return text
    line, typed = lines[first], context.line_prefix
    line = line[len(typed) :] if line.startswith(typed) else line.lstrip()
    return "\n".join([line, *lines[first + 1 :]])


def trim_leading_blank_lines() -> Filter:
    """On a blank line the draft's first real line belongs on the cursor's line, not below it."""

    def trim_leading_blank_lines(draft: Draft, context: DraftContext) -> Draft | None:
        text = skip_leading_blank_lines(draft.text, context)
        return draft if text == draft.text else draft.with_text(text)

    return trim_leading_blank_lines
