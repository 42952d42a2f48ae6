"""The monitors of monitor-guided decoding (Agrawal et al. 2023) and the analyzer that owns jedi.

A monitor recognises a situation at the end of the text being decoded (cheap checks from
analysis.monitor_triggers, never inside strings or comments), asks jedi once for the valid names, and
returns a MonitorState that decoding advances locally. jedi sees the whole document with the draft
inserted at the cursor, so imports and other workspace modules resolve. Monitors:

- dereference: `expr.` + identifier chars -> expr's attributes; each new `.` of a chain fires again.
- import: `import a.`, `from a.`, `from a import ` -> module and member names.
- keyword_argument: an argument start in a call -> the callee's keyword-capable parameter names.
  A positional expression is just as valid there, so this state never constrains
  (constrains=False, allowed_continuations() is empty); the names are a hint for biasing or ranking.
- names_in_scope (off by default): a name begun after `=`, `return`, `await` or `yield` must be a
  name jedi knows or a keyword. Off by default because jedi cannot know names that the draft is about
  to define (comprehension variables, names bound later in the draft).

A monitor constrains only on a positive answer. A monitor must never make a completion worse for
lack of knowledge, and jedi's lists are incomplete in known ways; then the state is silent (it
spells nothing, `silent` says why, the jedi stats count it under "monitor.reason"):

- nothing: jedi inferred nothing (an unknown object, `Any`): no state at all;
- object_only: every name is a dunder, i.e. jedi knows only what every object has (a bare `object`,
  `None`, a parameter inferred from its `None` default) and the real attribute is not among them;
- dynamic: the object's class or module answers attributes at run time (`__getattr__`, a
  `__getattribute__` of its own: ctypes libraries, PEP 562 modules, proxies), for `obj.` and
  `from m import `; or, for `self.`, the class sets attributes by name (`setattr(self, ...)`,
  `self.__dict__`), which jedi cannot follow;
- unresolved_base: an object's list without `__class__` (every object has one; a module's list has
  `__package__` instead): jedi did not follow the class's bases up to `object` (a base class it
  cannot resolve, `class A(Unknown)`), so the inherited attributes are missing;
- unlisted: the document itself spells `expr.name` for the same dotted name in the scope where it is
  the same object (for `self.` the enclosing class, else the enclosing function), and jedi does not
  list `name`: jedi's view of the object is incomplete (a base class it cannot resolve, an attribute
  a subclass or a caller sets), so its list must not decide;
- defines: `self.` starts a statement in an `__init__`, where a statement usually assigns an attribute
  that no list can hold before it is defined (`self.msg = msg`; held-out losses of issue 15 and 14);
- var_keyword: the callee takes `**kwargs`, so any keyword may follow (a hint only, but a wrong one);
- star_import: names in scope, in a module with `from m import *` (jedi may not know m's names).

Usage per completion request: `monitors = analyzer.monitors(path, text_after_cursor)`, then per draft
and step `state = monitors.step(state, text_before, emitted)` and `mask_for(state, trie, vocab_size)`.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from superpie.analysis import monitor_triggers as triggers
from superpie.analysis.defaults import JEDI_BUDGET_MS
from superpie.analysis.jedi_service import JediAnswer, JediService, JediStats
from superpie.analysis.monitor_state import Monitor, MonitorState, mask_for
from superpie.analysis.syntax import region_at

__all__ = ["Analyzer", "AnalyzerConfig", "Monitor", "MonitorSet", "MonitorState", "mask_for"]

_KEYWORDS = (*keyword.kwlist, *keyword.softkwlist)


@dataclass(frozen=True)
class AnalyzerConfig:
    """Which monitors run and how long jedi may take per question."""

    budget_ms: float = JEDI_BUDGET_MS
    dereference: bool = True
    imports: bool = True
    keyword_arguments: bool = True
    names_in_scope: bool = False
    environment_path: str | None = None  # the Python environment jedi resolves imports in


@dataclass(frozen=True)
class DocumentContext:
    """What every monitor of one request shares: jedi, the document path and the text after the cursor."""

    jedi: JediService
    path: str | None
    text_after: str


_STAR_IMPORT = re.compile(r"^[ \t]*from[ \t]+[\w.]+[ \t]+import[ \t]+\*", re.MULTILINE)


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


class _JediMonitor:
    """A monitor that fires at a trigger point and asks one jedi question there."""

    name = ""
    question = "complete"  # the kind of jedi question this monitor asks
    constrains = True  # False: the names are only a hint (keyword arguments)

    def __init__(self, context: DocumentContext):
        self.context = context

    def _point(self, text_before: str) -> triggers.TriggerPoint | None:
        raise NotImplementedError

    def _ask(self, code: str, offset: int) -> JediAnswer:
        ctx = self.context
        return ctx.jedi.completions(ctx.path, code, offset)

    def _not_positive(self, answer: JediAnswer, code: str, at: int) -> str:
        """Why answer's names (for the identifier starting at `at` in code) are not the whole list of what
        may follow ("" when they are)."""
        if answer.open_by:
            return "dynamic"
        return "object_only" if all(_is_dunder(name) for name in answer.names) else ""

    def _state(self, point: triggers.TriggerPoint, answer: JediAnswer, code: str) -> MonitorState | None:
        """The state for jedi's answer at a trigger point; silent (and counted) unless the answer is positive."""
        if answer.fell_back:
            return MonitorState(self.name, point.typed, (), fell_back=True, constrains=self.constrains)
        jedi = self.context.jedi
        if not answer.names:
            jedi.count_silenced(f"{self.name}.nothing")
            return None  # jedi knows nothing here: unconstrained
        reason = self._not_positive(answer, code, point.start)
        if reason:
            jedi.count_silenced(f"{self.name}.{reason}")
            return MonitorState(self.name, point.typed, answer.names, constrains=False, silent=reason)
        return MonitorState(self.name, point.typed, answer.names, constrains=self.constrains)

    def prefetch(self, text_before: str) -> None:
        """Start jedi on the question `trigger` would ask here, without waiting for the answer."""
        point = self._point(text_before)
        if point is not None and region_at(text_before, len(text_before)) == "code":
            ctx = self.context
            ctx.jedi.prefetch(self.question, ctx.path, text_before[: point.start] + ctx.text_after, point.start)

    def trigger(self, text_before: str) -> MonitorState | None:
        """The state when text_before ends in this monitor's situation, else None."""
        point = self._point(text_before)
        if point is None or region_at(text_before, len(text_before)) != "code":
            return None
        # jedi is asked where the identifier starts, so one answer serves every prefix of it
        code = text_before[: point.start] + self.context.text_after
        return self._state(point, self._ask(code, point.start), code)


