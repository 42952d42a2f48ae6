"""The server's options and the CLI's flags are read into the one configuration tree, with its checks."""

from __future__ import annotations

import pytest

from superpie.completion.config import EngineConfig
from superpie.completion.config.fields import choices, get_path, leaf_hints
from superpie.lsp.cli import ENGINE_FLAGS, FLAGS, UserError, build_parser, config_from_flags, main
from superpie.lsp.options import (
    DOCUMENTED,
    OPTIONS,
    SERVER_DECIDES,
    command_line_options,
    engine_config,
    needs_reload,
    needs_resync,
    option_default,
    parse_options,
)

# ----------------------------------------------------------------------------- server options


def test_null_is_not_set_and_never_overrides_the_command_line() -> None:
    cli = command_line_options(model="/models/mine", log_level="debug")
    vscode = {"model": {"path": None, "dtype": None, "threads": None}, "completion": {"strategy": None}}
    parsed = parse_options(vscode, cli, cli)
    assert (parsed.unknown, parsed.invalid) == ([], [])
    assert (parsed.options.model.path, parsed.options.log_level) == ("/models/mine", "debug")
    assert parsed.options.model.dtype == EngineConfig().model.dtype  # null: the default, not an error
    # set, then cleared in the editor: back to the command line's value (not the previous setting)
    chosen = parse_options({"model": {"path": "/models/other"}, "completion": {"strategy": "beam"}}, cli, cli)
    cleared = parse_options({"model": {"path": None}, "completion": {"strategy": None}}, chosen.options, cli)
    assert (cleared.options.model.path, cleared.options.completion.strategy) == ("/models/mine", None)
    assert parse_options({"model": {"path": None}}, chosen.options).options.model.path is None  # no CLI: default
    assert parse_options({"logLevel": None, "model": None}, cli, cli).options == cli  # a null section sets nothing


def test_every_field_of_the_tree_is_an_option_in_camel_case_or_snake_case() -> None:
    raw = {
        "decoding": {"superposed": {"ngramOrder": 3}, "verify": {"repair": "off"}},
        "postprocess": {"rank": {"greedy_bonus": 0.5}},
        "ngram": {"ignoredDirs": ["build"]},
        "monitors": {"jedi_budget_ms": 20},
    }
    parsed = parse_options(raw)
    assert (parsed.unknown, parsed.invalid) == ([], [])
    o = parsed.options
    assert (o.decoding.superposed.ngram_order, o.decoding.verify.repair) == (3, "off")
    assert (o.postprocess.rank.greedy_bonus, o.ngram.ignored_dirs) == (0.5, frozenset({"build"}))
    assert o.monitors.jedi_budget_ms == 20.0
    assert set(OPTIONS.values()) == set(leaf_hints(EngineConfig)) - SERVER_DECIDES


def test_invalid_modes_and_server_decided_settings_are_reported() -> None:
    raw = {
        "decoding": {"verify": {"repair": "mine"}, "maxTokens": 5},
        "cache": {"mode": "incremental"},
        "model": {"dtype": "fp8"},
        "workspace": "/elsewhere",
        "logLevel": "verbose",
    }
    parsed = parse_options(raw)
    assert parsed.unknown == ["decoding.maxTokens", "workspace"]
    assert [p.split(":")[0] for p in parsed.invalid] == [
        "decoding.verify.repair", "cache.mode", "model.dtype", "logLevel"
    ]  # fmt: skip
    assert "expected one of best, all, off, got 'mine' (kept 'all')" in parsed.invalid[0]
    assert parsed.options == EngineConfig()


def test_engine_config_takes_the_workspace_and_the_longer_request_budget() -> None:
    options = parse_options({"completion": {"maxTokensInline": 8, "maxTokensMenu": 40, "drafts": 3}}).options
    config = engine_config(options, "/ws")
    assert (config.workspace, config.decoding.max_tokens, config.completion.drafts) == ("/ws", 40, 3)
    assert options.workspace is None and options.decoding.max_tokens == EngineConfig().decoding.max_tokens
    assert needs_resync(options, parse_options({"cache": {"windowStep": 64}}, options).options)
    for changed in ({"fimSuffixTokens": 64}, {"openWindow": 0}, {"openChunk": 64}):  # each made into every cache
        assert needs_resync(options, parse_options({"cache": changed}, options).options), changed
    assert not needs_resync(options, parse_options({"cache": {"idleRefreshMs": 10}}, options).options)
    assert not needs_reload(options, parse_options({"cache": {"windowStep": 64}}, options).options)


def test_documented_options_exist_with_their_defaults() -> None:
    assert set(DOCUMENTED) <= set(OPTIONS)
    assert option_default("cache.staleThreshold") == EngineConfig().cache.stale_threshold


# ----------------------------------------------------------------------------- the CLI


def test_flags_take_their_defaults_and_choices_from_the_tree() -> None:
    parser = build_parser()
    args = parser.parse_args(["replay", "s.jsonl"])
    defaults = EngineConfig()
    assert config_from_flags(args) == defaults
    for flag in ENGINE_FLAGS:
        expected = get_path(defaults, flag.path)
        assert flag.value(args) == expected, flag.flag
    replay = parser._subparsers._group_actions[0].choices["replay"]
    actions = {a.option_strings[0]: a for a in replay._actions if a.option_strings}
    for flag in (f for f in FLAGS if f.flag in actions and not f.switch):
        hint, default = leaf_hints(EngineConfig)[flag.path], get_path(defaults, flag.path)
        expected = ["on", "off"] if isinstance(default, bool) else choices(hint)
        assert actions[flag.flag].choices == expected, flag.flag


def test_flags_set_the_tree_and_invalid_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    argv = ["complete", "f.py", "--line", "0", "--character", "0", "--drafts", "3", "--monitors", "off"]
    config = config_from_flags(parser.parse_args([*argv, "--multiline", "--dtype", "float32", "--threads", "2"]))
    assert (config.completion.drafts, config.monitors.enabled, config.decoding.multiline) == (3, False, True)
    assert (config.model.dtype, config.model.threads) == ("float32", 2)
    with pytest.raises(UserError, match="^--max-tokens must be positive"):
        config_from_flags(parser.parse_args([*argv, "--max-tokens", "0"]))
    assert main(["replay", "missing.jsonl", "--threads", "-1"]) == 2  # the flag fails before the file does
    assert "superpie: error: --threads must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", "s.jsonl", "--mode", "incremental"])


def test_serve_accepts_stdio_and_takes_its_model_and_log_level_into_the_tree() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--stdio", "--model", "/m", "--log-level", "debug"])
    assert args.stdio and args.tcp is None
    config = config_from_flags(args)
    assert (config.model.path, config.log_level) == ("/m", "debug")
    assert config_from_flags(parser.parse_args(["serve"])).log_level == EngineConfig().log_level
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--stdio", "--tcp", "127.0.0.1:9"])
