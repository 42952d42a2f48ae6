"""Every LSP <-> engine conversion, in one place (`lsp_*` names).

Positions: LSP lines are 0-based; characters are 0-based code units of the negotiated encoding
(UTF-16 unless the client offered UTF-8 or UTF-32). The rules live in `superpie.lsp.positions`;
here they are applied to lsprotocol types.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from lsprotocol import types

from superpie.completion.draft import Draft
from superpie.lsp.positions import line_starts, offset_at, position_at

ACCEPT_COMMAND = "superpie.accept"
AI_DRAFT_KIND = types.CompletionItemKind.Snippet  # LSP has no "AI" kind; Snippet reads as "generated text"
_WORD_BEFORE = re.compile(r"\w*\Z")


def lsp_encoding(kind: types.PositionEncodingKind | str | None) -> str:
    """The `positions` encoding name of a negotiated `PositionEncodingKind` (UTF-16 when none)."""
    value = getattr(kind, "value", kind) or "utf-16"
    return value if value in ("utf-8", "utf-16", "utf-32") else "utf-16"


def lsp_offset(text: str, position: types.Position, encoding: str) -> int:
    """Str offset of an LSP position (a character past its line: the line's end); ValueError past the last line."""
    return offset_at(text, position.line, position.character, encoding, clamp=True)


def lsp_position(text: str, offset: int, encoding: str, first_line: int = 0) -> types.Position:
    """LSP position of a str offset (`text` may be a view of a document that starts at line `first_line`)."""
    line, character = position_at(text, offset, encoding)
    return types.Position(line=first_line + line, character=character)


def lsp_apply_changes(text: str, changes: Sequence[types.TextDocumentContentChangeEvent], encoding: str) -> str:
    """The text after a didChange's content changes, applied in order; ValueError on a bad range.

    A character past the end of its line is that line's end (LSP); a line past the document's end is an error.
    """
    for change in changes:
        if isinstance(change, types.TextDocumentContentChangeWholeDocument):
            text = change.text
            continue
        rng = change.range
        starts = line_starts(text)
        start = offset_at(text, rng.start.line, rng.start.character, encoding, starts, clamp=True)
        end = offset_at(text, rng.end.line, rng.end.character, encoding, starts, clamp=True)
        if end < start:
            raise ValueError(f"range end {rng.end.line}:{rng.end.character} is before its start")
        text = text[:start] + change.text + text[end:]
    return text


def lsp_accept_command(request_id: str, rank: int, kind: str) -> types.Command:
    """The command a client runs when the person accepts an item (counted by `superpie.accept`)."""
    return types.Command(
        title="superpie: accepted", command=ACCEPT_COMMAND, arguments=[{"id": request_id, "rank": rank, "kind": kind}]
    )


def lsp_inline_list(
    completions: Sequence[Draft], position: types.Position, request_id: str
) -> types.InlineCompletionList:
    """Ranked drafts as ghost text, best first, each inserted at the cursor."""
    at = types.Range(start=position, end=position)
    items = [
        types.InlineCompletionItem(insert_text=c.text, range=at, command=lsp_accept_command(request_id, rank, "inline"))
        for rank, c in enumerate(completions)
    ]
    return types.InlineCompletionList(items=items)


def lsp_menu_list(
    completions: Sequence[Draft],
    text: str,
    offset: int,
    encoding: str,
    request_id: str,
    markdown: bool = False,
    first_line: int = 0,
) -> types.CompletionList:
    """Ranked drafts as menu items: label = first line, the full draft in the edit and the docs.

    `text` may be a view of the document that begins at its line `first_line` (a huge document's window).
    """
    found = _WORD_BEFORE.search(text, max(0, offset - 256), offset)
    word = found.group(0) if found else ""
    cursor = lsp_position(text, offset, encoding, first_line)
    edit_range = types.Range(start=lsp_position(text, offset - len(word), encoding, first_line), end=cursor)
    items = [_menu_item(c, word, edit_range, rank, request_id, markdown) for rank, c in enumerate(completions)]
    return types.CompletionList(is_incomplete=True, items=items)


def _menu_item(
    c: Draft, word: str, edit_range: types.Range, rank: int, request_id: str, markdown: bool
) -> types.CompletionItem:
    full = word + c.text
    label = next((line.strip() for line in full.splitlines() if line.strip()), "")  # starts with `word`
    return types.CompletionItem(
        label=label,
        label_details=types.CompletionItemLabelDetails(description="superpie"),
        kind=AI_DRAFT_KIND,
        detail=f"superpie draft {rank + 1} (score {c.score:.3f})",
        documentation=lsp_documentation(full, markdown),
        sort_text=f"~superpie{rank:03d}",  # after ordinary identifier completions, in rank order
        filter_text=label,
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=edit_range, new_text=full),
        data={"id": request_id, "rank": rank},
        command=lsp_accept_command(request_id, rank, "menu"),
    )


def lsp_documentation(draft: str, markdown: bool) -> types.MarkupContent:
    """A draft shown in full: a Python code block where the client renders markdown, else plain text."""
    if markdown:
        fence = "````" if "```" in draft else "```"
        return types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"{fence}python\n{draft}\n{fence}")
    return types.MarkupContent(kind=types.MarkupKind.PlainText, value=draft)


def lsp_message_type(levelno: int) -> types.MessageType:
    """The `window/logMessage` type of a Python logging level."""
    if levelno >= logging.ERROR:
        return types.MessageType.Error
    if levelno >= logging.WARNING:
        return types.MessageType.Warning
    if levelno >= logging.INFO:
        return types.MessageType.Info
    return types.MessageType.Log
