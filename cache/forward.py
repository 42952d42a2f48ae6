"""Run the model over new tokens against a `KVStore`, with an explicit additive attention mask.

All cache writes go through `run_forward`: the store's write index says where the new keys land,
the position ids say which rotary positions they get (the two differ for a decode that sits in the
scratch area behind the document), and the 4D mask says what each new token may attend to.

The forward itself is a `Runner`, handed to the caches by whoever loaded the model: the fast runner
(completion/model/fast_llama.py) for Llama-family models, else `HFRunner`, the Hugging Face module's
own forward writing through a `BufferCache`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from superpie.cache.kv import BufferCache, KVStore


class Runner(Protocol):
    """A forward pass over new tokens that writes their K/V into a store and returns their logits."""

    @property
    def kv_dtype(self) -> torch.dtype:
        """Dtype of the K/V it writes (and of the masks it reads)."""
        ...

    def __call__(
        self,
        store: KVStore,
        write_at: int,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_for: int | torch.Tensor = 1,
    ) -> torch.Tensor:
        """Write the new tokens' K/V at `write_at` (`store.write_at` is set); return logits [n_kept, V]."""
        ...


class HFRunner:
    """The Hugging Face module's own forward: any causal LM with RoPE, K/V written through `BufferCache`."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @property
    def kv_dtype(self) -> torch.dtype:
        """The weights' dtype, in which the HF attention computes its keys and values."""
        return next(self.model.parameters()).dtype

    def __call__(
        self,
        store: KVStore,
        write_at: int,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_for: int | torch.Tensor = 1,
    ) -> torch.Tensor:
        """Logits [n_kept, V] in the weights' dtype (HF `logits_to_keep` semantics for `logits_for`)."""
        n = positions.numel()
        out = self.model(
            input_ids=None if input_ids is None else input_ids.view(1, n),
            inputs_embeds=None if inputs_embeds is None else inputs_embeds.view(1, n, -1),
            position_ids=positions.view(1, n),
            attention_mask=mask,
            past_key_values=BufferCache(store),
            use_cache=True,
            logits_to_keep=logits_for,
        )
        return out.logits[0]


def neg_inf(dtype: torch.dtype) -> float:
    """The additive mask value for 'may not attend' (finite, so fully masked rows give no NaN)."""
    return torch.finfo(dtype).min


def causal_mask(start: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    """[1, 1, n, start + n]: each new token sees everything before `start` and the new ones before it."""
    mask = torch.zeros((n, start + n), dtype=dtype)
    mask[:, start:] = torch.triu(torch.full((n, n), neg_inf(dtype), dtype=dtype), diagonal=1)
    return mask[None, None]


@torch.inference_mode()
def run_forward(
    runner: Runner,
    store: KVStore,
    write_at: int,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    logits_for: int | torch.Tensor = 1,
) -> torch.Tensor:
    """Write the new tokens' KV at `write_at` and return logits [n_kept, V] (last `logits_for` rows)."""
    store.ensure_capacity(write_at + positions.numel())
    store.write_at = write_at
    return runner(store, write_at, positions, mask, input_ids, inputs_embeds, logits_for)


def no_logits() -> torch.Tensor:
    """`logits_for` of a forward that only writes KV: no row (the LM head is skipped; for Qwen2.5-Coder-0.5B
    it is about a tenth of a few-row forward)."""
    return torch.empty(0, dtype=torch.long)


def encode_span(runner: Runner, store: KVStore, start: int, ids: list[int], chunk: int = 512) -> None:
    """Encode `ids` at positions start.. (KV index = position), in chunks: their KV only, no logits."""
    for off in range(0, len(ids), chunk):
        piece = ids[off : off + chunk]
        at = start + off
        positions = torch.arange(at, at + len(piece))
        mask = causal_mask(at, len(piece), runner.kv_dtype)
        fed = torch.tensor(piece, dtype=torch.long)
        run_forward(runner, store, at, positions, mask, input_ids=fed, logits_for=no_logits())


def encode_pieces(
    runner: Runner, store: KVStore, length: int, pieces: list[tuple[int, list[int]]], chunk: int = 512
) -> None:
    """Encode several runs of new tokens (start index, ids) of a sequence of `length` tokens whose other
    tokens already hold their KV, as encoding them one run after another would: each new token sees every
    token before it, kept or new.

    Why one forward: each forward reads every weight once, so a sync's hunks (a cursor jump in the FIM
    layout moves two markers and the middle) cost one weight read instead of one per hunk. The runs are
    computed behind the sequence (at `length`..), under a mask that shows each one the kept tokens before
    its own index and the new ones before it, then copied into place. More than `chunk` new tokens go
    run by run, as `encode_span` goes.
    """
    pieces = [(start, ids) for start, ids in pieces if ids]
    total = sum(len(ids) for _, ids in pieces)
    if len(pieces) <= 1 or total > chunk:
        for start, ids in pieces:
            encode_span(runner, store, start, ids, chunk)
        return
    slots = torch.cat([torch.arange(start, start + len(ids)) for start, ids in pieces])
    dtype = runner.kv_dtype
    kept = torch.ones(length, dtype=torch.bool)
    kept[slots] = False
    sees_kept = kept[None, :] & (torch.arange(length)[None, :] < slots[:, None])  # [n, length]
    sees_new = slots[None, :] <= slots[:, None]  # [n, n]: new tokens at or before its own index
    visible = torch.cat([sees_kept, sees_new], dim=1)
    mask = torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, neg_inf(dtype))
    fed = torch.tensor([t for _, piece in pieces for t in piece], dtype=torch.long)
    run_forward(runner, store, length, slots, mask[None, None], input_ids=fed, logits_for=no_logits())
    store.place(length, slots)
