"""Greedy (or sampled) decoding at a cursor, and the per-draft bookkeeping every strategy shares.

The first step re-feeds the last prefix token (its KV is already cached, so this only buys the
next-token distribution at the cursor without storing logits for every document token). Each draft
carries its own constraints (token healing, monitors: see `constraints`); `stop` cuts at a line end;
`cancelled` is polled between steps so a superseded request stops within one step. Superposed and
beam decoding (`superposed`, `beam`) reuse `DecodeTask`, `Partial` and `DecodedDraft` from here.
"""

from __future__ import annotations

import dataclasses
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
    greedy: bool = False  # the model's own top token at every step, decoded exactly (not a sampled/superposed draft)

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
    """One draft of a `DecodeTask`, one token per step through the view's chain.

    Greedy: where a constraint asks for it (a monitored identifier), the identifier is chosen whole by
    `span_lookahead` and its tokens are committed at once.
    """
    draft = Partial.start(task)
    token = task.first_input
    while len(draft.ids) < task.max_tokens:
        if cancelled():
            return draft.done(False, cancelled=True)
        logits = view.step(input_ids=torch.tensor([token]))[-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        width = 0 if temperature > 0 or draft.constraints.empty else draft.constraints.lookahead_width()
        span = span_lookahead(lm, view, task, draft, logp, width) if width > 1 else []
        if span:
            if len(span) > 1:  # the chain gets the span's tokens but the last, which the next step feeds
                view.step(input_ids=torch.tensor([t for t, _, _ in span[:-1]]))
            for t, lp, best in span:
                draft, stopped = draft.extend(lm, task, t, lp, constrained=True, best=best)
                if stopped:
                    return draft.done(True)
            token = span[-1][0]
            continue
        mask = draft.mask(logp.shape[0])
        token = _choose(apply_mask(logp, mask), temperature, generator)
        if token in lm.eos_ids:
            return draft.done(True)
        best = float(logp.max())
        draft, stopped = draft.extend(lm, task, token, float(logp[token]), constrained=mask is not None, best=best)
        if stopped:
            return draft.done(True)
    return draft.done(False)


_SPAN_TOKENS = 8  # the longest identifier span the lookahead searches (tokens)


@dataclass(frozen=True)
class _SpanHyp:
    """One way to spell the constrained span in the lookahead: tokens, per-token log-probs, scratch slots."""

    constraints: ConstraintSet
    tokens: tuple[tuple[int, float, float], ...] = ()  # (token, log-prob, the model's best log-prob there)
    slots: tuple[int, ...] = ()  # scratch slots of the tokens fed so far (all but a pending last one)
    score: float = 0.0  # sum of the tokens' log-probs
    ended: bool = False  # its last token left the span


def span_lookahead(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    draft: Partial,
    logp: torch.Tensor,
    width: int,
    path: Sequence[int] | None = None,
) -> list[tuple[int, float, float]]:
    """The constrained span spelled whole: the tokens (with log-probs) of the best-scoring spelling.

    A beam of `width` over the span only: each hypothesis takes its `width` best allowed tokens; one
    whose token leaves the span (`advance_in_span` is None: `name(`, `name)`...) is complete, with
    its exit token's log-prob included, so a short name the model would not end where it stops does
    not win for being short, plus the constraint's `span_bonus` for that name. The search stops when
    no live hypothesis can beat the best complete one (log-probs only fall; a live one is kept while
    the largest bonus could lift it past), at `_SPAN_TOKENS` or at the token budget. The live hypotheses are fed
    together as a tree in the view's scratch area (as in beam search); the view is rewound after,
    so the caller feeds the chosen tokens to its chain. `logp` [V] is the distribution at the span's
    first token. `path`: the scratch slots of the draft so far, by depth, when the scratch holds more
    than its chain (superposed decoding's exact lead; None: all of it). Empty when nothing is allowed.
    """
    texts = token_texts(lm.tokenizer)
    vocab = logp.shape[0]
    used0 = view.used
    seen = list(range(used0)) if path is None else list(path)
    pos0 = view.prefix_len + (seen[0] if seen else 0) + len(seen)  # the chain's root, then one per depth
    depth_limit = min(_SPAN_TOKENS, task.max_tokens - len(draft.ids))
    live = [_SpanHyp(draft.constraints)]
    slack = draft.constraints.span_bonus_bound()  # a bonus may still lift a live spelling past the best
    rows = logp[None]  # [live, V]
    done: list[_SpanHyp] = []
    for depth in range(depth_limit):
        cands: list[tuple[float, int, int, float, float]] = []
        for i, hyp in enumerate(live):
            row = rows[i]
            masked = apply_mask(row, hyp.constraints.mask(vocab))
            lps, ids = masked.topk(min(width, vocab))
            best = float(row.max())
            for lp, t in zip(lps.tolist(), ids.tolist(), strict=True):
                if lp != float("-inf") and t not in lm.eos_ids:
                    cands.append((hyp.score + lp, i, t, lp, best))
        cands.sort(key=lambda c: -c[0])
        nxt: list[_SpanHyp] = []
        for score, i, t, lp, best in cands:
            hyp = live[i]
            text = texts[t] if t < len(texts) else ""
            inside = hyp.constraints.advance_in_span(text)
            ended = inside is None or inside.lookahead_width() == 0
            if ended:
                score += hyp.constraints.span_bonus(text)
            grown = _SpanHyp(inside or hyp.constraints, hyp.tokens + ((t, lp, best),), hyp.slots, score, ended)
            if ended:
                done.append(grown)
            elif len(nxt) < width:
                nxt.append(grown)
        bar = max((h.score for h in done), default=float("-inf")) - slack
        live = [h for h in nxt if h.score > bar]
        if not live:
            break
        if depth == depth_limit - 1:
            done.extend(live)  # cut by the budget: an unfinished name competes as it stands
            break
        rows, live = _feed_span(view, live, seen, pos0)
    view.rewind(used0)
    if not done:
        return []
    return list(max(done, key=lambda h: h.score).tokens)


def _feed_span(
    view: CursorView, live: list[_SpanHyp], chain: list[int], pos0: int
) -> tuple[torch.Tensor, list[_SpanHyp]]:
    """Feed each live hypothesis's last token (a tree: each sees the chain and its own tokens); log-probs [n, V]."""
    n, used = len(live), view.used
    visible = view.sees([chain + list(hyp.slots) for hyp in live])  # the chain before the span, then its own
    logits = view.step(
        input_ids=torch.tensor([h.tokens[-1][0] for h in live]),
        positions=torch.tensor([pos0 + len(h.tokens) - 1 for h in live]),
        scratch_visible=visible,
        logits_for=n,
    )
    grown = [dataclasses.replace(h, slots=h.slots + (used + j,)) for j, h in enumerate(live)]
    return torch.log_softmax(logits.float(), dim=-1), grown


def _choose(logp: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logp.argmax())
    probs = torch.softmax(logp / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
