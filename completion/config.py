"""One typed configuration tree shared by the CLI, the server and the Python API.

Each component receives only its slice (`ModelConfig`, `CacheConfig`, `DecodingConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

STRATEGIES = ("greedy", "superposed", "beam")


@dataclass
class ModelConfig:
    """Which model to run and how."""

    path: str | None = None  # None: the embedded default model
    dtype: str = "float32"
    threads: int | None = None  # None: the cores this process may use


@dataclass
class CacheConfig:
    """How document caches follow edits and how much memory they may hold."""

    mode: str = "pie"  # pie | exact | full
    stale_threshold: int = 16384  # stale tokens, summed over edits, before an exact re-encode
    context_tokens: int = 4096  # window of a document the model sees (capped by the model's context)
    window_step: int = 256
    memory_budget_mb: int = 2048  # all documents' KV together; least recently used evicted


@dataclass
class DecodingConfig:
    """How drafts are decoded."""

    max_tokens: int = 32
    drafts: int = 1
    strategy: str = "greedy"
    multiline: bool = False  # False: stop at the end of the current line


@dataclass
class EngineConfig:
    """Everything the `Engine` needs."""

    workspace: str | None = None  # project root for static analysis and the n-gram index
    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
