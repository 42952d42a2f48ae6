"""Brackets a draft closes that nobody opened: cut the draft there.

Which characters are brackets of the code (not in strings or comments) comes from the lexer
(`analysis.lexical`), through the context, which scans the prefix once.
"""

from __future__ import annotations

from superpie.completion.config import BracketConfig
from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter, keep

_OPEN = "([{"
_PAIR = {")": "(", "]": "[", "}": "{"}


def trim_unbalanced_brackets(config: BracketConfig) -> Filter:
    """Cut a draft at the first bracket it closes that the prefix did not leave open for it."""
    if not config.enabled:
        return keep

    def trim_unbalanced_brackets(draft: Draft, context: DraftContext) -> Draft | None:
        expected = context.open_brackets
        allowance = len(expected) - context.closed_by_line_suffix
        own: list[str] = []
        closed = 0
        for at, ch in context.code_brackets(draft.text):
            if ch in _OPEN:
                own.append(ch)
                continue
            if own:
                ok = own.pop() == _PAIR[ch]
            else:
                closed += 1
                ok = closed <= allowance and expected[-closed] == _PAIR[ch]
            if not ok:
                return draft.with_text(draft.text[:at].rstrip())
        return draft

    return trim_unbalanced_brackets
