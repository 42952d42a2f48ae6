"""The Neovim plugin (extensions/nvim) end to end: headless Neovim, driven over RPC, talks to the real
`superpie serve`. Ghost text must show the server's top draft, Tab must insert it, the menu must list
the server's drafts. A tiny random-weight model keeps most tests fast (its drafts are gibberish, so the
tests compare with what the server answers, not with expected code); one test uses the default model.

Set SUPERPIE_TEST_NVIM to a `:`-separated list of nvim binaries to run against several versions
(default: `nvim` on PATH, Debian's 0.7 in CI).
"""

from __future__ import annotations

import paths

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = paths.ROOT
PLUGIN = ROOT / "extensions" / "nvim"
NVIM_BINS = [b for b in os.environ.get("SUPERPIE_TEST_NVIM", "nvim").split(os.pathsep) if b]
SERVER = Path(sys.executable).with_name("superpie")

SOURCE = '''import os


def read_config(path):
    """Read a key=value file into a dict."""
    config = {}
    with open(path) as f:
        for line in f:
            key, value = line.split("=", 1)
            config[key.strip()] = value.strip()
    return config


'''

# Talks to the server the way the plugin does, from inside Neovim, and leaves the answer in a global.
ASK_LUA = """
local method, context = ...
_G.superpie_answer = nil
local client
for _, c in ipairs((vim.lsp.get_clients or vim.lsp.get_active_clients)({ name = 'superpie' })) do
  client = c
end
local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
params.context = context
local function done(err, result)
  _G.superpie_answer = { err = err, result = result or vim.NIL }
end
-- A real buffer number: with 0, Neovim 0.7 does not flush the pending didChange first.
local buf = vim.api.nvim_get_current_buf()
if vim.fn.has('nvim-0.11') == 1 then
  client:request(method, params, done, buf)
else
  client.request(method, params, done, buf)
end
"""


def shown(draft: str, tabstop: int = 8) -> str:
    """A draft as the plugin draws it: tabs as spaces, control characters as ^X."""
    out = draft.replace("\t", " " * tabstop)
    return "".join("^?" if c == "\x7f" else f"^{chr(ord(c) + 64)}" if ord(c) < 32 and c != "\n" else c for c in out)


