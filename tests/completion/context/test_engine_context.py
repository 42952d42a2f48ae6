"""Repository context through the engine on a tiny seeded model: chosen, cached ahead of the document,
followed by PIE when it changes, and reached from the LSP options and the CLI flags."""

from __future__ import annotations

import math
from pathlib import Path

from test_definitions import MAIN, workspace
from tiny import tiny_model

from superpie.completion.config import ContextConfig, DecodingConfig, EngineConfig, MonitorConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest
from superpie.lsp.cli import build_parser, config_from_flags
from superpie.lsp.options import parse_options

CURSOR = MAIN.index("    return clamp") + len("    return ")
NOTES = "".join(f"note_{i} = {i}\n" for i in range(40))


def engine(root: Path, enabled: bool = True) -> Engine:
    config = EngineConfig(workspace=str(root))
    config.decoding = DecodingConfig(max_tokens=3)
    config.monitors = MonitorConfig(enabled=False, jedi_budget_ms=math.inf)  # the deterministic front doors' jedi
    config.context = ContextConfig(enabled=enabled, tokens=400)
    return Engine(config, lm=tiny_model("llama"))


def complete(eng: Engine, uri: str, text: str = MAIN, offset: int = CURSOR):
    return eng.complete(CompletionRequest(uri, text, offset, drafts=1))


def test_the_definitions_used_near_the_cursor_are_cached_ahead_of_the_document(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    uri = (root / "main.py").as_uri()
    eng = engine(root)
    complete(eng, uri)
    doc = eng.documents.get(uri)
    assert doc is not None
    ctx = doc.cache.context
    assert ctx and doc.cache.ids[: len(ctx)] == ctx
    text = eng._model().tokenizer.decode(ctx)
    assert text.startswith("# pkg/shapes.py\n") and text.endswith("# main.py\n")
    assert "def clamp(x, low, high): ..." in text and "class Point:" in text and "SCALE = 3" in text
    assert "    def norm(self): ..." in text and "        self.x = x" in text  # Point's outline
    assert "hypot" not in text and "max(low" not in text  # bodies elided
    assert "secret" not in text and "local_helper" not in text  # outside the workspace; the document itself
    assert len(ctx) <= 400
    off = engine(root, enabled=False)
    complete(off, uri)
    plain = off.documents.get(uri)
    assert plain is not None and plain.cache.context == [] and doc.cache.ids[len(ctx) :] == plain.cache.ids


def test_an_edit_elsewhere_adds_its_snippet_and_pie_encodes_only_that(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    uri, notes = (root / "main.py").as_uri(), (root / "notes.py").as_uri()
    eng = engine(root)
    complete(eng, uri)
    doc = eng.documents.get(uri)
    assert doc is not None
    before = list(doc.cache.context)
    eng.sync(notes, NOTES)
    edited = NOTES.replace("note_30 = 30\n", "note_30 = 'changed'\n")
    eng.sync(notes, edited)  # an edit in another document: a recently edited region
    result = complete(eng, uri)
    after = doc.cache.context
    shown = eng._model().tokenizer.decode(after)
    assert "# notes.py\n" in shown and "note_30 = 'changed'" in shown and len(after) > len(before)
    added = len(after) - len(before)
    stats = result.cache
    assert stats.mode == "pie" and stats.encoded <= added + 16 + 8, stats  # the new snippet and exact_after
    assert stats.rotated >= len(doc.cache.ids) - len(after) - 16, stats  # the document moved, not re-encoded
    eng.reconfigure(EngineConfig(workspace=str(root), context=ContextConfig(enabled=False)))
    complete(eng, uri)
    assert doc.cache.context == []  # turned off: the context goes


def test_a_visited_region_of_another_document_is_offered(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    eng = engine(root)
    notes = (root / "notes.py").as_uri()
    complete(eng, notes, NOTES, NOTES.index("note_20"))
    complete(eng, (root / "main.py").as_uri())
    chosen = eng.repository_context().last
    assert any(s.path == "notes.py" and s.start <= 20 < s.end for s in chosen), chosen


def test_the_options_reach_the_tree_from_the_server_and_the_command_line() -> None:
    parsed = parse_options({"context": {"enabled": True, "tokens": 256}})
    assert parsed.options.context == ContextConfig(enabled=True, tokens=256) and not parsed.invalid
    assert parse_options({"context": {"tokens": 0}}).invalid
    assert EngineConfig().context == ContextConfig(enabled=False, tokens=1024)
    flags = ["--line", "0", "--character", "0", "--context", "on", "--context-tokens", "300"]
    args = build_parser().parse_args(["complete", "f.py", *flags])
    assert config_from_flags(args).context == ContextConfig(enabled=True, tokens=300)
