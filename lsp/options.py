"""The language server's options: camelCase JSON read into the one configuration tree (`completion.config`).

Options come from `initializationOptions` and `workspace/didChangeConfiguration` (either the object
itself or `{"superpie": {...}}`). Their layout is the tree's, in camelCase ("cache.memoryBudgetMb" is
`cache.memory_budget_mb`), less the settings the server decides itself (`SERVER_DECIDES`). Unknown
keys and invalid values never fail: they are collected as warnings for the user and the previous value
stays. `null` means "not set": the value `superpie serve` was started with (`--model DIR`), else the
default; an unset option never overrides the command line.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from superpie.completion.config import EngineConfig, LogLevel
from superpie.completion.config.fields import check, get_path, leaf_hints, replaced

# tree paths that are not options: the workspace is the client's first folder, and every request names
# its own token budget and whether it spans lines (completion.maxTokensInline, ...)
SERVER_DECIDES = frozenset({"workspace", "decoding.max_tokens", "decoding.multiline"})
# The options the editors' settings and the README list, in their order (the others are advanced);
# tests/lsp/test_config_surfaces.py holds package.json, the Neovim help and the README to the tree.
DOCUMENTED = (
    "model.path", "model.dtype", "model.threads",
    "cache.mode", "cache.memoryBudgetMb", "cache.contextTokens", "cache.staleThreshold", "cache.idleRefreshMs",
    "completion.drafts", "completion.strategy", "completion.maxTokensInline", "completion.maxTokensMenu",
    "completion.inlineMultiline", "completion.menuMultiline", "completion.readyTimeoutMs",
    "decoding.speculate",
    "monitors.enabled", "monitors.jediBudgetMs",
    "watcher.enabled", "watcher.maxFileKb", "watcher.debounceMs",
    "logLevel",
)  # fmt: skip


def snake_case(name: str) -> str:
    """`maxTokensInline` -> `max_tokens_inline`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel_case(name: str) -> str:
    """`max_tokens_inline` -> `maxTokensInline`."""
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


OPTIONS: dict[str, str] = {  # every option the server takes -> its path in the tree
    ".".join(camel_case(part) for part in path.split(".")): path
    for path in leaf_hints(EngineConfig)
    if path not in SERVER_DECIDES
}
_HINTS = leaf_hints(EngineConfig)
_SECTIONS = {".".join(o.split(".")[:depth]) for o in OPTIONS for depth in range(1, o.count(".") + 1)}


def option_default(option: str) -> object:
    """The default value of an option (from the tree)."""
    return get_path(EngineConfig(), OPTIONS[option])


@dataclass
class ParsedOptions:
    """The options after a parse, plus what was wrong with the input (dotted camelCase keys)."""

    options: EngineConfig
    unknown: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def command_line_options(
    model: str | None = None, log_level: LogLevel | None = None, settings: Mapping[str, object] | None = None
) -> EngineConfig:
    """The options `superpie serve` was started with (None: not given): what an unset option falls back to.

    `settings`: more of them by tree path (`model.backend`, `model.url`, ... from `--backend`, `--url`)."""
    options = EngineConfig()
    for path, value in (("model.path", model), ("log_level", log_level), *(settings or {}).items()):
        if value is not None:
            options = replaced(options, path, value)
    return options


def parse_options(raw: object, base: EngineConfig | None = None, unset: EngineConfig | None = None) -> ParsedOptions:
    """Options = `base` (or the defaults) overridden by the valid keys of `raw`.

    A key that is null is not set: it takes its value from `unset` (the command line's options; by
    default the defaults), so clearing a setting in the editor returns to it.
    """
    parsed = ParsedOptions(copy.deepcopy(base) if base is not None else EngineConfig())
    if raw is None:
        return parsed
    if isinstance(raw, dict) and isinstance(raw.get("superpie"), dict):
        raw = raw["superpie"]
    if not isinstance(raw, dict):
        parsed.invalid.append(f"options must be an object, got {type(raw).__name__}")
        return parsed
    fallback = unset if unset is not None else EngineConfig()
    for option, value in _leaves(raw, "", parsed):
        path = OPTIONS[option]
        current = get_path(parsed.options, path)
        try:
            value = check(_HINTS[path], get_path(fallback, path) if value is None else value)
        except ValueError as exc:
            parsed.invalid.append(f"{option}: {exc} (kept {current!r})")
            continue
        parsed.options = replaced(parsed.options, path, value)
    return parsed


def _leaves(raw: dict, prefix: str, parsed: ParsedOptions) -> list[tuple[str, object]]:
    """(option, value) for every known option in `raw`; unknown keys and non-object sections go to `parsed`."""
    out: list[tuple[str, object]] = []
    for key, value in raw.items():
        name = f"{prefix}{camel_case(snake_case(str(key)))}"  # camelCase, or snake_case as in the tree
        if name in OPTIONS:
            out.append((name, value))
        elif name in _SECTIONS:
            if isinstance(value, dict):
                out.extend(_leaves(value, name + ".", parsed))
            elif value is not None:  # a null section sets nothing
                parsed.invalid.append(f"{name}: expected an object")
        else:
            parsed.unknown.append(name)
    return out


def engine_config(options: EngineConfig, workspace: str | None) -> EngineConfig:
    """The tree the engine gets: the options, rooted at the workspace. Every server request names its token
    budget, so the engine's default one is the longer kind's (it sizes the reserve of a document's window)."""
    config = replaced(copy.deepcopy(options), "workspace", workspace)
    longest = max(options.completion.max_tokens_inline, options.completion.max_tokens_menu)
    return replaced(config, "decoding.max_tokens", longest)


def needs_reload(old: EngineConfig, new: EngineConfig) -> bool:
    """Whether a change of options needs a new model."""
    return old.model != new.model


def needs_resync(old: EngineConfig, new: EngineConfig) -> bool:
    """Whether a change of options invalidates the document caches (not the model)."""
    # fixed when a document's cache is made (cache/document.py DocumentCache's arguments)
    built_with = (
        "mode", "context_tokens", "stale_threshold", "window_step", "fim_suffix_tokens", "open_window", "open_chunk"
    )  # fmt: skip
    return any(getattr(old.cache, k) != getattr(new.cache, k) for k in built_with)
