"""Runs a plan's strategy over the cursor's view: greedy (k independent chains), beam, or superposed + verify."""

from __future__ import annotations

import dataclasses
import time

import torch

from superpie.cache.cursor import CursorView
from superpie.completion.config import DecodingConfig
from superpie.completion.decoding.beam import beam_decode
from superpie.completion.decoding.greedy import chain_decode
from superpie.completion.decoding.speculative import Speculator
from superpie.completion.decoding.superposed import superposed_decode
from superpie.completion.decoding.task import Cancelled, DecodeTask
from superpie.completion.decoding.verify import verify
from superpie.completion.draft import Draft
from superpie.completion.model.loading import LoadedModel
from superpie.completion.ngram.index import NgramIndex


def decode(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    strategy: str,
    k: int,
    config: DecodingConfig,
    ngram: NgramIndex | None,
    cancelled: Cancelled,
    speculator: Speculator | None = None,
) -> tuple[list[Draft], float]:
    """The strategy's drafts (in the decoder's order) and the milliseconds spent verifying them.

    `speculator`: the greedy draft is decoded speculatively (the same tokens, fewer forwards)."""
    if strategy == "beam":
        return beam_decode(lm, view, task, k, cancelled, config.beam_patience, config.beam_keep_greedy), 0.0
    if strategy == "superposed":
        out = superposed_decode(lm, view, task, k, config.superposed, ngram if k > 1 else None, cancelled)
        vcfg = config.verify
        if not vcfg.enabled or k == 1 or cancelled() or any(d.cancelled for d in out.drafts):
            return out.drafts, 0.0
        t0 = time.perf_counter()
        drafts = verify(lm, view, task, out.drafts, vcfg, trunk=out.trunk)
        return drafts, (time.perf_counter() - t0) * 1000
    return independent(lm, view, task, k, config.sample_temperature, cancelled, speculator), 0.0


def independent(
    lm: LoadedModel,
    view: CursorView,
    task: DecodeTask,
    k: int,
    temperature: float,
    cancelled: Cancelled,
    speculator: Speculator | None = None,
) -> list[Draft]:
    """k chain decodes: the greedy draft, then k-1 sampled ones (seeded, so results repeat)."""
    gen = torch.Generator().manual_seed(0)
    out: list[Draft] = []
    for i in range(k):
        view.rewind(0)
        draft = chain_decode(lm, view, task, cancelled, 0.0 if i == 0 else temperature, gen, speculator)
        out.append(dataclasses.replace(draft, greedy=i == 0))
        if out[-1].cancelled:
            break
    return out
