"""What every decoding strategy shares: the task at one cursor and the per-draft bookkeeping.

The first step re-feeds the last prefix token (its KV is already cached, so this only buys the
next-token distribution at the cursor without storing logits for every document token). Each draft
carries its own constraints (token healing, monitors: see `completion.constraints`); `stop` cuts where
the draft ends (`stops`); `cancelled` is polled between steps so a superseded request stops within one
step. Greedy, beam and superposed decoding all build drafts with `Partial` from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from superpie.completion.constraints.base import ConstraintSet, TokenConstraint
from superpie.completion.constraints.healing import HealingConstraint
from superpie.completion.constraints.vocab import token_texts
from superpie.completion.decoding.stops import StopRule
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel

Cancelled = Callable[[], bool]


def never_cancelled() -> bool:
    """The default `cancelled` poll."""
    return False


@dataclass(frozen=True)
class DecodeTask:
    """What every strategy needs to decode at one cursor."""

    first_input: int  # the last prefix token, re-fed to get the distribution at the cursor
    max_tokens: int
    typed: str = ""  # characters typed inside the cursor's token (excluded from draft texts)
    stop: StopRule | None = None
    constraints: tuple[TokenConstraint, ...] = ()  # each draft starts from these and advances its own copy
    prefix_tail: tuple[int, ...] = ()  # last prefix tokens (first_input last): n-gram context of step one
    # the view reads stale KV (cache/document.py): a greedy choice closer than this many nats stops decoding
    # with `StaleCloseCall` (0: never); see `check_margin`
    stale_margin: float = 0.0


class StaleCloseCall(Exception):
    """Greedy decoding over stale KV met a choice its staleness could have flipped: the caller re-encodes the
    stale tokens exactly and decodes again (completion/engine.py)."""

    def __init__(self, step: int, gap: float) -> None:
        super().__init__(f"close call at step {step}: the top two differ by {gap:.3f} nats")
        self.step, self.gap = step, gap


def top_two_gap(masked_logp: torch.Tensor) -> tuple[int, float]:
    """The best allowed token of a row and how many nats it beats the runner-up by (nan: nothing allowed)."""
    top = masked_logp.topk(2)
    return int(top.indices[0]), float(top.values[0] - top.values[1])


def check_margin(masked_logp: torch.Tensor, margin: float, step: int, gap: float | None = None) -> None:
    """Raise `StaleCloseCall` when the best allowed token beats the runner-up by less than `margin` nats
    (`gap`: that difference, where the caller has it from `top_two_gap` already).

    Why: PIE leaves the KV behind an edit computed on the text before it (stale). Measured against an exact
    re-encode, the choices that stale KV changes are near-ties; a clear choice survives it
    (benchmarks/RESULTS.md, fim_pie). So decoding trusts stale KV while its choices are clear, and the first
    close one sends the request back for an exact refresh, which idle time would have done anyway.
    """
    if margin <= 0 or masked_logp.shape[-1] < 2:
        return
    if gap is None:
        gap = top_two_gap(masked_logp)[1]
    if not gap >= margin:  # (nan: nothing allowed; a tie of -inf: decide on exact KV too)
        raise StaleCloseCall(step, gap)


@dataclass(frozen=True)
class Partial:
    """A draft while it is decoded; immutable, so beams and superposed drafts branch by `extend`."""

    constraints: ConstraintSet = field(default_factory=ConstraintSet)
    ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    ends: tuple[int, ...] = ()
    constrained: tuple[bool, ...] = ()
    best: tuple[float, ...] = ()  # per token: log-prob of the model's top choice at that point
    text: str = ""
    score: float = 0.0  # what the strategy ranks by (sum of log-probs, or of mixed scores)

    @classmethod
    def start(cls, task: DecodeTask) -> Partial:
        """The empty draft with the task's constraints."""
        return cls(ConstraintSet(tuple(task.constraints)))

    def mask(self, vocab: int) -> torch.Tensor | None:
        """The draft's allowed next tokens (None: any)."""
        return None if self.constraints.empty else self.constraints.mask(vocab)

    def extend(
        self,
        lm: LoadedModel,
        task: DecodeTask,
        token: int,
        logprob: float,
        *,
        constrained: bool = False,
        score: float | None = None,
        best: float | None = None,
    ) -> tuple[Partial, bool]:
        """The draft with one more (non-EOS) token; True when the stop rule ends it there.

        `score` (default: logprob) is what the strategy ranks by; `best` (default: logprob) the
        log-prob of the model's own top token at this point, for `verify`'s cut rule.
        """
        ids = self.ids + (token,)
        full = lm.decode(list(ids))
        text = full[len(task.typed) :] if full.startswith(task.typed) else full
        end = len(text)
        cut = task.stop(text) if task.stop is not None else None
        if cut is not None:
            text = text[:cut]
        constraints = self.constraints
        if not constraints.empty:
            texts = token_texts(lm.tokenizer)
            constraints = constraints.advance(texts[token] if token < len(texts) else "")
        nxt = Partial(
            constraints,
            ids,
            self.logprobs + (logprob,),
            self.ends + (end,),
            self.constrained + (constrained,),
            self.best + (logprob if best is None else best,),
            text,
            self.score + (logprob if score is None else score),
        )
        return nxt, cut is not None

    def done(self, finished: bool, cancelled: bool = False) -> Draft:
        """The decoded draft as it stands."""
        return Draft(
            self.text,
            tokens=self.ids,
            logprob=sum(self.logprobs),
            finished=finished,
            cancelled=cancelled,
            token_logprobs=self.logprobs,
            token_ends=self.ends,
            token_constrained=self.constrained,
            best_logprobs=self.best,
        )


def task_constraints(lm: LoadedModel, typed: str, extra: Sequence[TokenConstraint] = ()) -> tuple[TokenConstraint, ...]:
    """Healing for the typed characters (first, so it wins a conflict) plus any other constraints."""
    healing = HealingConstraint.for_typed(typed, lm.tokenizer)
    return ((healing,) if healing is not None else ()) + tuple(extra)
