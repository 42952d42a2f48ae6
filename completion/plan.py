"""A request resolved against the configuration and the document's cache: what decoding will run.

The plan fixes the strategy and the number of drafts, where the cursor splits the cached tokens
(token healing: `typed`), which constraints every draft starts from (healing, the monitors, any
extra factory) and where a draft ends (the stop rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from superpie.cache.document import DocumentCache
from superpie.completion.config import EngineConfig
from superpie.completion.constraints.base import ConstraintContext, ConstraintFactory, TokenConstraint
from superpie.completion.decoding.stops import stop_rule
from superpie.completion.decoding.task import DecodeTask, task_constraints
from superpie.completion.model.loading import LoadedModel
from superpie.completion.request import CompletionRequest

if TYPE_CHECKING:
    from superpie.completion.constraints.monitor import MonitorRuntime, MonitorTrace

_NGRAM_TAIL = 8  # prefix tokens handed to the n-gram model as the drafts' first context


@dataclass(frozen=True)
class Plan:
    """One request, resolved against the configuration."""

    task: DecodeTask
    context: int  # prefix tokens the view sees before `task.first_input` is re-fed
    drafts: int
    strategy: str
    multiline: bool
    trace: MonitorTrace | None = None  # the monitors' record of this request (None: monitors off)


def plan_request(
    req: CompletionRequest,
    cache: DocumentCache,
    lm: LoadedModel,
    config: EngineConfig,
    monitors: MonitorRuntime | None,
    factory: ConstraintFactory | None = None,
) -> Plan:
    """The plan for `req` over the document's synced cache; `monitors` None: monitors off."""
    dcfg = config.decoding
    drafts = req.drafts if req.drafts is not None else config.completion.drafts
    strategy = dcfg.strategy_for(drafts, req.strategy or config.completion.strategy)
    max_tokens = req.max_tokens if req.max_tokens is not None else dcfg.max_tokens
    multiline = req.multiline if req.multiline is not None else dcfg.multiline
    split = cache.split_at(req.offset)
    n = split.prefix_len
    first = cache.ids[n - 1] if n > 0 else lm.start_id
    before, after = req.text[: req.offset - len(split.typed)], req.text[req.offset :]
    extra: tuple[TokenConstraint, ...] = ()
    trace = None
    if monitors is not None:
        monitor = monitors.start(req.uri, before, split.typed, after, lm.tokenizer)
        extra, trace = (monitor,), monitor.trace
    if factory is not None:
        extra += tuple(factory(ConstraintContext(req.uri, before, split.typed, after)))
    task = DecodeTask(
        first_input=first,
        max_tokens=max_tokens,
        typed=split.typed,
        stop=stop_rule(req.text, req.offset, multiline, config.postprocess),
        constraints=task_constraints(lm, split.typed, extra),
        prefix_tail=tuple(cache.ids[max(0, n - _NGRAM_TAIL) : n]),
    )
    return Plan(task, max(0, n - 1), drafts, strategy, multiline, trace)