class DereferenceMonitor(_JediMonitor):
    """After `expr.` only expr's attributes may be spelled."""

    name = "dereference"

    def _point(self, text_before: str) -> triggers.TriggerPoint | None:
        return triggers.dereference_point(text_before)

    def _not_positive(self, answer: JediAnswer, code: str, at: int) -> str:
        reason = super()._not_positive(answer, code, at)
        if not reason and not {"__class__", "__package__"} & set(answer.names):
            reason = "unresolved_base"  # every object has __class__ (modules: jedi lists __package__ instead)
        if not reason and triggers.defines_attribute(code, at - 1):
            reason = "defines"
        spelled = None if reason else triggers.attributes_spelled(code, at - 1)
        if spelled is None:
            return reason
        if spelled.dynamic:
            return "dynamic"
        return "unlisted" if spelled.names - set(answer.names) else ""


class ImportMonitor(_JediMonitor):
    """In import statements only existing modules and members may be spelled."""

    name = "import"

    def _point(self, text_before: str) -> triggers.TriggerPoint | None:
        return triggers.import_point(text_before)


class KeywordArgumentMonitor(_JediMonitor):
    """At an argument start, records the callee's parameter names (a hint, never a constraint)."""

    name = "keyword_argument"
    question = "keywords"
    constrains = False

    def _point(self, text_before: str) -> triggers.TriggerPoint | None:
        return triggers.call_argument_point(text_before)

    def _ask(self, code: str, offset: int) -> JediAnswer:
        ctx = self.context
        return ctx.jedi.keyword_parameters(ctx.path, code, offset)

    def _not_positive(self, answer: JediAnswer, code: str, at: int) -> str:
        return "var_keyword" if answer.open_by else ""


