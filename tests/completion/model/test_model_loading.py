"""`--model PATH`: a local Hugging Face directory loads; a wrong one fails with one clear line."""

from __future__ import annotations

import gc
import os

import pytest
import torch
from tiny import save_tiny_model, tiny_model, tiny_tokenizer

from superpie.completion.model.loading import ModelLoadError, load_model


def save_tiny(kind: str, path):
    return save_tiny_model(path, kind)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "phi"])
def test_local_model_directory_loads_with_its_rope(tmp_path, kind):
    lm = load_model(save_tiny(kind, tmp_path / kind), dtype="float32")
    ref = tiny_model(kind)
    assert lm.rope.rotary_dim == ref.rope.rotary_dim
    assert torch.equal(lm.rope.inv_freq, ref.rope.inv_freq)
    assert lm.eos_ids == frozenset({0})
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        assert torch.allclose(lm.model(input_ids=ids).logits, ref.model(input_ids=ids).logits, atol=1e-5)


def test_an_ordinary_token_named_like_an_end_of_text_does_not_end_drafts(tmp_path):
    tok = tiny_tokenizer()
    tok.add_tokens(["</s>"])  # in the vocabulary, not special (as in Qwen2.5-Coder's)
    lm = load_model(save_tiny_model(tmp_path / "llama", tokenizer=tok), dtype="float32")
    assert lm.tokenizer.token_to_id("</s>") is not None
    assert lm.eos_ids == frozenset({0})


def test_model_without_rope_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    GPT2LMHeadModel(GPT2Config(vocab_size=512, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer(), eos_token="<|endoftext|>").save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no rotary position embeddings"):
        load_model(tmp_path)


def test_broken_weights_give_one_line(tmp_path):
    save_tiny("llama", tmp_path)
    for f in tmp_path.glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def _mapped(path) -> bool:
    """Whether any file under `path` is mapped into this process (Linux)."""
    with open("/proc/self/maps") as maps:
        return any(str(path) in line for line in maps)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the process's mappings from /proc")
@pytest.mark.parametrize("dtype", ["auto", "float32"])
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_the_weights_file_is_not_kept_mapped(tmp_path, kind, dtype):
    """A mapping kept alive by one small tensor keeps every page loading read resident (the code model:
    2 GB of RSS); the loaded model must answer the same from its own memory (`auto`: fp16 weights on a CPU
    without bf16 units, bf16 on one with them)."""
    lm = load_model(save_tiny(kind, tmp_path / kind), dtype=dtype)
    gc.collect()
    assert not _mapped(tmp_path / kind)
    ref = tiny_model(kind)
    # more rows than the 4-bit decode form takes: the logits of the weights as loaded
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.inference_mode():
        got, want = lm.model(input_ids=ids).logits.float(), ref.model(input_ids=ids).logits
    if lm.dtype == torch.float32:
        assert torch.allclose(got, want, atol=1e-5 if dtype == "float32" else 5e-2)
    else:  # bf16 activations: close, a clear winner kept (as in test_precision)
        assert (torch.nn.functional.cosine_similarity(got[0], want[0], dim=-1) > 0.995).all()
        assert torch.equal(got[0, -1].argmax(), want[0, -1].argmax())
