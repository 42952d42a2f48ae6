"""The value a monitor hands to decoding: which identifiers may be spelled from here on.

A monitor fires once at a trigger point (after `obj.`, in `from x import `, ...) and asks jedi for the
valid names. From then on the state is advanced locally with the text the model emits, with no further
jedi calls, until a non-identifier character finishes the identifier. States are immutable so the
k drafts of superposed or beam decoding can share one and advance it independently.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from superpie.analysis.token_trie import is_identifier_char

if TYPE_CHECKING:
    import torch

    from superpie.analysis.token_trie import TokenTrie


@dataclass(frozen=True)
class MonitorState:
    """One monitored identifier being spelled: the candidates and what has been typed of it."""

    monitor: str  # which monitor fired
    typed: str  # identifier characters already typed since the trigger point
    candidates: tuple[str, ...]  # valid identifiers (full names)
    fell_back: bool = False  # jedi timed out or failed: decoding goes on unconstrained
    constrains: bool = True  # False: candidates are only a hint (keyword arguments, or a silent monitor)
    # why the monitor stays silent although jedi answered: the answer was not a positive one ("object_only",
    # "dynamic", "unresolved_base", "unlisted", "defines", "var_keyword", "star_import"); "" when it is
    silent: str = ""

    def matching_continuations(self) -> set[str]:
        """Remaining suffixes of the candidates that start with what was typed (hint or constraint)."""
        n = len(self.typed)
        return {c[n:] for c in self.candidates if c.startswith(self.typed)}

    def allowed_continuations(self) -> set[str]:
        """Suffixes the model may still spell; the empty set means unconstrained."""
        if self.fell_back or self.silent or not self.constrains:
            return set()
        return self.matching_continuations()

    def advance(self, emitted: str) -> MonitorState | None:
        """The state after the model emitted text; None once a non-identifier char ends the identifier."""
        for c in emitted:
            if not is_identifier_char(c):
                return None
        if not self.typed and emitted[:1].isdigit():
            return None  # a number, not an identifier
        return replace(self, typed=self.typed + emitted) if emitted else self


class Monitor(Protocol):
    """Recognises one syntactic situation and produces the state for it."""

    name: str

    def trigger(self, text_before: str) -> MonitorState | None:
        """The state when text_before (document before the cursor + draft) ends in this situation."""
        ...

    def prefetch(self, text_before: str) -> None:
        """Start on what `trigger` would ask at the end of text_before, without waiting (after an edit).

        A monitor with nothing slow to ask does nothing here.
        """
        ...


def mask_for(state: MonitorState | None, trie: TokenTrie, size: int | None = None) -> torch.Tensor | None:
    """Bool mask [size] of the tokens a draft may take in this state; None means unconstrained."""
    if state is None:
        return None
    continuations = state.allowed_continuations()
    if not continuations:
        return None
    return trie.mask(continuations, size)
