"""Exactness properties of the document KV cache on tiny seeded models (PIE vs exact vs full)."""

from __future__ import annotations

import random

import pytest
import torch
from tiny import KINDS, MORE_KINDS, tiny_model

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.cache.forward import encode_pieces, encode_span
from superpie.cache.rope import RopeSpec, rotate_keys

TEXT = '''import os


class Greeter:
    """Say hello."""

    def __init__(self, name):
        self.name = name

    def greet(self, loud=False):
        msg = "hello " + self.name
        if loud:
            return msg.upper()
        return msg


def main():
    g = Greeter(os.environ.get("USER", "you"))
    print(g.greet())
'''

SNIPPETS = ["x = 1\n", "    # note\n", "foo(bar)", " + 2", "return None\n", "é→✓", "\n\n", "self.name"]


def random_edit(text: str, rng: random.Random) -> str:
    """Insert, delete, replace, or edit two places at once."""
    kind = rng.choice(["insert", "delete", "replace", "multi"])
    if kind == "multi":
        return random_edit(random_edit(text, rng), rng)
    i = rng.randrange(0, len(text) + 1)
    j = min(len(text), i + rng.randrange(1, 30))
    if kind == "insert":
        return text[:i] + rng.choice(SNIPPETS) + text[i:]
    if kind == "delete":
        return text[:i] + text[j:]
    return text[:i] + rng.choice(SNIPPETS) + text[j:]


def new_cache(kind: str, mode: str, **kw) -> DocumentCache:
    lm = tiny_model(kind)
    return DocumentCache(lm.model, lm.tokenizer, lm.rope, mode=mode, runner=lm.runner, **kw)


@torch.inference_mode()
def full_forward_logits(kind: str, ids: list[int]) -> torch.Tensor:
    lm = tiny_model(kind)
    return lm.model(input_ids=torch.tensor([ids])).logits[0]


def cursor_logits(doc: DocumentCache, prefix_len: int) -> torch.Tensor:
    """Next-token logits after the first prefix_len cached tokens, read through a CursorView."""
    view = CursorView(doc, prefix_len - 1)
    return view.step(input_ids=torch.tensor([doc.ids[prefix_len - 1]]))[-1]


def kv(doc: DocumentCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(k.clone(), v.clone()) for k, v in doc.store.truncate_view(doc.length)]


# --------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rotary_dim", [16, 8])
def test_rotation_by_d_then_minus_d_is_identity(interleaved, rotary_dim):
    spec = RopeSpec(1.0 / (10000 ** (torch.arange(0, rotary_dim, 2) / rotary_dim)), rotary_dim, interleaved, "default")
    keys = torch.randn(1, 2, 37, 16)
    deltas = torch.randint(-500, 500, (37,))
    back = rotate_keys(rotate_keys(keys, deltas, spec), -deltas, spec)
    assert torch.allclose(back, keys, atol=1e-4)
    # Pass-through dims (partial rotary) are bit-identical.
    assert torch.equal(rotate_keys(keys, deltas, spec)[..., rotary_dim:], keys[..., rotary_dim:])


def test_rotation_composes_like_positions():
    spec = tiny_model("llama").rope
    keys = torch.randn(1, 2, 5, 16)
    once = rotate_keys(keys, 7, spec)
    twice = rotate_keys(rotate_keys(keys, 3, spec), 4, spec)
    assert torch.allclose(once, twice, atol=1e-5)


# --------------------------------------------------------------------------- exact == full


