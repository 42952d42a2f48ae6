"""Which workspace files are source files worth reading: the rules the n-gram index and the watcher share."""

from __future__ import annotations

IGNORED_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", "__pycache__", "node_modules", "build", "dist", "venv", ".venv",
        "env", ".env", ".tox", ".nox", ".eggs", "site-packages", ".mypy_cache", ".pytest_cache",
        ".ruff_cache", ".ipynb_checkpoints",
    }
)  # fmt: skip
