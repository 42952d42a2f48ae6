"""`superpie complete --drafts K --strategy S` on the small real model: K ranked entries, same contract."""

from __future__ import annotations

import json
import shutil

import pytest
from test_cli import SAMPLE, SMALL, superpie


@pytest.mark.real_model
def test_complete_with_three_superposed_drafts(tmp_path):
    source = tmp_path / "sample.py"
    shutil.copy(SAMPLE, source)
    where = ["--line", "22", "--character", "12", "--json", "--workspace", str(tmp_path), *SMALL]
    proc = superpie("complete", str(source), *where, "--drafts", "3", "--strategy", "superposed")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"completions", "timings_ms"}
    assert set(out["timings_ms"]) == {"load", "sync", "decode", "total"}
    texts = [c["text"] for c in out["completions"]]
    # at most k, distinct; fewer where the model is sure (alternatives branch only near the best)
    assert 2 <= len(texts) <= 3 and len(set(texts)) == len(texts), texts
    scores = [c["score"] for c in out["completions"]]
    assert scores == sorted(scores, reverse=True)
    # the greedy line is one of the drafts, and first: the single-draft completion does not change
    one = superpie("complete", str(source), *where, "--drafts", "1")
    assert one.returncode == 0, one.stderr
    assert texts[0] == json.loads(one.stdout)["completions"][0]["text"]


def test_drafts_must_be_positive():
    proc = superpie("complete", str(SAMPLE), "--line", "0", "--character", "0", "--drafts", "0")
    assert proc.returncode == 2
    assert "--drafts must be positive" in proc.stderr


@pytest.mark.real_model
def test_replay_complete_events_take_drafts_and_strategy(tmp_path):
    events = [
        {"op": "open", "uri": "sample.py", "text": SAMPLE.read_text()},
        {"op": "complete", "uri": "sample.py", "position": {"line": 22, "character": 12}, "max_tokens": 8,
         "drafts": 2, "strategy": "beam"},
        {"op": "complete", "uri": "sample.py", "position": {"line": 22, "character": 12}, "max_tokens": 8},
    ]  # fmt: skip
    session = tmp_path / "session.jsonl"
    session.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    proc = superpie("replay", str(session), "--json", "--workspace", str(tmp_path), *SMALL)
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert len(first["completions"]) == 2
    assert len(second["completions"]) == 1
    assert set(first) == set(second) == {"uri", "position", "completions", "timings_ms", "cache"}


def test_replay_rejects_a_bad_drafts_field(tmp_path):
    session = tmp_path / "session.jsonl"
    session.write_text(
        json.dumps({"op": "open", "uri": "a.py", "text": "x = 1\n"})
        + "\n"
        + json.dumps({"op": "complete", "uri": "a.py", "position": {"line": 0, "character": 0}, "drafts": 0})
        + "\n"
    )
    proc = superpie("replay", str(session), "--workspace", str(tmp_path), "--model", str(tmp_path / "no-model"))
    assert proc.returncode == 2  # before any model loads: the model named here does not exist
    assert "'drafts' must be a positive integer" in proc.stderr
