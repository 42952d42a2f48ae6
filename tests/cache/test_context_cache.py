"""Repository context cached ahead of the document (cache/context.py), on tiny seeded random models.

When the context changes (a snippet replaced, one added), exact and full equal a fresh forward over the
same sequence; PIE encodes only the changed snippet (plus its `exact_after` tokens), keeps the KV before it,
moves the document behind it by a rotation, and is exact again after a refresh. Prefix-only and FIM layouts.
"""

from __future__ import annotations

import pytest
import torch
from test_fim_cache import TEXT, fim_model
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.completion.model.loading import LoadedModel

SNIPPETS = [
    "# util.py\ndef clamp(x, low, high):\n    return max(low, min(x, high))\n\n",
    "# shapes.py\nclass Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n\n",
    "# main.py\n",
]
CHANGED = "# names.py\nDEFAULT_NAME = 'world'\nGREETING = 'Hello'\n\n"
CURSOR = TEXT.index("        return msg\n") + 8


def model(layout: str) -> LoadedModel:
    return fim_model("llama") if layout == "fim" else tiny_model("llama")


def new_cache(layout: str, mode: str, **kw) -> DocumentCache:
    lm = model(layout)
    fim = None if lm.fim is None else lm.fim.markers
    return DocumentCache(lm.model, lm.tokenizer, lm.rope, mode=mode, runner=lm.runner, fim=fim, **kw)


def context_ids(layout: str, snippets: list[str]) -> list[int]:
    tok = model(layout).tokenizer
    return [i for s in snippets for i in tok.encode(s, add_special_tokens=False).ids]


@torch.inference_mode()
def reference(layout: str, ids: list[int]) -> torch.Tensor:
    """A fresh forward over the whole sequence: the next-token logits at its end."""
    return model(layout).model(input_ids=torch.tensor([ids])).logits[0, -1]


def cursor_logits(doc: DocumentCache) -> tuple[torch.Tensor, int]:
    """Next-token logits at the cursor as decoding reads them (a CursorView at the split), and the split."""
    split = doc.split_at(CURSOR, heal=False)
    n = split.prefix_len
    view = CursorView(doc, n - 1)
    return view.step(input_ids=torch.tensor([doc.ids[n - 1]]))[-1], n


def kv(doc: DocumentCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(k.clone(), v.clone()) for k, v in doc.store.truncate_view(doc.length)]


@pytest.mark.parametrize("layout", ["prefix", "fim"])
@pytest.mark.parametrize("mode", ["exact", "full"])
def test_exact_and_full_equal_a_fresh_forward_after_the_context_changes(layout: str, mode: str) -> None:
    doc = new_cache(layout, mode)
    first = context_ids(layout, SNIPPETS)
    doc.sync(TEXT, anchor=CURSOR, context=first)
    assert doc.ids[: len(first)] == first
    for snippets in ([SNIPPETS[0], CHANGED, SNIPPETS[2]], [CHANGED, *SNIPPETS], SNIPPETS[2:], []):
        ctx = context_ids(layout, snippets)
        doc.sync(TEXT, anchor=CURSOR, context=ctx)
        plain = new_cache(layout, "full")
        plain.sync(TEXT, anchor=CURSOR)
        assert doc.ids == ctx + plain.ids  # the document's layout behind the context, unchanged
        got, n = cursor_logits(doc)
        assert torch.allclose(got, reference(layout, doc.ids[:n]), atol=1e-4)


@pytest.mark.parametrize("layout", ["prefix", "fim"])
def test_pie_encodes_only_the_changed_snippet_and_rotates_the_document(layout: str) -> None:
    pie = new_cache(layout, "pie", stale_threshold=10**9, exact_after=4)
    first = context_ids(layout, SNIPPETS)
    pie.sync(TEXT, anchor=CURSOR, context=first)
    before = kv(pie)
    ctx = context_ids(layout, [SNIPPETS[0], CHANGED, SNIPPETS[2]])
    head = len(context_ids(layout, SNIPPETS[:1]))
    stats = pie.sync(TEXT, anchor=CURSOR, context=ctx)
    changed = len(context_ids(layout, [CHANGED]))
    assert stats.mode == "pie" and stats.reused >= head
    assert stats.encoded <= changed + 4, stats  # the changed snippet (less what it shares) and exact_after
    assert stats.rotated >= pie.length - len(ctx), stats  # the document moved, not re-encoded
    assert pie.stale_count > 0
    for (k0, v0), (k1, v1) in zip(before, kv(pie), strict=True):  # the snippet before the change: untouched
        assert torch.equal(k0[:, :, :head], k1[:, :, :head]) and torch.equal(v0[:, :, :head], v1[:, :, :head])
    exact = new_cache(layout, "full")
    exact.sync(TEXT, anchor=CURSOR, context=ctx)
    assert pie.ids == exact.ids
    pie.refresh()  # idle time: exact again
    assert pie.stale_count == 0
    got, n = cursor_logits(pie)
    assert torch.allclose(got, reference(layout, pie.ids[:n]), atol=1e-4)
    for (kp, vp), (kf, vf) in zip(kv(pie), kv(exact), strict=True):
        assert torch.allclose(kp, kf, atol=1e-4) and torch.allclose(vp, vf, atol=1e-4)


@pytest.mark.parametrize("layout", ["prefix", "fim"])
def test_a_document_edit_keeps_the_context_and_the_same_context_is_no_sync(layout: str) -> None:
    doc = new_cache(layout, "exact")
    ctx = context_ids(layout, SNIPPETS)
    doc.sync(TEXT, anchor=CURSOR, context=ctx)
    assert doc.sync(TEXT, anchor=CURSOR, context=ctx).mode == "none"
    typed = TEXT[:CURSOR] + "x" + TEXT[CURSOR:]
    stats = doc.sync(typed, anchor=CURSOR + 1)  # a background sync names no context: it stays
    assert doc.ids[: len(ctx)] == ctx and stats.reused >= len(ctx)
    assert doc.sync(typed, anchor=CURSOR + 1, context=ctx).mode == "none"


def test_a_cursor_split_never_backs_into_the_context() -> None:
    doc = new_cache("prefix", "exact")
    ctx = context_ids("prefix", SNIPPETS)
    doc.sync(TEXT, anchor=0, context=ctx)
    split = doc.split_at(0, heal=True)
    assert split.prefix_len == len(ctx) and split.typed == ""
    inside = TEXT.index("class") + 3
    split = doc.split_at(inside)
    assert split.prefix_len > len(ctx) and TEXT[:inside].endswith(split.typed)
