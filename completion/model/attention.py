"""Attention of the fast runner over the KV store's buffers, with the kernel picked by query rows.

SDPA's CPU kernel is tiled for long query blocks; on a CPU with bf16 matrix instructions, for a few
query rows in bf16 it costs several times two plain matmuls. So, in bf16 there:
- one query row (a decode step): two matmuls, keys first (the orientation oneDNN runs fast);
- 2-60 rows (a typed hunk, a cursor jump's middle, a draft tree, beam steps): matmuls per KV head with
  the scores kept contiguous (so the mask add and softmax run at full speed);
- more rows (a pasted or moved block, prefill chunks): SDPA, which never materialises the scores.
  With torch 2.13 on an AMX CPU, SDPA's kernel is fast at 64 rows and beyond (1.3-2x the matmuls at
  64-128 rows over 1-4k keys) but not at 40-56 (its row blocks), where the matmuls are about 1.1x
  faster (benchmarks/forward_rows.py); under the torch of 2026-11 the matmuls had won up to 128 rows.
Where bf16 is emulated (AVX2), bf16 matmuls are far slower than SDPA's kernel beyond one row: only a
decode step takes them. In fp32 a decode step takes two batched matmuls too, queries first: SDPA
streams a group's keys and values once per query head (7 times for Qwen2.5-0.5B, 3 for SmolLM2), the
matmuls once per group, and at 2k tokens of context on a real model the buffers of all layers are far
larger than the caches, so each read comes from memory. The float32 reference precision keeps SDPA
for its steps too (its results stay those of the HF forward's kernel); several fp32 rows take SDPA,
as fast as the matmuls or faster. The timings behind these rules: benchmarks/RESULTS.md.

Grouped KV heads are never repeated: the query heads of a group become rows of one matmul against
that group's keys.

Up to `COMPACT_MAX_ROWS` rows in bf16, each row comes out bit for bit as a one-row step gives it, at 1
thread and at 2 (checked over 2,700 rows at 1-4.5k keys, tests/completion/model/test_exact_rows.py): the
scores and the softmax already did; the weighted values take one matmul per row ([G, S] x [S, D], the
shape of a step) rather than one per KV head, whose 2-thread split of the keys' sum changed the last bit
at about 1 row in 10. With the compact projections, which compute each row alone, a forward of a few
rows then gives each row exactly as a chain of one-row steps would: speculative decoding's
verification rows are plain decoding's (`FastLlama.exact_rows`). It costs about 0.25 ms per layer at
4 rows over 2k keys.

The matmul kernels read the keys up to a length rounded up to `BUCKET` (the extra slots are masked
out): oneDNN compiles a kernel for every new matrix shape, and a decode step would otherwise bring a
new key length, hence new kernels, every token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from superpie.completion.model.precision import COMPACT_MAX_ROWS, native_bf16

FEW_ROWS = 60  # up to this many query rows, matmul attention beats SDPA in bf16 (with bf16 units)
_NATIVE_BF16 = native_bf16()
BUCKET = 64  # key lengths of the matmul kernels are multiples of this (or the buffer's capacity)


@dataclass(frozen=True)
class Mask:
    """One forward's additive mask, examined once for all layers."""

    full: torch.Tensor | None  # [1, 1, n, S] as given, S = start + n (SDPA takes it as is)
    padded: torch.Tensor | None  # [n, S_pad]: `full` then -inf up to the bucketed length (matmul kernels)
    tail_only: bool  # all new tokens see all of [0, start): only columns from `start` need adding
    start: int  # KV index of the first new token

    @property
    def length(self) -> int:
        """Keys the matmul kernels read (S rounded up to a bucket)."""
        return self.matmul_mask.shape[-1]

    @property
    def matmul_mask(self) -> torch.Tensor:
        """`padded`, for the matmul kernels (which run only when it was made)."""
        assert self.padded is not None, "a mask prepared for SDPA"
        return self.padded

    @classmethod
    def of(
        cls, mask: torch.Tensor | None, start: int, n: int, capacity: int, dtype: torch.dtype, fp32_step: bool = False
    ) -> Mask:
        """Wrap `mask` [1, 1, n, start + n] (None: everything visible) for buffers of `capacity` slots.

        `capacity` 0 means not allocated yet: the store then allocates a multiple of 256 >= start + n.
        `fp32_step`: an fp32 decode step takes the matmuls (see `uses_matmul`).
        """
        if not uses_matmul(n, dtype, fp32_step=fp32_step):  # SDPA takes the mask as given
            return cls.for_sdpa(mask, start)
        return cls.for_matmul(mask, start, n, capacity, dtype)

    @classmethod
    def for_sdpa(cls, mask: torch.Tensor | None, start: int) -> Mask:
        """`mask` as SDPA takes it."""
        return cls(mask, None, True, start)

    @classmethod
    def for_matmul(cls, mask: torch.Tensor | None, start: int, n: int, capacity: int, dtype: torch.dtype) -> Mask:
        """`mask` padded to a bucketed key length, for the matmul kernels (see `of`)."""
        end = start + n
        length = -(-end // BUCKET) * BUCKET
        length = min(length, capacity) if capacity else length
        padded = torch.full((n, length), torch.finfo(dtype).min, dtype=dtype)
        if mask is None:
            padded[:, :end] = 0
            return cls(None, padded, True, start)
        padded[:, :end] = mask.view(n, end)
        return cls(mask, padded, not bool(padded[:, :start].any()), start)


def uses_matmul(n: int, dtype: torch.dtype, native: bool = _NATIVE_BF16, fp32_step: bool = False) -> bool:
    """Whether `n` query rows in `dtype` take the matmul kernels rather than SDPA (`native`: the CPU has
    bf16 matrix instructions; `fp32_step`: a one-row fp32 step does, which every precision but the
    float32 reference asks for)."""
    if dtype == torch.float32:
        return fp32_step and n == 1
    return n == 1 or (native and n <= FEW_ROWS)


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Mask, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v for q [1, H, n, D] and a layer's key/value buffers [1, Hkv, cap, D]."""
    n = q.shape[2]
    if mask.padded is not None:
        keys, values = keys[:, :, : mask.length], values[:, :, : mask.length]
        return _one_row(q, keys, values, mask, scale) if n == 1 else _few_rows(q, keys, values, mask, scale)
    end = mask.start + n
    return F.scaled_dot_product_attention(
        q, keys[:, :, :end], values[:, :, :end], attn_mask=mask.full, scale=scale, enable_gqa=True
    )


def _one_row(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Mask, scale: float) -> torch.Tensor:
    """One query row: keys @ q^T (long side first, the orientation oneDNN runs fast in bf16); in fp32
    q @ keys^T with the mask as the matmul's addend (MKL reads the strided keys in place)."""
    heads, d = q.shape[1], q.shape[3]
    hkv, s = keys.shape[1], keys.shape[2]
    qg = q.view(hkv, heads // hkv, d)  # [Hkv, G, D]: head h = kv * G + g, as `enable_gqa` pairs them
    if q.dtype == torch.float32:
        addend = mask.matmul_mask.view(1, 1, s).expand(hkv, heads // hkv, s)
        probs = torch.softmax(torch.baddbmm(addend, qg * scale, keys[0].transpose(1, 2)), dim=-1)
        return torch.bmm(probs, values[0]).view(1, heads, 1, d)
    scores = torch.matmul(keys[0], qg.transpose(1, 2)).transpose(1, 2)  # [Hkv, G, S_pad]
    scores = torch.addcmul(mask.matmul_mask.view(1, 1, s), scores, torch.tensor(scale, dtype=scores.dtype))
    probs = torch.softmax(scores, dim=-1)  # accumulates in fp32 inside, one bf16 rounding out
    return torch.matmul(probs, values[0]).view(1, heads, 1, d)  # [1, H, 1, D]


def _few_rows(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Mask, scale: float) -> torch.Tensor:
    """A few query rows: per KV head q @ keys^T, so the scores come out contiguous for mask and softmax.

    One matmul per KV head reads that head's keys in place; a batched matmul would first copy all of
    them (the buffers' head stride is the capacity, not the length), which made it slower.
    """
    heads, n, d = q.shape[1], q.shape[2], q.shape[3]
    hkv, s = keys.shape[1], keys.shape[2]
    group = heads // hkv
    qg = (q[0] * scale).reshape(hkv, group * n, d)  # [Hkv, G n, D] (scaled here: n rows, not S columns)
    scores = torch.empty((hkv, group * n, s), dtype=q.dtype)  # [Hkv, G n, S_pad]
    for j in range(hkv):
        torch.mm(qg[j], keys[0, j].t(), out=scores[j])
    grid = scores.view(hkv, group, n, s)
    if mask.tail_only:  # the common PIE hunk: only the causal triangle (and the padding) to add
        grid[..., mask.start :].add_(mask.matmul_mask[:, mask.start :])
    else:
        grid.add_(mask.matmul_mask)
    probs = torch.softmax(scores, dim=-1)
    if n <= COMPACT_MAX_ROWS:  # per row, as a step computes it (see the module docstring)
        per_row = probs.view(hkv, group, n, s).transpose(1, 2)  # [Hkv, n, G, S_pad]
        return torch.matmul(per_row, values[0].unsqueeze(1)).transpose(1, 2).reshape(1, heads, n, d)
    out = torch.empty((hkv, group * n, d), dtype=q.dtype)  # [Hkv, G n, D] is [H, n, D]
    for j in range(hkv):
        torch.mm(probs[j], values[0, j], out=out[j])
    return out.view(1, heads, n, d)
