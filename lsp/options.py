"""Server options: nested dataclasses with defaults, parsed once from camelCase JSON.

Options come from `initializationOptions` and `workspace/didChangeConfiguration` (either the object
itself or `{"superpie": {...}}`). Unknown keys and invalid values never fail: they are collected as
warnings for the user and the previous value stays.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from superpie.cache.document import MODES
from superpie.completion.config import STRATEGIES, EngineConfig

LOG_LEVELS = ("error", "warning", "info", "debug")


@dataclass
class ModelOptions:
    """Which model to serve."""

    path: str | None = None  # None: the embedded default model
    dtype: str | None = None  # weight precision; None: the engine's default
    threads: int | None = None


@dataclass
class CacheOptions:
    """How document caches follow edits, and how much memory they may hold together."""

    mode: str = "pie"
    memory_budget_mb: int = 2048
    context_tokens: int = 4096
    stale_threshold: int = 16384
    idle_refresh_ms: int = 1500  # re-encode stale tokens exactly after this long without work


@dataclass
class CompletionOptions:
    """How drafts are requested for ghost text (inline) and for the menu."""

    drafts: int = 1
    strategy: str | None = None  # None: the engine picks (greedy for one draft)
    max_tokens_inline: int = 16
    max_tokens_menu: int = 48
    inline_multiline: bool = False
    menu_multiline: bool = True
    ready_timeout_ms: int = 2000  # how long a request waits for the model to load before answering empty


@dataclass
class MonitorOptions:
    """Monitor-guided decoding (jedi)."""

    enabled: bool = True
    jedi_budget_ms: int = 150


@dataclass
class WatcherOptions:
    """The workspace watcher that keeps the n-gram index current."""

    enabled: bool = True
    max_file_kb: int = 1000
    debounce_ms: int = 200


@dataclass
class ServerOptions:
    """Every option of the language server."""

    model: ModelOptions = field(default_factory=ModelOptions)
    cache: CacheOptions = field(default_factory=CacheOptions)
    completion: CompletionOptions = field(default_factory=CompletionOptions)
    monitors: MonitorOptions = field(default_factory=MonitorOptions)
    watcher: WatcherOptions = field(default_factory=WatcherOptions)
    log_level: str = "info"


_CHOICES: dict[str, tuple[str, ...]] = {
    "cache.mode": tuple(MODES),
    "completion.strategy": STRATEGIES,
    "log_level": LOG_LEVELS,
}
_NON_NEGATIVE = {"cache.idle_refresh_ms", "completion.ready_timeout_ms", "monitors.jedi_budget_ms"}


@dataclass
class ParsedOptions:
    """The options after a parse, plus what was wrong with the input (dotted camelCase keys)."""

    options: ServerOptions
    unknown: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def snake_case(name: str) -> str:
    """`maxTokensInline` -> `max_tokens_inline`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel_case(name: str) -> str:
    """`max_tokens_inline` -> `maxTokensInline`."""
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def parse_options(raw: object, base: ServerOptions | None = None) -> ParsedOptions:
    """Options = `base` (or defaults) overridden by the valid keys of `raw`."""
    options = copy.deepcopy(base) if base is not None else ServerOptions()
    parsed = ParsedOptions(options)
    if raw is None:
        return parsed
    if isinstance(raw, dict) and isinstance(raw.get("superpie"), dict):
        raw = raw["superpie"]
    if not isinstance(raw, dict):
        parsed.invalid.append(f"options must be an object, got {type(raw).__name__}")
        return parsed
    _merge(options, raw, "", parsed)
    return parsed


def _merge(target: Any, raw: dict, prefix: str, parsed: ParsedOptions) -> None:
    hints = typing.get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    for key, value in raw.items():
        name = snake_case(str(key))
        dotted = f"{prefix}{name}"
        shown = ".".join(camel_case(p) for p in dotted.split("."))
        if name not in names:
            parsed.unknown.append(shown)
            continue
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            if isinstance(value, dict):
                _merge(current, value, dotted + ".", parsed)
            else:
                parsed.invalid.append(f"{shown}: expected an object")
            continue
        problem = _check(dotted, hints[name], value)
        if problem:
            parsed.invalid.append(f"{shown}: {problem} (kept {current!r})")
        else:
            setattr(target, name, value)


def _check(dotted: str, hint: Any, value: object) -> str | None:
    """Why `value` does not fit the field, or None."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        return None if type(None) in allowed else "must not be null"
    base = next((t for t in allowed if t is not type(None)), str)
    if base is bool and not isinstance(value, bool):
        return "expected true or false"
    if base is int and (isinstance(value, bool) or not isinstance(value, int)):
        return "expected an integer"
    if base is str and not isinstance(value, str):
        return "expected a string"
    if base is int and value < (0 if dotted in _NON_NEGATIVE else 1):
        return "out of range"
    choices = _CHOICES.get(dotted)
    if choices and value not in choices:
        return f"expected one of {', '.join(choices)}"
    return None


def engine_config(options: ServerOptions, workspace: str | None) -> EngineConfig:
    """The engine's configuration tree for these options."""
    config = EngineConfig(workspace=workspace)
    config.model.path = options.model.path
    if options.model.dtype is not None:
        config.model.dtype = options.model.dtype
    config.model.threads = options.model.threads
    config.cache.mode = options.cache.mode
    config.cache.memory_budget_mb = options.cache.memory_budget_mb
    config.cache.context_tokens = options.cache.context_tokens
    config.cache.stale_threshold = options.cache.stale_threshold
    config.decoding.drafts = options.completion.drafts
    if options.completion.strategy is not None:
        config.decoding.strategy = options.completion.strategy
    config.decoding.max_tokens = max(options.completion.max_tokens_inline, options.completion.max_tokens_menu)
    monitors = getattr(config, "monitors", None)  # the monitor slice, where the engine has one
    if monitors is not None:
        _set_known(monitors, enabled=options.monitors.enabled, jedi_budget_ms=options.monitors.jedi_budget_ms)
        _set_known(monitors, jedi_budget_s=options.monitors.jedi_budget_ms / 1000)
    return config


def _set_known(obj: object, **values: object) -> None:
    for name, value in values.items():
        if hasattr(obj, name):
            setattr(obj, name, value)


def needs_reload(old: ServerOptions, new: ServerOptions) -> bool:
    """Whether a change of options needs a new model."""
    return old.model != new.model


def needs_resync(old: ServerOptions, new: ServerOptions) -> bool:
    """Whether a change of options invalidates the document caches (not the model)."""
    built_with = ("mode", "context_tokens", "stale_threshold")  # fixed when a document's cache is made
    return any(getattr(old.cache, k) != getattr(new.cache, k) for k in built_with)
