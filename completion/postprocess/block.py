"""The multi-line cuts: a draft ends with its block (`stops.block_extent`, the rule decoding stops by),
and no draft is longer than `StopConfig.max_lines`."""

from __future__ import annotations

from superpie.completion.config import StopConfig
from superpie.completion.decoding.stops import block_extent
from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter


def trim_to_block(config: StopConfig) -> Filter:
    """A multi-line draft ends with the block it is written in: a line dedented below it ends it."""

    def trim_to_block(draft: Draft, context: DraftContext) -> Draft | None:
        if not context.multiline:
            return draft
        end, _ = block_extent(context, draft.text)
        return draft.with_text(draft.text[:end]) if end < len(draft.text) else draft

    return trim_to_block


def limit_lines(config: StopConfig) -> Filter:
    """Bound a multi-line draft's length, whatever its block structure."""

    def limit_lines(draft: Draft, context: DraftContext) -> Draft | None:
        lines = draft.text.split("\n")
        if len(lines) <= config.max_lines:
            return draft
        return draft.with_text("\n".join(lines[: config.max_lines]))

    return limit_lines
