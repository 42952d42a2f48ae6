"""Post-processing of drafts, Tabby style: small pure filters in one ordered list, then ranking.

Each filter is a pure function `(draft, context) -> draft | None` made by a factory that receives
only its own slice of the configuration; `drop_*` discards, `trim_*`/`limit_*` cut, `normalize_*`
rewrites (`normalize_whole_line` last: it adds the newline `trim_trailing_space` would take).
`build_filters` is the one place that says the order. Drafts are immutable (`Draft`), so ids,
scores and monitor verdicts survive every step.

Syntax comes from `superpie.analysis`: `lexical` for what is code (brackets in strings and comments do
not count; continuation lines are not statements), `syntax.block_end` for where the cursor's block
ends, and `syntax.error_count` (tree-sitter ERROR/MISSING nodes) for ranking.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from superpie.analysis import lexical, syntax
from superpie.completion.config import (
    BracketConfig,
    IndentConfig,
    PostprocessConfig,
    RankConfig,
    StopConfig,
    SuffixConfig,
)
from superpie.completion.draft import Draft

_OPEN = "([{"
_CLOSE = ")]}"
_PAIR = dict(zip(_CLOSE, _OPEN, strict=True))
_BRACKET = re.compile(r"[()\[\]{}]")


# ---- values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DraftContext:
    """The document around the cursor, as post-processing sees it."""

    prefix: str  # text before the cursor
    suffix: str  # text after the cursor
    multiline: bool = False  # False: the draft ends with the current line
    indent_unit: str = "    "  # the document's indentation step: "\t", "  ", "    ", ...

    @classmethod
    def at(
        cls, text: str, offset: int, multiline: bool = False, indent_unit: str | None = None
    ) -> DraftContext:
        """Context for a cursor at a str offset of a document (indentation unit detected unless given)."""
        unit = indent_unit if indent_unit is not None else detect_indent_unit(text)
        return cls(text[:offset], text[offset:], multiline, unit)

    @property
    def line_prefix(self) -> str:
        """Text between the start of the cursor's line and the cursor."""
        return self.prefix[self.prefix.rfind("\n") + 1 :]

    @property
    def line_suffix(self) -> str:
        """Text between the cursor and the end of its line."""
        return self.suffix.split("\n", 1)[0]

    @property
    def at_blank_line(self) -> bool:
        """True when the cursor's line holds nothing but whitespace: the draft writes a whole line."""
        return not self.line_prefix.strip() and not self.line_suffix.strip()

    @property
    def indent_cols(self) -> int:
        """Columns of one indentation step (a tab counts as 4)."""
        return 4 if self.indent_unit == "\t" else max(1, len(self.indent_unit))

    @cached_property
    def _lex(self) -> tuple[list[lexical.Frame], bool]:
        stack: list[lexical.Frame] = [("code", 0)]
        in_comment = lexical.scan(self.prefix, 0, len(self.prefix), stack)
        return stack, in_comment

    def draft_start(self, text: str) -> tuple[str, int, list[lexical.Frame]] | None:
        """prefix + text, where scanning its draft part starts (past a comment), and the lexer state there."""
        stack, in_comment = self._lex
        start = len(self.prefix)
        if in_comment:
            nl = text.find("\n")
            if nl < 0:
                return None
            start += nl
        return self.prefix + text, start, list(stack)

    @cached_property
    def open_brackets(self) -> tuple[str, ...]:
        """Brackets open in code at the cursor, outermost first."""
        lines = lexical.logical_line_starts(self.prefix)  # every open bracket was opened after the last one
        stack: list[str] = []
        for _, ch in _code_brackets(self.prefix, lines[-1], len(self.prefix), [("code", 0)]):
            if ch in _OPEN:
                stack.append(ch)
            elif stack:
                stack.pop()
        return tuple(stack)

    @cached_property
    def closed_by_line_suffix(self) -> int:
        """How many of the open brackets the rest of the cursor's line already closes."""
        start = self.draft_start(self.line_suffix)
        if start is None:
            return 0
        text, pos, stack = start
        depth = closes = 0
        for _, ch in _code_brackets(text, pos, len(text), stack):
            if ch in _OPEN:
                depth += 1
            elif depth:
                depth -= 1
            else:
                closes += 1
        return min(closes, len(self.open_brackets))


