"""jedi behind one worker thread, a time budget per question, and a cache of answers.

jedi is not thread-safe and can be slow (first use of a module, a big inference), while decoding
cannot wait: each question gets a budget, and a question that misses it is answered "fell back"
(decoding goes on unconstrained) while jedi keeps working; its late answer is cached for the next time
the same question comes. One long-lived jedi.Project per workspace keeps jedi's module caches warm.

An infinite budget (the headless front doors' deterministic mode) waits for every answer, and a full
queue of prefetched questions then makes a question wait too instead of falling back: nothing that
decides a draft depends on how fast jedi was.

What jedi reads is bounded: a workspace is untrusted input, and `import huge` then `huge.` made jedi
read and parse a 200 MB module (2.5 GB). jedi reads modules two ways, and both are guarded:

- an import is resolved by `get_module_info` (in jedi's environment process), which reads the whole
  source file it finds; the guard finds the same file first (importlib's path finder, which only
  stats) and answers for it an empty module when it is larger than `MAX_SOURCE_BYTES`;
- stubs and other files go through parso's `FileIO.read`, replaced by `bounded_read`: opened
  without blocking (a FIFO called `x.pyi`), `fstat`-checked to be a regular file (not a link to
  `/dev/zero`) within the limit, read no further than that.
A module past the limit reads as empty: jedi knows no names in it, and the monitors leave drafts
after `huge.` unconstrained. jedi's own crop of the code it is given is set to the same limit.
"""

from __future__ import annotations

import importlib.machinery
import logging
import math
import os
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from inspect import Parameter
from pathlib import Path
from typing import Any

import jedi
import jedi.inference.compiled.subprocess as jedi_processes
import parso
import parso.file_io
from jedi.file_io import KnownContentFileIO

from superpie.analysis.workspace_files import MAX_SOURCE_BYTES

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_KEYWORD_KINDS = (Parameter.POSITIONAL_OR_KEYWORD, Parameter.KEYWORD_ONLY)
_ATTRIBUTE_HOOKS = ("__getattr__", "__getattribute__")  # methods that answer attributes no listing shows
_WARM_NAMES = 40  # names inferred when a document opens, to load its imports
# jedi's inference caches are process-wide: two services (an engine being replaced, tests) and the
# definitions lookup of the repository context (analysis/definitions.py) must not
# run it at once, or one thread sees the other's half-built state
JEDI_LOCK = threading.Lock()


def bounded_read(path: str | os.PathLike[str], limit: int = MAX_SOURCE_BYTES) -> bytes:
    """A module's bytes for jedi, or b"" when it is not a regular file within `limit` bytes (or grew past it)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise  # jedi expects this one (a module that vanished)
        log.debug("jedi does not read %s: %s", path, exc)
        return b""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            log.warning("jedi does not read %s: not a regular file within %d bytes", path, limit)
            return b""
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        log.debug("jedi does not read %s: %s", path, exc)
        return b""
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return b"" if len(data) > limit else data


def _parso_read(self: parso.file_io.FileIO) -> bytes:
    """parso's `FileIO.read` (jedi's too: its FileIO inherits it), bounded."""
    return bounded_read(self.path)


def _oversized_source(name: str | None, search: list[str] | None) -> tuple[KnownContentFileIO, bool] | None:
    """An empty module for an import that resolves to a source file jedi must not read, else None."""
    if not name:
        return None
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, list(search) if search is not None else None)
    except (ImportError, ValueError, OSError):
        return None
    if spec is None or not spec.origin or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
        return None
    try:
        st = os.stat(spec.origin)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_SOURCE_BYTES:
        return None
    log.warning("jedi does not read %s: not a regular file within %d bytes", spec.origin, MAX_SOURCE_BYTES)
    return KnownContentFileIO(spec.origin, b""), spec.submodule_search_locations is not None


def _guarded(lookup: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """A jedi process proxy's `__getattr__` whose `get_module_info` refuses oversized sources first."""

    def __getattr__(self: Any, name: str) -> Any:
        found = lookup(self, name)
        if name != "get_module_info":
            return found

        def get_module_info(sys_path: list[str] | None = None, **kwargs: Any) -> Any:
            search = sys_path if kwargs.get("is_global_search", True) else kwargs.get("path")
            return _oversized_source(kwargs.get("string"), search) or found(sys_path=sys_path, **kwargs)

        return get_module_info

    return __getattr__


