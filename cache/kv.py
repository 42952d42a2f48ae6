"""Preallocated per-layer key/value buffers, and the bridge that lets a Hugging Face model write into them.

The buffers grow geometrically and are written in place by index, so decoding a token costs one
slice write per layer instead of a `torch.cat` of the whole cache. The model sees them through
`BufferCache`, a `transformers` `Cache` whose layers write the new keys/values at the store's write
index and return views of everything up to it; which of those keys a query may attend to is decided
by the explicit 4D mask the caller passes, so a decode can read the prefix before the cursor and skip
the document's suffix that sits in the same buffer.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from superpie.cache.rope import Rotation

_GROWTH = 2
_ROUND = 256


def _round_up(n: int) -> int:
    return max(_ROUND, ((n + _ROUND - 1) // _ROUND) * _ROUND)


class KVStore:
    """Key/value tensors for every layer, [1, H_kv, capacity, D] each, allocated on first write."""

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.write_at = 0  # index where the running forward writes its tokens
        self._reserve = 0  # capacity the first allocation should have

    @property
    def capacity(self) -> int:
        """Tokens the buffers hold before they must grow."""
        k = self.keys[0]
        return 0 if k is None else k.shape[2]

    @property
    def allocated(self) -> bool:
        """Whether the buffers exist (they are shaped by the first forward's keys)."""
        return self.keys[0] is not None

    def nbytes(self) -> int:
        """Memory held by the buffers, for the memory budget."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values) if t is not None)

    @torch.inference_mode()
    def ensure_capacity(self, needed: int) -> None:
        """Grow every layer to hold `needed` tokens, keeping what it holds (geometric growth)."""
        if not self.allocated:
            self._reserve = max(self._reserve, needed)
            return
        if needed <= self.capacity:
            return
        new_cap = _round_up(max(needed, self.capacity * _GROWTH))
        for i in range(self.num_layers):
            keys, values = self.buffers(i)
            self.keys[i], self.values[i] = self._grown(keys, new_cap), self._grown(values, new_cap)

    def buffers(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's whole key and value buffers [1, H_kv, capacity, D] (the first write allocates them)."""
        keys, values = self.keys[layer], self.values[layer]
        assert keys is not None and values is not None, "no forward has written this layer yet"
        return keys, values

    def release(self) -> None:
        """Drop the buffers (eviction); the next write allocates them again."""
        self.keys = [None] * self.num_layers
        self.values = [None] * self.num_layers
        self.write_at = 0

    @staticmethod
    def _grown(t: torch.Tensor, cap: int) -> torch.Tensor:
        out = t.new_zeros((t.shape[0], t.shape[1], cap, t.shape[3]))
        out[:, :, : t.shape[2]] = t
        return out

    @torch.inference_mode()
    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v [1, H, n, D] at the write index; return views of keys/values up to its end."""
        n = k.shape[2]
        end = self.write_at + n
        if self.keys[layer] is None:
            cap = _round_up(max(end, self._reserve))
            self.keys[layer] = k.new_zeros((k.shape[0], k.shape[1], cap, k.shape[3]))
            self.values[layer] = v.new_zeros((v.shape[0], v.shape[1], cap, v.shape[3]))
        keys, values = self.buffers(layer)
        assert end <= keys.shape[2], "ensure_capacity must run before the forward"
        keys[:, :, self.write_at : end] = k
        values[:, :, self.write_at : end] = v
        return keys[:, :, :end], values[:, :, :end]

    @torch.inference_mode()
    def relocate(self, segments: list[tuple[int, int, int]], rotation: Rotation | None = None) -> None:
        """Move contiguous runs (src, dst, length) in every layer, rotating the moved keys.

        `rotation` holds one shift per moved token, in segment order. Each run is read into a fresh
        tensor before it is written, so a run may overlap its own destination; runs are moved in an
        order that never overwrites a run still to be read (right shifts from the back, left
        shifts from the front).
        """
        if not segments:
            return
        offsets, total = [], 0
        for _, _, length in segments:
            offsets.append(total)
            total += length
        order = _safe_order(segments)
        for i in range(self.num_layers):
            keys, values = self.buffers(i)
            for j in order:
                src, dst, length = segments[j]
                k = keys[:, :, src : src + length]
                if rotation is not None:
                    k = rotation.slice(offsets[j], length).apply(k)
                else:
                    k = k.clone()
                v = values[:, :, src : src + length].clone()
                keys[:, :, dst : dst + length] = k
                values[:, :, dst : dst + length] = v

    @torch.inference_mode()
    def place(self, src: int, slots: torch.Tensor) -> None:
        """Copy the len(slots) tokens at src.. (a scratch area) to the indices `slots` (below src), in every
        layer: a forward computed them behind the sequence, where the tokens they go between could not
        be overwritten before it read them (cache/forward.py `encode_pieces`)."""
        n = slots.numel()
        for i in range(self.num_layers):
            keys, values = self.buffers(i)
            keys.index_copy_(2, slots, keys[:, :, src : src + n].clone())
            values.index_copy_(2, slots, values[:, :, src : src + n].clone())

    def truncate_view(self, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views [1, H, length, D] of every layer, for inspection and tests."""
        return [(k[:, :, :length], v[:, :, :length]) for k, v in map(self.buffers, range(self.num_layers))]


def _safe_order(segments: list[tuple[int, int, int]]) -> list[int]:
    """Order runs so none is overwritten before it is read: right-moving from the back first."""
    right = [j for j, (src, dst, _) in enumerate(segments) if dst > src]
    left = [j for j, (src, dst, _) in enumerate(segments) if dst <= src]
    return list(reversed(right)) + left


class _StoreLayer(CacheLayerMixin):
    """One model layer's window onto the shared `KVStore`."""

    is_sliding = False
    is_compileable = False

    def __init__(self, store: KVStore, index: int) -> None:
        super().__init__()
        self.store = store
        self.index = index
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Buffers are allocated by the store on first write."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write this forward's keys/values into the store and return the visible span."""
        return self.store.write(self.index, key_states, value_states)

    def get_seq_length(self) -> int:
        """Tokens before the write index."""
        return self.store.write_at

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """KV length the model's own mask would cover (superpie passes its own 4D mask)."""
        return self.store.write_at + query_length, 0

    def get_max_length(self) -> int:
        """No fixed maximum: the store grows."""
        return -1

    def reset(self) -> None:
        """The store owns the tensors; nothing to reset here."""


class BufferCache(Cache):
    """A `transformers` Cache backed by a `KVStore` (written in place, never concatenated)."""

    def __init__(self, store: KVStore) -> None:
        super().__init__(layers=[_StoreLayer(store, i) for i in range(store.num_layers)])
        self.store = store
