"""Weight precision: float32 (reference), fp16w, int8dyn, bf16, int8, q4 and auto, chosen by name at load time.

Decoding one token reads every weight once, so on a CPU its time is about the weights' bytes over
the memory bandwidth; prefill is a GEMM and wants the fastest matrix unit the CPU has. A `Projection`
therefore holds a weight in up to two forms and picks by the number of rows:

- many rows (prefill, hunk encode): the weight in the compute dtype (bf16 packed once in oneDNN's
  layout where oneDNN can pack it; float32 as loaded), or fp16 for fp16w;
- a few rows (decode, small trees): a compact form read by a dedicated kernel, when configured:
  `int8` = one int8 per weight, one scale per output channel (`torch._weight_int8pack_mm`);
  `q4` = 4-bit groups of 32 along the input with a scale and an offset each
  (`torch._weight_int4pack_mm_for_cpu`): the layout of GGUF Q4_1 and of Q4_K's sub-blocks, so a
  weight that was Q4_1 (all of the default model's) or Q4_K (the code model's `down_proj` in half its
  layers; the rest of it is Q5_0, Q6_K or Q8_0, which 4 bits cannot hold) is held without further loss
  (up to bf16 scales and offsets); any other weight is rounded to the group's min/max grid.
  Both kernels take and return bf16 (their float32 paths are scalar fallbacks, far slower than a
  float32 GEMM), so a float32 projection casts its few rows to bf16 and back around them.
Both forms stay in memory: prefill at the many-row form's speed, decode at the compact form's bandwidth.

`fp16w` stores fp16 weights read by FBGEMM with fp32 activations (and fp32 KV) at every row count:
the accurate compact form.

`int8dyn` is fp16w for many rows plus, for a few rows, FBGEMM's dynamic int8 GEMM ("dyn8"): 7-bit
weights in int8 with a scale per output channel (see `_dyn8_op`), the fp32 activations quantized to
uint8 per call (one scale and offset per call), int32 accumulation, fp32 out. Unlike the ATen
int8/int4 kernels it runs AVX2 integer SIMD, so on AVX2 it reads half of fp16's bytes at the
memory's speed; the price is the quantized activations. Its LM head is the fp32 weight for many
rows and dyn8 for a few, the top logits re-scored in fp32 (fast_llama.py) as for every compact head.

`auto` (the default) depends on the CPU (`native_bf16`):
- with bf16 matrix instructions (AVX-512 BF16, AMX): bf16, packed, for many rows, and q4 for a few: without
  loss where the GGUF weight was 4-bit already (the whole of the default model, Q4_1; the code model's 12
  Q4_K `down_proj`), re-quantized where it was not (the code model's Q5_0/Q6_K/Q8_0 weights: top-1
  agreement with float32 0.988 -> 0.949, the same exact match on held-out code, decode 1.6x faster), and
  the LM head (it only picks the candidates that are re-scored in fp32; the int4 kernel reads it twice as
  fast as int8). `q4` is the same;
- without them (AVX2, or AVX-512 without BF16) bf16 arithmetic is emulated, slower than float32
  (measured on AVX2 at every row count), and the int8/int4 kernels want bf16 activations: `auto` is
  fp16w there, with int8dyn's LM head. Its prefill runs about as fast as float32 (FBGEMM widens the
  fp16 weights inside the GEMM), its decode reads half of float32's bytes and measured as fast as q4
  on AVX2 (whose int4 kernel is compute-bound there), and its fp32 activations agree with float32's
  top-1 token far more often than bf16 activations do. The dyn8 head only picks the candidates whose
  logits are then computed in fp32, so it costs no top-1 agreement, and reads the largest matrix at
  a quarter of float32's bytes; int8dyn's layers (8-bit activations) cost agreement, so they stay
  fp16.

Accuracy is set by the activations, not the weights: the int4/int8/bf16 kernels take and return
bf16, and those roundings (about 2^-9 at each of ~8 points per layer) move the top logits by a few
hundredths, which flips near-ties at a small share of positions on real code. fp16w keeps activations
fp32 and flips fewer. The residual stream stays fp32 in every precision (fast_llama.py). Speed and
top-1 agreement with float32 for each precision: benchmarks/RESULTS.md (benchmarks/cpu_inference.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Rows up to which the compact kernels beat the many-row GEMM (their cost grows with rows, a GEMM's
# far less); benchmarks/RESULTS.md has the kernel timings.
COMPACT_MAX_ROWS = 4
Q4_GROUP = 32
_ROWS = 256  # rows per block when quantizing at load time
_KERNEL_DTYPE = torch.bfloat16  # activations the int8 / int4 kernels run fast on
_ON_GRID = 0.01  # steps from a level that still count as on a 4-bit grid (float rounding of GGUF's dequantization)
DYN8_LEVELS = 63  # dyn8 weights in -63..63: FBGEMM's AVX2 pair sums of uint8 x int8 then fit int16


@dataclass(frozen=True)
class Precision:
    """How weights are stored and in which dtype activations (and the KV cache) are computed."""

    name: str  # canonical: auto | float32 | fp16w | int8dyn | bf16 | int8 | q4
    compute: torch.dtype  # activations into and out of the projections; the KV cache and attention
    # weight form: None (as `compute`) | "fp16" (all rows) | "int8" | "q4" | "dyn8" (few rows)
    compact: str | None = None
    fp16_many: bool = False  # the many-row form is FBGEMM's fp16 weight (fp32 activations), not `compute`
    head_compact: str = "int8"  # the LM head's few-row form when the layers are q4 or fp16 ("dyn8": FBGEMM)

    @property
    def kv_dtype(self) -> torch.dtype:
        """Dtype of the KV cache (and of the attention math): the compute dtype, so keys and values are
        written as the projections give them and attention runs on the same arithmetic."""
        return self.compute

    @property
    def head(self) -> Precision:
        """The LM head's precision: compact models read a compact head for a few rows (`head_compact`). Its
        logits only pick the candidates: the top ones are re-scored in fp32 from the weight rows (fast_llama.py),
        so a lossy q4 head (the embedding is GGUF Q8_0) kept top-1 agreement where it halves the largest read."""
        if self.compact in ("q4", "fp16"):
            return Precision(f"{self.name} head", self.compute, self.head_compact)
        if self.compact == "dyn8":  # the head's many rows read the fp32 weight (for a tied head: the embedding)
            return Precision(f"{self.name} head", self.compute, "dyn8")
        return self

    @property
    def rounds_activations(self) -> bool:
        """Whether the decode path rounds activations below fp32 (bf16 compute, or a compact kernel that
        takes bf16 or int8), so that a many-row forward can differ from a one-row one by more than float noise."""
        return self.compute != torch.float32 or self.compact in ("q4", "int8", "dyn8")

    @property
    def reference(self) -> bool:
        """The many-row form is the fp32 weight as loaded, so the HF modules can share it."""
        return self.compute == torch.float32 and self.compact != "fp16" and not self.fp16_many


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX), where bf16 beats float32.

    Elsewhere oneDNN and ATen convert bf16 to float32 around every multiply, which costs more than
    the float32 arithmetic it stands in for.
    """
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def auto_precision(bf16: bool) -> Precision:
    """`auto` for a CPU with (`bf16`) or without bf16 matrix instructions: see the module docstring."""
    if bf16:
        return Precision("auto", torch.bfloat16, "q4", head_compact="q4")
    return Precision("auto", torch.float32, "fp16", head_compact="dyn8")


