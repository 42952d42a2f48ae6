"""The fill-in-the-middle layout in the document cache, on tiny random models whose tokenizer has FIM tokens.

The cached sequence is `<|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle`, the middle
being what the cursor's line holds before the cursor past its indentation; typing at the cursor (an
append to the middle) and moving the cursor are edits to it. Exact and full agree with a fresh forward over the
layout; PIE tracks the same ids, keeps the KV before the first hunk, re-encodes only the hunks (two
small ones for a cursor jump) and is exact again after a refresh.
"""

from __future__ import annotations

import functools
import random

import pytest
import torch
from tiny import KINDS, _config, tiny_tokenizer
from tokenizers import Tokenizer

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.cache.fim import FimMarkers, fim_sequence
from superpie.cache.stats import CursorSplit
from superpie.completion.model.fim import detect_fim
from superpie.completion.model.loading import LoadedModel, from_model

QWEN_FIM = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|file_sep|>"]

TEXT = """import os


class Greeter:
    def __init__(self, name):
        self.name = name

    def greet(self, loud=False):
        msg = "Hello, " + self.name
        if loud:
            return msg.upper()
        return msg


def main():
    g = Greeter(os.environ.get("USER", "world"))
    print(g.greet())
"""


def with_tokens(tokens: list[str]) -> Tokenizer:
    """The tiny tokenizer plus these special tokens."""
    tok = Tokenizer.from_str(tiny_tokenizer().to_str())
    tok.add_special_tokens(tokens)
    return tok


@functools.lru_cache(maxsize=4)
def fim_model(kind: str) -> LoadedModel:
    """A seeded random model of `kind` whose tokenizer has Qwen's FIM tokens, cached in the FIM layout."""
    from transformers import AutoModelForCausalLM

    tok = with_tokens(QWEN_FIM)
    torch.manual_seed(0)
    config = _config(kind, tok.get_vocab_size())
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # sharp attention, as in tests/tiny.py, so a stale key shows
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return from_model(model, tok, name=f"tiny-fim-{kind}", layout="fim")


def new_cache(kind: str, mode: str, **kw) -> DocumentCache:
    lm = fim_model(kind)
    assert lm.fim is not None
    return DocumentCache(lm.model, lm.tokenizer, lm.rope, mode=mode, runner=lm.runner, fim=lm.fim.markers, **kw)


@torch.inference_mode()
def full_logits(kind: str, ids: list[int]) -> torch.Tensor:
    return fim_model(kind).model(input_ids=torch.tensor([ids])).logits[0]


def middle_logits(doc: DocumentCache) -> torch.Tensor:
    """Next-token logits after the layout's last token (the middle marker, or the middle begun), read as
    decoding reads them (a CursorView at the split, no healing)."""
    split = doc.split_at(doc.cursor, heal=False)
    view = CursorView(doc, split.prefix_len - 1)
    return view.step(input_ids=torch.tensor([doc.ids[split.prefix_len - 1]]))[-1]


def kv(doc: DocumentCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(k.clone(), v.clone()) for k, v in doc.store.truncate_view(doc.length)]


def session(seed: int, steps: int = 12) -> list[tuple[str, int]]:
    """(text, cursor) after each of: typing at the cursor, deleting before it, jumping, editing elsewhere."""
    rng = random.Random(seed)
    text, cursor = TEXT, TEXT.index("        return msg\n") + 8
    out = []
    for _ in range(steps):
        kind = rng.choice(["type", "type", "backspace", "jump", "elsewhere"])
        if kind == "type":
            piece = rng.choice(["x", "msg", ".upper()", "\n        ", " + 1"])
            text, cursor = text[:cursor] + piece + text[cursor:], cursor + len(piece)
        elif kind == "backspace" and cursor > 0:
            text, cursor = text[: cursor - 1] + text[cursor:], cursor - 1
        elif kind == "jump":
            cursor = rng.randrange(0, len(text) + 1)
        else:
            at = rng.randrange(0, len(text) + 1)
            text = text[:at] + "# note\n" + text[at:]
            cursor += len("# note\n") if at <= cursor else 0
        out.append((text, cursor))
    return out


