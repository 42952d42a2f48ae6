"""Issue 18 item 12: the headless front doors give the same output for the same input.

`superpie replay` and `superpie complete` are deterministic by default: jedi is waited for without a
budget (so whether a draft is constrained never depends on how fast jedi was), the thread count is
fixed before the model loads, the n-gram index is fed on every request, and the measured times (the
one thing that varies) are null. The language server, which must answer in time, keeps its budget and
its stats say how many answers depended on a jedi timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_server import tiny_dir  # noqa: F401  (a fixture)

CLI = [sys.executable, "-m", "superpie.lsp.cli"]


def session_file(path: Path) -> Path:
    """Completions right after `numpy.`, `json.` and `os.path.` (cold jedi takes far past 150 ms on numpy)."""
    text = "import json\nimport os.path\n\nimport numpy\n\nx = numpy."
    events = [
        {"op": "open", "uri": "mod.py", "text": text},
        {"op": "complete", "uri": "mod.py", "position": {"line": 5, "character": 10}},
        {"op": "change", "uri": "mod.py", "changes": [{"text": text + "zeros(3)\ny = json."}]},
        {"op": "complete", "uri": "mod.py", "position": {"line": 6, "character": 9}, "drafts": 2},
        {"op": "change", "uri": "mod.py", "changes": [{"text": text + "zeros(3)\ny = os.path."}]},
        {"op": "complete", "uri": "mod.py", "position": {"line": 6, "character": 12}, "strategy": "beam", "drafts": 2},
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def replay(session: Path, model: Path, workspace: Path, *flags: str) -> bytes:
    args = ["replay", str(session), "--json", "--model", str(model), "--dtype", "float32"]
    args += ["--workspace", str(workspace)]
    proc = subprocess.run([*CLI, *args, *flags], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return proc.stdout


def test_the_same_replay_twice_is_byte_identical(tiny_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    session = session_file(tmp_path / "session.jsonl")
    first = replay(session, tiny_dir, tmp_path)
    second = replay(session, tiny_dir, tmp_path)
    assert first == second
    outputs = [json.loads(line) for line in first.splitlines()]
    assert len(outputs) == 3
    for out in outputs:
        assert out["timings_ms"] == {"sync": None, "decode": None, "total": None}  # measurements: not output
        for completion in out["completions"]:
            assert completion["monitor"] is not None and not completion["monitor"]["fell_back"]  # jedi answered


def test_the_cli_measures_times_when_asked_to(tiny_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    session = session_file(tmp_path / "session.jsonl")
    output = replay(session, tiny_dir, tmp_path, "--deterministic", "off")
    out = json.loads(output.splitlines()[0])
    assert out["timings_ms"]["total"] > 0


@pytest.mark.parametrize("flags", [[], ["--deterministic", "off"]])
def test_complete_json_in_both_modes(tiny_dir: Path, tmp_path: Path, flags: list[str]) -> None:  # noqa: F811
    source = tmp_path / "m.py"
    source.write_text("import json\njson.")
    args = ["complete", str(source), "--line", "1", "--character", "5", "--json", "--model", str(tiny_dir)]
    runs = 1 if flags else 2
    outs = [subprocess.run([*CLI, *args, *flags], capture_output=True, timeout=600) for _ in range(runs)]
    assert all(p.returncode == 0 for p in outs), outs[0].stderr.decode()[-2000:]
    timings = json.loads(outs[0].stdout)["timings_ms"]
    assert set(timings) == {"load", "sync", "decode", "total"}
    if flags:
        assert timings["total"] > 0
    else:
        assert set(timings.values()) == {None} and outs[0].stdout == outs[1].stdout


@pytest.mark.asyncio
async def test_the_server_counts_answers_that_depended_on_a_jedi_timeout(tiny_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from lsprotocol import types as t
    from test_server import TINY, Doc, ready, start, stats, stop, until

    options = {**TINY, "monitors": {"jediBudgetMs": 0}}  # no time for jedi at all: every new question falls back
    client, _ = await start(["--model", str(tiny_dir)], tmp_path, options)
    try:
        await ready(client)
        before = (await stats(client))["timing"]["answers_after_jedi_timeout"]
        doc = Doc(client, "cold.py", "import numpy\n\nx = numpy.")
        assert isinstance(await doc.inline(), t.InlineCompletionList)
        s = await stats(client)
        assert s["timing"]["answers_after_jedi_timeout"] == before + 1
        await until(client, lambda s: (s["monitors"]["fallbacks"] or 0) >= 1)  # published after the job
    finally:
        assert await stop(client) == 0
