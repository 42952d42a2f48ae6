"""Every place that states an option's name, default or choices agrees with the configuration tree.

The tree (`superpie.completion.config`) is where a default is written; the VS Code settings
(`package.json`), the Neovim help, the README's options block and its CLI synopsis restate them for
users, so this test holds each to the tree: the same documented options, in the same order, with the
tree's defaults, choices and bounds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import paths
import pytest

from superpie.completion.config import EngineConfig
from superpie.completion.config.fields import bare_type, choices, leaf_hints, optional_arms, split_annotated
from superpie.lsp.cli import build_parser
from superpie.lsp.options import DOCUMENTED, OPTIONS, option_default

ROOT: Path = paths.ROOT
CLIENT_ONLY = {"server.path", "server.args", "inline.enabled", "trace.server"}  # VS Code settings never sent


def hint(option: str) -> object:
    """The tree's type hint of an option."""
    return leaf_hints(EngineConfig)[OPTIONS[option]]


def nullable(option: str) -> bool:
    return optional_arms(hint(option))[1]


def bounds(option: str) -> tuple[float | None, float | None]:
    ranges = split_annotated(optional_arms(hint(option))[0])[1]
    return (ranges[0].low, ranges[0].high) if ranges else (None, None)


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------- VS Code


def vscode_settings() -> dict[str, dict]:
    package = json.loads((ROOT / "extensions" / "vscode" / "package.json").read_text())
    properties = package["contributes"]["configuration"]["properties"]
    return {key.removeprefix("superpie."): spec for key, spec in properties.items()}


def test_vscode_settings_are_the_documented_options() -> None:
    server = [key for key in vscode_settings() if key not in CLIENT_ONLY]
    assert server == list(DOCUMENTED)


@pytest.mark.parametrize("option", DOCUMENTED)
def test_a_vscode_setting_has_the_tree_s_type_default_choices_and_bounds(option: str) -> None:
    spec = vscode_settings()[option]
    kind, default, allowed = bare_type(hint(option)), option_default(option), choices(hint(option))
    json_type = {bool: "boolean", int: "integer", float: "number"}.get(kind, "string")
    # an empty string setting is sent as null, "not set": the server's default (a mode's, or None)
    unset = json_type == "string" and spec["default"] == ""
    if nullable(option) and json_type != "string":
        assert spec["type"] == [json_type, "null"]
    else:
        assert spec["type"] == json_type
    if unset:
        assert default is None or allowed is not None
    else:
        assert spec["default"] == default
    if allowed is not None:
        assert spec["enum"] == ([""] if unset else []) + list(allowed)
        descriptions = spec.get("enumDescriptions", spec["enum"])
        assert len(descriptions) == len(spec["enum"])
        if unset and default is not None:
            assert f"`{default}`" in descriptions[0]  # "not set" names the default it stands for
    else:
        assert "enum" not in spec
    low, high = bounds(option)
    assert (spec.get("minimum"), spec.get("maximum")) == (low, high)


# ----------------------------------------------------------------------------- Neovim


def lua_table(text: str) -> dict:
    """A Lua table constructor of names, nested tables, strings, numbers, booleans and nil (comments allowed)."""
    text = re.sub(r"--[^\n]*", "", text)
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[A-Za-z_]\w*|-?\d+(?:\.\d+)?|[{}=,]", text)
    pos = 0

    def value() -> object:
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "{":
            table = {}
            while tokens[pos] != "}":
                name, eq = tokens[pos], tokens[pos + 1]
                assert eq == "=", tokens[pos : pos + 3]
                pos += 2
                table[name] = value()
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return table
        if token[0] in "'\"":
            return token[1:-1]
        literals = {"nil": None, "true": True, "false": False}
        if token in literals:
            return literals[token]
        return float(token) if "." in token else int(token)

    table = value()
    assert pos == len(tokens), tokens[pos:]
    assert isinstance(table, dict)
    return table


def nvim_server_options() -> tuple[dict[str, object], str]:
    """The `init_options = {...}` example of the help's server options section, flattened; and its text."""
    help_text = (ROOT / "extensions" / "nvim" / "doc" / "superpie.txt").read_text()
    section = help_text[help_text.index("*superpie-server-options*") :]
    block = re.search(r"init_options = (\{.*?\n    \})", section, re.S)
    assert block, "no init_options example in the server options section"
    return flatten(lua_table(block.group(1))), block.group(1)


def test_the_neovim_help_lists_the_documented_options_with_their_defaults() -> None:
    options, _ = nvim_server_options()
    assert list(options) == list(DOCUMENTED)
    assert options == {option: option_default(option) for option in DOCUMENTED}


def test_the_neovim_help_names_every_choice_of_a_mode() -> None:
    _, text = nvim_server_options()
    for option in DOCUMENTED:
        for choice in choices(hint(option)) or ():
            assert f"'{choice}'" in text, (option, choice)


# ----------------------------------------------------------------------------- README


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_the_readme_options_block_is_the_documented_options_with_their_defaults() -> None:
    text = readme()
    after = text[text.index("All options, with their defaults:") :]
    block = re.search(r"```json\n(.*?)```", after, re.S)
    assert block
    options = flatten(json.loads(block.group(1)))
    assert list(options) == list(DOCUMENTED)
    assert options == {option: option_default(option) for option in DOCUMENTED}


def test_the_readme_cli_synopsis_matches_the_parser() -> None:
    text = readme()
    synopsis = re.search(r"## Headless CLI\n\n```sh\n(.*?)```", text, re.S)
    assert synopsis
    commands = build_parser()._subparsers._group_actions[0].choices
    checked, command = 0, None
    for line in synopsis.group(1).splitlines():
        words = line.split()
        if not line.startswith(" "):  # a new command; indented lines continue it
            command = words[1] if len(words) > 1 and words[1] in commands else None
        if command is None:
            continue
        actions = {s: a for a in commands[command]._actions for s in a.option_strings}
        for flag, values in re.findall(r"(--[\w-]+)(?: (\w+(?:\|\w+)+))?", line):
            assert flag in actions, (command, flag)
            if values:
                assert tuple(values.split("|")) == tuple(actions[flag].choices), (command, flag)
            checked += 1
    assert checked >= 20, checked
