"""The repository-context setup the quality benchmarks share: a site's project as the engine's workspace.

benchmarks/repo_context.py and benchmarks/quality.py (its `+ctx` rows) complete each site at the file's real
path with its project as the workspace, so jedi resolves the file's imports (relative ones too) and finds the
definitions in the project's other files; the recent-activity memory is cleared per site, so what context
adds is the definitions of the names near the cursor, not the previous site's region.
"""

from __future__ import annotations

from superpie.completion.context.activity import RecentActivity
from superpie.completion.engine import Engine


def use_workspace(engine: Engine, root: str, enabled: bool = True) -> None:
    """Make `root` the engine's workspace, context on or off, with no memory of earlier sites' edits."""
    engine.config.workspace = root
    engine.config.context.enabled = enabled
    engine.repository_context().activity = RecentActivity()  # definitions only, not the last site's region
