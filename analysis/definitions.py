"""Where the names used near a cursor are defined in other workspace files (jedi), for repository context.

A completion often needs a name defined in another file: the class whose method is being called, the
helper being passed arguments, the constant being compared with. The code before the cursor names them;
jedi's `goto` (imports followed) finds where they are defined, and for a name defined here (a local
variable, `self.parser`) `infer` finds its type's class in another file. Only definitions in other files of the
workspace count (the document itself is already in the cache; the standard library and installed
packages are what the model has seen in training), and their text is read through
`WorkspaceFiles.read`, never from outside the workspace roots.

Jedi is shared with the monitors (its caches are process-wide, so it runs under the same lock as
`jedi_service`) and can be slow the first time a module loads: a lookup has a time budget, past which it
returns what it found so far. Answers are cached per (file, dotted name, the file's import lines), so the
next request starts where the last one stopped and typing in a function asks jedi nothing new.
This module runs no model: it returns places (`Definition`), and `completion/context/` makes snippets.
"""

from __future__ import annotations

import hashlib
import keyword
import logging
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jedi

from superpie.analysis.jedi_service import JEDI_LOCK, position
from superpie.analysis.workspace_files import WorkspaceFiles

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)*")
_SKIP = frozenset(keyword.kwlist) | {"self", "cls", "True", "False", "None", "print", "len", "super"}
DefinitionKind = Literal["class", "function", "statement", "module"]
_KINDS: dict[str, DefinitionKind] = {
    "class": "class",
    "instance": "class",  # an inferred instance (`p = Point()`): its class
    "function": "function",
    "statement": "statement",
    "module": "module",
}


@dataclass(frozen=True)
class Definition:
    """A definition in another workspace file: the name used near the cursor and the lines that define it."""

    name: str  # the dotted name as used near the cursor ("shapes.Point", "p.scale")
    path: Path  # the defining file, resolved, inside the workspace
    start_line: int  # 0-based first line of the definition
    end_line: int  # 0-based line after its last one
    kind: DefinitionKind = "statement"  # a module is a whole file: start 0, end 1


def names_near(code: str, offset: int, lines_before: int, lines_after: int, limit: int) -> list[tuple[str, int]]:
    """Dotted names used within the lines around `offset`, nearest the cursor first, each once: (name, the
    offset of its last part's start in `code`, the place jedi is asked about)."""
    line_start = code.rfind("\n", 0, offset) + 1
    start = line_start
    for _ in range(lines_before):
        if start == 0:
            break
        start = code.rfind("\n", 0, start - 1) + 1
    end = code.find("\n", offset)
    for _ in range(lines_after):
        if end < 0:
            break
        end = code.find("\n", end + 1)
    end = len(code) if end < 0 else end
    found: dict[str, tuple[int, int]] = {}
    for m in _NAME.finditer(code, start, end):
        if _in_comment(code, m.start()):
            continue  # a comment's words are not uses
        dotted = re.sub(r"\s+", "", m.group())
        parts = dotted.split(".")
        if parts[-1] in _SKIP or m.end() == offset:  # the word being typed is not a use yet
            continue
        at = m.start() + m.group().rfind(parts[-1])
        distance = offset - m.end() if m.end() <= offset else 2 * (m.start() - offset)  # before the cursor first
        if dotted not in found or distance < found[dotted][0]:
            found[dotted] = (distance, at)
    nearest = sorted(found.items(), key=lambda item: item[1][0])
    return [(name, at) for name, (_, at) in nearest[:limit]]


def _in_comment(code: str, at: int) -> bool:
    """Whether `at` lies after a `#` that starts a comment on its line (a `#` inside quotes does not; the
    quotes are counted on the line only, enough for the lines near a cursor)."""
    line_start = code.rfind("\n", 0, at) + 1
    hash_at = code.find("#", line_start, at)
    while hash_at >= 0:
        before = code[line_start:hash_at]
        if before.count('"') % 2 == 0 and before.count("'") % 2 == 0:
            return True
        hash_at = code.find("#", hash_at + 1, at)
    return False


_FROM_IMPORT = re.compile(r"^[ \t]*from[ \t]+[\w.]+[ \t]+import[ \t]+(\([^)]*\)?|[^\n]*)", re.M)
_IMPORTED = re.compile(r"([A-Za-z_]\w*)(?:\s+as\s+([A-Za-z_]\w*))?")


