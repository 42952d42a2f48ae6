"""The superpie language server's state (pygls 2.x): it converts and schedules; the engine decides what to complete.

The handlers (`handlers`) are short and alike: find the document, convert the position, hand the work
to the model worker (`scheduler`), convert the answer back. The loop thread never calls the engine.
Documents live in the server's own store (`documents`, not pygls' workspace), so a change that does
not fit the text is reported instead of silently lost, and positions use the negotiated encoding
throughout. `transport` runs the server (`superpie serve`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Mapping
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
from superpie.completion.request import CompletionRequest, CompletionResult
from superpie.lsp.auth import split_token
from superpie.lsp.convert import (
    lsp_encoding,
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
from superpie.lsp.protocol import SuperpieProtocol
from superpie.lsp.scheduler import ModelWorker, Outcome
from superpie.lsp.startup import LOG_LEVELS
from superpie.lsp.stats import ServerStats

log = logging.getLogger("superpie.lsp")


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

    protocol: SuperpieProtocol  # made by pygls from `protocol_cls`

    def __init__(
        self, model: str | None = None, log_level: LogLevel | None = None, settings: Mapping[str, object] | None = None
    ) -> None:
        super().__init__("superpie", _version(), protocol_cls=SuperpieProtocol)
        # what an unset (null) option falls back to; `settings`: more command-line options by tree path
        self.command_line = command_line_options(model, log_level, settings)
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
        self.worker.replace_engine(Engine(engine_config(self.options, self.root())))
        self.worker.idle_refresh_s = self._idle_s()
        return self._problems(parsed)

    def text_of(self, uri: str) -> str | None:
        """The open document's current engine text (the worker reads it when it syncs)."""
        doc = self.documents.get(uri)
        return doc.engine_text() if doc is not None else None

    def root(self) -> str | None:
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
        self.log_handler.setLevel(LOG_LEVELS[self.options.log_level])
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
        assert self.load_task is not None
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
        result = outcome.result
        if result is None or outcome.cancelled:
            self.stats.requests[outcome.cancelled or "no_model"] += 1
            self.stats.empty[outcome.cancelled or "no_model"] += 1
            return None
        self._record(kind, uri, offset, (time.perf_counter() - t0) * 1000, outcome, result)
        if not result.completions:
            self.stats.empty[result.empty_reason or "cut"] += 1
        return Answer(f"r{next(self._ids)}", result.completions, view.text, offset, view.first_line)

    def _record(self, kind: str, uri: str, offset: int, ms: float, outcome: Outcome, result: CompletionResult) -> None:
        self.stats.record(kind, ms, outcome)
        parts = " ".join(f"{k} {v:.0f}" for k, v in result.timings_ms.items())
        log.debug(
            "%s %s@%d: %.0f ms (queued %.0f, engine %.0f: %s; cache %s), %d drafts",
            kind, uri, offset, ms, outcome.queued_ms, outcome.engine_ms, parts,
            "current" if outcome.current_cache else "behind", len(result.completions),
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
        config = engine_config(new, self.root())
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
        self.worker.background(lambda engine: engine.workspace_file_changed(path), key=path)

    def on_file_removed(self, path: Path) -> None:
        """A workspace file was deleted or moved away: forget it."""
        self.stats.workspace_removed += 1
        self.worker.background(lambda engine: engine.workspace_file_removed(path), key=path)

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
