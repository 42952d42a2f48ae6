"""Finishing a request's drafts: post-processing and ranking, the monitors' verdicts, the best k.

Ranking sees each draft's monitor score: the built-in monitors' trace judges the identifiers a draft
spells; an extra `MonitorHook` may judge where the trace is silent.
"""

from __future__ import annotations

import dataclasses

from superpie.completion.config import PostprocessConfig
from superpie.completion.draft import Draft
from superpie.completion.plan import Plan
from superpie.completion.postprocess.pipeline import DraftContext, MonitorHook, postprocess
from superpie.completion.request import CompletionRequest


def finish(
    req: CompletionRequest,
    plan: Plan,
    decoded: list[Draft],
    config: PostprocessConfig,
    hook: MonitorHook | None = None,
) -> list[Draft]:
    """Post-process (stop rules, suffix de-dup, brackets, indentation), rank, merge; best k first."""
    drafts = [dataclasses.replace(d, id=i) for i, d in enumerate(decoded)]
    context = DraftContext.at(req.text, req.offset, plan.multiline)
    ranked = postprocess(drafts, context, config, monitor_hook(plan, hook))
    ranked = _drop_unfinished_prefixes(ranked, decoded)
    trace = plan.trace
    return [
        dataclasses.replace(
            d,
            score=round(d.score, 4),
            monitor=None if trace is None else trace.verdict(plan.task.typed + d.text),
        )
        for d in ranked[: plan.drafts]
    ]


def monitor_hook(plan: Plan, hook: MonitorHook | None = None) -> MonitorHook | None:
    """The monitor verdict for ranking: the built-in monitors' trace, else (or where silent) `hook`."""
    trace = plan.trace
    if trace is None:
        return hook

    def judge(draft: Draft, context: DraftContext) -> float | None:
        score = trace.verdict(plan.task.typed + draft.text).score
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
