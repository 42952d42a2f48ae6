"""The VS Code extension (extensions/vscode) end to end, in a real VS Code: code-server 4.99.4 (the VS Code
1.99 web workbench and its extension host) with the packaged .vsix installed, driven by a headless
Chromium through playwright-core, and the real `superpie serve` behind it. The extension is installed and
set up as the README's VS Code section says (the test reads the command and the settings from there;
code-server is a remote window, so the machine settings go in the remote settings, as the README says),
plus a few settings of the test's own.

What the server answered is read from the extension's output channel: the language client's message
trace (`superpie.trace.server`), so the ghost text is compared with the server's own answer to the very
request that drew it. A tiny random-weight model keeps most tests fast (its drafts are gibberish, so the
tests compare with what the server answered, not with expected code); one test uses the default model.

`make test` installs code-server and playwright-core (extensions/vscode/e2e/install.sh) and Debian's
chromium, and builds extensions/vscode/superpie.vsix. Without them the tests are skipped, except as
root, where `make test` installs them, so a missing piece fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paths
import pytest

ROOT = paths.ROOT
E2E = ROOT / "extensions" / "vscode" / "e2e"
CODE_SERVER = E2E / "node_modules" / ".bin" / "code-server"
INSTALLED = E2E / "node_modules" / ".superpie-e2e-stamp"  # written by install.sh once all is in place
DRIVER = E2E / "driver.mjs"
VSIX = ROOT / "extensions" / "vscode" / "superpie.vsix"
# SUPERPIE_TEST_SERVER: another `superpie` to test the extension against (default: this checkout's)
SERVER = Path(os.environ.get("SUPERPIE_TEST_SERVER") or Path(sys.executable).with_name("superpie"))
# SUPERPIE_VSCODE_SCREENSHOT: where the default-model test saves the README's screenshot (e2e/screenshot.sh)
SCREENSHOT = os.environ.get("SUPERPIE_VSCODE_SCREENSHOT")

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
SAMPLE = (ROOT / "examples" / "sample.py").read_text()

# The test's settings, on top of the README's. Two requests at the same text must get the same drafts
# (no idle re-encode of PIE-stale tokens, no n-gram updates from the watcher, no saves while typing: the
# web workbench saves after a second by default); the message trace is where the test reads the answers.
# float32: the tiny model's drafts must not depend on the CPU (`auto` is bf16 where it has bf16 units, and
# there two of the tiny model's three menu drafts came out the same).
TEST_SETTINGS: dict[str, Any] = {
    "files.autoSave": "off",
    "superpie.model.dtype": "float32",
    "superpie.cache.mode": "exact",
    "superpie.watcher.enabled": False,
    "superpie.trace.server": "verbose",
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "security.workspace.trust.enabled": False,
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "update.mode": "none",
    "telemetry.telemetryLevel": "off",
    "chat.commandCenter.enabled": False,
    "editor.minimap.enabled": False,
    # less for the software-rendering browser to draw
    "editor.cursorBlinking": "solid",
    "workbench.reduceMotion": "on",
}


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^### VS Code\n(.*?)^#", text, re.S | re.M)
    assert match, "README.md has no '### VS Code' section"
    return match.group(1)


def readme_install_command() -> list[str]:
    """The README's install command (`code --install-extension X`), as written."""
    match = re.search(r"`(code --install-extension [^`]+)`", readme_section())
    assert match, "the README's VS Code section has no `code --install-extension ...`"
    return shlex.split(match.group(1))


def readme_settings() -> dict[str, Any]:
    """The README's settings block, with the server path pointed at this checkout's superpie."""
    match = re.search(r"```json\n(.*?)```", readme_section(), re.S)
    assert match, "the README's VS Code section has no ```json settings block"
    settings = json.loads(match.group(1))
    assert settings["superpie.server.path"] == "/path/to/superpie/.venv/bin/superpie"
    return {**settings, "superpie.server.path": str(SERVER)}


