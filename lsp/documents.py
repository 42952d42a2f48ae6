"""The server's open documents: the client's text as the client sent it, and the text the engine is given.

The two differ where the client's text is not something a tokenizer takes: a lone surrogate
(`s = '\\ud800'`, legal in a JSON string, not in Unicode) becomes U+FFFD. One code point stands for
one, so every offset means the same in both texts and positions need no mapping back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def engine_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (same length, same offsets)."""
    return _SURROGATE.sub(REPLACEMENT, text) if _SURROGATE.search(text) else text


@dataclass
class Document:
    """An open document as the client sees it, and its engine text (made once per text)."""

    uri: str
    text: str
    version: int | None = None
    _for: str | None = field(default=None, repr=False)  # the text `_engine` was made from
    _engine: str = field(default="", repr=False)

    def engine_text(self) -> str:
        """The text the engine completes on (`engine_text` of the current text)."""
        if self._for is not self.text:
            self._engine, self._for = engine_text(self.text), self.text
        return self._engine
