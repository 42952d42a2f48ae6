"""Rotary position facts of a model, and the key re-rotation that PIE is built on.

RoPE encodes position p by rotating each pair of key dims by the angle p * inv_freq[i]. Rotations
compose, so a key cached at position p moves to position p + d by one more rotation by d * inv_freq:
no re-encoding needed. Keys are cached after RoPE, so only the rotary dims are touched, in fp32, and
without the model's `attention_scaling` (YaRN's mscale is already inside the cached key; applying it
again would scale the key twice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Models whose rotary pairs are adjacent dims (2i, 2i+1) rather than the two halves (i, i + d/2).
INTERLEAVED_MODEL_TYPES = frozenset({"cohere", "cohere2", "glm", "glm4", "gptj", "codegen"})

# RoPE variants whose frequencies depend on the sequence length: a cached key cannot be moved by a
# fixed rotation, so the cache falls back to exact re-encoding for them.
LENGTH_DEPENDENT_ROPE = frozenset({"dynamic", "longrope"})


@dataclass(frozen=True)
class RopeSpec:
    """What the cache needs to know to re-rotate cached keys."""

    inv_freq: torch.Tensor  # [rot_dim // 2], fp32
    rotary_dim: int  # leading dims of each head that carry rotation (partial rotary: < head_dim)
    interleaved: bool  # pairs are (2i, 2i+1) instead of (i, i + rotary_dim // 2)
    rope_type: str

    @property
    def shiftable(self) -> bool:
        """Whether a fixed rotation moves a cached key exactly (false for length-dependent RoPE)."""
        return self.rope_type not in LENGTH_DEPENDENT_ROPE


def _find_rotary_module(model: torch.nn.Module) -> torch.nn.Module | None:
    for name, module in model.named_modules():
        if name.endswith("rotary_emb") and isinstance(getattr(module, "inv_freq", None), torch.Tensor):
            return module
    return None


def rope_spec_of(model: torch.nn.Module) -> RopeSpec:
    """Read the rotary parameters off a loaded Hugging Face model; raise if it has no RoPE."""
    module = _find_rotary_module(model)
    if module is None:
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ValueError(f"model type '{model_type}' has no rotary position embeddings; superpie needs a RoPE model")
    found = module.inv_freq
    assert isinstance(found, torch.Tensor)  # checked in _find_rotary_module
    inv_freq = found.detach().to(torch.float32).clone()
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    rope_type = getattr(module, "rope_type", "default") or "default"
    return RopeSpec(
        inv_freq=inv_freq,
        rotary_dim=2 * inv_freq.numel(),
        interleaved=model_type in INTERLEAVED_MODEL_TYPES,
        rope_type=str(rope_type),
    )


@dataclass(frozen=True)
class Rotation:
    """A position shift per token, with its cos/sin computed once and applied to every layer."""

    spec: RopeSpec
    cos: torch.Tensor  # [S, rot/2] fp32
    sin: torch.Tensor

    @classmethod
    def by(cls, spec: RopeSpec, deltas: torch.Tensor | int, seq: int) -> Rotation:
        """The rotation that moves `seq` keys by `deltas` positions (one per token, or one for all)."""
        if isinstance(deltas, int):
            deltas = torch.full((seq,), deltas, dtype=torch.float32)
        assert deltas.shape == (seq,), f"one delta per token expected, got {tuple(deltas.shape)} for {seq} tokens"
        angles = deltas.to(torch.float32)[:, None] * spec.inv_freq[None, :]  # [S, rot/2]
        return cls(spec, angles.cos(), angles.sin())

    def slice(self, start: int, length: int) -> Rotation:
        """The shifts of tokens [start, start + length) of this rotation."""
        end = start + length
        return Rotation(self.spec, self.cos[start:end], self.sin[start:end])

    def apply(self, keys: torch.Tensor) -> torch.Tensor:
        """Rotated copy of `keys` [..., S, head_dim]; pass-through dims (partial rotary) copied as is."""
        rot = self.spec.rotary_dim
        cos, sin = self.cos, self.sin
        k32 = keys[..., :rot].to(torch.float32)
        if self.spec.interleaved:
            x1, x2 = k32[..., 0::2], k32[..., 1::2]
            rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        else:
            half = rot // 2
            x1, x2 = k32[..., :half], k32[..., half:]
            rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        if rot == keys.shape[-1]:
            return rotated.to(keys.dtype)
        return torch.cat((rotated.to(keys.dtype), keys[..., rot:]), dim=-1)


def rotate_keys(keys: torch.Tensor, deltas: torch.Tensor | int, spec: RopeSpec) -> torch.Tensor:
    """Return `keys` [..., S, head_dim] moved by `deltas` positions (one per token, or one for all)."""
    return Rotation.by(spec, deltas, keys.shape[-2]).apply(keys)
