"""`superpie replay`: drive the engine with a recorded editing session (JSON lines).

Events mirror what an editor sends: `open`, `change` (LSP TextDocumentContentChangeEvent shapes,
UTF-16 positions) and `complete` (optional `max_tokens`, `drafts`: K, `strategy`: greedy | superposed |
beam, `monitors`: true | false, `speculate`: true | false). Each change is synced to the cache right
away, as the language server does in the background; a `complete` reports the sync work done since the
previous one.

The headless front doors run deterministically by default (`deterministic_config`): the same session
gives byte-for-byte the same output, so scripted tests can compare it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superpie.completion.config import STRATEGIES, EngineConfig
from superpie.completion.config.fields import replaced
from superpie.completion.draft import Draft
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest, CompletionResult
from superpie.lsp.documents import engine_text
from superpie.lsp.positions import apply_change, offset_at


def deterministic_config(config: EngineConfig) -> EngineConfig:
    """The tree with nothing left to timing: what the language server must decide within a deadline, the
    headless front doors wait for.

    - jedi has no budget (`monitors.jedi_budget_ms` = inf): whether a draft is constrained never depends
      on how fast jedi answered (a live server's answers that did are counted in its stats);
    - the n-gram index counts an open document's text on every request, not at most every
      `decoding.ngram_debounce_s` seconds;
    - the thread count is fixed before the model loads (the flag's, else the cores allowed minus one).
    Measured times are the one thing left that varies; deterministic output leaves them null.
    """
    from superpie.completion.model.loading import default_threads

    config = replaced(config, "monitors.jedi_budget_ms", math.inf)
    config = replaced(config, "decoding.ngram_debounce_s", 0.0)
    return replaced(config, "model.threads", config.model.threads or default_threads())


class ReplayError(ValueError):
    """A bad session line; the message names the line number."""


def completion_json(c: Draft) -> dict[str, Any]:
    """One completion in the JSON contract: text, score, and what the monitors said (null when off)."""
    return {"text": c.text, "score": c.score, "monitor": None if c.monitor is None else c.monitor.to_json()}


@dataclass
class ReplayOutput:
    """One `complete` event's result, in the CLI's JSON contract."""

    uri: str
    position: dict[str, int]
    result: CompletionResult

    def to_json(self, timings: bool = True) -> dict[str, Any]:
        """The documented output object of one complete event (`timings` False: the times are null)."""
        r = self.result
        return {
            "uri": self.uri,
            "position": self.position,
            "completions": [completion_json(c) for c in r.completions],
            "timings_ms": {k: round(r.timings_ms[k], 3) if timings else None for k in ("sync", "decode", "total")},
            "cache": {
                "mode": r.cache.mode,
                "reused": r.cache.reused,
                "encoded": r.cache.encoded,
                "rotated": r.cache.rotated,
            },
        }


def resolve_uri(uri: str, workspace: Path) -> str:
    """A `file://` URI as given; a bare path is taken relative to the workspace."""
    if "://" in uri:
        return uri
    return (workspace / uri).resolve().as_uri()


def read_events(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Parse the session file line by line (1-based line numbers); blank lines are skipped."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReplayError(f"cannot read session file '{path}': {exc.strerror}") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReplayError(f"session file '{path}' is not valid UTF-8 (byte offset {exc.start})") from None
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReplayError(f"line {number}: malformed JSON: {exc.msg}") from None
        if not isinstance(event, dict) or not isinstance(event.get("op"), str):
            raise ReplayError(f"line {number}: an event must be an object with a string 'op'")
        yield number, event


def _field(event: dict, name: str, kind: type, number: int):
    value = event.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ReplayError(f"line {number}: '{event['op']}' needs '{name}' ({kind.__name__})")
    return value


@dataclass(frozen=True)
class Step:
    """One event read against the session's texts: a document to sync, or a completion to ask for."""

    uri: str
    request: CompletionRequest | None  # None: `open` or `change`, the document's new text is in the texts
    position: dict[str, int]  # a `complete` event's position, as given


def read_step(texts: dict[str, str], number: int, event: dict[str, Any], workspace: Path) -> Step:
    """Check one event and apply it to `texts` (uri -> the document as the editor holds it); ReplayError on a
    bad field, a document never opened or a position past the end. No model is needed: `check_session` runs
    this over the whole file before one loads."""
    op = event["op"]
    uri = resolve_uri(_field(event, "uri", str, number), workspace)
    if op == "open":
        texts[uri] = _field(event, "text", str, number)
        return Step(uri, None, {})
    if uri not in texts:
        raise ReplayError(f"line {number}: document '{uri}' was never opened")
    if op == "change":
        text = texts[uri]
        for change in _field(event, "changes", list, number):
            try:
                text = apply_change(text, change)
            except ValueError as exc:
                raise ReplayError(f"line {number}: {exc}") from None
        texts[uri] = text
        return Step(uri, None, {})
    if op == "complete":
        return _complete_step(number, event, uri, texts[uri])
    raise ReplayError(f"line {number}: unknown op '{op}' (expected open, change or complete)")


def _complete_step(number: int, event: dict[str, Any], uri: str, text: str) -> Step:
    pos = _field(event, "position", dict, number)
    try:
        offset = offset_at(text, int(pos.get("line", -1)), int(pos.get("character", -1)))
    except (ValueError, TypeError) as exc:
        raise ReplayError(f"line {number}: {exc}") from None
    max_tokens = event.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        raise ReplayError(f"line {number}: 'max_tokens' must be a positive integer")
    drafts = event.get("drafts")
    if drafts is not None and (not isinstance(drafts, int) or isinstance(drafts, bool) or drafts <= 0):
        raise ReplayError(f"line {number}: 'drafts' must be a positive integer")
    strategy = event.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise ReplayError(f"line {number}: 'strategy' must be one of {', '.join(STRATEGIES)}")
    monitors = event.get("monitors")
    if monitors is not None and not isinstance(monitors, bool):
        raise ReplayError(f"line {number}: 'monitors' must be true or false")
    speculate = event.get("speculate")
    if speculate is not None and not isinstance(speculate, bool):
        raise ReplayError(f"line {number}: 'speculate' must be true or false")
    request = CompletionRequest(
        uri=uri,
        text=engine_text(text),  # a lone surrogate (legal in JSON) becomes U+FFFD, offsets unchanged
        offset=offset,
        max_tokens=max_tokens,
        drafts=drafts,
        strategy=strategy,
        monitors=monitors,
        speculate=speculate,
    )
    return Step(uri, request, {"line": int(pos["line"]), "character": int(pos["character"])})


def check_session(path: Path, workspace: Path) -> None:
    """Read every event of the session as the replay will, without a model: a bad line fails at once, not
    after the model has loaded and the lines before it have been completed."""
    texts: dict[str, str] = {}
    for number, event in read_events(path):
        read_step(texts, number, event, workspace)


class Replayer:
    """Applies session events to an engine and yields one output per `complete`."""

    def __init__(self, engine: Engine, workspace: Path) -> None:
        self.engine = engine
        self.workspace = workspace
        self.texts: dict[str, str] = {}

    def run(self, path: Path) -> Iterator[ReplayOutput]:
        """Replay the whole session file (parsed up front, so a malformed line fails before any work)."""
        for number, event in list(read_events(path)):
            out = self.apply(number, event)
            if out is not None:
                yield out

    def apply(self, number: int, event: dict[str, Any]) -> ReplayOutput | None:
        """Apply one event: `open` and `change` sync the document, a `complete` returns its output."""
        step = read_step(self.texts, number, event, self.workspace)
        if step.request is None:
            self.engine.sync(step.uri, engine_text(self.texts[step.uri]))
            return None
        return ReplayOutput(step.uri, step.position, self.engine.complete(step.request))