def _bound_what_jedi_reads() -> None:
    """Guard both ways jedi reads modules (see the module's docstring); crop given code to the same limit."""
    parso.file_io.FileIO.read = _parso_read  # type: ignore[method-assign]
    for proxy in (jedi_processes.InferenceStateSameProcess, jedi_processes.InferenceStateSubprocess):
        proxy.__getattr__ = _guarded(proxy.__getattr__)
    jedi.settings._cropped_file_size = MAX_SOURCE_BYTES


_bound_what_jedi_reads()


@dataclass
class JediStats:
    """Counters that say how often jedi kept up with decoding."""

    questions: int = 0
    cache_hits: int = 0
    fallbacks: int = 0  # answers that missed their budget (or were not asked: queue full)
    errors: int = 0  # jedi raised
    late_answers: int = 0  # answers that came after their budget and were cached
    # monitors that stayed silent on a non-positive answer, by "monitor.reason" (analysis.monitors counts)
    silenced: dict[str, int] = field(default_factory=dict)
    seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1024), repr=False)  # per answer


@dataclass(frozen=True)
class JediAnswer:
    """Names jedi gave for one question; fell_back when it could not answer within the budget.

    `open_by` carries what makes `names` an incomplete list, so that a monitor can tell a positive
    answer from one it must not constrain on: the `__getattr__`/`__getattribute__` hooks (full names)
    of the object's class or module that answer any attribute at run time (`ctypes.CDLL.__getattr__`,
    a PEP 562 module's `__getattr__`), or a callee's `**kwargs` parameters (`f(**kwargs)`).
    """

    names: tuple[str, ...]
    fell_back: bool = False
    open_by: tuple[str, ...] = ()


def position(code: str, offset: int) -> tuple[int, int]:
    """jedi's (1-based line, 0-based column in characters) for a str offset, with parso's line breaks."""
    lines = parso.split_lines(code[:offset])
    return len(lines), len(lines[-1])


def _completion_names(script: jedi.Script, line: int, column: int) -> JediAnswer:
    completions = script.complete(line, column)
    hooks = (c.full_name or c.name for c in completions if c.name in _ATTRIBUTE_HOOKS)
    # object's own hooks (builtins.object.__getattribute__) are on every object and answer nothing extra
    return JediAnswer(
        tuple(dict.fromkeys(c.name for c in completions)),
        open_by=tuple(dict.fromkeys(h for h in hooks if not h.startswith("builtins."))),
    )


def _keyword_names(script: jedi.Script, line: int, column: int) -> JediAnswer:
    params = [p for sig in script.get_signatures(line, column) for p in sig.params]
    names = (p.name for p in params if p.kind in _KEYWORD_KINDS)
    var_keyword = (f"**{p.name}" for p in params if p.kind == Parameter.VAR_KEYWORD)
    return JediAnswer(tuple(dict.fromkeys(names)), open_by=tuple(dict.fromkeys(var_keyword)))


_QUESTIONS: dict[str, Callable[[jedi.Script, int, int], JediAnswer]] = {
    "complete": _completion_names,
    "keywords": _keyword_names,
}


