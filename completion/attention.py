"""Attention of the fast runner over the KV store's buffers, with the kernel picked by query rows.

SDPA's CPU kernel is tiled for long query blocks. Measured on AVX-512 (1 thread, 30 layers, bf16 KV):
- one query row (a decode step): SDPA ~90 ms at 2k context, two matmuls ~12 ms;
- 2-16 rows (a small PIE hunk, a draft tree): SDPA ~140 ms for 16 rows at 4k, two matmuls with the
  scores kept contiguous (so the mask add and softmax run at full speed) ~80 ms;
- longer blocks (prefill chunks): SDPA is faster (it never materialises the scores).
fp32 (the reference precision) always takes SDPA, which there is as fast as the matmuls.

Grouped KV heads are never repeated: the query heads of a group become rows of one matmul against
that group's keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FEW_ROWS = 16  # up to this many query rows, matmul attention beats SDPA in bf16


@dataclass(frozen=True)
class Mask:
    """One forward's additive mask, examined once for all layers."""

    full: torch.Tensor | None  # [1, 1, n, S] as given (SDPA takes it as is)
    rows: torch.Tensor | None  # [n, S] view of it
    tail_only: bool  # all new tokens see all of [0, start): only the last n columns need adding
    start: int  # KV index of the first new token

    @classmethod
    def of(cls, mask: torch.Tensor | None, start: int, n: int) -> Mask:
        """Wrap `mask` [1, 1, n, start + n] (or None: everything visible)."""
        if mask is None:
            return cls(None, None, True, start)
        rows = mask.view(n, -1)
        return cls(mask, rows, not bool(rows[:, :start].any()), start)


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Mask, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v for q [1, H, n, D] and grouped keys/values [1, Hkv, S, D]."""
    n = q.shape[2]
    if q.dtype != torch.float32 and n == 1:
        return _one_row(q, keys, values, mask, scale)
    if q.dtype != torch.float32 and n <= FEW_ROWS:
        return _few_rows(q, keys, values, mask, scale)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask.full, scale=scale, enable_gqa=True)


def _one_row(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Mask, scale: float) -> torch.Tensor:
    """One query row: keys @ q^T (long side first, the orientation oneDNN runs fast in bf16)."""
    heads, d = q.shape[1], q.shape[3]
    hkv, s = keys.shape[1], keys.shape[2]
    qg = q.view(hkv, heads // hkv, d)  # [Hkv, G, D]: head h = kv * G + g, as `enable_gqa` pairs them
    scores = torch.matmul(keys[0], qg.transpose(1, 2)).transpose(1, 2)  # [Hkv, G, S]
    if mask.rows is None or mask.tail_only:  # a lone new token always sees itself
        scores = scores * scale
    else:
        scores = torch.addcmul(mask.rows.view(1, 1, s), scores, torch.tensor(scale, dtype=scores.dtype))
    probs = torch.softmax(scores, dim=-1)  # accumulates in fp32 inside, one bf16 rounding out
    return torch.matmul(probs, values[0]).view(1, heads, 1, d)  # [1, H, 1, D]


def _few_rows(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Mask, scale: float) -> torch.Tensor:
    """A few query rows: q @ keys^T so the scores come out contiguous for the mask add and softmax."""
    heads, n, d = q.shape[1], q.shape[2], q.shape[3]
    hkv, s = keys.shape[1], keys.shape[2]
    group = heads // hkv
    qg = (q[0] * scale).reshape(hkv, group * n, d)  # [Hkv, G n, D] (scaled here: n rows, not S columns)
    scores = torch.matmul(qg, keys[0].transpose(1, 2))  # [Hkv, G n, S]
    if mask.rows is not None:
        grid = scores.view(hkv, group, n, s)
        if mask.tail_only:  # the common PIE hunk: only the causal triangle among the new tokens
            grid[..., mask.start :].add_(mask.rows[:, mask.start :])
        else:
            grid.add_(mask.rows)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, values[0]).view(1, heads, n, d)  # [Hkv, G n, D] is [H, n, D]
