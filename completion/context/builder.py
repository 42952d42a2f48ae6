"""`RepositoryContext`: the repository context ids of one completion, for the engine to cache ahead of the document.

For a cursor it gathers candidates, best first: the definitions (in other workspace files) of the names
used near the cursor (`analysis/definitions.py`, jedi within a time budget), a class or a module as its
outline, a function as its signature (`analysis/outline.py`: bodies elided), a value by its first lines;
then the regions of other documents edited recently, then those visited recently (`activity.py`);
`select.py` chooses them under the token budget; `format.py` spells them in the model's repository
format, followed by the current file's own header. No snippet, no context: the document is cached as it
would be without.

Snippet text comes from the newest text the engine saw of a document (an edited file may be unsaved),
else from disk through `WorkspaceFiles.read` (inside the workspace only, size-limited).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from tokenizers import Tokenizer

from superpie.analysis.definitions import DefinitionFinder
from superpie.analysis.outline import outline
from superpie.analysis.workspace_files import WorkspaceFiles, uri_to_path
from superpie.cache.diff import common_prefix, common_suffix
from superpie.completion.context.activity import RecentActivity
from superpie.completion.context.format import RepoFormat, detect_repo_format
from superpie.completion.context.select import Candidate, Snippet, choose

REGION_LINES = (10, 20)  # lines before and after an edited or visited line that its snippet shows
DEFINITION_LINES = 6  # a value's snippet (`X = ...`) shows its first lines; classes and functions are outlines


class RepositoryContext:
    """Chooses and spells the repository context of a completion; remembers edits and visits across requests."""

    def __init__(self, workspace: str | None) -> None:
        self.root = None if workspace is None else Path(workspace).resolve()
        self.activity = RecentActivity()
        self.finder = None if self.root is None else DefinitionFinder(self.root)
        self.files = None if self.root is None else WorkspaceFiles([self.root])
        self._formats: dict[int, RepoFormat] = {}
        self.last: list[Snippet] = []  # the snippets of the last `ids` call (statistics, tests)

    # ------------------------------------------------------------------ what happened

    def edited(self, uri: str, old: str, new: str, anchor: int | None = None) -> None:
        """A document's text went from `old` to `new`; the edit ended at `anchor` (None: where the texts differ)."""
        if old == new:
            return
        if anchor is None:
            head = common_prefix(old, new)
            anchor = len(new) - common_suffix(old, new, floor=head)
        self.activity.edited(uri, new, min(max(0, anchor), len(new)))

    def closed(self, uri: str) -> None:
        """A document closed: its unsaved text is no longer what the workspace holds."""
        self.activity.forget(uri)

    def file_changed(self) -> None:
        """A workspace file changed on disk: definitions may have moved."""
        if self.finder is not None:
            self.finder.forget()

    # ------------------------------------------------------------------ the context

    def ids(
        self,
        tokenizer: Tokenizer,
        uri: str,
        text: str,
        offset: int,
        budget_tokens: int,
        jedi_budget_s: float = math.inf,
    ) -> list[int]:
        """The context ids for a completion of `uri` at char `offset` of `text` (empty: no snippet found);
        the cursor counts as a visit afterwards (the next completion elsewhere sees this region)."""
        fmt = self._format(tokenizer)
        repo = fmt.repo(tokenizer, self.root.name if self.root is not None else "")
        current = fmt.header(tokenizer, self.display_path(uri))
        snippets = choose(
            self._candidates(uri, text, offset, jedi_budget_s),
            budget_tokens - len(repo) - len(current),
            lambda path, code: fmt.snippet(tokenizer, path, code),
        )
        self.activity.visited(uri, text, offset)
        self.last = snippets
        if not snippets:
            return []
        return [*repo, *(i for s in snippets for i in s.ids), *current]

    def display_path(self, uri: str) -> str:
        """A document's path as its header shows it: relative to the workspace where it lies inside it."""
        path = uri_to_path(uri)
        if path is None:
            return uri.rsplit("/", 1)[-1]
        if self.root is not None:
            try:
                return Path(os.path.abspath(path)).relative_to(self.root).as_posix()
            except ValueError:
                pass
        return path.name

    def _format(self, tokenizer: Tokenizer) -> RepoFormat:
        key = id(tokenizer)
        if key not in self._formats:
            self._formats[key] = detect_repo_format(tokenizer)
        return self._formats[key]

    def _candidates(self, uri: str, text: str, offset: int, jedi_budget_s: float) -> list[Candidate]:
        out: list[Candidate] = []
        path = uri_to_path(uri)
        if self.finder is not None:
            for d in self.finder.near(None if path is None else str(path), text, offset, jedi_budget_s):
                source = self._text_of(d.path)
                if source is None:
                    continue
                if d.kind != "statement":
                    stub = outline(source, d.start_line, d.kind)
                    if stub is not None:
                        out.append(Candidate(self._shown(d.path), stub, 0, stub.count("\n"), outline=True))
                        continue
                    if d.kind == "module":
                        continue  # nothing to show of it
                end = min(d.end_line, d.start_line + DEFINITION_LINES)
                out.append(Candidate(self._shown(d.path), source, d.start_line, end))
        regions = self.activity.regions(exclude=uri)
        before, after = REGION_LINES
        for kind in ("edit", "visit"):
            for r in regions:
                if r.kind == kind:
                    out.append(Candidate(self.display_path(r.uri), r.text, max(0, r.line - before), r.line + after))
        return out

    def _shown(self, path: Path) -> str:
        if self.root is not None and path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return path.name

    def _text_of(self, path: Path) -> str | None:
        """The newest text of a file: an open document's as last edited, else the file's on disk."""
        uri = path.as_uri()
        newest = self.activity.latest_text(uri)
        if newest is not None:
            return newest
        read = None if self.files is None else self.files.read(path)
        return None if read is None else read.text
