"""Window-first opening of a long document (cache/opening.py) on tiny seeded models.

A deferred document encodes the window before a cursor when a sync names one, and the rest in idle
steps; after the steps the cache equals an exact encode (ids, KV within float tolerance, the same top-1
next token everywhere), whatever edits came in between. A short document is not deferred at all.
"""

from __future__ import annotations

import random

import pytest
import torch
from test_cache_exactness import TEXT, cursor_logits, kv, new_cache
from test_fim_cache import middle_logits
from test_fim_cache import new_cache as new_fim_cache
from tiny import KINDS

from superpie.cache.document import DocumentCache
from superpie.cache.opening import Opening

WINDOW, CHUNK = 48, 32
LONG = TEXT + TEXT.replace("Greeter", "Welcomer").replace("hello", "hi") + TEXT.replace("name", "who")
CURSOR = LONG.index("return msg.upper()", len(TEXT) + 10) + len("return ms")  # mid-file, inside a token


def make(kind: str, fim: bool, mode: str = "pie", **kw) -> DocumentCache:
    maker = new_fim_cache if fim else new_cache
    return maker(kind, mode, **{"open_window": WINDOW, "open_chunk": CHUNK, **kw})


def finish(doc: DocumentCache, limit: int = 200) -> int:
    """Run the idle steps until the opening is over; how many it took."""
    for n in range(limit):
        if not doc.open_step():
            assert doc.opening is None
            return n
    raise AssertionError("the opening never finished")


def before_cursor(doc: DocumentCache, prefix_len: int) -> list[int]:
    """The cached ids of the text before the cursor (FIM: those before the suffix marker, then the middle's)."""
    if doc.fim is None:
        return doc.ids[:prefix_len]
    return doc.ids[1 : doc.ids.index(doc.fim.suffix)] + doc.ids[doc.ids.index(doc.fim.middle) + 1 :]