class NamesInScopeMonitor(_JediMonitor):
    """A name begun at an expression start must be a name in scope or a keyword."""

    name = "names_in_scope"

    def _point(self, text_before: str) -> triggers.TriggerPoint | None:
        return triggers.expression_start_point(text_before)

    def _ask(self, code: str, offset: int) -> JediAnswer:
        answer = super()._ask(code, offset)
        if answer.fell_back or not answer.names:
            return answer
        return JediAnswer(tuple(dict.fromkeys(answer.names + _KEYWORDS)))

    def _not_positive(self, answer: JediAnswer, code: str, at: int) -> str:
        # a module `__getattr__` (answer.open_by) serves other modules' imports, not the names in scope here
        return "star_import" if _STAR_IMPORT.search(code) else ""


class MonitorSet:
    """The monitors of one completion request, tried in order; the first that fires wins."""

    def __init__(self, monitors: Sequence[Monitor]):
        self.monitors = tuple(monitors)

    def trigger(self, text_before: str) -> MonitorState | None:
        """The state of the first monitor whose situation text_before ends in, else None."""
        for monitor in self.monitors:
            state = monitor.trigger(text_before)
            if state is not None:
                return state
        return None

    def prefetch(self, text_before: str) -> None:
        """Let jedi start on what the monitors would ask at the end of text_before (after an edit)."""
        for monitor in self.monitors:
            monitor.prefetch(text_before)

    def step(self, state: MonitorState | None, text_before: str, emitted: str) -> MonitorState | None:
        """After a draft emitted text (text_before includes it): advance the state, or look for a new one."""
        if state is not None:
            advanced = state.advance(emitted)
            if advanced is not None:
                return advanced
        return self.trigger(text_before)


_MONITORS: tuple[tuple[str, Callable[[DocumentContext], Monitor]], ...] = (
    ("imports", ImportMonitor),  # before dereference: `from a.` is a module path
    ("dereference", DereferenceMonitor),
    ("keyword_arguments", KeywordArgumentMonitor),
    ("names_in_scope", NamesInScopeMonitor),
)


_PRIME_CODE = "import os\nos.path."  # builtins, `os` and `posixpath`: what most first questions need
_PRIME_BUDGET_S = 5.0  # about 1 s cold here; past it the first requests may meet jedi still loading


class Analyzer:
    """Owns jedi for one workspace and hands out the monitors of each completion request."""

    def __init__(self, workspace: str | Path, config: AnalyzerConfig | None = None):
        self.config = config or AnalyzerConfig()
        self.jedi = JediService(
            workspace, budget_s=self.config.budget_ms / 1000, environment_path=self.config.environment_path
        )

    def monitors(self, path: str | Path | None, text_after: str = "") -> MonitorSet:
        """The enabled monitors for a request at a cursor; text_after is the document after the cursor."""
        context = DocumentContext(self.jedi, None if path is None else str(path), text_after)
        return MonitorSet([make(context) for flag, make in _MONITORS if getattr(self.config, flag)])

    def reconfigure(self, config: AnalyzerConfig) -> None:
        """Switch monitors or the jedi budget without a new jedi project (its caches stay warm)."""
        if config.environment_path != self.config.environment_path:
            raise ValueError("a new Python environment needs a new Analyzer")
        self.config = config
        self.jedi.budget_s = config.budget_ms / 1000

    def warm(self, path: str | Path | None, text: str) -> Future:
        """Run jedi once in the background when a document opens, so the first monitor is fast."""
        return self.jedi.warm(None if path is None else str(path), text)

    def prime(self, budget_s: float = _PRIME_BUDGET_S) -> bool:
        """Ask jedi one question about the standard library and wait for it (up to `budget_s`), so its builtins
        and the common stubs are loaded before the first request: loading them takes about a second, and
        while jedi's thread works it slows decoding on the other (the GIL). Whether jedi answered in time."""
        return not self.jedi.completions(None, _PRIME_CODE, len(_PRIME_CODE), budget_s=budget_s).fell_back

    def stats(self) -> JediStats:
        """Counters of jedi questions, cache hits, fallbacks and errors."""
        return self.jedi.stats_snapshot()

    def close(self) -> None:
        """Stop the jedi thread."""
        self.jedi.close()
