"""Re-indenting drafts to the document's indentation (the algorithm is `reindent`).

In a multi-line draft only the lines up to the one that closes its block are re-indented
(`stops.block_window`): the block stop ends decoding there, so the lines after it must not shape the
lines kept, or a draft stopped early would come out indented differently from the same draft decoded on.
"""

from __future__ import annotations

from superpie.completion.config import IndentConfig
from superpie.completion.decoding.stops import block_window
from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext, Filter, keep
from superpie.completion.postprocess.reindent import reindent


def normalize_indentation(config: IndentConfig) -> Filter:
    """Re-indent a draft's new lines to the document's unit; pull back a first line indented too deep."""
    if not config.enabled:
        return keep

    def normalize_indentation(draft: Draft, context: DraftContext) -> Draft | None:
        text = draft.text
        window = block_window(context, text) if context.multiline else None
        if window is None:
            out = reindent(text, context)
        else:  # the lines after the window are past the block's end: trim_to_block cuts them
            j, shaped = window
            out = "\n".join([shaped, *text.split("\n")[j + 1 :]])
        return draft if out == text else draft.with_text(out)

    return normalize_indentation
