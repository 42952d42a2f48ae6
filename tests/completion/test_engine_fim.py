"""The Engine over the FIM layout on a tiny random model with FIM tokens: a cursor in the middle of a line
completes from the middle begun (cache/fim.py), its last token healed like the prefix layout's."""

from __future__ import annotations

import pytest
from test_fim_cache import TEXT, fim_model, new_cache

from superpie.completion.config import DecodingConfig, EngineConfig
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest


@pytest.mark.parametrize(
    ("strategy", "speculate"), [("greedy", False), ("greedy", True), ("beam", False), ("superposed", False)]
)
def test_a_mid_line_cursor_heals_the_middles_last_token(strategy: str, speculate: bool) -> None:
    config = EngineConfig()
    config.decoding = DecodingConfig(max_tokens=8, speculate=speculate)
    eng = Engine(config, lm=fim_model("llama"))
    cursor = TEXT.index("msg.upper()") + len("msg.up")
    doc = new_cache("llama", "full")
    doc.sync(TEXT, anchor=cursor)
    typed = doc.split_at(cursor).typed
    assert typed and TEXT[:cursor].endswith(typed) and doc.middle_from == TEXT.index("return msg.upper()")
    drafts = 1 if strategy == "greedy" else 2
    result = eng.complete(CompletionRequest("mem://g.py", TEXT, cursor, drafts=drafts, strategy=strategy))
    assert result.strategy == strategy and result.completions
    tokenizer = fim_model("llama").tokenizer
    for draft in result.completions:
        if not draft.tokens:
            continue
        spelled = tokenizer.decode(list(draft.tokens))
        assert spelled.startswith(typed) or typed.startswith(spelled), (typed, spelled)
        assert draft.token_constrained[0]  # the healing mask was on at the first token
