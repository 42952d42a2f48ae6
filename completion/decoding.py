"""Greedy (or sampled) decoding at a cursor, and the per-draft bookkeeping every strategy shares.

The first step re-feeds the last prefix token (its KV is already cached, so this only buys the
next-token distribution at the cursor without storing logits for every document token). Each draft
carries its own constraints (token healing, monitors: see `constraints`); `stop` cuts at a line end;
`cancelled` is polled between steps so a superseded request stops within one step. Superposed and
beam decoding (`superposed`, `beam`) reuse `DecodeTask`, `Partial` and `DecodedDraft` from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from superpie.cache.cursor import CursorView
from superpie.completion.constraints import ConstraintSet, TokenConstraint, apply_mask
from superpie.completion.healing import HealingConstraint, token_texts
from superpie.completion.model import LoadedModel

StopRule = Callable[[str], int | None]  # text so far -> cut index where the draft ends, or None
Cancelled = Callable[[], bool]


def line_end_stop(text: str) -> int | None:
    """Stop at the first newline that follows real content (a leading newline starts the draft)."""
    seen = False
    for i, ch in enumerate(text):
        if ch == "\n" and seen:
            return i
        if not ch.isspace():
            seen = True
    return None


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


@dataclass(frozen=True)
class DecodedDraft:
    """One decoded continuation: its tokens, its text after the typed characters, its log-prob."""

    ids: tuple[int, ...]
    text: str
    logprob: float  # sum of the per-token log-probs (exact for greedy, beam and verified drafts)
    finished: bool  # ended by EOS or the stop rule (not by the token budget)
    cancelled: bool = False
    token_logprobs: tuple[float, ...] = ()
    token_ends: tuple[int, ...] = ()  # per token, where it ends in `text` (past the end when cut)
    constrained: tuple[bool, ...] = ()  # per token: a constraint mask was active when it was chosen
    best_logprobs: tuple[float, ...] = ()  # per token: log-prob of the model's own top choice there
    verified: bool = False  # log-probs re-scored exactly by `verify`

    @property
    def mean_logprob(self) -> float:
        """Length-normalised log-prob, comparable across drafts of different lengths."""
        return self.logprob / max(1, len(self.ids))

    @property
    def constraint_active(self) -> bool:
        """Whether any constraint (healing, a monitor) restricted this draft's tokens."""
        return any(self.constrained)


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

    def done(self, finished: bool, cancelled: bool = False) -> DecodedDraft:
        """The decoded draft as it stands."""
        return DecodedDraft(
            self.ids,
            self.text,
            sum(self.logprobs),
            finished,
            cancelled,
            self.logprobs,
            self.ends,
            self.constrained,
            self.best,
        )


def task_constraints(lm: LoadedModel, typed: str, extra: Sequence[TokenConstraint] = ()) -> tuple[TokenConstraint, ...]:
    """Healing for the typed characters (first, so it wins a conflict) plus any other constraints."""
    healing = HealingConstraint.for_typed(typed, lm.tokenizer)
    return ((healing,) if healing is not None else ()) + tuple(extra)


def cursor_logprobs(view: CursorView, task: DecodeTask) -> torch.Tensor:
    """Log-probs [V] of the first new token: one step that re-feeds the last prefix token."""
    logits = view.step(input_ids=torch.tensor([task.first_input]))[-1].float()
    return torch.log_softmax(logits, dim=-1)


def greedy_decode(
    lm: LoadedModel,
    view: CursorView,
    first_input: int,
    max_tokens: int,
    typed: str = "",
    stop: StopRule | None = None,
    cancelled: Cancelled = never_cancelled,
    constraints: Sequence[TokenConstraint] | None = None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> DecodedDraft:
    """Decode one draft token by token (argmax, or sampling when temperature > 0).

    `constraints` None means token healing for `typed` only; the text returned excludes `typed`.
    """
    if constraints is None:
        constraints = task_constraints(lm, typed)
    task = DecodeTask(first_input, max_tokens, typed, stop, tuple(constraints))
    return chain_decode(lm, view, task, cancelled, temperature, generator)


def chain_decode(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    cancelled: Cancelled = never_cancelled,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> DecodedDraft:
    """One draft of a `DecodeTask`, one token per step through the view's chain."""
    draft = Partial.start(task)
    token = task.first_input
    for _ in range(task.max_tokens):
        if cancelled():
            return draft.done(False, cancelled=True)
        logits = view.step(input_ids=torch.tensor([token]))[-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        mask = draft.mask(logp.shape[0])
        token = _choose(apply_mask(logp, mask), temperature, generator)
        if token in lm.eos_ids:
            return draft.done(True)
        best = float(logp.max())
        draft, stopped = draft.extend(lm, task, token, float(logp[token]), constrained=mask is not None, best=best)
        if stopped:
            return draft.done(True)
    return draft.done(False)


def _choose(logp: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logp.argmax())
    probs = torch.softmax(logp / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
