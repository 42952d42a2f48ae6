"""What a front door asks the engine for, and what it gets back (plain values, no LSP types).

Positions are Python string offsets; the front doors (LSP, CLI, replay) convert their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from superpie.cache.document import SyncStats
from superpie.completion.draft import Draft

if TYPE_CHECKING:
    from superpie.completion.backend.remote import RemoteStats
    from superpie.completion.constraints.monitor import MonitorTrace
    from superpie.completion.decoding.speculative import SpeculationStats


@dataclass(frozen=True)
class CompletionRequest:
    """A completion at `offset` (a Python str index) of `text`, the document's current text.

    Every None field means "the configuration's value" (`config.decoding`, `config.monitors`).
    """

    uri: str
    text: str
    offset: int
    max_tokens: int | None = None
    drafts: int | None = None
    strategy: str | None = None
    multiline: bool | None = None
    monitors: bool | None = None
    speculate: bool | None = None


@dataclass
class CompletionResult:
    """Ranked drafts (best first) plus what they cost."""

    completions: list[Draft]
    timings_ms: dict[str, float]
    cache: SyncStats
    cancelled: bool = False
    strategy: str = "greedy"
    monitors: MonitorTrace | None = None  # what the monitors did (firings, jedi and mask times); None: off
    # why `completions` is empty: "stopped" (cancelled while decoding), "blank" (every draft was whitespace:
    # the model ended at once), "cut" (post-processing kept nothing), "engine_down" / "engine_error" (a remote
    # serving engine did not answer / refused); None when there are completions
    empty_reason: str | None = None
    speculation: SpeculationStats | None = None  # what speculative decoding did (None: it did not run)
    remote: RemoteStats | None = None  # what a serving engine did (None: the local model answered alone)
    carried: bool = False  # the rest of the document's last answer, which the user typed along (completion/carry.py)
    # stale tokens re-encoded exactly because greedy decoding over them met a close call (cache.close_call_margin)
    close_call_refreshed: int = 0