# ----------------------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("tokens", "family"),
    [
        (QWEN_FIM, "qwen2.5-coder"),
        (["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>"], "codegemma"),
        (["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<file_sep>"], "starcoder2"),
        (["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<|EOT|>"], "deepseek-coder"),
        (["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"], "codellama"),
    ],
)
def test_the_family_and_its_stop_tokens_come_from_the_special_tokens(tokens: list[str], family: str) -> None:
    tok = with_tokens(tokens)
    template = detect_fim(tok)
    assert template is not None and template.family == family
    ids = [tok.token_to_id(t) for t in tokens]
    assert template.markers == FimMarkers(prefix=ids[0], suffix=ids[1], middle=ids[2])
    assert set(ids) <= template.stop_ids  # markers and the family's end tokens all end a middle


def test_no_fim_tokens_is_prefix_only() -> None:
    assert detect_fim(tiny_tokenizer()) is None
    with pytest.raises(ValueError, match="no fill-in-the-middle tokens"):
        from tiny import tiny_model

        lm = tiny_model("llama")
        from_model(lm.model, lm.tokenizer, layout="fim")


def test_fim_layout_ids_offsets_and_budgets() -> None:
    lm = fim_model("llama")
    assert lm.fim is not None
    m, tok = lm.fim.markers, lm.tokenizer
    cursor = TEXT.index("    def greet")
    seq = fim_sequence(tok, m, TEXT, cursor, max_tokens=10_000, suffix_tokens=10_000, window_step=16)
    pre = tok.encode(TEXT[:cursor], add_special_tokens=False).ids
    suf = tok.encode(TEXT[cursor:], add_special_tokens=False).ids
    assert seq.ids == [m.prefix, *pre, m.suffix, *suf, m.middle]
    assert seq.offsets[len(pre) + 1] == (cursor, cursor) == seq.offsets[-1]
    assert TEXT[slice(*seq.offsets[len(pre) + 2])] == tok.decode(suf[:1])
    small = fim_sequence(tok, m, TEXT, cursor, max_tokens=64, suffix_tokens=20, window_step=16)
    assert len(small.ids) <= 64 and small.prefix_start % 16 == 0
    assert small.ids[-22:] == [m.suffix, *suf[:20], m.middle]
    assert small.ids[1:-22] == pre[small.prefix_start :]
    # typing at the cursor keeps the prefix window where it was
    typed = TEXT[:cursor] + "x" + TEXT[cursor:]
    assert fim_sequence(tok, m, typed, cursor + 1, 64, 20, 16).prefix_start == small.prefix_start


