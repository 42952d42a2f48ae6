"""Fill-in-the-middle templates, detected from a tokenizer's special tokens.

A code model trained on FIM sees the code after the cursor too: its prompt is the prefix, the suffix
and a marker after which it writes the middle. The five families superpie knows all use the
prefix-suffix-middle order (PSM), so one cached layout serves them (cache/fim.py):
`<prefix marker> prefix <suffix marker> suffix <middle marker>`; only the marker tokens and the tokens
that end a middle differ:

- Qwen2.5-Coder: `<|fim_prefix|>` `<|fim_suffix|>` `<|fim_middle|>`; ended by `<|fim_pad|>` `<|endoftext|>`
  `<|file_sep|>` `<|repo_name|>` `<|im_end|>` (told from CodeGemma by `<|fim_pad|>`);
- CodeGemma: the same markers; ended by `<|file_separator|>` `<eos>`;
- StarCoder2: `<fim_prefix>` `<fim_suffix>` `<fim_middle>`; ended by `<fim_pad>`
  `<file_sep>` `<|endoftext|>`;
- DeepSeek-Coder: `<｜fim▁begin｜>` `<｜fim▁hole｜>` `<｜fim▁end｜>`; ended by `<|EOT|>` `<｜end▁of▁sentence｜>`;
- CodeLlama: `▁<PRE>` `▁<SUF>` `▁<MID>`; ended by `▁<EOT>`.

Any marker token of the family ends a middle too (a model that starts a new FIM block is done).
A tokenizer with none of these has no template: the document is cached prefix-only, as before.
SmolLM2's vocabulary is one of them: it has StarCoder2's `<repo_name>` `<file_sep>` `<filename>`
(used by the repository context) but no FIM markers.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

from superpie.cache.fim import FimMarkers


@dataclass(frozen=True)
class FimFamily:
    """A family's marker spellings and the tokens that end its middle."""

    name: str
    prefix: str
    suffix: str
    middle: str
    stops: tuple[str, ...]
    requires: tuple[str, ...] = ()  # tokens that tell this family from another with the same markers


FAMILIES = (
    FimFamily(
        "qwen2.5-coder",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        ("<|fim_pad|>", "<|endoftext|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>"),
        requires=("<|fim_pad|>",),
    ),
    FimFamily(
        "codegemma",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        ("<|file_separator|>", "<eos>"),
        requires=("<|file_separator|>",),
    ),
    FimFamily(
        "starcoder2", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", ("<fim_pad>", "<file_sep>", "<|endoftext|>")
    ),
    FimFamily(
        "deepseek-coder",
        "<｜fim▁begin｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁end｜>",
        ("<|EOT|>", "<｜end▁of▁sentence｜>"),
    ),
    FimFamily("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", ("▁<EOT>",)),
)


@dataclass(frozen=True)
class FimTemplate:
    """A tokenizer's FIM template: the family, its marker ids (for the cache) and its stop ids."""

    family: str
    markers: FimMarkers
    stop_ids: frozenset[int]


def detect_fim(tokenizer: Tokenizer) -> FimTemplate | None:
    """The template of the first family whose markers (and distinguishing tokens) are all single tokens
    of `tokenizer`; None when no family matches (prefix-only)."""
    for family in FAMILIES:
        ids = [tokenizer.token_to_id(t) for t in (family.prefix, family.suffix, family.middle, *family.requires)]
        if any(i is None for i in ids):
            continue
        pre, suf, mid = (int(i) for i in ids[:3] if i is not None)
        stops = {tokenizer.token_to_id(t) for t in family.stops}
        stop_ids = frozenset(int(i) for i in stops if i is not None) | {pre, suf, mid}
        return FimTemplate(family.name, FimMarkers(prefix=pre, suffix=suf, middle=mid), stop_ids)
    return None