def imported_near(code: str, offset: int, limit: int) -> list[tuple[str, int]]:
    """Names bound by `from ... import` before `offset`, most recently used first (a name imported from
    another module is a likely next use even when no line near the cursor names it yet): (the bound name,
    the offset of the imported name in its import statement, where jedi follows it to its definition)."""
    found: list[tuple[int, str, int]] = []
    for m in _FROM_IMPORT.finditer(code, 0, offset):
        body, base = m.group(1).split("#")[0], m.start(1)
        for n in _IMPORTED.finditer(body):
            bound = n.group(2) or n.group(1)
            if bound in _SKIP:
                continue
            uses = [u.start() for u in re.finditer(rf"\b{re.escape(bound)}\b", code[m.end() : offset])]
            last = m.end() + uses[-1] if uses else m.start()
            found.append((last, bound, base + n.start(1)))
    found.sort(reverse=True)
    return [(bound, at) for _, bound, at in found[:limit]]


def _imports_key(code: str) -> str:
    lines = (ln.strip() for ln in code.splitlines() if ln.lstrip().startswith(("import ", "from ")))
    return hashlib.blake2b("\n".join(lines).encode(), digest_size=8).hexdigest()


class DefinitionFinder:
    """Definitions in other workspace files of the names used near a cursor, within a time budget."""

    def __init__(self, workspace: str | Path, cache_size: int = 1024) -> None:
        self.root = Path(workspace).resolve()
        self.files = WorkspaceFiles([self.root])
        self.project = jedi.Project(self.root)
        self._cache: OrderedDict[tuple[str | None, str, str], tuple[Definition, ...]] = OrderedDict()
        self._cache_size = cache_size
        self.asked = 0  # jedi questions asked (tests, statistics)

    def forget(self) -> None:
        """Drop every cached answer (a workspace file changed: a definition may have moved)."""
        self._cache.clear()

    def near(
        self,
        path: str | None,
        code: str,
        offset: int,
        budget_s: float = math.inf,
        lines_before: int = 12,
        lines_after: int = 2,
        max_names: int = 16,
        max_imported: int = 16,
    ) -> list[Definition]:
        """The definitions of the names used around `offset` in `code` (the document at `path`), nearest
        name first, then of the names it imports (`imported_near`), each place once; at most `budget_s`
        seconds of jedi (inf: wait for every answer)."""
        deadline = time.perf_counter() + budget_s
        here = None if path is None else Path(path).resolve()
        imports = _imports_key(code)
        out: list[Definition] = []
        seen: set[tuple[Path, int]] = set()
        script: jedi.Script | None = None
        near = names_near(code, offset, lines_before, lines_after, max_names)
        named = {n for n, _ in near}
        imported = [(n, at) for n, at in imported_near(code, offset, max_imported) if n not in named]
        for k, (name, at) in enumerate(near + imported):
            key = (None if here is None else str(here), name, imports)
            found = self._cache.get(key)
            if found is None:
                if time.perf_counter() > deadline:
                    continue  # not asked: a later request finds it
                if script is None:
                    script = jedi.Script(code=code, path=here, project=self.project)
                answer = self._goto(script, code, at, here, name, deadline, infer=k < len(near))
                if answer is None:
                    continue
                found = self._remember(key, answer)
            else:
                self._cache.move_to_end(key)
            for d in found:
                if (d.path, d.start_line) not in seen:
                    seen.add((d.path, d.start_line))
                    out.append(d)
        return out

    def _goto(
        self, script: jedi.Script, code: str, at: int, here: Path | None, name: str, deadline: float, infer: bool
    ) -> tuple[Definition, ...] | None:
        """Where `name` is defined; with `infer`, when that is not in another workspace file (a local variable,
        `self.parser`), where its type is: `p = Point()` leads to class `Point`."""
        timeout = deadline - time.perf_counter()
        if not JEDI_LOCK.acquire(timeout=-1 if math.isinf(timeout) else max(0.0, timeout)):
            return None
        try:
            self.asked += 1
            where = position(code, at)
            found = tuple(d for n in script.goto(*where, follow_imports=True) if (d := self._definition(n, here, name)))
            if not found and infer and time.perf_counter() < deadline:
                self.asked += 1
                found = tuple(d for n in script.infer(*where) if (d := self._definition(n, here, name)))
            return found
        except Exception:  # jedi is third-party and fails in many ways on unfinished code
            log.debug("jedi goto failed for %s", name, exc_info=True)
            return ()
        finally:
            JEDI_LOCK.release()

    def _definition(self, n: jedi.api.classes.Name, here: Path | None, name: str) -> Definition | None:
        kind = _KINDS.get(n.type)  # an inferred instance: its class
        if kind is None or n.module_path is None or n.in_builtin_module():
            return None
        target = Path(n.module_path).resolve()
        if target == here or not self.files.contains(target):
            return None
        if kind == "module":
            return Definition(name, target, 0, 1, kind)
        start, end = n.get_definition_start_position(), n.get_definition_end_position()
        if start is None or end is None:
            return None
        return Definition(name, target, start[0] - 1, end[0] if end[1] > 0 else end[0] - 1, kind)

    def _remember(self, key: tuple[str | None, str, str], found: tuple[Definition, ...]) -> tuple[Definition, ...]:
        self._cache[key] = found
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return found