def test_the_middle_begins_after_the_indentation_of_the_cursors_line() -> None:
    lm = fim_model("llama")
    assert lm.fim is not None
    m, tok = lm.fim.markers, lm.tokenizer
    line = TEXT.index("        msg = ")
    cursor = TEXT.index(" + self.name")
    enc = functools.partial(tok.encode, add_special_tokens=False)
    seq = fim_sequence(tok, m, TEXT, cursor, max_tokens=10_000, suffix_tokens=10_000, window_step=16)
    assert seq.middle_from == line + 8
    mid = enc(TEXT[line + 8 : cursor]).ids
    pre, suf = enc(TEXT[: line + 8]).ids, enc(TEXT[cursor:]).ids
    assert seq.ids == [m.prefix, *pre, m.suffix, *suf, m.middle, *mid]
    assert "".join(TEXT[s:e] for s, e in seq.offsets[-len(mid) :]) == 'msg = "Hello, "'
    for blank in (line, line + 4, line + 8):  # in the indentation or right after it: an empty middle
        at = fim_sequence(tok, m, TEXT, blank, 10_000, 10_000, 16)
        assert at.middle_from == blank and at.ids[-1] == m.middle
    long_line = TEXT[:line] + "        x = " + "a + " * 200 + "\n"
    cut = fim_sequence(tok, m, long_line, len(long_line) - 1, 10_000, 10_000, 16)
    assert cut.middle_from == len(long_line) - 1 and cut.ids[-1] == m.middle  # no middle of 200 terms


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kind", KINDS)
def test_exact_and_full_equal_a_fresh_forward_with_the_marker_moving(kind: str) -> None:
    exact, full = new_cache(kind, "exact", chunk=64), new_cache(kind, "full")
    for text, cursor in session(seed=1, steps=8):
        exact.sync(text, anchor=cursor)
        full.sync(text, anchor=cursor)
        assert exact.ids == full.ids
        ref = full_logits(kind, full.ids)[-1]
        assert torch.allclose(middle_logits(exact), ref, atol=1e-4)
        assert torch.allclose(middle_logits(full), ref, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_pie_tracks_the_layout_keeps_the_kv_before_the_edit_and_refreshes_to_exact(kind: str) -> None:
    """Top-1 agreement of PIE with an exact re-encode is a real-model measurement (random tiny models
    with sharp attention amplify stale context); here: the same ids, and an idle refresh that makes the
    layout exact, after every step of typing, jumps and edits."""
    pie = new_cache(kind, "pie", stale_threshold=10**9)
    for seed in (0, 1):
        pie.release()
        for text, cursor in session(seed):
            stats = pie.sync(text, anchor=cursor)
            exact = new_cache(kind, "full")
            exact.sync(text, anchor=cursor)
            assert pie.ids == exact.ids
            assert stats.mode in ("pie", "none", "full")
            refreshed = pie.clone()
            refreshed.refresh()
            assert refreshed.stale_count == 0
            assert torch.allclose(middle_logits(refreshed), middle_logits(exact), atol=1e-4)


def test_a_cursor_jump_is_two_small_hunks() -> None:
    pie = new_cache("llama", "pie", stale_threshold=10**9, exact_after=0)
    start = TEXT.index("        return msg\n")
    pie.sync(TEXT, anchor=start)
    n = pie.length
    jump = pie.sync(TEXT, anchor=TEXT.index("    print("))
    assert jump.mode == "pie" and jump.hunks == 2 and jump.encoded <= 6, jump
    assert pie.length in range(n - 2, n + 3) and pie.stale_count > 0
    assert pie.sync(TEXT, anchor=start).hunks == 2


def test_a_jump_re_encodes_no_text_behind_the_moved_marker() -> None:
    """A marker move changes no text, so `exact_after` does not apply to it: with the default 16, a jump to a
    line's start encodes the suffix marker and the tokens beside it the tokenizer cuts differently there (6, and
    36 with `exact_after` applied to it)."""
    pie = new_cache("llama", "pie", stale_threshold=10**9)
    assert pie.exact_after == 16
    start = TEXT.index("        return msg\n") + len("        ")
    pie.sync(TEXT, anchor=start)
    jump = pie.sync(TEXT, anchor=TEXT.index("    print(") + len("    "))
    assert jump.mode == "pie" and jump.encoded <= 6, jump
    exact = pie.clone()
    exact.refresh()
    assert pie.stale_count > 0 and exact.stale_count == 0


def test_typing_on_a_line_appends_to_the_middle_and_a_new_line_rotates_the_suffix() -> None:
    pie = new_cache("llama", "pie", stale_threshold=10**9, exact_after=0)
    cursor = TEXT.index("        return msg\n") + 8  # after the indentation: an empty middle
    pie.sync(TEXT, anchor=cursor)
    assert pie.middle_from == cursor and pie.ids[-1] == fim_model("llama").fim.markers.middle  # type: ignore[union-attr]
    text, line = TEXT, cursor
    for ch in "x = 1":
        text, cursor = text[:cursor] + ch + text[cursor:], cursor + 1
        typed = pie.sync(text, anchor=cursor)
        assert typed.rotated == 0 and typed.encoded <= 2 and pie.stale_count == 0, typed
    assert pie.middle_from == line
    text, cursor = text[:cursor] + "\n        " + text[cursor:], cursor + 9
    newline = pie.sync(text, anchor=cursor)
    assert newline.rotated > 0 and pie.stale_count > 0 and pie.middle_from == cursor


def test_split_is_after_the_middle_marker_and_a_sync_without_cursor_follows_the_edit() -> None:
    doc = new_cache("llama", "pie")
    cursor = TEXT.index("        return msg\n")
    doc.sync(TEXT, anchor=cursor)
    split = doc.split_at(cursor)
    assert split.prefix_len == doc.length and split.typed == ""
    with pytest.raises(ValueError, match="sync with anchor"):
        doc.split_at(cursor + 1)
    doc.sync(TEXT[:cursor] + "ab" + TEXT[cursor:])  # typed two characters: the cursor follows them
    assert doc.cursor == cursor + 2
    assert doc.sync(TEXT[:cursor] + "ab" + TEXT[cursor:]).mode == "none"
    # "ab", typed at the line's start, begins the middle: healing backs up into its last token
    last_start = doc.offsets[-1][0]
    assert doc.middle_from == cursor <= last_start < cursor + 2
    assert doc.split_at(cursor + 2) == CursorSplit(doc.length - 1, "ab"[last_start - cursor :])
    assert doc.split_at(cursor + 2, heal=False) == CursorSplit(doc.length, "")
