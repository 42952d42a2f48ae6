"""Run the model over new tokens against a `KVStore`, with an explicit additive attention mask.

All cache writes go through `run_forward`: the store's write index says where the new keys land,
the position ids say which rotary positions they get (the two differ for a decode that sits in the
scratch area behind the document), and the 4D mask says what each new token may attend to.
"""

from __future__ import annotations

import torch

from superpie.cache.kv import BufferCache, KVStore

# A model carrying a runner under this attribute (see completion/fast_llama.py) is run by it instead
# of its HF forward: same arguments, same logits, KV written straight into the store.
RUNNER_ATTR = "superpie_runner"


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
    model: torch.nn.Module,
    store: KVStore,
    cache: BufferCache,
    write_at: int,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    logits_for: int | torch.Tensor = 1,
) -> torch.Tensor:
    """Write the new tokens' KV at `write_at` and return logits [n_kept, V] (last `logits_for` rows)."""
    n = positions.numel()
    store.ensure_capacity(write_at + n)
    store.write_at = write_at
    runner = getattr(model, RUNNER_ATTR, None)
    if runner is not None:
        return runner(store, write_at, positions, mask, input_ids, inputs_embeds, logits_for)
    out = model(
        input_ids=None if input_ids is None else input_ids.view(1, n),
        inputs_embeds=None if inputs_embeds is None else inputs_embeds.view(1, n, -1),
        position_ids=positions.view(1, n),
        attention_mask=mask,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=logits_for,
    )
    return out.logits[0]


def encode_span(
    model: torch.nn.Module,
    store: KVStore,
    cache: BufferCache,
    start: int,
    ids: list[int],
    dtype: torch.dtype,
    chunk: int = 512,
) -> torch.Tensor | None:
    """Encode `ids` at positions start.. (KV index = position), in chunks; return the last logits."""
    logits = None
    for off in range(0, len(ids), chunk):
        piece = ids[off : off + chunk]
        at = start + off
        positions = torch.arange(at, at + len(piece))
        mask = causal_mask(at, len(piece), dtype)
        logits = run_forward(
            model, store, cache, at, positions, mask, input_ids=torch.tensor(piece, dtype=torch.long)
        )
    return logits
