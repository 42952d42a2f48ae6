"""llama.cpp's own server: `/completion` and `/infill` with its prompt cache, `n_probs` and `n_cmpl`; `/tokenize`.

Detection reads `/props` (a llama.cpp server answers it, vLLM and SGLang do not) and probes `/infill`
with an empty prompt: a model without fill-in-the-middle tokens is refused there at once, and then
the plain prompt goes to `/completion`. Every request sets `cache_prompt`, so the slot keeps the
prompt's KV and the next keystroke's prompt, which extends it, is encoded only past the shared prefix.
"""

from __future__ import annotations

from typing import Any

from superpie.completion.backend.base import (
    EngineDraft,
    EngineInfo,
    EngineRefused,
    EngineReply,
    EngineRequest,
)
from superpie.completion.backend.http import HttpTransport
from superpie.completion.decoding.task import Cancelled, never_cancelled


class LlamaCppClient:
    """An `EngineClient` for llama.cpp's server."""

    api = "llama.cpp"
    constrains = True  # a GBNF `grammar` per request

    def __init__(self, http: HttpTransport) -> None:
        self.http = http
        self.infill = False  # the model has fill-in-the-middle tokens (found by `detect`)

    def detect(self) -> EngineInfo:
        """`/props` says it is llama.cpp and what it serves; an empty `/infill` says whether FIM works."""
        props = self.http.get("/props")
        if not isinstance(props, dict) or "default_generation_settings" not in props:
            raise EngineRefused("/props is not a llama.cpp server's")
        try:
            self.http.post("/infill", {"input_prefix": "", "input_suffix": "", "n_predict": 0, "cache_prompt": False})
            self.infill = True
        except EngineRefused:  # "Infill is not supported by this model"
            self.infill = False
        settings = props["default_generation_settings"]
        path = str(props.get("model_path") or props.get("model_alias") or "")
        features = ("cache_prompt", "n_probs", "n_cmpl", "logit_bias", "grammar", "tokenize")
        return EngineInfo(
            api=self.api,
            url=self.http.settings.url,
            model=path.rsplit("/", 1)[-1],
            context_length=settings.get("n_ctx") if isinstance(settings, dict) else None,
            features=features + (("infill",) if self.infill else ()),
        )

    def tokenize(self, text: str, cancelled: Cancelled = never_cancelled) -> list[int]:
        """The engine's token ids of `text` (for a `logit_bias` over the names a monitor allows)."""
        answer = self.http.post("/tokenize", {"content": text, "add_special": False}, cancelled)
        return [int(t) for t in answer["tokens"]]

    def complete(self, request: EngineRequest, cancelled: Cancelled) -> EngineReply:
        """k drafts in one request (`n_cmpl`), through `/infill` where the model has FIM tokens."""
        p = request.prompt
        body: dict[str, Any] = {
            "n_predict": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(request.stop),
            "n_probs": 1,
            "cache_prompt": True,
            "n_cmpl": request.drafts,
        }
        if request.temperature <= 0:
            body["top_k"] = 1
        if request.logit_bias:
            body["logit_bias"] = [[tok, bias] for tok, bias in request.logit_bias]
        if request.allowed:
            body["grammar"] = allowed_grammar(request.allowed)
        if self.infill:
            endpoint = "/infill"
            body.update(input_prefix=p.prefix, input_suffix=p.suffix, prompt=p.line)
        else:
            endpoint = "/completion"
            body["prompt"] = p.text
        answer = self.http.post(endpoint, body, cancelled)
        results = answer if isinstance(answer, list) else [answer]
        if not results or not all(isinstance(r, dict) and "content" in r for r in results):
            raise EngineRefused(f"{endpoint}: unexpected answer {str(answer)[:120]}")
        first = results[0]
        timings = first.get("timings") or {}
        return EngineReply(
            drafts=tuple(_draft(r) for r in results),
            endpoint=endpoint,
            prompt_tokens=_int(first.get("tokens_evaluated")),
            cached_tokens=_int(timings.get("cache_n", first.get("tokens_cached"))),
        )


def allowed_grammar(allowed: tuple[str, ...]) -> str:
    """GBNF: one of the allowed continuations, then one character that ends an identifier, then the end.

    The engine's grammar sampler matches it character by character across tokens, so a token that spells
    the name and the character after it (`cwd(`) is kept; once the grammar is complete only the end of
    text may follow, and the engine stops there."""
    names = [n for n in allowed if n]
    group = " | ".join(f'"{n}"' for n in names)
    body = "" if not names else f"({group})?" if "" in allowed else f"({group})"
    return f"root ::= {body} [^A-Za-z0-9_]".replace("::=  ", "::= ")


def _draft(result: dict[str, Any]) -> EngineDraft:
    texts, ids, logprobs = content_probs(result.get("completion_probabilities") or [])
    return EngineDraft(
        text=str(result["content"]),
        token_texts=texts,
        token_ids=ids,
        token_logprobs=logprobs,
        finished=result.get("stop_type") != "limit",
    )


def content_probs(items: list[Any]) -> tuple[tuple[str, ...], tuple[int, ...], tuple[float, ...]]:
    """(token texts, ids, log-probs) of llama.cpp's per-token list ({"id", "token", "logprob"} each)."""
    if not all(isinstance(i, dict) and "token" in i and "logprob" in i for i in items):
        return (), (), ()
    return (
        tuple(str(i["token"]) for i in items),
        tuple(int(i.get("id", -1)) for i in items),
        tuple(float(i["logprob"]) for i in items),
    )


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