PRECISIONS = {
    "auto": auto_precision(native_bf16()),
    "float32": Precision("float32", torch.float32),
    "fp16w": Precision("fp16w", torch.float32, "fp16"),
    "int8dyn": Precision("int8dyn", torch.float32, "dyn8", fp16_many=True),
    "bf16": Precision("bf16", torch.bfloat16),
    "int8": Precision("int8", torch.bfloat16, "int8"),
    "q4": Precision("q4", torch.bfloat16, "q4", head_compact="q4"),
}
_ALIASES = {"fp32": "float32", "bfloat16": "bf16"}
DTYPES = (*PRECISIONS, *_ALIASES)  # every name `resolve_precision` takes


def resolve_precision(name: str) -> Precision:
    """The precision for a configuration value (auto, float32/fp32, fp16w, int8dyn, bf16/bfloat16, int8, q4)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in PRECISIONS:
        raise ValueError(f"unknown dtype '{name}' (expected one of {', '.join(PRECISIONS)})")
    return PRECISIONS[key]


Op = Callable[[torch.Tensor], torch.Tensor]  # [M, K] -> [M, N]


def quantize_int8(w: torch.Tensor, levels: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 of `w` [N, K]: (int8 [N, K] in -levels..levels, fp32 scale [N])."""
    q = torch.empty(w.shape, dtype=torch.int8)
    scale = torch.empty(w.shape[0])
    for r in range(0, w.shape[0], _ROWS):  # row blocks: temporaries stay in cache (see quantize_q4)
        block = w[r : r + _ROWS].detach().to(torch.float32)
        s = block.abs().amax(dim=1).clamp_(min=1e-12) / float(levels)
        q[r : r + _ROWS] = torch.round(block / s[:, None]).clamp_(-levels, levels)
        scale[r : r + _ROWS] = s
    return q, scale