@pytest.mark.parametrize("kind", KINDS + MORE_KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_equals_full_after_random_edits(kind, seed):
    rng = random.Random(seed)
    exact = new_cache(kind, "exact", chunk=64)
    text = TEXT
    exact.sync(text)
    for _ in range(6):
        text = random_edit(text, rng)
        stats = exact.sync(text)
        assert stats.mode in ("exact", "none")
        full = new_cache(kind, "full")
        full.sync(text)
        assert exact.ids == full.ids
        for (ke, ve), (kf, vf) in zip(kv(exact), kv(full)):
            assert torch.allclose(ke, kf, atol=1e-4)
            assert torch.allclose(ve, vf, atol=1e-4)
        n = exact.length
        ref = full_forward_logits(kind, exact.ids)
        for p in (n, max(1, n // 2)):
            assert torch.allclose(cursor_logits(exact, p), ref[p - 1], atol=1e-4)


# --------------------------------------------------------------------------- pie properties


@pytest.mark.parametrize("kind", KINDS + MORE_KINDS)
def test_pie_keeps_prefix_values_and_rotates_keys(kind):
    lm = tiny_model(kind)
    pie = new_cache(kind, "pie", stale_threshold=10**9)
    pie.sync(TEXT)
    old_ids, old_kv = list(pie.ids), kv(pie)
    cut = TEXT.index("    def greet")
    new_text = TEXT[:cut] + "    def extra(self):\n        return 42\n\n" + TEXT[cut:]
    stats = pie.sync(new_text)
    assert stats.mode == "pie" and stats.rotated > 0 and stats.hunks >= 1
    first = stats.reused
    delta = len(pie.ids) - len(old_ids)
    tail = len(old_ids) - (first + 1)  # tokens behind the hunk (at least)
    new_kv = kv(pie)
    # The old text encoded at positions shifted by delta: the reference for moved keys.
    shifted = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="full", runner=lm.runner)
    shifted.store.ensure_capacity(len(old_ids) + abs(delta))
    from superpie.cache.forward import encode_span

    encode_span(lm.runner, shifted.store, 0, old_ids)
    ref = [(k.clone(), v.clone()) for k, v in shifted.store.truncate_view(len(old_ids))]
    ref_keys_shifted = [rotate_keys(k, delta, lm.rope) for k, _ in ref]
    n_tail = min(tail, 40)
    for layer, ((ko, vo), (kn, vn)) in enumerate(zip(old_kv, new_kv)):
        # Everything before the first hunk is bit-identical.
        assert torch.equal(kn[:, :, :first], ko[:, :, :first])
        assert torch.equal(vn[:, :, :first], vo[:, :, :first])
        # Kept tokens: values untouched, keys = old keys at shifted positions.
        assert torch.equal(vn[:, :, -n_tail:], vo[:, :, -n_tail:])
        assert torch.allclose(kn[:, :, -n_tail:], ref_keys_shifted[layer][:, :, -n_tail:], atol=1e-4)
    # Independent check of "encoded at shifted positions": run the old ids at positions + delta.
    if delta > 0:
        from superpie.cache.forward import causal_mask, run_forward

        alt = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="full", runner=lm.runner)
        alt.store.ensure_capacity(len(old_ids))
        pos = torch.arange(delta, delta + len(old_ids))
        run_forward(
            lm.runner,
            alt.store,
            0,
            pos,
            causal_mask(0, len(old_ids), alt.dtype),
            input_ids=torch.tensor(old_ids),
        )
        for (kn, _), (ka, _) in zip(new_kv, alt.store.truncate_view(len(old_ids))):
            assert torch.allclose(kn[:, :, -n_tail:], ka[:, :, -n_tail:], atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_pie_multi_place_edit_tracks_full_ids_and_counts_stale(kind):
    pie = new_cache(kind, "pie", stale_threshold=10**9)
    pie.sync(TEXT)
    new_text = TEXT.replace("self.name = name", "self.name = name.strip()").replace(
        "print(g.greet())", "print(g.greet(loud=True))"
    )
    stats = pie.sync(new_text)
    assert stats.mode == "pie" and stats.hunks >= 2
    full = new_cache(kind, "full")
    full.sync(new_text)
    assert pie.ids == full.ids
    assert pie.stale_count > 0
    # Before the first hunk the KV is exact.
    first = stats.reused
    for (kp, vp), (kf, vf) in zip(kv(pie), kv(full)):
        assert torch.allclose(kp[:, :, :first], kf[:, :, :first], atol=1e-5)
        assert torch.allclose(vp[:, :, :first], vf[:, :, :first], atol=1e-5)
    # An idle-time refresh makes it exact everywhere.
    assert pie.refresh() > 0 and pie.stale_count == 0
    for (kp, vp), (kf, vf) in zip(kv(pie), kv(full)):
        assert torch.allclose(kp, kf, atol=1e-4) and torch.allclose(vp, vf, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@torch.inference_mode()
def test_hunks_encoded_in_one_forward_equal_hunks_encoded_one_after_another(kind):
    """`encode_pieces` computes the runs behind the sequence under a mask and copies them into place: the KV
    of each run is what encoding the runs one by one writes, and the kept tokens between them are untouched."""
    lm = tiny_model(kind)
    ids = lm.tokenizer.encode(TEXT, add_special_tokens=False).ids
    pieces = [(3, ids[3:7]), (20, ids[20:21]), (len(ids) - 5, ids[-5:])]
    caches = []
    for together in (True, False):
        doc = new_cache(kind, "full")
        doc.sync(TEXT)
        doc.store.ensure_capacity(2 * len(ids))
        for start, piece in pieces:  # what the runs replace: garbage the encode must overwrite
            for k, v in map(doc.store.buffers, range(doc.store.num_layers)):
                k[:, :, start : start + len(piece)] = 7.0
                v[:, :, start : start + len(piece)] = -7.0
        if together:
            encode_pieces(doc.runner, doc.store, len(ids), pieces)
        else:
            for start, piece in pieces:
                encode_span(doc.runner, doc.store, start, piece)
        caches.append(kv(doc))
    reference = new_cache(kind, "full")
    reference.sync(TEXT)
    for (kt, vt), (ks, vs), (kr, vr) in zip(*caches, kv(reference)):
        assert torch.allclose(kt, ks, atol=1e-4) and torch.allclose(vt, vs, atol=1e-4)
        assert torch.allclose(kt, kr, atol=1e-4) and torch.allclose(vt, vr, atol=1e-4)


def test_stale_threshold_triggers_exact_refresh():
    pie = new_cache("llama", "pie", stale_threshold=5)
    pie.sync(TEXT)
    stats = pie.sync("# header\n" + TEXT)
    assert stats.refreshed > 5 and pie.stale_count == 0


def test_a_refresh_in_steps_re_encodes_the_first_stale_tokens_first_and_ends_exact():
    pie = new_cache("llama", "pie", exact_after=0)
    pie.sync(TEXT)
    pie.sync("# header\n" + TEXT)  # everything behind the header is stale
    stale, load = pie.stale_count, pie.stale_load
    first = pie.stale.index(True)
    assert stale > 20 and load > 0
    assert pie.refresh(limit=8) == 8
    assert pie.stale.index(True) == first + 8 and pie.stale_count == stale - 8  # the first 8, in order
    assert pie.stale_load == load - 8  # what the rest still owes
    steps = 1
    while pie.refresh(limit=8):
        steps += 1
    assert pie.stale_count == 0 and pie.stale_load == 0 and steps == -(-stale // 8)
    full = new_cache("llama", "full")
    full.sync("# header\n" + TEXT)
    for (kp, vp), (kf, vf) in zip(kv(pie), kv(full)):
        assert torch.allclose(kp, kf, atol=1e-4) and torch.allclose(vp, vf, atol=1e-4)


@pytest.mark.parametrize("mode", ["pie", "exact", "full"])
@pytest.mark.parametrize("kind", KINDS)
def test_appends_are_exact_in_every_mode(kind, mode):
    doc = new_cache(kind, mode)
    text = TEXT
    doc.sync(text)
    for extra in ["x = 1\n", "y = x + 2\n", "def f():\n    return y\n"]:
        text += extra
        doc.sync(text)
    full = new_cache(kind, "full")
    full.sync(text)
    assert doc.ids == full.ids
    for (k1, v1), (k2, v2) in zip(kv(doc), kv(full)):
        assert torch.allclose(k1, k2, atol=1e-4) and torch.allclose(v1, v2, atol=1e-4)


# --------------------------------------------------------------------------- cursor view


@pytest.mark.parametrize("kind", KINDS)
def test_cursor_view_hides_suffix_and_decodes_like_a_prefix_only_forward(kind):
    doc = new_cache(kind, "full")
    doc.sync(TEXT)
    p = doc.length // 3
    view = CursorView(doc, p - 1)
    steps = [doc.ids[p - 1], 17, 42, 99]
    got = [view.step(input_ids=torch.tensor([t]))[-1] for t in steps]
    ref = full_forward_logits(kind, doc.ids[:p] + steps[1:])
    for i, g in enumerate(got):
        assert torch.allclose(g, ref[p - 1 + i], atol=1e-4)
    # The document's own KV is untouched by the scratch decode.
    full = new_cache(kind, "full")
    full.sync(TEXT)
    for (k1, v1), (k2, v2) in zip(kv(doc), kv(full)):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)


def test_split_at_backs_up_inside_a_token():
    doc = new_cache("llama", "full")
    text = "value = compute_total(items)\n"
    doc.sync(text)
    cursor = text.index("total") + 2  # inside an identifier token
    split = doc.split_at(cursor, heal=False)
    end = doc.offsets[split.prefix_len - 1][1]
    assert end + len(split.typed) == cursor and text[end:cursor] == split.typed
    assert doc.split_at(len(text), heal=False).typed == ""
    healed = doc.split_at(len(text))  # at a boundary, healing backs up one whole token
    assert healed.prefix_len == doc.length - 1
    assert healed.typed == text[doc.offsets[-2][1] :] and healed.typed.endswith("\n")
    with pytest.raises(ValueError):
        doc.split_at(len(text) + 1)


def test_window_for_long_documents_holds_the_anchor():
    doc = new_cache("llama", "pie", max_tokens=128, window_step=32)
    text = TEXT * 6
    anchor = len(text) - 10
    doc.sync(text, anchor=anchor)
    assert doc.length <= 128 and doc.window_start > 0
    assert doc.offsets[0][0] <= anchor <= doc.offsets[-1][1]
    early = 50
    doc.sync(text, anchor=early)
    assert doc.window_start == 0 and doc.offsets[0][0] <= early <= doc.offsets[-1][1]
