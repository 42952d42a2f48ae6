"""Defaults of a document cache, in a module of their own so the configuration tree can read them
without importing torch (the language server answers `initialize` before anything heavy is loaded)."""

STALE_THRESHOLD = 16384  # stale tokens, summed over edits, before an exact re-encode
WINDOW_STEP = 256  # the window slides by this many tokens
OPEN_WINDOW = 512  # a newly opened document longer than this is encoded around the cursor first (cache/opening.py)
OPEN_CHUNK = 256  # ... and the rest this many tokens per idle step (an idle refresh too)
