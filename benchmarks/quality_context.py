"""The repository-context setup the quality benchmarks share: a site's project as the engine's workspace.

benchmarks/repo_context.py and benchmarks/quality.py (its `+ctx` rows) complete each site at the file's real
path with its project as the workspace, so jedi resolves the file's imports (relative ones too) and finds the
definitions in the project's other files; the recent-activity memory is cleared per site, so what context
adds is the definitions of the names near the cursor, not the previous site's region.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from superpie.completion.context.activity import RecentActivity
from superpie.completion.engine import Engine

SKIPPED = {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__"}  # folders no site comes from
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def use_workspace(engine: Engine, root: str, enabled: bool = True) -> None:
    """Make `root` the engine's workspace, context on or off, with no memory of earlier sites' edits."""
    engine.config.workspace = root
    engine.config.context.enabled = enabled
    engine.repository_context().activity = RecentActivity()  # definitions only, not the last site's region


def cross_file(path: str, root: str, answer: str) -> bool:
    """Whether `answer` (the removed line) names something its file imports by `from ... import` and another
    file of its project defines at module level: the sites where repository context has something to add
    (benchmarks/repo_context.py's rule, applied to quality.py's sites)."""
    from repo_context import imported_names  # here: repo_context imports quality, which imports this module

    names = set(_IDENT.findall(answer)) & imported_names(_tree(Path(path)))
    where = _definitions(root)
    return any(name in where and path not in where[name] for name in names)


@functools.cache
def _tree(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ast.Module(body=[], type_ignores=[])


@functools.cache
def _definitions(root: str) -> dict[str, set[str]]:
    """Module-level name -> the files of `root` that define it."""
    from repo_context import defined_names

    where: dict[str, set[str]] = {}
    for f in sorted(Path(root).rglob("*.py")):
        if set(f.relative_to(root).parts) & SKIPPED:
            continue
        for name in defined_names(_tree(f)):
            where.setdefault(name, set()).add(str(f))
    return where
