"""The headless CLI end to end on the real default model, and its bad-input contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import paths
import pytest

ROOT = paths.ROOT
SAMPLE = ROOT / "examples" / "sample.py"


# The small real model, for tests of the mechanisms: the default may be the code model (catalog.choose_default),
# several times slower to load; the tests of the default itself name none.
SMALL = ("--model", "smollm2-135m")


def superpie(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "superpie.lsp.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.real_model
def test_complete_returns_code_and_the_json_contract():
    proc = superpie("complete", str(SAMPLE), "--line", "22", "--character", "12", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"completions", "timings_ms"}
    assert set(out["timings_ms"]) == {"load", "sync", "decode", "total"}
    assert out["completions"] and out["completions"][0]["text"].strip()
    assert isinstance(out["completions"][0]["score"], float)
    # A draft at this cursor should be code that uses the loop variable.
    assert "item" in out["completions"][0]["text"]


def write_session(tmp_path: Path) -> Path:
    source = SAMPLE.read_text()
    lines = source.splitlines()
    events = [
        {"op": "open", "uri": "sample.py", "text": source},
        {"op": "complete", "uri": "sample.py", "position": {"line": 22, "character": 12}, "max_tokens": 12},
        # Insert a method near the top (shifts everything behind it), then complete again.
        {
            "op": "change",
            "uri": "sample.py",
            "changes": [
                {
                    "range": {"start": {"line": 14, "character": 0}, "end": {"line": 14, "character": 0}},
                    "text": "    def count(self):\n        return len(self.items)\n\n",
                }
            ],
        },
        {"op": "complete", "uri": "sample.py", "position": {"line": 25, "character": 12}, "max_tokens": 12},
        # A multi-place edit in one event: rename in two places.
        {
            "op": "change",
            "uri": "sample.py",
            "changes": [
                {"range": {"start": {"line": 7, "character": 6}, "end": {"line": 7, "character": 10}}, "text": "Thing"},
                {
                    "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
                    "text": "# ü 😀\n",
                },
            ],
        },
        {"op": "complete", "uri": "sample.py", "position": {"line": 26, "character": 12}, "max_tokens": 12},
    ]
    assert lines[22].strip() == ""
    path = tmp_path / "session.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    return path


@pytest.mark.real_model
def test_replay_runs_in_all_three_modes(tmp_path):
    session = write_session(tmp_path)
    outputs = {}
    for mode in ("pie", "exact", "full"):
        proc = superpie("replay", str(session), "--mode", mode, "--json", "--workspace", str(tmp_path), *SMALL)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert len(lines) == 3
        for obj in lines:
            assert set(obj) == {"uri", "position", "completions", "timings_ms", "cache"}
            assert set(obj["timings_ms"]) == {"sync", "decode", "total"}
            assert set(obj["cache"]) == {"mode", "reused", "encoded", "rotated"}
            assert obj["uri"] == (tmp_path / "sample.py").resolve().as_uri()
        outputs[mode] = lines
    # After the first edit: pie rotates what is behind the insertion, exact re-encodes it, full everything.
    assert outputs["pie"][1]["cache"]["mode"] == "pie" and outputs["pie"][1]["cache"]["rotated"] > 0
    assert outputs["exact"][1]["cache"]["mode"] == "exact" and outputs["exact"][1]["cache"]["rotated"] == 0
    assert outputs["full"][1]["cache"]["mode"] == "full" and outputs["full"][1]["cache"]["reused"] == 0
    assert outputs["pie"][1]["cache"]["encoded"] < outputs["exact"][1]["cache"]["encoded"]
    assert outputs["exact"][1]["cache"]["encoded"] < outputs["full"][1]["cache"]["encoded"]
    # exact is numerically the full recompute: same drafts.
    for a, b in zip(outputs["exact"], outputs["full"]):
        assert [c["text"] for c in a["completions"]] == [c["text"] for c in b["completions"]]


# ---------------------------------------------------------------------------- bad input


def test_missing_file_exits_2():
    proc = superpie("complete", "no/such/file.py", "--line", "0", "--character", "0")
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "line,character,msg", [(99, 0, "past the end of the document"), (0, 500, "past the end of line")]
)
def test_position_past_the_end_exits_2(line, character, msg):
    proc = superpie("complete", str(SAMPLE), "--line", str(line), "--character", str(character))
    assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr


def test_non_utf8_file_exits_2(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"x = '\xff\xfe'\n")
    proc = superpie("complete", str(bad), "--line", "0", "--character", "0")
    assert proc.returncode == 2 and "not valid UTF-8" in proc.stderr


def test_malformed_replay_line_names_the_line(tmp_path):
    session = tmp_path / "s.jsonl"
    session.write_text('{"op": "open", "uri": "a.py", "text": "x = 1\\n"}\n\n{"op": "complete", \n')
    proc = superpie("replay", str(session))
    assert proc.returncode == 2 and "line 3" in proc.stderr and "malformed JSON" in proc.stderr


def test_models_lists_both_and_names_the_default_for_this_cpu():
    from superpie.completion.model.catalog import choose_default
    from superpie.completion.model.precision import native_bf16

    choice = choose_default(native_bf16())
    listing = superpie("models")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines() if not line.startswith("note:")}
    assert set(rows) == {"smollm2-135m", "qwen2.5-coder-0.5b"}
    assert [name for name, line in rows.items() if "default" in line.split(maxsplit=2)[2]] == [choice.model.name]
    assert ("note:" in listing.stdout) == (choice.note is not None)
    assert superpie("models", "--default").stdout.strip() == choice.model.name
    assert superpie("models", "--best").stdout.strip() == choice.best.name


def test_missing_model_path_exits_2(tmp_path):
    proc = superpie("complete", str(SAMPLE), "--line", "0", "--character", "0", "--model", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_model_dir_without_config_exits_2(tmp_path):
    proc = superpie("complete", str(SAMPLE), "--line", "0", "--character", "0", "--model", str(tmp_path))
    assert proc.returncode == 2 and "config.json" in proc.stderr


def test_replay_position_past_end_names_the_line(tmp_path):
    session = tmp_path / "s.jsonl"
    events = [
        {"op": "open", "uri": "a.py", "text": "x = 1\n"},
        {"op": "complete", "uri": "a.py", "position": {"line": 7, "character": 0}, "max_tokens": 4},
    ]
    session.write_text("\n".join(json.dumps(e) for e in events))
    proc = superpie("replay", str(session), "--workspace", str(tmp_path), "--model", str(tmp_path / "no-model"))
    # the session is checked before the model loads: the bad line is reported, not the missing model
    assert proc.returncode == 2 and "line 2" in proc.stderr and "past the end" in proc.stderr


def test_version():
    proc = superpie("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("superpie ")
