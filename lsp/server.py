"""The superpie language server (pygls 2.x): it converts and schedules; the engine decides what to complete.

Handlers are short and alike: find the document, convert the position (`convert`), hand the work to
the model worker (`scheduler`), convert the answer back. The loop thread never calls the engine.
Documents live in the server's own store (not pygls' workspace), so a change that does not fit the
text is reported instead of silently clamped, and positions use the negotiated encoding throughout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from superpie.analysis.watcher import WorkspaceWatcher
from superpie.analysis.workspace_files import SourceRules
from superpie.completion.config import LogLevel
from superpie.completion.draft import Draft
from superpie.completion.engine import Engine
from superpie.completion.request import CompletionRequest
from superpie.lsp.auth import check_host, session_token, split_token
from superpie.lsp.convert import (
    ACCEPT_COMMAND,
    lsp_encoding,
    lsp_inline_list,
    lsp_menu_list,
    lsp_message_type,
)
from superpie.lsp.documents import Document
from superpie.lsp.options import (
    ParsedOptions,
    command_line_options,
    engine_config,
    needs_reload,
    needs_resync,
    parse_options,
)
from superpie.lsp.protocol import NULL_VERSION, SuperpieProtocol
from superpie.lsp.scheduler import ModelWorker, Outcome
from superpie.lsp.stats import ServerStats
from superpie.lsp.transport import serve_stdio, serve_tcp

log = logging.getLogger("superpie.lsp")

STATS_COMMAND = "superpie.stats"
DOCUMENT_COMMAND = "superpie.document"
_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("superpie")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Answer:
    """Drafts for one request, with what the conversion back to LSP needs (the engine's view of the text)."""

    request_id: str
    completions: list[Draft]
    text: str
    offset: int
    first_line: int = 0  # the document line the view starts at


class ClientLogHandler(logging.Handler):
    """Forwards superpie's log records to the client as `window/logMessage` (from any thread)."""

    def __init__(self, server: SuperpieServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.server, self.loop = server, loop
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Send one record; dropped once the loop is gone."""
        try:
            params = types.LogMessageParams(type=lsp_message_type(record.levelno), message=self.format(record))
            self.loop.call_soon_threadsafe(self.server.window_log_message, params)
        except RuntimeError:  # the loop is closed: the session is over
            pass


class SuperpieServer(LanguageServer):
    """Request state of one session: options, documents, the model worker, the watcher, statistics."""

    def __init__(self, model: str | None = None, log_level: LogLevel | None = None) -> None:
        super().__init__("superpie", _version(), protocol_cls=SuperpieProtocol)
        self.command_line = command_line_options(model, log_level)  # what an unset (null) option falls back to
        self.options = self.command_line
        self.documents: dict[str, Document] = {}
        self.encoding = "utf-16"
        self.roots: list[Path] = []
        self.markdown = False  # whether the client renders markdown documentation in completion items
        self.stats = ServerStats()
        self.worker = ModelWorker(Engine(engine_config(self.options, None)), self.text_of, self._idle_s())
        self.worker.start()
        self.pending_problems: list[str] = []
        self.watcher: WorkspaceWatcher | None = None
        self.load_task: asyncio.Task[bool] | None = None
        self.log_handler: ClientLogHandler | None = None
        self._reported: set[str] = set()
        self._ids = itertools.count(1)
        self._progress_ids = itertools.count(1)

    # ---------------------------------------------------------------- set-up

    def setup(self, params: types.InitializeParams) -> list[str]:
        """Read the client's options and workspace and give the worker its engine; return problems to report."""
        _, raw = split_token(params.initialization_options)  # checked by the TCP transport, never an option
        parsed = parse_options(raw, self.options, self.command_line)
        self.options = parsed.options
        self.encoding = lsp_encoding(self.protocol.workspace.position_encoding)
        self.roots = _roots(params)
        self.markdown = _supports_markdown(params.capabilities)
        self.worker.replace_engine(Engine(engine_config(self.options, self.workspace())))
        self.worker.idle_refresh_s = self._idle_s()
        return self._problems(parsed)

    def text_of(self, uri: str) -> str | None:
        """The open document's current engine text (the worker reads it when it syncs)."""
        doc = self.documents.get(uri)
        return doc.engine_text() if doc is not None else None

    def workspace(self) -> str | None:
        """The first workspace folder (the engine's project root)."""
        return str(self.roots[0]) if self.roots else None

    def max_document_chars(self) -> int:
        """Past this length the engine sees a window of a document (`cache.maxDocumentKb`)."""
        return self.options.cache.max_document_kb * 1024

    def _idle_s(self) -> float:
        return self.options.cache.idle_refresh_ms / 1000

    def _problems(self, parsed: ParsedOptions) -> list[str]:
        problems = [*(f"unknown option '{k}'" for k in parsed.unknown), *parsed.invalid]
        new = [p for p in problems if p not in self._reported]
        self._reported.update(new)
        return new

    def report(self, problems: list[str]) -> None:
        """Tell the user once about options that were ignored."""
        if problems:
            message = "superpie: " + "; ".join(problems)
            log.warning("%s", message)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=message))

    def attach_client_log(self) -> None:
        """Forward log records at the configured level to the client."""
        if self.log_handler is None:
            self.log_handler = ClientLogHandler(self, asyncio.get_running_loop())
            logging.getLogger("superpie").addHandler(self.log_handler)
        self.log_handler.setLevel(_LEVELS[self.options.log_level])
        root = logging.getLogger("superpie")
        root.setLevel(min(root.level or logging.WARNING, self.log_handler.level))

    # ------------------------------------------------------------------ model

    def start_loading(self) -> None:
        """Load the model in the background, with work-done progress where the client shows it."""
        self.load_task = asyncio.ensure_future(self._load_with_progress())

    async def _load_with_progress(self) -> bool:
        loading = self.worker.load()  # queued first: a sync must not load the model on its own
        token = f"superpie-load-{next(self._progress_ids)}"
        shown = await self._create_progress(token)
        name = self.options.model.path or "the default model"
        if shown:
            self.work_done_progress.begin(
                token, types.WorkDoneProgressBegin(title="superpie", message=f"loading {name}", cancellable=False)
            )
        self.stats.load_error = None
        try:
            ms = await asyncio.wrap_future(loading)
            message, ok = f"model ready ({ms / 1000:.1f} s)", True
            log.info("loaded %s in %.0f ms", name, ms)
        except Exception as exc:
            message, ok = f"cannot load the model: {exc}", False
            log.error("%s", message)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=message))
            self.stats.load_error = str(exc)
        if shown:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        return ok

    async def _create_progress(self, token: str) -> bool:
        window = self.client_capabilities.window
        if not (window and window.work_done_progress):
            return False
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), timeout=5)
            return True
        except Exception as exc:  # a client that fails the request gets no progress, not an error
            log.debug("no progress for the model load: %s", exc)
            return False

    async def model_ready(self) -> bool:
        """Whether the model is loaded, waiting for it within the configured timeout."""
        if self.worker.engine.loaded:
            return True
        if self.load_task is None:
            self.start_loading()
        timeout = self.options.completion.ready_timeout_ms / 1000
        try:
            await asyncio.wait_for(asyncio.shield(self.load_task), timeout)
        except (asyncio.TimeoutError, Exception):
            return False
        return self.worker.engine.loaded

    # ------------------------------------------------------------ completion

    def request_for(self, uri: str, text: str, offset: int, kind: str) -> CompletionRequest:
        """The engine request for a cursor in a text, with the options of this kind of request."""
        c = self.options.completion
        inline = kind == "inline"
        return CompletionRequest(
            uri=uri,
            text=text,
            offset=offset,
            max_tokens=c.max_tokens_inline if inline else c.max_tokens_menu,
            drafts=c.drafts,
            strategy=c.strategy,
            multiline=c.inline_multiline if inline else c.menu_multiline,
        )

    async def draft(self, uri: str, position: types.Position, kind: str) -> Answer | None:
        """Ranked drafts at an LSP position, or None (not open, no model, superseded).

        Every empty answer is counted in the stats with its reason (`ServerStats.empty`).
        """
        t0 = time.perf_counter()
        self.stats.requests[kind] += 1
        doc = self.documents.get(uri)
        if doc is None:
            log.warning("%s completion for %s, which is not open", kind, uri)
            self.stats.empty["not_open"] += 1
            return None
        try:
            at = doc.offset(position, self.encoding)
        except ValueError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None
        view = doc.view(around=at)  # taken now: an edit may land while the model loads
        offset = view.offset(at)
        if not await self.model_ready():
            self.stats.requests["not_ready"] += 1
            self.stats.empty["not_ready"] += 1
            return None
        token, future = self.worker.complete(self.request_for(uri, view.text, offset, kind), kind)
        try:
            outcome = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            token.cancel("client")
            self.stats.requests["cancelled"] += 1
            raise
        if outcome.result is None or outcome.cancelled:
            self.stats.requests[outcome.cancelled or "no_model"] += 1
            self.stats.empty[outcome.cancelled or "no_model"] += 1
            return None
        self._record(kind, uri, offset, (time.perf_counter() - t0) * 1000, outcome)
        if not outcome.result.completions:
            self.stats.empty[outcome.result.empty_reason or "cut"] += 1
        return Answer(f"r{next(self._ids)}", outcome.result.completions, view.text, offset, view.first_line)

    def _record(self, kind: str, uri: str, offset: int, ms: float, outcome: Outcome) -> None:
        self.stats.record(kind, ms, outcome)
        parts = " ".join(f"{k} {v:.0f}" for k, v in outcome.result.timings_ms.items())
        log.debug(
            "%s %s@%d: %.0f ms (queued %.0f, engine %.0f: %s; cache %s), %d drafts",
            kind, uri, offset, ms, outcome.queued_ms, outcome.engine_ms, parts,
            "current" if outcome.current_cache else "behind", len(outcome.result.completions),
        )  # fmt: skip

    # ------------------------------------------------------------ configuration

    def apply_options(self, parsed: ParsedOptions) -> None:
        """Switch to new options: reload the model, rebuild caches or just change settings, as needed."""
        old, new = self.options, parsed.options
        self.options = new
        self.report(self._problems(parsed))
        self.attach_client_log()
        self.worker.idle_refresh_s = self._idle_s()
        for doc in self.documents.values():
            doc.max_chars = self.max_document_chars()
        config = engine_config(new, self.workspace())
        if needs_reload(old, new):
            self.worker.replace_engine(Engine(config))
            self.start_loading()
        else:
            self.worker.reconfigure(config, reset_caches=needs_resync(old, new))
        if needs_reload(old, new) or needs_resync(old, new):
            for uri in self.documents:
                self.worker.sync_soon(uri)
        if old.watcher != new.watcher:
            self.stop_watcher()
            self.start_watcher()

    # ------------------------------------------------------------------ watcher

    def start_watcher(self) -> None:
        """Watch the workspace folders for source files changed on disk."""
        opts = self.options.watcher
        if not opts.enabled or not self.roots:
            return
        flt = SourceRules(max_bytes=opts.max_file_kb * 1024)
        self.watcher = WorkspaceWatcher(
            self.roots, self.on_file_changed, self.on_file_removed, flt, opts.debounce_ms / 1000
        )
        try:
            self.watcher.start()
        except OSError as exc:  # e.g. out of inotify watches: completion still works
            log.warning("workspace watcher not started: %s", exc)
            self.watcher = None

    def stop_watcher(self) -> None:
        """Stop watching the workspace."""
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def on_file_changed(self, path: Path) -> None:
        """A workspace file changed on disk: re-index it (open documents come from the editor instead)."""
        if path.as_uri() in self.documents:
            return
        self.stats.workspace_changed += 1
        self.worker.background(lambda engine: engine.workspace_file_changed(path))

    def on_file_removed(self, path: Path) -> None:
        """A workspace file was deleted or moved away: forget it."""
        self.stats.workspace_removed += 1
        self.worker.background(lambda engine: engine.workspace_file_removed(path))

    # ------------------------------------------------------------------ errors, end

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Log protocol errors (never a pop-up; the transport answers what it could not read)."""
        log.warning("protocol error (%s): %s", getattr(source, "__name__", source), error)

    def close(self, timeout: float = 0.0) -> None:
        """Stop the watcher and the worker (cancelling what runs)."""
        self.stop_watcher()
        self.worker.stop(timeout)


def _supports_markdown(caps: types.ClientCapabilities) -> bool:
    item = caps.text_document and caps.text_document.completion and caps.text_document.completion.completion_item
    return bool(item and types.MarkupKind.Markdown in (item.documentation_format or []))


def _roots(params: types.InitializeParams) -> list[Path]:
    uris = [f.uri for f in params.workspace_folders or []] or ([params.root_uri] if params.root_uri else [])
    paths = [to_fs_path(u) for u in uris]
    if not paths and params.root_path:
        paths = [params.root_path]
    return [Path(p) for p in paths if p and Path(p).is_dir()]


# ---------------------------------------------------------------------- handlers


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
    uri, version = params.text_document.uri, params.text_document.version
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
    import hashlib

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


def create_server(model: str | None = None, log_level: LogLevel | None = None) -> SuperpieServer:
    """A server with every feature and command registered (no module-level singleton)."""
    server = SuperpieServer(model=model, log_level=log_level)
    for name, handler, options in FEATURES:
        server.feature(name, options)(handler)
    for name, handler in COMMANDS.items():
        server.command(name)(handler)
    return server


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(_LEVELS[level])
    logging.getLogger("superpie").addHandler(handler)
    logging.getLogger("superpie").setLevel(_LEVELS[level])
    logging.getLogger("pygls").setLevel(logging.WARNING)  # pygls logs every message body at INFO


def _parse_tcp(tcp: str) -> tuple[str, int]:
    host, sep, port = tcp.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port (printed)
        raise ValueError(f"--tcp expects HOST:PORT, got '{tcp}'")
    return host.strip("[]") or "127.0.0.1", int(port)


def _private_stdout() -> Any:
    """The LSP stream on a duplicate of fd 1; fd 1 itself goes to stderr, so stray prints cannot corrupt it."""
    lsp_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return lsp_out


def serve(tcp: str | None, model: str | None, log_level: LogLevel, allow_remote: bool = False) -> int:
    """Run the language server on stdio (or TCP) until the client says exit; 0 after a clean shutdown.

    TCP listens on loopback only (unless `allow_remote`) and serves one client holding the session's
    token (`superpie.lsp.auth`). SIGINT or SIGTERM ends the server with 128 + the signal's number.
    After a session the process ends at once (`os._exit`): a helper thread still inside jedi or a
    reader blocked on stdin must not keep an editor waiting, and tearing down torch takes seconds.
    """
    _configure_logging(log_level)
    try:
        if tcp:
            host, port = _parse_tcp(tcp)
            check_host(host, allow_remote)
            token, generated = session_token()
    except ValueError as exc:
        print(f"superpie: error: {exc}", file=sys.stderr)
        return 2
    server = create_server(model=model, log_level=log_level)
    signalled = None
    try:
        if tcp:
            shown = token if generated else "$SUPERPIE_TOKEN"

            def announce(bound: int) -> None:
                print(f"superpie: listening on {host}:{bound} (token: {shown})", file=sys.stderr, flush=True)

            signalled = serve_tcp(server, host, port, token, announce)
        else:
            signalled = serve_stdio(server, sys.stdin.fileno(), _private_stdout())
    except OSError as exc:
        print(f"superpie: error: {exc}", file=sys.stderr)
        signalled = None
    except SystemExit:  # `exit` from the client
        pass
    finally:
        server.close(timeout=2.0)
    code = 128 + signalled if signalled else 0 if server.protocol._shutdown else 1
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)