def nvim_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (`make test` installs Debian's neovim)")
    return found


class Editor:
    """One headless Neovim with the plugin loaded, driven like a person at the keyboard."""

    def __init__(self, nvim: str, cmd: list[str], init_options: dict[str, Any]) -> None:
        import pynvim

        self.nv = pynvim.attach("child", argv=[nvim, "--embed", "--headless", "--clean", "-n"])
        self.nv.exec_lua(
            "vim.opt.rtp:prepend(...); require('superpie').setup({ cmd = select(2, ...), "
            "init_options = select(3, ...), debounce_ms = 30 })",
            str(PLUGIN),
            cmd,
            init_options,
        )

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        messages = self.nv.command_output("messages")
        raise AssertionError(f"timed out waiting for {what}; state {self.state()}; messages:\n{messages}")

    def open(self, path: Path, text: str = SOURCE, timeout: float = 90) -> None:
        path.write_text(text)
        self.nv.input("<Esc>")
        self.nv.command(f"edit {path}")
        self.wait("the model", lambda: self.state()["status"] == "ready", timeout)

    def type(self, keys: str) -> None:
        self.nv.input(keys)

    def state(self) -> dict[str, Any]:
        return self.nv.exec_lua("return require('superpie').state()")

    def ghost(self) -> dict[str, Any]:
        return self.wait("ghost text", lambda: (self.state()["ghost"] or [None])[0])

    def cursor(self) -> tuple[int, int]:
        row, col = self.nv.current.window.cursor
        return row - 1, col

    def ask(self, method: str, context: dict[str, Any]) -> Any:
        """The server's own answer at the cursor (a request of the test's, not the plugin's)."""
        self.nv.exec_lua(ASK_LUA, method, context)
        answer = self.wait(f"the server's answer to {method}", lambda: self.nv.exec_lua("return _G.superpie_answer"))
        assert not answer.get("err"), answer["err"]
        return answer["result"]

    def server_drafts(self) -> list[str]:
        result = self.ask("textDocument/inlineCompletion", {"triggerKind": 2})
        items = result["items"] if isinstance(result, dict) else result
        texts = [i["insertText"] for i in items]
        return [t for i, t in enumerate(texts) if t.strip() and t not in texts[:i]]

    def server_stats(self) -> dict[str, Any]:
        self.nv.exec_lua(
            "_G.superpie_answer = nil; require('superpie').stats(function(e, r) _G.superpie_answer = { r = r } end)"
        )
        return self.wait("superpie.stats", lambda: self.nv.exec_lua("return _G.superpie_answer"))["r"]

    def line(self, row: int) -> str:
        return (self.lines(row, row + 1) or [""])[0]

    def lines(self, start: int, end: int) -> list[str]:
        return [ln.replace("\n", "\x00") for ln in self.nv.current.buffer[start:end]]  # the API gives NUL as NL

    def close(self) -> None:
        try:
            self.nv.input("<Esc>")
            # Shut the server down cleanly, then leave; no server outlives the test.
            self.nv.exec_lua(
                "local get = vim.lsp.get_clients or vim.lsp.get_active_clients; vim.lsp.stop_client(get()); "
                "vim.wait(5000, function() return #get() == 0 end, 50)"
            )
        finally:
            self.nv.close()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module", params=NVIM_BINS)
def workspace(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    nvim = nvim_binary(request.param)
    ws = tmp_path_factory.mktemp("ws")
    (ws / ".git").mkdir()  # the plugin's project root
    return nvim, ws


@pytest.fixture(scope="module")
def editor(workspace: tuple[str, Path], tiny_model_dir: Path) -> Iterator[Editor]:
    nvim, _ = workspace
    cmd = [str(SERVER), "serve", "--model", str(tiny_model_dir)]
    # Two requests at the same text must get the same drafts (the tests compare the plugin's with their
    # own): no idle re-encode of PIE-stale tokens and no n-gram updates from the watcher in between.
    options = {
        "completion": {"drafts": 3, "strategy": "superposed"},
        "cache": {"mode": "exact"},
        "watcher": {"enabled": False},
    }
    ed = Editor(nvim, cmd, options)
    yield ed
    ed.close()


@pytest.fixture(scope="module")
def real_editor(workspace: tuple[str, Path]) -> Iterator[Editor]:
    """The small real model behind the plugin, for what needs drafts that differ: the random model's byte
    soup often ends drafts inside a multi-byte character, and trimmed they merge into one."""
    nvim, _ = workspace
    options = {"completion": {"drafts": 3}, "cache": {"mode": "exact"}, "watcher": {"enabled": False}}
    ed = Editor(nvim, [str(SERVER), "serve", "--model", "smollm2-135m"], options)
    yield ed
    ed.close()


@pytest.fixture
def default_editor(workspace: tuple[str, Path]) -> Iterator[Editor]:
    """The plugin with the server as an editor starts it: the default model (catalog.choose_default)."""
    ed = Editor(workspace[0], [str(SERVER), "serve"], {"watcher": {"enabled": False}})
    yield ed
    ed.close()


def test_ghost_text_is_the_servers_top_draft_and_tab_inserts_it(editor: Editor, workspace: tuple[str, Path]):
    editor.open(workspace[1] / "ghost.py")
    editor.type("Gocfg = read_config(")
    ghost = editor.ghost()
    row, col = editor.cursor()
    assert (ghost["row"], ghost["col"]) == (row, col)  # drawn at the cursor
    drafts = editor.server_drafts()
    assert ghost["text"] == shown(drafts[0])
    assert editor.state()["drafts"] == drafts

    editor.type("<Tab>")
    editor.wait("the draft to be inserted", lambda: not editor.state()["ghost"])
    inserted = drafts[0].split("\n")
    assert editor.line(row) == "cfg = read_config(" + inserted[0]
    assert editor.cursor() == (row + len(inserted) - 1, len(editor.line(row + len(inserted) - 1).encode()))
    accepts = editor.wait("the accept to be counted", lambda: editor.server_stats()["accepts"].get("inline"))
    assert accepts == 1


@pytest.mark.real_model
def test_drafts_cycle_and_a_word_is_accepted_at_a_time(real_editor: Editor, workspace: tuple[str, Path]):
    editor = real_editor
    editor.open(workspace[1] / "cycle.py", timeout=300)  # a fresh machine converts the embedded GGUF first
    editor.type("Gocfg = read_config(")
    editor.ghost()
    drafts = editor.state()["drafts"]
    assert len(drafts) >= 2, drafts  # three drafts asked for (the server's default strategy)
    assert editor.state()["ghost"][0]["text"] == shown(drafts[0])
    editor.type("<M-n>")
    editor.wait("the second draft", lambda: editor.state()["ghost"][0]["text"] == shown(drafts[1]))
    editor.type("<M-p>")
    editor.wait("the first draft again", lambda: editor.state()["ghost"][0]["text"] == shown(drafts[0]))

    row, _ = editor.cursor()
    editor.type("<M-w>")
    editor.wait("a word to be inserted", lambda: editor.line(row) != "cfg = read_config(")
    accepted = editor.line(row)[len("cfg = read_config(") :]
    assert accepted and drafts[0].startswith(accepted) and len(accepted) < len(drafts[0])
    rest = drafts[0][len(accepted) :]
    assert editor.state()["ghost"][0]["text"] == shown(rest)  # the rest stays shown


def test_typing_the_drafts_next_character_keeps_it_without_asking_again(editor: Editor, workspace: tuple[str, Path]):
    editor.open(workspace[1] / "typing.py")
    editor.type("Goreturn ")
    editor.ghost()
    draft = editor.state()["drafts"][0]
    char = draft[0]
    if not char.isprintable() or char.isspace():
        pytest.skip(f"the tiny model's draft starts with {char!r}, which cannot be typed as-is")
    asked = editor.server_stats()["requests"].get("inline", 0)
    editor.type(char.replace("<", "<lt>"))
    editor.wait("the rest of the draft", lambda: (editor.state()["ghost"] or [{}])[0].get("text") == shown(draft[1:]))
    time.sleep(0.3)  # longer than the debounce: a new request would have been sent by now
    assert editor.server_stats()["requests"].get("inline", 0) == asked


@pytest.mark.real_model
def test_the_menu_lists_the_servers_drafts_and_inserts_the_whole_draft(
    real_editor: Editor, workspace: tuple[str, Path]
):
    editor = real_editor
    editor.open(workspace[1] / "menu.py", timeout=300)
    editor.type("Gofor key in cfg")
    editor.ghost()  # the plugin's own request is answered: it cannot supersede the test's
    result = editor.ask("textDocument/completion", {"triggerKind": 1})
    expected = result["items"] if isinstance(result, dict) else result
    assert expected, "the server gave no menu drafts"
    row, _ = editor.cursor()

    editor.type("<M-m>")
    info = editor.wait("the completion menu", lambda: (i := editor.nv.funcs.complete_info()) and i["pum_visible"] and i)
    assert len(expected) >= 2, expected  # three drafts asked for
    assert [i["abbr"] for i in info["items"]] == [shown(e["label"]) for e in expected]
    assert [i["menu"] for i in info["items"]] == ["[superpie]"] * len(expected)
    assert not editor.state()["ghost"]  # the menu replaces the ghost text

    editor.type("<C-y>")  # the first item is selected: take it
    full = expected[0]["textEdit"]["newText"].split("\n")
    start = expected[0]["textEdit"]["range"]["start"]["character"]
    want = ["for key in cfg"[:start] + full[0], *full[1:]]
    editor.wait("the whole draft", lambda: editor.lines(row, row + len(want)) == want)
    assert editor.wait("the accept to be counted", lambda: editor.server_stats()["accepts"].get("menu")) == 1


@pytest.mark.real_model
def test_default_model_ghost_text(default_editor: Editor, workspace: tuple[str, Path]):
    ed = default_editor
    fib = 'def fibonacci(n):\n    """The n-th Fibonacci number."""\n    if n < 2:\n        return n\n'
    ed.open(workspace[1] / "fib.py", fib, timeout=300)  # a fresh machine converts the embedded GGUF first
    ed.type("Goreturn ")
    ed.ghost()
    draft = ed.server_drafts()[0]
    assert ed.state()["ghost"][0]["text"] == shown(draft)
    assert draft.strip()
    ed.type("<Tab>")
    ed.wait("the draft to be inserted", lambda: ed.line(4) == "    return " + draft)


@pytest.fixture(scope="module")
def bare_nvim(workspace: tuple[str, Path]) -> Iterator[Any]:
    """A headless Neovim with the plugin on 'runtimepath' and no server."""
    import pynvim

    nv = pynvim.attach("child", argv=[workspace[0], "--embed", "--headless", "--clean", "-n"])
    nv.exec_lua("vim.opt.rtp:prepend(...)", str(PLUGIN))
    yield nv
    nv.close()


def test_help_superpie_opens_the_plugins_help(bare_nvim: Any, tmp_path: Path):
    doc = tmp_path / "doc"
    shutil.copytree(PLUGIN / "doc", doc)
    bare_nvim.command(f"set rtp+={tmp_path} | helptags {doc}")
    bare_nvim.command("help superpie")
    assert bare_nvim.current.buffer.name.endswith("superpie.txt")
    for tag in ("superpie-setup", "superpie-keys", "superpie-server-options", ":SuperpieStats"):
        bare_nvim.command(f"help {tag}")
    bare_nvim.command("helpclose")


DRAFT_CASES = r"""
local d = require('superpie.drafts')
local out = {}
-- UTF-16 columns: an emoji is two units, a CJK character one; UTF-8 columns are bytes.
local line = 'x = "😀中" + y'
out.byte16 = { d.byte_col(line, 5, 'utf-16'), d.byte_col(line, 7, 'utf-16'), d.byte_col(line, 8, 'utf-16') }
out.byte32 = d.byte_col(line, 6, 'utf-32')
out.byte8 = d.byte_col(line, 3, 'utf-8')
-- An item whose range starts before the cursor repeats the typed part; one that does not fit is dropped.
local at = function(c) return { line = 0, character = c } end
out.items = d.from_items({ items = {
  { insertText = 'print(x)', range = { start = at(0), ['end'] = at(3) } },
  { insertText = 'other()', range = { start = at(0), ['end'] = at(3) } },
  { insertText = '  ' },
  { insertText = { kind = 'snippet', value = 't(1)' } },
  { insertText = 't(1)' },
} }, 'pri', 0, 3, 'utf-16')
out.parts = {
  d.part('foo.bar(x)\nnext', 'word'), d.part('  (x)', 'word'), d.part('\n    y = 1', 'word'),
  d.part('a(b)\nc', 'line'), d.part('\nc = 2\nd', 'line'), d.part('a\nb', 'all'),
}
local left, index = d.advance({ { text = 'foo(1)' }, { text = 'bar' }, { text = 'foo(2)' } }, 3, 'foo(')
out.advanced = { left = left, index = index }
out.display = d.display('a\tb\0c\18', 4)
-- A NUL in a menu draft: a Lua string holding one becomes a Blob, which complete() rejects (E976).
local menu = d.menu_items({ { label = 'a\0b', insertText = 'a\0b\nc' } }, '', 0, 0, 'utf-8')[1].item
out.menu = { menu.word, menu.abbr, menu.info, vim.fn.type(menu.word), vim.fn.type(menu.info) }
return out
"""


def test_draft_logic(bare_nvim: Any):
    out = bare_nvim.exec_lua(DRAFT_CASES)
    assert out["byte16"] == [5, 9, 12]  # before the emoji, after it, after 中 (3 bytes)
    assert out["byte32"] == 9
    assert out["byte8"] == 3
    assert [(i["text"], i.get("command")) for i in out["items"]] == [("nt(x)", None), ("t(1)", None)]
    assert out["parts"] == ["foo", "  (", "\n    ", "a(b)", "\nc = 2", "a\nb"]
    assert [x["text"] for x in out["advanced"]["left"]] == ["1)", "2)"]
    assert out["advanced"]["index"] == 2
    assert out["display"] == "a    b^@c^R"
    assert out["menu"] == ["a\nb", "a^@b", "a\nb\nc", 1, 1]  # NUL kept as Vim keeps it in a line; Strings
