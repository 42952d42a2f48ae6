"""Defaults of the analysis services, in a module of their own so the configuration tree can read them
without importing jedi or torch (the language server answers `initialize` before anything heavy is loaded)."""

JEDI_BUDGET_MS = 150.0  # per jedi question; past it the draft goes on unconstrained
WATCHER_DEBOUNCE_MS = 200  # file-system events of one path are coalesced this long
