"""Shared pytest set-up: tests/ and its sub-folders are importable (tiny models, shared samples)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).parent
for _dir in sorted({p.parent for p in _TESTS.rglob("test_*.py")} | {_TESTS}, reverse=True):
    sys.path.insert(0, str(_dir))
