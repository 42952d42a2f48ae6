"""A direct forward pass for Llama-family models (Llama, Qwen2, Mistral) over a `KVStore`.

The Hugging Face forward costs far more than its arithmetic when decoding one token on a CPU: per
layer it builds Cache objects, mask helpers and kwargs dicts, and calls three projections where
one would do. This runner does per layer only what the math needs: one fused QKV projection, one
RoPE pass over queries and keys together, two in-place K/V writes into the store's buffers, one
attention over the grouped KV heads as they are (completion/model/attention.py), one output projection,
one fused gate/up projection, one down projection, two RMSNorms.

It runs on the Hugging Face module's own weights, converted once to the configured precision
(completion/model/precision.py) and fused per layer. Where the many-row form is the fp32 weight, the
HF modules' weights become views of the fused ones; otherwise the HF linear modules become slices of
the fused projections (which hold bf16 or fp16 for many rows plus, for int8/q4/dyn8, the compact form for
a few). Either way the HF forward still runs, on the runner's weights. The loader hands the runner to
the caches (`LoadedModel.runner`); it satisfies `superpie.cache.forward.Runner`.

The residual stream stays fp32 in every precision; only the projections and attention run in the
compute dtype.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from superpie.cache.forward import causal_mask
from superpie.cache.kv import KVStore
from superpie.completion.model.attention import Mask, attend, uses_matmul
from superpie.completion.model.precision import (
    COMPACT_MAX_ROWS,
    PRECISIONS,
    Precision,
    Projection,
    ProjectionSlice,
    cast_keeping_rotary,
)

FAST_MODEL_TYPES = frozenset({"llama", "qwen2", "mistral"})
# Reduced-precision logits are bf16 (spacing 0.125 at 16-32), so near-ties at the top would flip. The
# top candidates' logits are recomputed in fp32 from their weight rows instead.
REFINE_TOP = 8


def fuse(parent: torch.nn.Module, names: list[str], precision: Precision) -> Projection:
    """One projection over the outputs of `parent.<names>` (nn.Linear), stacked in that order.

    Reference precisions (fp32 many-row form): the modules' weights become views of the fused weight
    (one copy in memory). Others: the modules are replaced by slices of the projection, so the fp32
    weights are freed.
    """
    mods = [getattr(parent, name) for name in names]
    assert all(isinstance(m, torch.nn.Linear) for m in mods), f"cannot fuse {[type(m).__name__ for m in mods]}"
    sizes = [m.out_features for m in mods]
    w = torch.cat([m.weight.detach().float() for m in mods])  # [sum N, K]
    biases = [m.bias for m in mods]
    assert all(b is None for b in biases) or all(b is not None for b in biases), "bias on all parts or none"
    bias = None if biases[0] is None else torch.cat([b.detach().float() for b in biases])
    proj = Projection(w, bias, precision)
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    for i, (name, m) in enumerate(zip(names, mods)):
        lo, hi = offsets[i], offsets[i + 1]
        if precision.reference:
            m.weight = torch.nn.Parameter(w[lo:hi], requires_grad=False)
            if bias is not None:
                m.bias = torch.nn.Parameter(bias[lo:hi], requires_grad=False)
        else:
            setattr(parent, name, ProjectionSlice(proj, lo, hi))
    return proj


@dataclass(frozen=True)
class _Layer:
    ln1: torch.Tensor  # [C] fp32
    qkv: Projection  # [n, C] -> [n, (H + 2 Hkv) D]
    o: Projection  # [n, H D] -> [n, C]
    ln2: torch.Tensor
    gate_up: Projection  # [n, C] -> [n, 2 I]
    down: Projection  # [n, I] -> [n, C]


def supports(model: Any) -> bool:
    """Whether `model` has the plain Llama block this runner implements."""
    config: Any = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in FAST_MODEL_TYPES:
        return False
    if getattr(config, "hidden_act", "silu") != "silu":
        return False
    assert config is not None  # it has a model_type
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    inv_freq = getattr(getattr(model.model, "rotary_emb", None), "inv_freq", None)
    return inv_freq is not None and 2 * inv_freq.numel() == head_dim  # full rotary only


class FastLlama:
    """Runs the transformer of a Llama-family HF model directly, writing K/V into a `KVStore`."""

    def __init__(self, model: Any, precision: Precision = PRECISIONS["float32"]) -> None:
        assert supports(model), "FastLlama needs a Llama/Qwen2/Mistral model with full rotary"
        config = model.config
        inner = model.model
        self.precision = precision
        self.dtype = precision.compute  # projections' activations
        self.kv_dtype = precision.kv_dtype  # KV cache and attention
        self.head_dtype = precision.head.compute
        self.heads: int = config.num_attention_heads
        self.kv_heads: int = config.num_key_value_heads
        self.head_dim: int = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.hidden: int = config.hidden_size
        self.inter: int = config.intermediate_size
        self.eps = float(config.rms_norm_eps)
        self.scale: float = inner.layers[0].self_attn.scaling
        self.rotary: Any = inner.rotary_emb  # HF's rotary module: (x, positions) -> (cos, sin)
        self.norm: torch.Tensor = inner.norm.weight.detach().float().clone()
        self.layers = [self._layer(block, precision) for block in inner.layers]
        head = model.lm_head
        tied = head.weight is inner.embed_tokens.weight
        if precision.head.reference and tied:
            self.lm_head = Projection(head.weight.detach(), None, precision.head)  # the embedding itself
        else:
            self.lm_head = fuse(model, ["lm_head"], precision.head)
        if precision.compute != torch.float32:
            cast_keeping_rotary(model, precision.compute)
        self.embed: torch.Tensor = inner.embed_tokens.weight  # [V, C], compute dtype
        self._head_rows: torch.Tensor | None = None  # [V, C] rows for the fp32 re-scoring of the top logits
        if self.head_dtype != torch.float32 or self.lm_head.compact is not None:
            self._head_rows = self.embed if tied else head.weight.detach().to(precision.compute)
        half = self.head_dim // 2
        # rotate_half(x) = roll(x, D/2) * [-1]*D/2 ++ [1]*D/2: one roll + one fused multiply-add.
        self._sign = torch.cat([-torch.ones(half), torch.ones(half)]).to(self.dtype)  # [D]

    @staticmethod
    def _layer(block: Any, precision: Precision) -> _Layer:
        att, mlp = block.self_attn, block.mlp
        return _Layer(
            ln1=block.input_layernorm.weight.detach().float().clone(),
            qkv=fuse(att, ["q_proj", "k_proj", "v_proj"], precision),
            o=fuse(att, ["o_proj"], precision),
            ln2=block.post_attention_layernorm.weight.detach().float().clone(),
            gate_up=fuse(mlp, ["gate_proj", "up_proj"], precision),
            down=fuse(mlp, ["down_proj"], precision),
        )

    def weight_forms(self) -> dict[str, int]:
        """How many projections hold each few-row form ("none": the many-row form only), for reports."""
        projections = [p for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        forms = Counter(p.compact or "none" for p in projections)
        forms["head " + (self.lm_head.compact or "none")] += 1
        return dict(forms)

    @property
    def exact_rows(self) -> int:
        """Rows up to which a forward gives each row bit for bit as a one-row forward would (given the same
        keys to see): where every projection, the LM head's too, takes the q4 kernel for a few rows (it
        computes each row alone) and attention runs as bf16 matmuls (attention.py). Elsewhere 1: the fp32
        GEMMs, FBGEMM's kernels and SDPA sum a row otherwise when it comes with others."""
        projections = [p for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        q4 = all(p.compact == "q4" for p in [*projections, self.lm_head])
        return COMPACT_MAX_ROWS if q4 and uses_matmul(COMPACT_MAX_ROWS, self.kv_dtype) else 1

    @torch.inference_mode()
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
        """Write the new tokens' K/V at `write_at` (caller set `store.write_at`); return fp32 logits [n_kept, V]."""
        n = positions.numel()
        assert store.write_at == write_at
        # The residual stream stays fp32 whatever the weights: it is n x C (tiny next to the weights),
        # its norms then run fused in fp32, and bf16 rounding does not pile up over 30 layers.
        if inputs_embeds is not None:
            x = inputs_embeds.reshape(n, self.hidden).to(torch.float32, copy=True)  # [n, C], ours to add into
        else:
            assert input_ids is not None, "input_ids or inputs_embeds"
            x = F.embedding(input_ids.view(n), self.embed).float()
        if mask is None and n > 1:
            mask = causal_mask(write_at, n, self.kv_dtype)  # what HF builds when no mask is given
        elif mask is not None and mask.dtype != self.kv_dtype:
            mask = mask.to(self.kv_dtype)
        prepared = Mask.of(mask, write_at, n, store.capacity, self.kv_dtype, fp32_step=not self.precision.reference)
        cos, sin = self._rope(positions)
        kv_only = self._wants_no_rows(logits_for)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if kv_only and i == last:  # a cache encode: the last layer's K/V is all that is kept
                self._attention(i, layer, x, store, cos, sin, prepared, kv_only=True)
                return x.new_zeros((0, self.embed.shape[0]))
            self._attention(i, layer, x, store, cos, sin, prepared)
            self._mlp(layer, x)
        kept = self._kept_rows(x, logits_for)
        if kept.shape[0] == 0:  # no logits wanted (and no layers): skip the LM head, the largest matrix
            return x.new_zeros((0, self.embed.shape[0]))
        h = F.rms_norm(kept, (self.hidden,), self.norm, self.eps)  # [m, C] fp32
        logits = self.lm_head(h.to(self.head_dtype)).float()  # [m, V]
        if self._head_rows is not None:
            self._refine(logits, h, self._head_rows)
        return logits

    @staticmethod
    def _refine(logits: torch.Tensor, h: torch.Tensor, head_rows: torch.Tensor) -> None:
        """Recompute the top candidates' logits in fp32 (in place), so near-ties rank as in fp32.

        Up to `COMPACT_MAX_ROWS` rows, one matrix-vector product per row: a batched product sums a row
        otherwise than a one-row forward's (in the last bit), which `exact_rows` promises it does not."""
        top = logits.topk(min(REFINE_TOP, logits.shape[-1]), dim=-1).indices  # [m, k]
        rows = head_rows[top].float()  # [m, k, C]
        if top.shape[0] <= COMPACT_MAX_ROWS:
            refined = torch.stack([torch.mv(rows[i], h[i]) for i in range(top.shape[0])])
        else:
            refined = torch.bmm(rows, h[:, :, None])[..., 0]
        logits.scatter_(1, top, refined)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMSNorm of the fp32 stream, cast to the compute dtype for the next projection.

        The mean square comes from `vector_norm`, one reduction per row: on the CPU `F.rms_norm` runs as
        separate element-wise passes, slower at a prefill chunk's 512 rows (as exact: both within 2e-6 of
        fp64, and each row's result is the same alone or with others)."""
        inv = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(self.hidden).add_(self.eps).rsqrt_()
        return torch.mul(x, inv).mul_(weight).to(self.dtype)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin [n, 1, D] for all layers, from the model's own rotary module."""
        probe = self._sign[:0]  # the rotary module reads only its dtype and device
        cos, sin = self.rotary(probe, positions.view(1, -1))  # [1, n, D] each
        return cos[0, :, None], (sin[0] * self._sign)[:, None]

    def _attention(
        self,
        i: int,
        layer: _Layer,
        x: torch.Tensor,
        store: KVStore,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: Mask,
        kv_only: bool = False,
    ) -> None:
        """x += attention(norm(x)), writing this layer's new K/V into the store (`kv_only`: only that)."""
        n, h, hkv, d = x.shape[0], self.heads, self.kv_heads, self.head_dim
        qkv = layer.qkv(self._norm(x, layer.ln1))  # [n, (H + 2 Hkv) D]
        if kv_only:
            k = self._rotate(qkv[:, h * d : (h + hkv) * d].view(n, hkv, d), cos, sin)
            v = qkv[:, (h + hkv) * d :].view(n, hkv, d)
            store.write(i, k.transpose(0, 1)[None], v.transpose(0, 1)[None])
            return
        qk = self._rotate(qkv[:, : (h + hkv) * d].view(n, h + hkv, d), cos, sin)  # queries and keys together
        q = qk[:, :h].transpose(0, 1)[None]  # [1, H, n, D]
        k = qk[:, h:].transpose(0, 1)[None]  # [1, Hkv, n, D]
        v = qkv[:, (h + hkv) * d :].view(n, hkv, d).transpose(0, 1)[None]
        store.write(i, k, v)
        out = attend(q, *store.buffers(i), mask, self.scale)  # [1, H, n, D]
        x.add_(layer.o(out[0].transpose(0, 1).reshape(n, h * d).to(self.dtype)))

    def _mlp(self, layer: _Layer, x: torch.Tensor) -> None:
        """x += down(silu(gate) * up) of norm(x)."""
        gu = layer.gate_up(self._norm(x, layer.ln2))  # [n, 2 I]
        gate, up = gu[:, : self.inter], gu[:, self.inter :]
        x.add_(layer.down(F.silu(gate).mul_(up)))

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """RoPE of heads x [n, heads, D] (element-wise: a head rotates the same alone or with others)."""
        return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)

    @staticmethod
    def _wants_no_rows(logits_for: int | torch.Tensor) -> bool:
        """Whether the caller keeps no row's logits (`forward.no_logits()`: a cache encode, KV only)."""
        return isinstance(logits_for, torch.Tensor) and logits_for.numel() == 0

    @staticmethod
    def _kept_rows(x: torch.Tensor, logits_for: int | torch.Tensor) -> torch.Tensor:
        """The rows whose logits the caller wants (HF `logits_to_keep` semantics; 0 keeps all)."""
        if isinstance(logits_for, torch.Tensor):
            return x[logits_for]
        return x if logits_for == 0 else x[-logits_for:]
