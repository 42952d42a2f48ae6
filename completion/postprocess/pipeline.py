"""Post-processing of drafts, Tabby style: small pure filters in one ordered list, then ranking.

Each filter is a pure function `(draft, context) -> draft | None`, one per module of this package,
made by a factory that receives only its own slice of the configuration; `drop_*` discards,
`trim_*`/`limit_*` cut, `normalize_*` rewrites (`normalize_whole_line` last: it adds the newline
`trim_trailing_space` would take). `build_filters` is the one place that says the order. Drafts are
immutable (`Draft`), so ids, scores and monitor verdicts survive every step. Where a draft ends is
`decoding.stops`, the rules decoding stops by; ranking is `rank`.
"""

from __future__ import annotations

from collections.abc import Sequence

from superpie.completion.config import PostprocessConfig
from superpie.completion.draft import Draft
from superpie.completion.postprocess.blank import drop_blank, trim_leading_blank_lines
from superpie.completion.postprocess.block import limit_lines, trim_to_block
from superpie.completion.postprocess.brackets import trim_unbalanced_brackets
from superpie.completion.postprocess.characters import trim_incomplete_character
from superpie.completion.postprocess.context import DraftContext, Filter
from superpie.completion.postprocess.indentation import normalize_indentation
from superpie.completion.postprocess.line import trim_to_line, trim_to_next_line
from superpie.completion.postprocess.rank import MonitorHook, merge_duplicates, rank
from superpie.completion.postprocess.suffix import trim_repeated_suffix
from superpie.completion.postprocess.whitespace import trim_trailing_space
from superpie.completion.postprocess.whole_line import normalize_whole_line

__all__ = ["DraftContext", "Filter", "MonitorHook", "apply_filters", "build_filters", "postprocess"]


def build_filters(config: PostprocessConfig) -> list[Filter]:
    """The one ordered list of post-processing steps."""
    return [
        drop_blank(),
        trim_incomplete_character(),
        trim_leading_blank_lines(),
        trim_to_next_line(),  # before re-indentation, which would read the lines after the next one
        normalize_indentation(config.indent),  # before the block cut, which reads indentation
        trim_to_line(),
        trim_to_block(config.stop),
        limit_lines(config.stop),
        trim_repeated_suffix(config.suffix),
        trim_unbalanced_brackets(config.brackets),
        trim_trailing_space(),
        drop_blank(),
        normalize_whole_line(),
    ]


def apply_filters(draft: Draft, context: DraftContext, filters: Sequence[Filter]) -> Draft | None:
    """Run one draft through the filters in order; None as soon as one drops it."""
    for step in filters:
        out = step(draft, context)
        if out is None:
            return None
        draft = out
    return draft


def postprocess(
    drafts: Sequence[Draft],
    context: DraftContext,
    config: PostprocessConfig = PostprocessConfig(),
    monitor: MonitorHook | None = None,
) -> list[Draft]:
    """Filter, rank and de-duplicate decoded drafts: what the engine hands to a front end."""
    filters = build_filters(config)
    kept = [d for d in (apply_filters(d, context, filters) for d in drafts) if d is not None]
    return merge_duplicates(rank(kept, context, config.rank, monitor))