def quantize_q4(w: torch.Tensor, group: int = Q4_GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Asymmetric 4-bit groups along K: (q [N, K] int32 in 0..15, scale [N, K/g], zero [N, K/g], error).

    w ~ (q - 8) * scale + zero, the form the CPU int4 kernel reads; `error` is the largest rounding
    error in steps (0 for weights already on a 4-bit grid). A group's step is its range over 15 where
    that puts every weight on the grid (Q4_1 stores each group as min + step * q with q spanning
    0..15); else the range over the largest span s < 15 that does (`_grid_steps`): a GGUF Q4_K
    sub-block (d * q - m, q in 0..15) need not use both ends of its 16 levels.
    The blocks of rows after one that is not on a grid take range / 15 without the search: the weight
    is not 4-bit, and the search (up to 14 trials per group) would only slow the load.
    """
    n, k = w.shape
    q = torch.empty((n, k), dtype=torch.int32)
    scale = torch.empty((n, k // group))
    low = torch.empty((n, k // group))
    error = 0.0
    # Row blocks keep the temporaries in cache: whole-matrix passes each fault in fresh pages, which
    # made loading several times slower.
    for r in range(0, n, _ROWS):
        g = w[r : r + _ROWS].detach().to(torch.float32).reshape(-1, k // group, group)
        lo, hi = torch.aminmax(g, dim=-1)
        step = _grid_steps(g, lo, hi - lo) if q4_lossless(error) else ((hi - lo) / 15.0).clamp_(min=1e-12)
        x = (g - lo[..., None]).div_(step[..., None])  # [rows, K/g, g] in steps
        qb = x.round().clamp_(0, 15)
        error = max(error, float(x.sub_(qb).abs_().max()))
        q[r : r + _ROWS] = qb.reshape(-1, k)
        scale[r : r + _ROWS], low[r : r + _ROWS] = step, lo
    return q, scale, low + 8.0 * scale, error


def _grid_steps(g: torch.Tensor, lo: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Each group's step [rows, K/g]: range / s for the largest s in 15..1 that puts every weight of the
    group within `_ON_GRID` steps of a level, or range / 15 where none does (a weight not on a 4-bit grid)."""
    step = (span / 15.0).clamp_(min=1e-12)
    off = _off_grid(g, lo, step)
    for s in range(14, 0, -1):
        idx = off.nonzero(as_tuple=True)
        if not idx[0].numel():
            break
        trial = (span[idx] / s).clamp_(min=1e-12)
        fits = ~_off_grid(g[idx], lo[idx], trial)
        step[idx] = torch.where(fits, trial, step[idx])
        off[idx] = ~fits
    return step


def _off_grid(g: torch.Tensor, lo: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Whether any weight of a group lies more than `_ON_GRID` steps from lo + step * q."""
    x = (g - lo[..., None]) / step[..., None]
    return (x - x.round()).abs_().amax(dim=-1) > _ON_GRID


def q4_lossless(error: float) -> bool:
    """Whether a q4 rounding error (in steps) means the weight was already q4: true of Q4_1 and Q4_K weights."""
    return error <= _ON_GRID


def dequantize_q4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group: int = Q4_GROUP) -> torch.Tensor:
    """The fp32 weight [N, K] that a q4 triple stands for (tests and error checks)."""
    n, k = q.shape
    groups = (q.reshape(n, k // group, group).float() - 8.0) * scale[..., None] + zero[..., None]
    return groups.reshape(n, k)


def q4_supported(k: int) -> bool:
    """The int4 kernel needs K to be a multiple of the group size (and of its tile)."""
    return k % Q4_GROUP == 0 and hasattr(torch, "_weight_int4pack_mm_for_cpu")


def bf16_packing_supported() -> bool:
    """Whether oneDNN can pack bf16 weights here (it needs AVX-512 BF16 or AVX-NE-CONVERT; AVX2 cannot)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _bf16_op(w: torch.Tensor, bias: torch.Tensor | None) -> Op:
    wb = w.to(torch.bfloat16)
    if bf16_packing_supported():
        # oneDNN re-packs a plain bf16 weight on every call (a second pass over it); packed once, it
        # is read as is.
        packed = torch.ops.mkldnn._reorder_linear_weight(wb)
        return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return lambda x: F.linear(x, wb, bias)


def _fp16_op(w: torch.Tensor, bias: torch.Tensor | None) -> Op:
    packed = torch.ops.quantized.linear_prepack_fp16(w.float(), None if bias is None else bias.float())
    return lambda x: torch.ops.quantized.linear_dynamic_fp16(x, packed)


def dyn8_supported() -> bool:
    """Whether FBGEMM's dynamic int8 GEMM is built in (x86 builds of PyTorch)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def _dyn8_op(w: torch.Tensor, bias: torch.Tensor | None) -> Op:
    """FBGEMM's dynamic int8 GEMM over `w` quantized per output channel (fp32 in and out, bias added in fp32).

    On AVX2 FBGEMM multiplies uint8 activations by int8 weights in pairs summed into int16 with
    saturation (vpmaddubsw): 2 * 255 * 127 overflows, and saturated sums put errors of whole units in
    the outputs. The weights therefore take 7 bits (-63..63, 2 * 255 * 63 fits) and the activations
    keep all 8 (per-tensor, so outliers already cost them resolution); PyTorch's `reduce_range`
    would instead halve the activations' range.
    """
    q, scale = quantize_int8(w, DYN8_LEVELS)
    with warnings.catch_warnings():  # quantized tensors are deprecated; this one lives only to be packed
        warnings.simplefilter("ignore", UserWarning)
        qw = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros(q.shape[0], dtype=torch.long), 0)
        packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.float())
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed)


def _in_kernel_dtype(kernel: Op, dtype: torch.dtype, bias: torch.Tensor | None) -> Op:
    """`kernel` (bf16 in and out) for activations in `dtype`, plus the bias (already in `dtype`)."""
    if dtype == _KERNEL_DTYPE:
        return kernel if bias is None else lambda x: kernel(x).add_(bias)
    if bias is None:
        return lambda x: kernel(x.to(_KERNEL_DTYPE)).to(dtype)
    return lambda x: kernel(x.to(_KERNEL_DTYPE)).to(dtype).add_(bias)


def _int8_op(w: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> Op:
    q, scale = quantize_int8(w)
    scale = scale.to(_KERNEL_DTYPE)
    return _in_kernel_dtype(lambda x: torch._weight_int8pack_mm(x, q, scale), dtype, bias)


def _q4_op(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> Op:
    packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)  # [N, K/2] uint8
    scales_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(_KERNEL_DTYPE).contiguous()  # [K/g, N, 2]
    return _in_kernel_dtype(lambda x: torch._weight_int4pack_mm_for_cpu(x, packed, Q4_GROUP, scales_zeros), dtype, bias)


class Projection:
    """y = x W^T + b for x [M, K] in the compute dtype, W held in the form fastest for M rows."""

    def __init__(self, w: torch.Tensor, bias: torch.Tensor | None, precision: Precision) -> None:
        self.out_features, self.in_features = w.shape
        dtype = precision.compute
        b = None if bias is None else bias.detach().to(dtype)
        self._many: Op
        if precision.compact == "fp16" or precision.fp16_many:
            assert dtype == torch.float32, "FBGEMM's fp16 weights take fp32 activations"
            self._many = _fp16_op(w, b)
        elif dtype == torch.float32:
            self._many = lambda x: F.linear(x, w, b)  # the reference, as loaded
        else:
            self._many = _bf16_op(w, b)
        self._few: Op | None = None
        self.compact: str | None = None  # the compact form actually used ("fp16": for every row count)
        if precision.compact == "fp16":
            self.compact = "fp16"
        elif precision.compact == "int8":
            self._few, self.compact = _int8_op(w, b, dtype), "int8"
        elif precision.compact == "dyn8" and dyn8_supported():
            assert dtype == torch.float32, "FBGEMM's dynamic int8 GEMM takes fp32 activations"
            self._few, self.compact = _dyn8_op(w, b), "dyn8"
        elif precision.compact == "q4" and q4_supported(self.in_features):
            q, scale, zero, _ = quantize_q4(w)
            self._few, self.compact = _q4_op(q, scale, zero, b, dtype), "q4"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[M, K] -> [M, N]."""
        if self._few is not None and x.shape[0] <= COMPACT_MAX_ROWS:
            return self._few(x)
        return self._many(x)


class ProjectionSlice(torch.nn.Module):
    """Stands in for an `nn.Linear` whose weight now lives in a fused `Projection` (HF forward still runs).

    The HF forward calls q/k/v (or gate/up) separately, so each call computes the fused projection
    and keeps its rows: wasteful, but superpie's own calls go through the fast runner; this only keeps
    a direct `model(...)` call working.
    """

    def __init__(self, projection: Projection, start: int, end: int) -> None:
        super().__init__()
        self.projection, self.start, self.end = projection, start, end
        self.in_features, self.out_features = projection.in_features, end - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Any leading shape, like `nn.Linear`."""
        lead = x.shape[:-1]
        y = self.projection(x.reshape(-1, self.in_features))[:, self.start : self.end]
        return y.reshape(*lead, self.out_features)


def cast_keeping_rotary(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model.to(dtype)`, except the rotary `inv_freq` buffers stay fp32.

    A bf16 `inv_freq` is off by up to 2^-9 relative, so at position 4000 the rotation angle would be
    off by radians: positions far into a file would be garbled (and PIE's key shifts with them).
    """
    keep = {name: buf for name, buf in model.named_buffers() if name.endswith("inv_freq")}
    model.to(dtype)
    for name, buf in keep.items():
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner), leaf, buf)
    return model