def assert_exact(doc: DocumentCache, text: str, cursor: int, kind: str, fim: bool) -> None:
    """The cache equals a fresh exact encode of `text` (cursor: the FIM cut / the window's anchor)."""
    ref = make(kind, fim, mode="full")
    ref.sync(text, anchor=cursor)
    assert doc.ids == ref.ids and doc.offsets == ref.offsets and doc.stale_count == 0
    for (k, v), (rk, rv) in zip(kv(doc), kv(ref), strict=True):
        torch.testing.assert_close(k, rk, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(v, rv, atol=1e-4, rtol=1e-4)
    if fim:
        assert middle_logits(doc).argmax() == middle_logits(ref).argmax()
        return
    for n in range(1, doc.length, max(1, doc.length // 12)):  # the next token after a dozen prefixes
        assert cursor_logits(doc, n).argmax() == cursor_logits(ref, n).argmax(), n


@pytest.mark.parametrize("fim", [False, True])
def test_a_short_document_is_not_deferred(fim: bool) -> None:
    doc, plain = make("llama", fim), make("llama", fim)
    assert not doc.defer(TEXT[:80])
    assert doc.sync(TEXT[:80]).encoded == plain.sync(TEXT[:80]).encoded
    assert doc.opening is None and doc.ids == plain.ids and not doc.open_step()


def test_the_whole_cache_is_not_deferred_when_open_window_is_off() -> None:
    assert not make("llama", False, open_window=0).defer(LONG)
    assert not make("llama", False, mode="exact").defer(LONG)  # only PIE moves what is behind a new chunk


@pytest.mark.parametrize("fim", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_the_cursor_window_first_then_idle_steps_give_an_exact_cache(kind: str, fim: bool) -> None:
    doc = make(kind, fim)
    assert doc.defer(LONG)
    doc.sync(LONG)  # didOpen: no cursor yet, nothing is encoded (the FIM layout's three markers)
    assert doc.length == (3 if fim else 0)
    stats = doc.sync(LONG, anchor=CURSOR)  # the first request: its window only
    full = make(kind, fim, mode="full")
    full.sync(LONG, anchor=CURSOR)
    assert stats.encoded <= WINDOW + WINDOW // 4 + 3 < full.length
    split, ref_split = doc.split_at(CURSOR), full.split_at(CURSOR)
    assert split.typed == ref_split.typed
    tail = slice(-WINDOW + 1, None)  # the window: the tokens before the cursor (and the one it is inside)
    assert before_cursor(doc, split.prefix_len)[tail] == before_cursor(full, ref_split.prefix_len)[tail]
    assert doc.stale_count > 0  # the window never saw the file's head
    logits = middle_logits(doc) if fim else cursor_logits(doc, split.prefix_len)  # a first suggestion works
    assert torch.isfinite(logits).all()
    steps = finish(doc)
    assert steps >= (full.length - doc.length) // CHUNK
    assert_exact(doc, LONG, CURSOR, kind, fim)


@pytest.mark.parametrize("fim", [False, True])
def test_without_a_cursor_the_steps_encode_the_file_from_its_start(fim: bool) -> None:
    doc = make("llama", fim)
    assert doc.defer(LONG)
    doc.sync(LONG)
    lengths = []
    while doc.open_step():
        lengths.append(doc.length)
        if not fim:
            assert doc.stale_count == 0  # appended in order: every chunk sees everything before it
    assert lengths == sorted(lengths) and len(lengths) > 3
    assert_exact(doc, LONG, len(LONG), "llama", fim)


def edited(text: str, cursor: int, rng: random.Random) -> tuple[str, int, bool]:
    """Type at the cursor, or edit somewhere (the head, the window, the tail); (text, cursor, named cursor)."""
    kind = rng.choice(["type", "type", "head", "tail", "window", "jump"])
    if kind == "type":
        piece = rng.choice(["x", ".upper()", "\n    ", " + 1"])
        return text[:cursor] + piece + text[cursor:], cursor + len(piece), True
    if kind == "jump":
        return text, rng.randrange(0, len(text) + 1), True
    at = {"head": rng.randrange(0, 200), "tail": rng.randrange(len(text) - 200, len(text))}.get(
        kind, max(0, cursor - rng.randrange(1, 40))
    )
    j = min(len(text), at + rng.randrange(0, 12))
    text = text[:at] + rng.choice(["# note\n", "", "é→✓", "foo(bar)"]) + text[j:]
    return text, min(cursor, len(text)), False


@pytest.mark.parametrize("fim", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_edits_between_the_steps_keep_the_cache_correct(seed: int, fim: bool) -> None:
    rng = random.Random(seed)
    doc = make("llama", fim)
    text, cursor = LONG, CURSOR
    assert doc.defer(text)
    doc.sync(text, anchor=cursor)
    for _ in range(12):
        text, cursor, named = edited(text, cursor, rng)
        doc.sync(text, anchor=cursor if named or fim else None)
        for _ in range(rng.randrange(0, 3)):
            doc.open_step()
        split = doc.split_at(cursor) if named or fim else None
        if split is not None and not fim:  # the text just before a named cursor is cached
            assert doc.offsets[split.prefix_len - 1][1] + len(split.typed) == cursor
    doc.sync(text, anchor=cursor)
    finish(doc)
    assert_exact(doc, text, cursor, "llama", fim)


def test_a_released_document_forgets_its_opening() -> None:
    doc = make("llama", False)
    doc.defer(LONG)
    doc.sync(LONG, anchor=CURSOR)
    twin = doc.clone()
    doc.release()
    assert doc.opening is None and not doc.open_step()
    finish(twin)  # the clone carries its own opening on
    assert_exact(twin, LONG, CURSOR, "llama", False)


def test_gaps_follow_edits() -> None:
    opening = Opening(window=4, gaps=[(10, 20), (30, 40)])
    opening.follow("a" * 50, "a" * 15 + "bbb" + "a" * 35)  # inside the first gap: still deferred
    assert opening.gaps == [(10, 23), (33, 43)]
    opening.follow("a" * 53, "a" * 5 + "c" + "a" * 37)  # across the first gap's start: the new text is encoded
    assert opening.gaps == [(6, 13), (23, 33)]
    opening.expose(0, 25)
    assert opening.gaps == [(25, 33)]
