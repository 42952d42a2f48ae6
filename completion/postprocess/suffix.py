"""Drafts that repeat the text after the cursor: cut where the repetition starts."""

from __future__ import annotations

from superpie.completion.config import SuffixConfig
from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter, keep


def _repeats(lines: list[str], upcoming: list[str]) -> bool:
    mine = [line.strip() for line in lines if line.strip()]
    n = min(len(mine), len(upcoming))
    return bool(lines[0].strip()) and n > 0 and mine[:n] == upcoming[:n]


def trim_repeated_suffix(config: SuffixConfig) -> Filter:
    """Cut a draft where it starts repeating the lines after the cursor; drop it if that is all it does."""
    if not config.enabled:
        return keep

    def trim_repeated_suffix(draft: Draft, context: DraftContext) -> Draft | None:
        text = draft.text
        upcoming = [s for s in (line.strip() for line in context.suffix.split("\n")[1:]) if s]
        upcoming = upcoming[: config.compare_lines]
        lines = text.split("\n")
        first_whole_line = 0 if context.at_blank_line else 1
        cut = next((i for i in range(first_whole_line, len(lines)) if _repeats(lines[i:], upcoming)), None)
        if cut is not None:
            text = "\n".join(lines[:cut]).rstrip()
            if not text.strip():
                return None
        rest = context.line_suffix.strip()
        if rest and text.rstrip().endswith(rest):  # the rest of the line is already there
            text = text.rstrip()[: -len(rest)]
        return draft if text == draft.text else draft.with_text(text)

    return trim_repeated_suffix