class JediService:
    """Answers completion and signature questions about a workspace, never blocking past a budget."""

    def __init__(
        self,
        workspace: str | Path,
        budget_s: float = 0.15,
        environment_path: str | None = None,
        cache_size: int = 256,
        max_pending: int = 4,
    ):
        self.project = jedi.Project(Path(workspace), environment_path=environment_path)
        self.budget_s = budget_s
        self.stats = JediStats()
        self._cache: OrderedDict[tuple, JediAnswer] = OrderedDict()
        self._cache_size = cache_size
        self._pending: dict[tuple, Future] = {}
        self._late: set[tuple] = set()
        self._max_pending = max_pending
        self._warmed: set[str | None] = set()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="superpie-jedi")

    def completions(self, path: str | None, code: str, offset: int, budget_s: float | None = None) -> JediAnswer:
        """Names jedi completes at offset in code (attributes, modules, names in scope)."""
        return self._ask("complete", path, code, offset, budget_s)

    def keyword_parameters(self, path: str | None, code: str, offset: int, budget_s: float | None = None) -> JediAnswer:
        """Parameter names that may be passed by keyword to the call around offset."""
        return self._ask("keywords", path, code, offset, budget_s)

    def prefetch(self, question: str, path: str | None, code: str, offset: int) -> None:
        """Start a question without waiting (an edit just made it likely), so the request finds it answered."""
        key = (question, path, offset, len(code), hash(code))
        with self._lock:
            if key in self._cache or key in self._pending or len(self._pending) >= self._max_pending:
                return
            self._pending[key] = self._executor.submit(self._compute, key, path, code, offset)

    def warm(self, path: str | None, text: str) -> Future:
        """Load a document's imports in the background when it opens, so later questions are fast."""
        with self._lock:
            if path in self._warmed:
                done: Future = Future()
                done.set_result(None)
                return done
            self._warmed.add(path)
        return self._executor.submit(self._warm, path, text)

    def stats_snapshot(self) -> JediStats:
        """A copy of the counters, safe to read while jedi works."""
        with self._lock:
            stats = self.stats
            return replace(stats, seconds=deque(stats.seconds, maxlen=1024), silenced=dict(stats.silenced))

    def count_silenced(self, reason: str) -> None:
        """Count a monitor that did not constrain because jedi's answer was not a positive one."""
        with self._lock:
            self.stats.silenced[reason] = self.stats.silenced.get(reason, 0) + 1

    def close(self) -> None:
        """Stop the worker thread (pending questions are dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _ask(self, kind: str, path: str | None, code: str, offset: int, budget_s: float | None) -> JediAnswer:
        key = (kind, path, offset, len(code), hash(code))
        with self._lock:
            self.stats.questions += 1
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.stats.cache_hits += 1
                return hit
            budget = self.budget_s if budget_s is None else budget_s
            timeout = None if math.isinf(budget) else budget
            future = self._pending.get(key)
            if future is None:
                if len(self._pending) >= self._max_pending and timeout is not None:
                    self.stats.fallbacks += 1
                    return JediAnswer((), fell_back=True)
                future = self._pending[key] = self._executor.submit(self._compute, key, path, code, offset)
        try:
            answer = future.result(timeout=timeout)
        except FutureTimeout:
            with self._lock:
                self.stats.fallbacks += 1
                self._late.add(key)
            return JediAnswer((), fell_back=True)
        return JediAnswer((), fell_back=True) if answer is None else answer

    def _compute(self, key: tuple, path: str | None, code: str, offset: int) -> JediAnswer | None:
        """Runs on the jedi thread only."""
        t0 = time.perf_counter()
        try:
            with JEDI_LOCK:
                script = jedi.Script(code=code, path=path, project=self.project)
                answer: JediAnswer | None = _QUESTIONS[key[0]](script, *position(code, offset))
        except Exception:  # jedi is third-party and fails in many ways on unfinished code
            log.warning("jedi failed on %s at offset %d", path, offset, exc_info=True)
            answer = None
        with self._lock:
            self._pending.pop(key, None)
            if answer is None:
                self.stats.errors += 1
                self._late.discard(key)
                return None
            self.stats.seconds.append(time.perf_counter() - t0)
            self._cache[key] = answer
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            if key in self._late:
                self._late.discard(key)
                self.stats.late_answers += 1
        return answer

    def _warm(self, path: str | None, text: str) -> None:
        """Runs on the jedi thread only."""
        try:
            with JEDI_LOCK:
                script = jedi.Script(code=text, path=path, project=self.project)
                script.complete(*position(text, len(text)))
                for name in script.get_names()[:_WARM_NAMES]:
                    name.infer()
        except Exception:
            log.warning("jedi warm-up failed on %s", path, exc_info=True)
