"""The seam between superpie and a serving engine: what a remote request holds, what comes back, the client type.

superpie stays the editor-side brain (documents, post-processing, ranking); a serving engine only
turns a prompt into k continuations. Each HTTP API (llama.cpp's own, the OpenAI-compatible one of
vLLM and SGLang) is an `EngineClient`; `remote.RemoteBackend` picks one at start-up and turns its
`EngineReply` into the same `Draft`s the local decoder makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from superpie.completion.decoding.task import Cancelled


class EngineDown(Exception):
    """The engine could not be reached or did not answer in time (after the bounded retries)."""


class EngineRefused(Exception):
    """The engine answered with an error that retrying will not change (a 4xx, a malformed answer)."""


@dataclass(frozen=True)
class Prompt:
    """What is sent: stable material first (`prefix`: the file from a window start up to the line being
    typed; `suffix`: the text after the cursor), the text being typed last (`line`), so typing extends the
    engine's cached prefix instead of invalidating it."""

    prefix: str  # the window of the document before the current line
    line: str  # the current line up to the cursor
    suffix: str = ""  # after the cursor (sent only where the API takes one: llama.cpp /infill)

    @property
    def text(self) -> str:
        """The plain prompt of an API without fill-in-the-middle."""
        return self.prefix + self.line


@dataclass(frozen=True)
class EngineRequest:
    """One completion asked of the engine: k continuations of `prompt`."""

    prompt: Prompt
    drafts: int
    max_tokens: int
    stop: tuple[str, ...]
    temperature: float  # 0: greedy (one draft); > 0 samples the k drafts
    logit_bias: tuple[tuple[int, float], ...] = ()
    # a monitored identifier: the continuation must be one of these (suffixes of the allowed names, "" where
    # what is typed is already a name) and then one non-identifier character, and nothing more
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineDraft:
    """One continuation as the engine returned it."""

    text: str
    token_texts: tuple[str, ...] = ()  # per token, where the engine reports them (log-probs asked for)
    token_ids: tuple[int, ...] = ()
    token_logprobs: tuple[float, ...] = ()
    finished: bool = True  # the engine stopped on a stop string or end of text, not on the token budget
    token_constrained: tuple[bool, ...] = ()  # per token: spelled under a monitor's constraint (a re-asked name)


@dataclass(frozen=True)
class EngineReply:
    """The engine's answer to one request."""

    drafts: tuple[EngineDraft, ...]
    endpoint: str  # the path that answered ("/infill", "/completion", "/v1/completions")
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens the engine took from its prefix cache, where it says
    requests: int = 1  # HTTP requests this answer took (k drafts in one where the API allows)


@dataclass(frozen=True)
class EngineInfo:
    """What start-up detection found."""

    api: str  # "llama.cpp" | "openai"
    url: str
    model: str
    context_length: int | None = None
    features: tuple[str, ...] = field(default=())  # e.g. "n_cmpl", "infill", "logprobs"


class EngineClient(Protocol):
    """One serving engine's HTTP API."""

    api: str
    # whether `complete` honours `EngineRequest.allowed` (a grammar, a regex); known after `detect`
    constrains: bool

    def detect(self) -> EngineInfo:
        """What the engine serves; `EngineDown` when it does not answer, `EngineRefused` when it is not this API."""
        ...

    def complete(self, request: EngineRequest, cancelled: Cancelled) -> EngineReply:
        """k continuations of the prompt; stops waiting (and closes the connection) as soon as `cancelled()`."""
        ...
