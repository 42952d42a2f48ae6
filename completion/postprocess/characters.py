"""Characters cut in half: byte-level BPE can stop a draft inside a multi-byte character."""

from __future__ import annotations

from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter


def strip_incomplete_character(text: str) -> str:
    """The text without the U+FFFD a trailing incomplete UTF-8 sequence decodes to."""
    return text.rstrip("\ufffd")


def trim_incomplete_character() -> Filter:
    """A draft whose last token ends inside a multi-byte character (byte-level BPE, cut at the token
    limit) decodes to a trailing U+FFFD: never what the user typed toward, and some editors reject it."""

    def trim_incomplete_character(draft: Draft, context: DraftContext) -> Draft | None:
        text = strip_incomplete_character(draft.text)
        return draft if text == draft.text else draft.with_text(text)

    return trim_incomplete_character
