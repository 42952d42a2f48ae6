"""Ranking: score the post-processed drafts, sort them best first, merge the ones that read the same.

Syntax errors come from `analysis.syntax.error_count` (tree-sitter ERROR/MISSING nodes); the monitors'
judgement arrives through a `MonitorHook`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from superpie.analysis import syntax
from superpie.completion.config import RankConfig
from superpie.completion.draft import Draft
from superpie.completion.postprocess.context import DraftContext

MonitorHook = Callable[[Draft, DraftContext], float | None]


def rank(
    drafts: Sequence[Draft],
    context: DraftContext,
    config: RankConfig = RankConfig(),
    monitor: MonitorHook | None = None,
) -> list[Draft]:
    """Score drafts and sort them best first; the score goes into each draft's `score`.

    score = logprob / n_tokens ** length_alpha            (the incoming score when logprob is None)
            - syntax_penalty * min(new_errors, max_syntax_errors)
            - monitor_penalty * (1 - monitor_score)        (0 when no monitor judged the draft)
            + greedy_bonus                                  (the model's greedy line only)
    new_errors = tree-sitter ERROR/MISSING nodes in prefix+draft+suffix beyond those in prefix+suffix.
    `monitor`, when given, fills each draft's monitor_score first.
    """
    check = config.syntax_penalty != 0
    baseline = syntax.error_count(context.prefix + context.suffix) if check else 0
    ranked = []
    for draft in drafts:
        if monitor is not None:
            draft = dataclasses.replace(draft, monitor_score=monitor(draft, context))
        fluency = (
            draft.score if draft.logprob is None else draft.logprob / draft.num_tokens**config.length_alpha
        )
        new_errors = 0
        if check:
            new_errors = max(0, syntax.error_count(context.prefix + draft.text + context.suffix) - baseline)
        score = fluency - config.syntax_penalty * min(new_errors, config.max_syntax_errors)
        if draft.monitor_score is not None:
            score -= config.monitor_penalty * (1.0 - draft.monitor_score)
        if draft.greedy:
            score += config.greedy_bonus
        ranked.append(dataclasses.replace(draft, score=score))
    return sorted(ranked, key=lambda d: -d.score)


def _normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.rstrip().split("\n"))


def merge_duplicates(drafts: Sequence[Draft]) -> list[Draft]:
    """Drafts that read the same (trailing whitespace aside) are one suggestion: keep the best score."""
    best: dict[str, Draft] = {}
    for draft in drafts:
        key = _normalized(draft.text)
        if key not in best or draft.score > best[key].score:
            best[key] = draft
    return sorted(best.values(), key=lambda d: -d.score)