def readme_model_args(model: Path) -> list[str]:
    """The README's `superpie.server.args` for one's own model, pointed at `model`."""
    match = re.search(r'`"superpie\.server\.args": (\[[^\]]*\])`', readme_section())
    assert match, 'the README\'s VS Code section has no `"superpie.server.args": [...]` for a model'
    assert json.loads(match.group(1)) == ["--model", "/path/to/model"]
    return ["--model", str(model)]


def machine_settings() -> set[str]:
    """The extension's machine-scoped settings: in a remote window (code-server is one) VS Code reads them
    from the remote settings only, and ignores them in the user settings, as the README says."""
    properties = json.loads((ROOT / "extensions" / "vscode" / "package.json").read_text())["contributes"][
        "configuration"
    ]["properties"]
    return {k for k, v in properties.items() if v.get("scope") in ("machine", "machine-overridable")}


def read_json(path: Path) -> Any:
    """A JSON file's value; None while it is being written."""
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def missing(what: str) -> None:
    """Skip when not root; as root `make test` installs everything, so a missing piece is a failure."""
    message = f"{what} (`make test` installs it as root: extensions/vscode/e2e/install.sh, apt chromium)"
    if os.geteuid() == 0:
        pytest.fail(message)
    pytest.skip(message)


def chromium() -> str:
    found = shutil.which(os.environ.get("SUPERPIE_TEST_CHROMIUM", "chromium"))
    if found is None:
        missing("chromium is not installed")
    return found


def shown(draft: str, column: int, tab_size: int = 4) -> str:
    """A one-line draft as the editor draws it from `column` on (VS Code 1.99's line renderer, with the
    default `editor.renderControlCharacters`): tabs as spaces to the next tab stop, control characters
    as their Unicode pictures, bidi controls as [U+XXXX], line-separator-like characters as U+FFFD."""
    out = []
    for c in draft:
        code = ord(c)
        if c == "\t":
            out.append(" " * (tab_size - (column + len("".join(out))) % tab_size))
        elif code < 32:
            out.append(chr(0x2400 + code))
        elif code == 127:
            out.append("\u2421")
        elif code in (0xFEFF, 0x2028, 0x2029, 0x85):
            out.append("\ufffd")
        elif 8234 <= code <= 8238 or 8294 <= code <= 8297 or 8206 <= code <= 8207 or code == 1564:
            out.append(f"[U+{code:04X}]")
        else:
            out.append(c)
    return "".join(out)


def ghost_of(item: dict[str, Any], accepted: int = 0) -> str:
    """The ghost text of a server's inline item once `accepted` characters of it are in the buffer."""
    return shown(item["insertText"][accepted:], item["range"]["start"]["character"] + accepted)


class Browser:
    """extensions/vscode/e2e/driver.mjs: one headless Chromium behind playwright-core, a request a line."""

    def __init__(self, executable: str, url: str, size: tuple[int, int]) -> None:
        self.proc = subprocess.Popen(
            ["node", str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=E2E
        )
        # root: Chromium's sandbox needs user namespaces that a root container rarely has
        self.call("launch", executablePath=executable, url=url, width=size[0], height=size[1], noSandbox=True)

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the browser driver exited ({self.proc.wait()})"
        reply = json.loads(line)
        assert reply["ok"], f"{op}: {reply['error']}"
        return reply["value"]

    def close(self) -> None:
        try:
            self.call("close")
        finally:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=30)


