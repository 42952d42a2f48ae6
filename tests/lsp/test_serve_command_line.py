"""`superpie serve` started as editors start it (issue 16): the real process, over stdio.

vscode-languageclient appends `--stdio` to the command line, and the VS Code extension sends every
option, with `null` for the ones the user left empty: neither may stop the server nor undo what its
command line chose.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types as t
from pytest_lsp import ClientServerConfig, LanguageClient
from test_server import SERVE, Doc, capabilities, stop, until

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight llama, saved as the Hugging Face directory `--model` names."""
    from tiny import tiny_model
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    lm = tiny_model("llama")
    lm.model.save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=lm.tokenizer, eos_token="<|endoftext|>").save_pretrained(path)
    return path


async def start(args: list[str], workspace: Path, options: dict) -> LanguageClient:
    """Start `superpie serve ARGS` and initialize a session (within 30 s: a server that exits fails here)."""
    client = await ClientServerConfig(server_command=[*SERVE, *args]).start()
    params = t.InitializeParams(
        capabilities=capabilities(),
        root_uri=workspace.as_uri(),
        workspace_folders=[t.WorkspaceFolder(uri=workspace.as_uri(), name="ws")],
        initialization_options=options,
    )
    try:
        await asyncio.wait_for(client.initialize_session(params), 30)
    except BaseException:
        await client.stop()
        raise
    return client


async def test_serve_accepts_stdio_as_vscode_languageclient_passes_it(model_dir: Path, tmp_path: Path) -> None:
    client = await start(["--model", str(model_dir), "--stdio"], tmp_path, {"model": {"dtype": "float32"}})
    s = await until(client, lambda s: s["model"]["loaded"] or s["model"]["error"])
    assert (s["model"]["name"], s["model"]["error"]) == (model_dir.name, None)
    assert await stop(client) == 0


async def test_a_null_option_keeps_the_model_of_the_command_line(model_dir: Path, tmp_path: Path) -> None:
    # what the VS Code extension sends when `superpie.model.path` is empty and `server.args` names a model
    options = {"model": {"path": None, "dtype": "float32", "threads": None}, "completion": {"strategy": None}}
    client = await start(["--model", str(model_dir)], tmp_path, options)
    s = await until(client, lambda s: s["model"]["loaded"] or s["model"]["error"], timeout=120)
    assert (s["model"]["name"], s["model"]["error"]) == (model_dir.name, None)
    # a setting changed and cleared again: back to the command line's model, not the default one
    other = tmp_path / "elsewhere"
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings={"model": {"path": str(other)}}))
    await until(client, lambda s: s["model"]["error"] is not None and "elsewhere" in s["model"]["error"])
    client.workspace_did_change_configuration(t.DidChangeConfigurationParams(settings={"model": {"path": None}}))
    s = await until(client, lambda s: s["model"]["loaded"] and s["model"]["error"] is None, timeout=120)
    assert s["model"]["name"] == model_dir.name
    assert await stop(client) == 0


async def test_serve_completes_through_the_remote_engine_its_command_line_names(tmp_path: Path) -> None:
    from fake_engine import FakeEngine, llama_props, llama_result, no_infill

    def completion(body: dict) -> tuple[int, object]:
        return 200, llama_result("th)", ["th", ")"])

    routes = {"/props": llama_props, "/infill": no_infill, "/completion": completion}
    with FakeEngine(routes) as fake:
        # the editor leaves the backend unset (null): the command line's engine answers
        options = {"model": {"backend": None, "url": None}, "monitors": {"enabled": False}}
        client = await start(["--backend", "remote", "--url", fake.url, "--stdio"], tmp_path, options)
        s = await until(client, lambda s: s["model"]["loaded"] or s["model"]["error"])
        assert s["model"]["error"] is None and s["model"]["backend"]["backend"] == "remote"
        assert (s["model"]["backend"]["api"], s["model"]["backend"]["url"]) == ("llama.cpp", fake.url)
        doc = Doc(client, "p.py", "import os\npath = os.getcwd()\nprint(pa")
        answer = await asyncio.wait_for(doc.inline(), 90)  # a loaded machine: the first request imports the engine
        assert answer is not None and [item.insert_text for item in answer.items] == ["th)"]
        assert fake.posted("/completion")[-1]["prompt"].endswith("print(pa")
        assert await stop(client) == 0
