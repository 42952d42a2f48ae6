"""Recently edited and recently visited regions of the workspace's documents.

What a programmer just edited or looked at in another file is often what the next line needs (the
function just changed, the class just read). The engine sees every edit (`sync`) and every cursor a
completion asks about; it tells this tracker, which keeps the latest few regions, one per place: a
region near one already kept replaces it (the same place, looked at again). Each remembers the
document's text as it was then (the reference the engine already holds; nothing is copied).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    """A place in a document: the line of an edit or a visit, and the document's text then."""

    uri: str
    line: int  # 0-based
    kind: str  # "edit" or "visit"
    text: str


class RecentActivity:
    """The most recent regions, newest first, at most `limit`; regions within `near` lines are one place."""

    def __init__(self, limit: int = 12, near: int = 20) -> None:
        self.limit = limit
        self.near = near
        self._regions: list[Region] = []

    def edited(self, uri: str, text: str, offset: int) -> None:
        """An edit of `uri` ended at char `offset` of its new `text`."""
        self._note(Region(uri, text.count("\n", 0, offset), "edit", text))

    def visited(self, uri: str, text: str, offset: int) -> None:
        """The cursor was at char `offset` of `uri` (a completion was asked there)."""
        self._note(Region(uri, text.count("\n", 0, offset), "visit", text))

    def regions(self, exclude: str | None = None) -> list[Region]:
        """The regions, newest first, without those of document `exclude` (the one being completed)."""
        return [r for r in self._regions if r.uri != exclude]

    def latest_text(self, uri: str) -> str | None:
        """The newest text seen of a document (an edited file may not be saved yet)."""
        for r in self._regions:
            if r.uri == uri:
                return r.text
        return None

    def forget(self, uri: str) -> None:
        """A document closed: its regions go (its file on disk is what other documents see now)."""
        self._regions = [r for r in self._regions if r.uri != uri]

    def _note(self, region: Region) -> None:
        kept = [r for r in self._regions if r.uri != region.uri or abs(r.line - region.line) > self.near]
        # an edit stays an edit when the same place is visited again
        if any(r.uri == region.uri and r.kind == "edit" and abs(r.line - region.line) <= self.near
               for r in self._regions):
            region = Region(region.uri, region.line, "edit", region.text)
        # every region of a document shows its newest text
        kept = [r if r.uri != region.uri else Region(r.uri, r.line, r.kind, region.text) for r in kept]
        self._regions = [region, *kept][: self.limit]
