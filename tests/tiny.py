"""Tiny seeded random-weight models and a tiny BPE tokenizer, for fast exactness tests."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from superpie.completion.model.loading import LoadedModel, from_model

SPECIAL = ["<|endoftext|>"]


def _corpus() -> list[str]:
    """Real Python source to train the tiny tokenizer on (stdlib files, fixed order)."""
    import json
    import textwrap

    files = [inspect.getsourcefile(m) for m in (json, textwrap, functools)]
    return [Path(f).read_text(encoding="utf-8") for f in files if f]


@functools.lru_cache(maxsize=1)
def tiny_tokenizer(vocab_size: int = 512) -> Tokenizer:
    """A byte-level BPE tokenizer (like the real model's), trained in well under a second."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def _config(kind: str, vocab: int):
    from transformers import GPTNeoXConfig, LlamaConfig, MistralConfig, PhiConfig, Qwen2Config, Starcoder2Config

    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=4096,
        eos_token_id=0,
        bos_token_id=0,
        pad_token_id=0,
    )
    if kind == "llama":
        return LlamaConfig(num_key_value_heads=2, tie_word_embeddings=True, **common)
    if kind == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **common)
    if kind == "phi":  # partial rotary (half of each head's dims rotate)
        return PhiConfig(num_key_value_heads=4, partial_rotary_factor=0.5, **common)
    if kind == "mistral":
        return MistralConfig(num_key_value_heads=2, sliding_window=None, **common)
    if kind == "starcoder2":  # biases, LayerNorm, GELU MLP
        return Starcoder2Config(num_key_value_heads=2, **common)
    if kind == "neox":  # partial rotary, NeoX layout
        return GPTNeoXConfig(rotary_pct=0.25, **common)
    raise ValueError(kind)


KINDS = ("llama", "qwen2", "phi")
MORE_KINDS = ("mistral", "starcoder2", "neox")  # same code paths; checked by the core exactness tests only


@functools.lru_cache(maxsize=8)
def tiny_model(kind: str = "llama", seed: int = 0) -> LoadedModel:
    """A seeded random-weight model of `kind`, fp32, SDPA attention, wrapped for superpie."""
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    config = _config(kind, tok.get_vocab_size())
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Larger weights than the default init make attention patterns sharp, so a stale or misplaced
    # key changes the output measurably (a near-uniform random model would hide errors).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return from_model(model, tok, name=f"tiny-{kind}")


def save_tiny_model(path: Path, kind: str = "llama", tokenizer: Tokenizer | None = None) -> Path:
    """`tiny_model(kind)` saved as a local Hugging Face model directory (for `--model PATH`), with
    `tokenizer` (default: the tiny tokenizer)."""
    from transformers import PreTrainedTokenizerFast

    tiny_model(kind).model.save_pretrained(path)
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIAL[0]).save_pretrained(path)
    return path
