"""The LSP handlers of the superpie server: each one short, alike, and registered in `create_server`.

They find the document, hand the work to the server's state (`server.SuperpieServer`: options,
documents, the model worker, the watcher, statistics) and convert the answer back to LSP.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from lsprotocol import types

from superpie.completion.config import LogLevel
from superpie.lsp.convert import ACCEPT_COMMAND, lsp_inline_list, lsp_menu_list
from superpie.lsp.documents import Document
from superpie.lsp.options import parse_options
from superpie.lsp.protocol import NULL_VERSION
from superpie.lsp.server import SuperpieServer

log = logging.getLogger("superpie.lsp")

STATS_COMMAND = "superpie.stats"
DOCUMENT_COMMAND = "superpie.document"


def initialize(ls: SuperpieServer, params: types.InitializeParams) -> None:
    """Options and workspace; the model loads after `initialized`, so this answers at once."""
    ls.pending_problems = ls.setup(params)


async def initialized(ls: SuperpieServer, params: types.InitializedParams) -> None:
    """Start loading the model, watching the workspace and forwarding logs."""
    ls.attach_client_log()
    ls.report(ls.pending_problems)
    ls.start_loading()
    ls.start_watcher()


def did_open(ls: SuperpieServer, params: types.DidOpenTextDocumentParams) -> None:
    """Keep the text; its cache is built in the background."""
    item = params.text_document
    ls.documents[item.uri] = Document(item.uri, item.text, item.version, ls.max_document_chars())
    ls.worker.sync_soon(item.uri)


def did_change(ls: SuperpieServer, params: types.DidChangeTextDocumentParams) -> None:
    """Apply the batch of edits whole, or none of it (saying which change did not fit); sync in the background."""
    uri = params.text_document.uri
    version: int | None = params.text_document.version
    doc = ls.documents.get(uri)
    if doc is None:
        log.warning("didChange for %s, which is not open: ignored", uri)
        ls.stats.bad_changes += 1
        return
    if version == NULL_VERSION:  # `"version": null`: applied all the same (the texts must not diverge)
        version = None
        ls.stats.unversioned_changes += 1
        log.warning("didChange for %s without a version: applied", uri)
    try:
        doc.apply(params.content_changes, ls.encoding)
    except ValueError as exc:
        n = len(params.content_changes)
        log.error("didChange for %s v%s: %s; none of the %d changes was applied", uri, version, exc, n)
        ls.stats.bad_changes += 1
    doc.version = version
    ls.worker.sync_soon(uri)


def did_close(ls: SuperpieServer, params: types.DidCloseTextDocumentParams) -> None:
    """Forget the document and free its cache."""
    if ls.documents.pop(params.text_document.uri, None) is not None:
        ls.worker.close(params.text_document.uri)


async def inline_completion(ls: SuperpieServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    """Ghost text: the ranked drafts at the cursor, best first."""
    answer = await ls.draft(params.text_document.uri, params.position, "inline")
    if answer is None:
        return types.InlineCompletionList(items=[])
    return lsp_inline_list(answer.completions, params.position, answer.request_id)


async def completion(ls: SuperpieServer, params: types.CompletionParams) -> types.CompletionList:
    """Menu items: the ranked drafts (label = first line); incomplete, so typing asks again."""
    answer = await ls.draft(params.text_document.uri, params.position, "menu")
    if answer is None:
        return types.CompletionList(is_incomplete=True, items=[])
    return lsp_menu_list(
        answer.completions, answer.text, answer.offset, ls.encoding, answer.request_id, ls.markdown, answer.first_line
    )


async def did_change_configuration(ls: SuperpieServer, params: types.DidChangeConfigurationParams) -> None:
    """New options: pushed in the notification, or pulled with `workspace/configuration` when it has none."""
    settings = params.settings
    workspace = ls.client_capabilities.workspace
    if settings is None and workspace and workspace.configuration:
        request = types.ConfigurationParams(items=[types.ConfigurationItem(section="superpie")])
        try:
            settings = (await asyncio.wait_for(ls.workspace_configuration_async(request), timeout=5))[0]
        except Exception as exc:
            log.warning("workspace/configuration failed: %s", exc)
            return
    ls.apply_options(parse_options(settings, ls.options, ls.command_line))


def shutdown(ls: SuperpieServer, params: None) -> None:
    """Stop background work; `exit` ends the process."""
    ls.close()


def stats_command(ls: SuperpieServer, *args: Any) -> dict[str, object]:
    """`superpie.stats`: latency p50/p95, cache reuse, monitor fallbacks, memory, accepts."""
    ls.stats.dropped_notifications = ls.protocol.dropped_notifications
    return ls.stats.to_json(ls.worker.snapshot, ls.options.cache.memory_budget_mb, len(ls.documents))


def accept_command(ls: SuperpieServer, *args: Any) -> None:
    """`superpie.accept`: the client ran an item's command (accepted; `partial` for a partial accept)."""
    info = args[0] if args and isinstance(args[0], dict) else {}
    kind = str(info.get("kind", "unknown"))
    ls.stats.accepts[f"{kind}_partial" if info.get("partial") else kind] += 1
    log.debug("accepted %s", json.dumps(info)[:200])


def document_command(ls: SuperpieServer, *args: Any) -> dict[str, object] | None:
    """`superpie.document`: version, length and hash of an open document (to check it matches the client)."""
    uri = args[0] if args else None
    doc = ls.documents.get(uri) if isinstance(uri, str) else None
    if doc is None:
        return None
    return {
        "uri": doc.uri,
        "version": doc.version,
        "length": len(doc.text),
        "sha256": hashlib.sha256(doc.text.encode("utf-8", "surrogatepass")).hexdigest(),
        "cache_current": ls.worker.is_current(doc.uri, doc.engine_text()),
    }


FEATURES: list[tuple[str, Any, Any]] = [
    (types.INITIALIZE, initialize, None),
    (types.INITIALIZED, initialized, None),
    (types.TEXT_DOCUMENT_DID_OPEN, did_open, None),
    (types.TEXT_DOCUMENT_DID_CHANGE, did_change, None),
    (types.TEXT_DOCUMENT_DID_CLOSE, did_close, None),
    (types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_completion, types.InlineCompletionOptions()),
    (types.TEXT_DOCUMENT_COMPLETION, completion, types.CompletionOptions(trigger_characters=["."])),
    (types.WORKSPACE_DID_CHANGE_CONFIGURATION, did_change_configuration, None),
    (types.SHUTDOWN, shutdown, None),
]
COMMANDS = {STATS_COMMAND: stats_command, ACCEPT_COMMAND: accept_command, DOCUMENT_COMMAND: document_command}


def create_server(
    model: str | None = None, log_level: LogLevel | None = None, settings: Mapping[str, object] | None = None
) -> SuperpieServer:
    """A server with every feature and command registered (no module-level singleton)."""
    server = SuperpieServer(model=model, log_level=log_level, settings=settings)
    for name, handler, options in FEATURES:
        server.feature(name, options)(handler)
    for name, handler in COMMANDS.items():
        server.command(name)(handler)
    return server


