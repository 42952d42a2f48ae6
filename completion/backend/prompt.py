"""The prompt a serving engine sees, laid out for its prefix cache.

An engine's prefix cache (llama.cpp's `cache_prompt`, vLLM's and SGLang's prefix caching) reuses the
KV of the longest prefix a new prompt shares with an earlier one. So the stable material comes first
and the text being typed last: the window of the document before the current line, whose start moves
only in steps of a quarter window (and always to a line start), then the current line up to the
cursor. Typing on a line then only extends the prompt; the engine encodes the new characters only.
With fill-in-the-middle (llama.cpp `/infill`) the suffix goes between the two, as llama.vim does:
[prefix][suffix][current line], where the text after the cursor does not change while typing.
"""

from __future__ import annotations

from superpie.completion.backend.base import Prompt


def window_start(text: str, line_start: int, chars: int) -> int:
    """Where the prompt's window begins: at most `chars` before `line_start`, in quarter steps, at a line start."""
    if line_start <= chars:
        return 0
    step = max(1, chars // 4)
    start = -(-(line_start - chars) // step) * step  # rounded up to a step: stable while the line grows
    nl = text.find("\n", start - 1, line_start)
    return line_start if nl < 0 else nl + 1


def layout(text: str, offset: int, prompt_chars: int, suffix_chars: int) -> Prompt:
    """The prompt for a completion at `offset` of `text`."""
    line_start = text.rfind("\n", 0, offset) + 1
    start = window_start(text, line_start, prompt_chars)
    end = min(len(text), offset + suffix_chars)
    if end < len(text):  # end the suffix at a line end, so it does not change when the window moves
        nl = text.rfind("\n", offset, end)
        end = nl + 1 if nl >= 0 else offset
    return Prompt(prefix=text[start:line_start], line=text[line_start:offset], suffix=text[offset:end])
