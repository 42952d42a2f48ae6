"""The OpenAI-compatible `/v1/completions` API that vLLM, SGLang (and llama.cpp) serve.

Detection lists `/v1/models`: the configured model name must be one of them, else the first is used.
k drafts are one request (`n`); log-probs come in the legacy shape (`tokens`, `token_logprobs`) from
vLLM and SGLang and in the per-token shape (`content`) from llama.cpp; the cached-token count in
`usage.prompt_tokens_details.cached_tokens` where the engine reports it (vLLM with prefix caching).
"""

from __future__ import annotations

import re
from typing import Any

from superpie.completion.backend.base import (
    EngineDraft,
    EngineInfo,
    EngineRefused,
    EngineReply,
    EngineRequest,
)
from superpie.completion.backend.http import HttpTransport
from superpie.completion.backend.llamacpp import content_probs
from superpie.completion.decoding.task import Cancelled

_MAX_STOPS = 4  # the OpenAI API takes at most four stop strings
# the structured-output fields of /v1/completions, by `owned_by`: vLLM's older `guided_regex` and its newer
# `structured_outputs` (each ignores the other's), SGLang's `regex`
_REGEX_FIELDS: dict[str, tuple[str, ...]] = {"vllm": ("guided_regex", "structured_outputs"), "sglang": ("regex",)}


def allowed_regex(allowed: tuple[str, ...]) -> str:
    """One of the allowed continuations, then one character that ends an identifier (as `allowed_grammar`)."""
    names = "|".join(re.escape(n) for n in allowed if n)
    group = "" if not names else f"(?:{names})?" if "" in allowed else f"(?:{names})"
    return group + "[^A-Za-z0-9_]"


class OpenAIClient:
    """An `EngineClient` for `/v1/completions`."""

    api = "openai"

    def __init__(self, http: HttpTransport, model: str | None = None) -> None:
        self.http = http
        self.model = model
        self.server = ""  # who serves it (`owned_by` of /v1/models): "vllm", "sglang", ...
        self.constrains = False  # a regex per request: vLLM and SGLang take one, the plain API does not

    def detect(self) -> EngineInfo:
        """The model to ask for, from `/v1/models`."""
        answer = self.http.get("/v1/models")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or not data:
            raise EngineRefused("/v1/models lists no model")
        served = [str(m.get("id")) for m in data if isinstance(m, dict)]
        if self.model is None:
            self.model = served[0]
        elif self.model not in served:
            raise EngineRefused(f"model {self.model!r} is not served (the engine has {', '.join(served)})")
        entry = next((m for m in data if isinstance(m, dict) and m.get("id") == self.model), {})
        length = entry.get("max_model_len")
        self.server = str(entry.get("owned_by") or "")
        self.constrains = self.server in _REGEX_FIELDS
        return EngineInfo(
            api=self.api,
            url=self.http.settings.url,
            model=self.model,
            context_length=length if isinstance(length, int) else None,
            features=("n", "logprobs", "stop", "logit_bias") + _REGEX_FIELDS.get(self.server, ()),
        )

    def complete(self, request: EngineRequest, cancelled: Cancelled) -> EngineReply:
        """k drafts in one request (`n`)."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": request.prompt.text,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "n": request.drafts,
            "logprobs": 1,
            "stop": list(request.stop[:_MAX_STOPS]),
        }
        if request.logit_bias:
            body["logit_bias"] = {str(tok): bias for tok, bias in request.logit_bias}
        if request.allowed and self.constrains:
            pattern = allowed_regex(request.allowed)
            for name in _REGEX_FIELDS[self.server]:
                body[name] = {"regex": pattern} if name == "structured_outputs" else pattern
        answer = self.http.post("/v1/completions", body, cancelled)
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or not choices:
            raise EngineRefused(f"/v1/completions: unexpected answer {str(answer)[:120]}")
        choices = sorted(choices, key=lambda c: c.get("index", 0))
        usage = answer.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return EngineReply(
            drafts=tuple(_draft(c) for c in choices),
            endpoint="/v1/completions",
            prompt_tokens=usage.get("prompt_tokens"),
            cached_tokens=details.get("cached_tokens"),
        )


def _draft(choice: dict[str, Any]) -> EngineDraft:
    lp = choice.get("logprobs")
    texts: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):  # llama.cpp's shape
        texts, ids, logprobs = content_probs(lp["content"])
    elif isinstance(lp, dict) and isinstance(lp.get("tokens"), list):  # the legacy shape (vLLM, SGLang)
        values = lp.get("token_logprobs") or []
        if len(values) == len(lp["tokens"]) and all(isinstance(v, int | float) for v in values):
            texts, logprobs = tuple(map(str, lp["tokens"])), tuple(float(v) for v in values)
    return EngineDraft(
        text=str(choice.get("text", "")),
        token_texts=texts,
        token_ids=ids,
        token_logprobs=logprobs,
        finished=choice.get("finish_reason") != "length",
    )