Filter = Callable[[Draft, DraftContext], Draft | None]


# ---- helpers ------------------------------------------------------------------------------------


def detect_indent_unit(text: str) -> str:
    """The document's indentation step, so drafts can be re-indented to match it."""
    tabs = spaces = 0
    steps: Counter[int] = Counter()
    prev = 0
    for line in text.splitlines()[:2000]:
        if not line.strip():
            continue
        indent = syntax.line_indent(line)
        if indent.startswith("\t"):
            tabs += 1
            continue
        width = len(indent)
        spaces += width > 0
        if width > prev:
            steps[width - prev] += 1
        prev = width
    if tabs > spaces:
        return "\t"
    step = steps.most_common(1)[0][0] if steps else 4
    return " " * step if step in (2, 3, 4, 8) else "    "


def _code_brackets(text: str, pos: int, end: int, stack: list[lexical.Frame]) -> Iterator[tuple[int, str]]:
    """Brackets in code (not in strings or comments) of text[pos:end]; advances the lexer `stack`."""
    for m in _BRACKET.finditer(text, pos, end):
        at = m.start()
        if at < pos:  # inside a comment skipped below
            continue
        if lexical.scan(text, pos, at, stack):
            nl = text.find("\n", at, end)
            if nl < 0:
                return
            pos = nl
            continue
        pos = at  # the next scan steps over this bracket itself
        kind, ch = stack[-1][0], text[at]
        if kind == "code" or (kind == "field" and not (ch == "}" and stack[-1][1] == 0)):
            yield at, ch  # (a "}" at depth 0 of an f-string field ends the field)


def _statement_starts(ctx: DraftContext, text: str) -> set[int]:
    """Offsets in the draft where logical lines start (not inside brackets or strings)."""
    start = ctx.draft_start(text)
    if start is None:
        return set()
    full, pos, stack = start
    lines: list[int] = []
    lexical.scan(full, pos, len(full), stack, lines)
    return {p - len(ctx.prefix) for p in lines}


def _cols(indent: str, tab: int) -> int:
    return sum(tab if c == "\t" else 1 for c in indent)


def _render(cols: int, unit: str, tab: int) -> str:
    return "\t" * (cols // tab) + " " * (cols % tab) if unit == "\t" else " " * cols


def _opens_block(line: str) -> bool:
    return line.split("#", 1)[0].rstrip().endswith(":")


def _normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.rstrip().split("\n"))


def _keep(draft: Draft, context: DraftContext) -> Draft | None:
    return draft


# ---- filters ------------------------------------------------------------------------------------


def drop_blank() -> Filter:
    """Drafts with nothing but whitespace are no suggestion."""

    def drop_blank(draft: Draft, context: DraftContext) -> Draft | None:
        return draft if draft.text.strip() else None

    return drop_blank


def trim_leading_blank_lines() -> Filter:
    """On a blank line the draft's first real line belongs on the cursor's line, not below it."""

    def trim_leading_blank_lines(draft: Draft, context: DraftContext) -> Draft | None:
        lines = draft.text.split("\n")
        first = next((i for i, line in enumerate(lines) if line.strip()), 0)
        if not context.at_blank_line or first == 0:
            return draft
        line, typed = lines[first], context.line_prefix
        line = line[len(typed) :] if line.startswith(typed) else line.lstrip()
        return draft.with_text("\n".join([line, *lines[first + 1 :]]))

    return trim_leading_blank_lines