# What the test reads off the page: the status bar item, the ghost text, the suggest widget's rows, the
# notifications.
STATE_JS = r"""() => {
  const text = (el) => (el ? el.textContent.replace(/\u00a0/g, ' ') : null);
  const item = document.querySelector('[id^="superpie.superpie"]');
  // ghost text: spans in the cursor's line (split around special characters), then a block of lines
  const inline = [...document.querySelectorAll('.monaco-editor.focused .ghost-text-decoration')].map(text);
  const below = [...document.querySelectorAll('.monaco-editor.focused .ghost-text .view-line')].map(text);
  const rows = [...document.querySelectorAll('.editor-widget.suggest-widget.visible .monaco-list-row')];
  return {
    status: item ? item.getAttribute('aria-label') : null,
    ready: !!(item && item.querySelector('.codicon-check')),
    ghost: inline.length || below.length ? [inline.join(''), ...below].join('\n') : null,
    menu: rows
      .map((r) => ({ index: Number(r.getAttribute('data-index')), label: text(r.querySelector('.label-name')) }))
      .sort((a, b) => a.index - b.index)
      .map((r) => r.label),
    notifications: [...document.querySelectorAll('.notification-list-item-message')].map(text),
  };
}"""

ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(\w+)\] ", re.M)


class VSCode:
    """code-server with the extension installed as the README says, a workspace, and a browser on it."""

    def __init__(self, root: Path, settings: dict[str, Any], files: dict[str, str]) -> None:
        if not INSTALLED.exists():
            missing(f"code-server is not installed in {E2E.relative_to(ROOT)}")
        if not VSIX.exists():
            missing(f"{VSIX.relative_to(ROOT)} is not built")
        browser = chromium()
        self.root = root
        self.ws = root / "ws"
        self.ws.mkdir()
        for name, text in files.items():
            (self.ws / name).write_text(text)
        self.user_data = root / "user-data"
        for file, part in self._split(settings).items():
            file.parent.mkdir(parents=True)
            file.write_text(json.dumps(part, indent=2))
        self.settings = settings
        # code-server writes a config file (and reads a password) under XDG_CONFIG_HOME: keep it here
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(root / "config"), "XDG_DATA_HOME": str(root / "data")}
        dirs = ["--user-data-dir", str(self.user_data), "--extensions-dir", str(root / "extensions")]

        code, *args = readme_install_command()  # run from the repository's root, as the README says
        assert code == "code"
        done = subprocess.run(
            [str(CODE_SERVER), *dirs, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "successfully installed" in done.stdout, done.stdout + done.stderr

        self.log = (root / "code-server.log").open("w+")
        self.proc = subprocess.Popen(
            [str(CODE_SERVER), "--auth", "none", "--bind-addr", "127.0.0.1:0", "--disable-telemetry",
             "--disable-update-check", "--disable-workspace-trust", *dirs, str(self.ws)],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        self.browser: Browser | None = None
        self._traced: tuple[str, list[tuple[str, Any]]] = ("", [])
        try:
            url = self.wait("code-server to listen", self._url)
            self.browser = Browser(browser, f"{url}?folder={self.ws}", (1000, 560))
            self.drive("wait", selector=".monaco-workbench .part.editor", timeout=60_000)
        except BaseException:
            self.close()
            raise

    def _url(self) -> str | None:
        assert self.proc.poll() is None, f"code-server exited ({self.proc.returncode}); see {self.log.name}"
        self.log.seek(0)
        found = re.search(r"HTTP server listening on (http://127\.0\.0\.1:\d+/)", self.log.read())
        return found.group(1) if found else None

    def _split(self, settings: dict[str, Any]) -> dict[Path, dict[str, Any]]:
        """The settings by file: the remote settings (code-server's Machine/) hold the machine ones."""
        machine = machine_settings()
        return {
            self.user_data / "Machine" / "settings.json": {k: v for k, v in settings.items() if k in machine},
            self.user_data / "User" / "settings.json": {k: v for k, v in settings.items() if k not in machine},
        }

    def configure(self, settings: dict[str, Any]) -> None:
        """Change settings (None removes one) in `Preferences: Open User Settings (JSON)`, or `Open Remote
        Settings (JSON)` for the machine ones, as the README says. (The web workbench does not reload a
        settings.json changed behind its back.)"""
        new = {k: v for k, v in {**self.settings, **settings}.items() if v is not None}
        old = self._split(self.settings)
        for (file, part), title in zip(
            self._split(new).items(), ("Open Remote Settings (JSON)", "Open User Settings (JSON)")
        ):
            if part == old[file]:
                continue
            self.command(f"Preferences: {title}")
            self.drive("wait", selector='.tab.active[aria-label*="settings.json"]')
            self.drive("wait", selector=".monaco-editor.focused")
            self.press("Control+a")
            self.press("Delete")
            self.drive("insert", text=json.dumps(part))  # one line: nothing to indent
            self.press("Control+s")
            self.wait("the settings to be saved", lambda f=file, p=part: read_json(f) == p)  # type: ignore[misc]
            # saved as wanted (checked on the disk); the editor may still hold an edit of its own after the
            # save (it then asks whether to save it): revert that, close it
            self.command("View: Revert and Close Editor")
        self.settings = new

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)  # each look at the page costs the browser: look a few times a second
        raise AssertionError(f"timed out waiting for {what}; {self.failure()}")

    def failure(self) -> str:
        """What the page shows, for a failure's message (and a screenshot of it)."""
        shot = self.root / "failure.png"
        if self.browser:
            self.browser.call("screenshot", path=str(shot))
        return f"state {self.state()}; screenshot {shot}"

    def drive(self, op: str, **args: Any) -> Any:
        """One browser step (keys, a selector to wait for)."""
        assert self.browser
        try:
            return self.browser.call(op, **args)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.failure()}") from None

    def state(self) -> dict[str, Any]:
        return self.browser.call("eval", js=STATE_JS) if self.browser else {}

    def press(self, key: str, times: int = 1) -> None:
        self.drive("press", key=key, times=times)

    def type(self, text: str) -> None:
        self.drive("type", text=text, delay=30)  # one key at a time, as a person types

    def open(self, name: str, timeout: float = 90) -> None:
        """Quick Open (Ctrl+P), as a person would; waits for the model."""
        self.press("Control+p")
        self.drive("wait", selector=".quick-input-widget .monaco-inputbox input")
        self.drive("insert", text=name)
        self.drive("wait", selector=f'.quick-input-list .monaco-list-row.focused[aria-label*="{name}"]')
        self.press("Enter")
        self.drive("wait", selector=f'.tab.active[aria-label*="{name}"]')
        self.drive("wait", selector=".monaco-editor.focused")
        self.wait("the model", lambda: self.state()["ready"], timeout)

    def command(self, title: str, timeout: float = 60) -> None:
        """Run a command from the Command Palette (F1). Some commands appear only once the workbench
        is connected to code-server (Open Remote Settings): the palette is opened again until it lists
        the command. Recently used commands come first, so the test moves down to the one named `title`."""
        row = f'.quick-input-list .monaco-list-row[aria-label*="{title}"]'
        deadline = time.monotonic() + timeout
        while True:
            self.press("F1")
            self.drive("wait", selector=".quick-input-widget .monaco-inputbox input")
            self.drive("insert", text=title)  # a text field: no need to type it key by key
            try:
                assert self.browser
                self.browser.call("wait", selector=row, timeout=5000)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no command '{title}' in the Command Palette; {self.failure()}") from None
                self.press("Escape")
        focused = "document.querySelector('.quick-input-list .monaco-list-row.focused .label-name')?.textContent"
        for _ in range(10):
            if (self.drive("eval", js=focused) or "").startswith(title):
                self.press("Enter")
                return
            self.press("ArrowDown")
        raise AssertionError(f"the Command Palette does not reach '{title}'; {self.failure()}")

    def go_to(self, line: int) -> None:
        """The end of a 1-based line (Ctrl+G, then End)."""
        self.press("Control+g")
        self.type(str(line))
        self.press("Enter")
        self.press("End")

    def ghost(self, timeout: float = 30) -> str:
        return self.wait("ghost text", lambda: self.state()["ghost"], timeout)

    def saved(self, name: str, old: str) -> str:
        """The buffer's text: saved (Ctrl+S) and read back from the disk."""
        self.press("Control+s")
        return self.wait(f"{name} to be saved", lambda: (t := (self.ws / name).read_text()) != old and t)

    # ------------------------------------------------------------------ the output channel

    def output(self) -> str:
        """The extension's output channel: its messages, the server's and the message trace."""
        logs = sorted(self.user_data.glob("logs/*/exthost*/superpie.superpie/superpie.log"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def trace(self) -> list[tuple[str, Any]]:
        """The messages between the extension and the server, in order: (what, its JSON params/result).
        The channel is written while the test reads it: a last entry not yet whole waits for the next read."""
        text = self.output()
        if text == self._traced[0]:
            return self._traced[1]
        starts = [m.start() for m in ENTRY.finditer(text)] + [len(text)]
        out = []
        for n, (start, end) in enumerate(zip(starts, starts[1:])):
            head, _, rest = text[start:end].partition("\n")
            what = head[ENTRY.match(head).end() :]  # type: ignore[union-attr]
            data = re.match(r"(?:Params|Result): (.*)", rest, re.S)
            try:
                out.append((what, json.loads(data.group(1)) if data else None))
            except ValueError:
                if n < len(starts) - 2 or not data:
                    raise
        self._traced = (text, out)
        return out

    def answers(self, method: str) -> list[Any]:
        """The server's successful answers to `method`, oldest first."""
        pattern = re.compile(rf"Received response '{re.escape(method)} - \(\d+\)' in \d+ms\.$")
        return [data for what, data in self.trace() if pattern.match(what) and data is not None]

    def sent(self, method: str) -> list[Any]:
        """The params of the extension's requests and notifications `method`, oldest first."""
        pattern = re.compile(rf"Sending (?:request|notification) '{re.escape(method)}(?: - \(\d+\))?'\.$")
        return [data for what, data in self.trace() if pattern.match(what)]

    def server_drafts(self) -> list[dict[str, Any]]:
        """The items of the server's last inline answer, without the blank and repeated drafts (which
        the extension drops)."""
        answers = self.answers("textDocument/inlineCompletion")
        items = answers[-1]["items"] if answers else []
        texts = [i["insertText"] for i in items]
        return [i for n, (i, t) in enumerate(zip(items, texts)) if t.strip() and t not in texts[:n]]

    def top_draft_shown(self) -> str:
        """Waits for ghost text that is the server's top draft in its last answer; returns that draft."""

        def check() -> str | None:
            drafts = self.server_drafts()
            ghost = self.state()["ghost"]
            return drafts[0]["insertText"] if drafts and ghost == ghost_of(drafts[0]) else None

        self.ghost()
        try:
            return self.wait("the server's top draft as ghost text", check, timeout=10)
        except AssertionError as exc:
            drafts = [d["insertText"] for d in self.server_drafts()]
            raise AssertionError(f"{exc}\nthe server's drafts: {drafts}") from None

    def stats(self) -> dict[str, Any]:
        """`superpie.stats`, as a click on the status bar item asks for it (it opens them as a document)."""
        assert self.browser
        before = len(self.answers("workspace/executeCommand"))
        self.drive("click", selector='[id^="superpie.superpie"] a')
        answers = self.wait("superpie.stats", lambda: self.answers("workspace/executeCommand")[before:])
        self.drive("wait", selector='.tab.active[aria-label*="superpie statistics"]')
        self.command("View: Revert and Close Editor")  # an untitled document: Ctrl+W would ask to save it
        self.drive("wait", selector='.tab.active[aria-label*="superpie statistics"]', state="detached")
        return answers[-1]

    def close(self) -> None:
        try:
            if self.browser:
                self.browser.close()
        finally:
            self.proc.terminate()  # code-server stops its extension host, which stops the server
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def vscode(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[VSCode]:
    """One VS Code for the module, at first on the tiny model (given by `superpie.server.args`)."""
    settings = {**readme_settings(), "superpie.server.args": readme_model_args(tiny_model_dir), **TEST_SETTINGS}
    files = {"ghost.py": SOURCE, "word.py": SOURCE, "menu.py": SOURCE, "inventory.py": SAMPLE, "default.py": SAMPLE}
    code = VSCode(tmp_path_factory.mktemp("vscode"), settings, files)
    yield code
    code.close()


def test_settings_reach_the_server(vscode: VSCode, tiny_model_dir: Path):
    vscode.open("ghost.py")
    init = vscode.sent("initialize")[-1]["initializationOptions"]
    assert init["completion"]["drafts"] == 3 and init["completion"]["strategy"] == "superposed"
    # the model given on the command line (`superpie.server.args`) is the one the server loads
    assert f"loaded {tiny_model_dir} in" in vscode.output()
    assert vscode.stats()["model"]["name"] == tiny_model_dir.name  # what a click on the status bar item shows
    assert not vscode.state()["notifications"]  # no option reported as unknown or invalid


def test_ghost_text_is_the_servers_top_draft_and_tab_inserts_it(vscode: VSCode):
    vscode.open("ghost.py")
    vscode.press("Control+End")
    vscode.type("cfg = ")
    draft = vscode.top_draft_shown()
    item = vscode.server_drafts()[0]
    assert item["range"]["start"] == {"line": 13, "character": 6}  # at the cursor
    vscode.press("Tab")
    vscode.wait("the ghost text to go", lambda: vscode.state()["ghost"] != ghost_of(item))
    assert vscode.saved("ghost.py", SOURCE) == SOURCE + "cfg = " + draft
    # the line is finished, and the server may suggest again at its end: only ever its newest top draft
    ghost = vscode.state()["ghost"]
    assert not ghost or ghost == ghost_of(vscode.server_drafts()[0]), ghost
    accepts = [p for p in vscode.sent("workspace/executeCommand") if p["command"] == "superpie.accept"]
    assert [a["arguments"][0]["rank"] for a in accepts] == [0]
    assert vscode.stats()["accepts"] == {"inline": 1}


def test_a_word_is_accepted_at_a_time(vscode: VSCode):
    vscode.open("word.py")
    vscode.press("Control+End")
    vscode.type("cfg = ")
    draft = vscode.top_draft_shown()
    item = vscode.server_drafts()[0]
    vscode.press("Control+ArrowRight")
    vscode.wait("the rest of the draft", lambda: vscode.state()["ghost"] != ghost_of(item))
    line = vscode.saved("word.py", SOURCE)[len(SOURCE) :]
    word = line[len("cfg = ") :]
    assert line.startswith("cfg = ") and word and draft.startswith(word) and len(word) < len(draft), (word, draft)
    assert vscode.state()["ghost"] == ghost_of(item, len(word))  # the rest stays shown


def test_the_menu_lists_the_servers_drafts(vscode: VSCode):
    vscode.open("menu.py")
    vscode.press("Control+End")
    vscode.type("cfg = ")
    vscode.top_draft_shown()  # the extension's own inline request is answered
    asked = len(vscode.answers("textDocument/completion"))
    vscode.press("Control+Space")
    answer = vscode.wait("the server's menu drafts", lambda: vscode.answers("textDocument/completion")[asked:])[-1]
    items = answer["items"] if isinstance(answer, dict) else answer
    assert len(items) == 3  # superpie.completion.drafts
    labels = vscode.wait("the suggest menu", lambda: vscode.state()["menu"])
    assert labels == [i["label"] for i in sorted(items, key=lambda i: i["sortText"])]
    assert not vscode.state()["ghost"]  # the menu replaces the ghost text
    vscode.press("Escape")


def test_changed_settings_reach_the_running_server(vscode: VSCode):
    vscode.open("ghost.py")
    changes = len(vscode.sent("workspace/didChangeConfiguration"))
    # one draft, and a strategy the server cannot take: it says so (so the value reached it) and keeps its own
    vscode.configure({"superpie.completion.drafts": 1, "superpie.completion.strategy": "sideways"})
    sent = vscode.wait("the changed settings", lambda: vscode.sent("workspace/didChangeConfiguration")[changes:])
    assert sent[-1]["settings"]["superpie"]["completion"]["drafts"] == 1
    warning = vscode.wait("a warning", lambda: [n for n in vscode.state()["notifications"] if "strategy" in n])
    assert "sideways" in warning[0] and "superpie" in warning[0]
    vscode.press("Control+End")
    vscode.type("x = ")
    vscode.top_draft_shown()
    assert len(vscode.answers("textDocument/inlineCompletion")[-1]["items"]) == 1  # the server's answer
    vscode.configure({"superpie.completion.drafts": 3, "superpie.completion.strategy": "superposed"})
    vscode.press("Escape")


@pytest.mark.real_model
def test_real_model_drafts_cycle_and_the_menu_inserts_a_whole_draft(vscode: VSCode):
    """SmolLM2 by name (`superpie.model.path`), in the default precision: drafts that differ (the code model is
    often sure enough here to give one)."""
    vscode.configure(
        {"superpie.server.args": None, "superpie.model.dtype": None, "superpie.model.path": "smollm2-135m"}
    )
    vscode.open("inventory.py", timeout=300)  # a fresh machine converts the embedded GGUF first
    vscode.wait("SmolLM2", lambda: "loaded smollm2-135m in" in vscode.output(), timeout=300)
    vscode.go_to(23)
    vscode.type("total += ")
    draft = vscode.top_draft_shown()
    assert draft.strip()
    drafts = [d["insertText"] for d in vscode.server_drafts()]
    assert len(drafts) >= 2, drafts  # three drafts asked for
    vscode.press("Alt+BracketRight")
    vscode.wait("the second draft", lambda: vscode.state()["ghost"] == ghost_of(vscode.server_drafts()[1]))
    vscode.press("Alt+BracketLeft")
    vscode.wait("the first draft again", lambda: vscode.state()["ghost"] == ghost_of(vscode.server_drafts()[0]))

    asked = len(vscode.answers("textDocument/completion"))
    vscode.press("Control+Space")
    answer = vscode.wait("the server's menu drafts", lambda: vscode.answers("textDocument/completion")[asked:])[-1]
    items = sorted(answer["items"] if isinstance(answer, dict) else answer, key=lambda i: i["sortText"])
    assert len(items) >= 2, items
    assert vscode.wait("the suggest menu", lambda: vscode.state()["menu"]) == [i["label"] for i in items]
    vscode.press("Enter")  # the first item is selected: take it
    lines = SAMPLE.split("\n")
    edit = items[0]["textEdit"]
    assert edit["range"]["start"]["line"] == 22
    lines[22] = (lines[22] + "total += ")[: edit["range"]["start"]["character"]] + edit["newText"]
    assert vscode.saved("inventory.py", SAMPLE) == "\n".join(lines)
    accepts = [p["arguments"][0] for p in vscode.sent("workspace/executeCommand") if p["command"] == "superpie.accept"]
    assert accepts[-1]["kind"] == "menu" and accepts[-1]["rank"] == 0


@pytest.mark.real_model
def test_with_no_model_settings_the_default_model_for_this_cpu_completes(vscode: VSCode):
    """No model setting left (after the test above: `superpie.model.path` removed too): the default model for this
    CPU (the code model where it has bf16 units), in the default precision."""
    from superpie.completion.model.loading import default_model

    vscode.configure({"superpie.server.args": None, "superpie.model.dtype": None, "superpie.model.path": None})
    vscode.open("default.py", timeout=300)  # a fresh machine converts the embedded GGUF first
    vscode.wait("the default model", lambda: "loaded the default model in" in vscode.output(), timeout=300)
    vscode.go_to(23)
    vscode.type("total += ")
    assert vscode.top_draft_shown().strip()
    if SCREENSHOT:
        time.sleep(0.5)
        assert vscode.browser
        vscode.browser.call("screenshot", path=SCREENSHOT)
    assert vscode.stats()["model"]["name"] == default_model().display
