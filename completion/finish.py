"""Finishing a request's drafts: post-processing and ranking, the monitors' verdicts, the best k.

Ranking sees each draft's monitor score: the built-in monitors' trace judges the identifiers a draft
spells; an extra `MonitorHook` may judge where the trace is silent.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from superpie.completion.config import PostprocessConfig
from superpie.completion.draft import Draft
from superpie.completion.plan import Plan
from superpie.completion.postprocess.pipeline import DraftContext, MonitorHook, postprocess
from superpie.completion.request import CompletionRequest

if TYPE_CHECKING:
    from superpie.completion.constraints.monitor import MonitorTrace


def finish(
    req: CompletionRequest,
    plan: Plan,
    decoded: list[Draft],
    config: PostprocessConfig,
    hook: MonitorHook | None = None,
) -> list[Draft]:
    """Post-process (stop rules, suffix de-dup, brackets, indentation), rank, merge; best k first."""
    return finish_drafts(
        req,
        decoded,
        config,
        multiline=plan.multiline,
        k=plan.drafts,
        typed=plan.task.typed,
        trace=plan.trace,
        hook=hook,
    )


def finish_drafts(
    req: CompletionRequest,
    decoded: list[Draft],
    config: PostprocessConfig,
    *,
    multiline: bool,
    k: int,
    typed: str = "",
    trace: MonitorTrace | None = None,
    hook: MonitorHook | None = None,
) -> list[Draft]:
    """`finish` without a local plan: the drafts of any backend (a serving engine's too), the best k first."""
    drafts = [dataclasses.replace(d, id=i) for i, d in enumerate(decoded)]
    context = DraftContext.at(req.text, req.offset, multiline)
    ranked = postprocess(drafts, context, config, _judge(typed, trace, hook))
    ranked = _drop_unfinished_prefixes(ranked, decoded)
    return [
        dataclasses.replace(
            d,
            score=round(d.score, 4),
            monitor=None if trace is None else trace.verdict(typed + d.text),
        )
        for d in ranked[:k]
    ]


def monitor_hook(plan: Plan, hook: MonitorHook | None = None) -> MonitorHook | None:
    """The monitor verdict for ranking: the built-in monitors' trace, else (or where silent) `hook`."""
    return _judge(plan.task.typed, plan.trace, hook)


def _judge(typed: str, trace: MonitorTrace | None, hook: MonitorHook | None) -> MonitorHook | None:
    if trace is None:
        return hook

    def judge(draft: Draft, context: DraftContext) -> float | None:
        score = trace.verdict(typed + draft.text).score
        return score if score is not None or hook is None else hook(draft, context)

    return judge


def _drop_unfinished_prefixes(ranked: list[Draft], decoded: list[Draft]) -> list[Draft]:
    """Drop a draft that stopped early (cut by verification, out of tokens) where another draft goes on."""
    texts = [d.text for d in ranked]
    return [
        d
        for d in ranked
        if decoded[d.id].finished or not any(t != d.text and t.startswith(d.text.rstrip()) for t in texts)
    ]