def normalize_indentation(config: IndentConfig) -> Filter:
    """Re-indent a draft's new lines to the document's unit; pull back a first line indented too deep."""
    if not config.enabled:
        return _keep

    def normalize_indentation(draft: Draft, context: DraftContext) -> Draft | None:
        lines = draft.text.split("\n")
        if len(lines) < 2:
            return draft
        unit, tab = context.indent_unit, context.indent_cols
        starts = _statement_starts(context, draft.text)
        offsets = [0]
        for line in lines[:-1]:
            offsets.append(offsets[-1] + len(line) + 1)
        head = context.line_prefix + lines[0]
        base = _cols(syntax.line_indent(head), tab)
        width = {
            i: _cols(syntax.line_indent(lines[i]), tab) for i in range(1, len(lines)) if lines[i].strip()
        }
        stmts = [i for i in width if offsets[i] in starts]
        new = dict(width)
        seq = [base] + [width[i] for i in stmts]
        ups = [b - a for a, b in zip(seq, seq[1:], strict=False) if b > a]
        step = math.gcd(*ups) if ups else tab
        deeper = [i for i in stmts if width[i] >= base]  # shallower lines: already document levels
        if step != tab and all((width[i] - base) % step == 0 for i in deeper):  # the draft's own unit
            new.update({i: base + (width[i] - base) // step * tab for i in deeper})
        if width and min(width) in stmts:  # the first new line may open at most one level
            i0 = min(width)
            limit = base + (tab if _opens_block(head) else 0)
            excess = max(0, new[i0] - limit)
            new.update({i: max(0, new[i] - excess) for i in stmts})
        shift = 0
        for i in sorted(width):
            if i in stmts:
                shift = new[i] - width[i]
            else:  # a continuation line moves with its statement
                new[i] = max(0, width[i] + shift)
        out = [lines[0]] + [
            _render(new[i], unit, tab) + lines[i].lstrip(" \t\f") if i in new else ""
            for i in range(1, len(lines))
        ]
        text = "\n".join(out)
        return draft if text == draft.text else draft.with_text(text)

    return normalize_indentation


def trim_to_line() -> Filter:
    """A single-line request gets the rest of the current line only."""

    def trim_to_line(draft: Draft, context: DraftContext) -> Draft | None:
        if context.multiline:
            return draft
        return draft.with_text(draft.text.split("\n", 1)[0])

    return trim_to_line


def trim_to_block(config: StopConfig) -> Filter:
    """A multi-line draft ends with the block it is written in: a line dedented below it ends it."""

    def trim_to_block(draft: Draft, context: DraftContext) -> Draft | None:
        if not context.multiline:
            return draft
        text, cursor = draft.text, len(context.prefix)
        first = text.split("\n", 1)[0]
        if first.strip():
            at = cursor
        else:  # the block is the one the first real line of the draft sits in
            m = re.search(r"\S", text)
            if m is None:
                return draft
            at = cursor + m.start()
        end = syntax.block_end(context.prefix + text, at) - cursor
        return draft.with_text(text[:end]) if end < len(text) else draft

    return trim_to_block


def limit_lines(config: StopConfig) -> Filter:
    """Bound a multi-line draft's length, whatever its block structure."""

    def limit_lines(draft: Draft, context: DraftContext) -> Draft | None:
        lines = draft.text.split("\n")
        if len(lines) <= config.max_lines:
            return draft
        return draft.with_text("\n".join(lines[: config.max_lines]))

    return limit_lines


def trim_repeated_suffix(config: SuffixConfig) -> Filter:
    """Cut a draft where it starts repeating the lines after the cursor; drop it if that is all it does."""
    if not config.enabled:
        return _keep

    def repeats(lines: list[str], upcoming: list[str]) -> bool:
        mine = [line.strip() for line in lines if line.strip()]
        n = min(len(mine), len(upcoming))
        return bool(lines[0].strip()) and n > 0 and mine[:n] == upcoming[:n]

    def trim_repeated_suffix(draft: Draft, context: DraftContext) -> Draft | None:
        text = draft.text
        upcoming = [s for s in (line.strip() for line in context.suffix.split("\n")[1:]) if s]
        upcoming = upcoming[: config.compare_lines]
        lines = text.split("\n")
        first_whole_line = 0 if context.at_blank_line else 1
        cut = next((i for i in range(first_whole_line, len(lines)) if repeats(lines[i:], upcoming)), None)
        if cut is not None:
            text = "\n".join(lines[:cut]).rstrip()
            if not text.strip():
                return None
        rest = context.line_suffix.strip()
        if rest and text.rstrip().endswith(rest):  # the rest of the line is already there
            text = text.rstrip()[: -len(rest)]
        return draft if text == draft.text else draft.with_text(text)

    return trim_repeated_suffix


def trim_unbalanced_brackets(config: BracketConfig) -> Filter:
    """Cut a draft at the first bracket it closes that the prefix did not leave open for it."""
    if not config.enabled:
        return _keep

    def trim_unbalanced_brackets(draft: Draft, context: DraftContext) -> Draft | None:
        start = context.draft_start(draft.text)
        if start is None:
            return draft
        text, pos, stack = start
        expected = context.open_brackets
        allowance = len(expected) - context.closed_by_line_suffix
        own: list[str] = []
        closed = 0
        for at, ch in _code_brackets(text, pos, len(text), stack):
            if ch in _OPEN:
                own.append(ch)
                continue
            if own:
                ok = own.pop() == _PAIR[ch]
            else:
                closed += 1
                ok = closed <= allowance and expected[-closed] == _PAIR[ch]
            if not ok:
                return draft.with_text(text[len(context.prefix) : at].rstrip())
        return draft

    return trim_unbalanced_brackets


def trim_trailing_space() -> Filter:
    """Trailing whitespace and newlines would push the text after the cursor around."""

    def trim_trailing_space(draft: Draft, context: DraftContext) -> Draft | None:
        text = draft.text.rstrip()
        return draft if text == draft.text else draft.with_text(text)

    return trim_trailing_space


def normalize_whole_line() -> Filter:
    """A finished line written where the cursor's line already holds code after it goes in as a line
    of its own (its newline, then the cursor line's indentation again), not glued onto that code.

    The model wrote that newline: the line stop cut it. Without it, accepting the draft would join
    it to the code after the cursor, and the syntax check would judge that joined line: a complete
    statement would rank as broken, and a draft ending in a comment (which swallows the rest of the
    line) as valid.
    """

    def normalize_whole_line(draft: Draft, context: DraftContext) -> Draft | None:
        if context.multiline or not draft.finished or "\n" in draft.text:
            return draft
        if context.line_prefix.strip() or not context.line_suffix.strip():
            return draft
        return dataclasses.replace(draft, text=draft.text + "\n" + context.line_prefix)

    return normalize_whole_line


def trim_incomplete_character() -> Filter:
    """A draft whose last token ends inside a multi-byte character (byte-level BPE, cut at the token
    limit) decodes to a trailing U+FFFD: never what the user typed toward, and some editors reject it."""

    def trim_incomplete_character(draft: Draft, context: DraftContext) -> Draft | None:
        text = draft.text.rstrip("\ufffd")
        return draft if text == draft.text else draft.with_text(text)

    return trim_incomplete_character


def build_filters(config: PostprocessConfig) -> list[Filter]:
    """The one ordered list of post-processing steps."""
    return [
        drop_blank(),
        trim_incomplete_character(),
        trim_leading_blank_lines(),
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


# ---- ranking ------------------------------------------------------------------------------------

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


def merge_duplicates(drafts: Sequence[Draft]) -> list[Draft]:
    """Drafts that read the same (trailing whitespace aside) are one suggestion: keep the best score."""
    best: dict[str, Draft] = {}
    for draft in drafts:
        key = _normalized(draft.text)
        if key not in best or draft.score > best[key].score:
            best[key] = draft
    return sorted(best.values(), key=lambda d: -d.score)


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
