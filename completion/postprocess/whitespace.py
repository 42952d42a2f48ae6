"""Trailing whitespace: it would push the text after the cursor around."""

from __future__ import annotations

from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter


def trim_trailing_space() -> Filter:
    """Trailing whitespace and newlines would push the text after the cursor around."""

    def trim_trailing_space(draft: Draft, context: DraftContext) -> Draft | None:
        text = draft.text.rstrip()
        return draft if text == draft.text else draft.with_text(text)

    return trim_trailing_space
