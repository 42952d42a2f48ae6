"""pygls' LSP protocol made strict where a client is careless, or hostile.

Malformed messages are answered instead of dropped (InvalidRequest for what is not JSON-RPC 2.0,
InvalidParams for a request whose params do not parse); documents go to the server's own store (not
pygls' workspace), so a change that does not fit the text is reported instead of silently clamped.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

log = logging.getLogger("superpie.lsp")

PARSE_ERROR, INVALID_REQUEST = -32700, -32600


class _Answered:
    """Stands in for a message whose error response was already sent."""

    jsonrpc = "answered"


class SuperpieProtocol(LanguageServerProtocol):
    """pygls' protocol, answering malformed messages instead of dropping them, with its own documents."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        """Structure a message; a request whose params do not parse gets an InvalidParams answer."""
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "method" not in data or not isinstance(data.get("id"), (int, str)):
                raise
            self._send_response(data["id"], error=JsonRpcInvalidParams(f"bad params: {exc}").to_response_error())
            return _Answered()

    def handle_message(self, message: Any) -> None:
        """Dispatch a message; answer anything that is not JSON-RPC 2.0 with InvalidRequest."""
        if isinstance(message, _Answered):
            return
        if getattr(message, "jsonrpc", None) != self.VERSION:
            msg_id = message.get("id") if isinstance(message, dict) else None
            log.warning("not a JSON-RPC 2.0 message: %.200r", message)
            self.send_raw_error(msg_id if isinstance(msg_id, (int, str)) else None, INVALID_REQUEST, "Invalid Request")
            return
        super().handle_message(message)

    def send_raw_error(self, msg_id: int | str | None, code: int, message: str) -> None:
        """An error response written as plain JSON (so that a null id stays in the message)."""
        self._send_data({"jsonrpc": self.VERSION, "id": msg_id, "error": {"code": code, "message": message}})

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, types.InitializeResult]:
        """Initialize, preferring UTF-8 positions whenever the client offers them."""
        general = params.capabilities.general
        offered = list(general.position_encodings or []) if general else []
        if types.PositionEncodingKind.Utf8 in offered:
            general.position_encodings = [types.PositionEncodingKind.Utf8]
        return (yield from super().lsp_initialize(params))

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Generator[Any, Any, None]:
        """Hand the document to the server's own store."""
        yield self.fm.features[types.TEXT_DOCUMENT_DID_OPEN], (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Generator[Any, Any, None]:
        """Hand the changes to the server's own store."""
        yield self.fm.features[types.TEXT_DOCUMENT_DID_CHANGE], (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Generator[Any, Any, None]:
        """Hand the close to the server's own store."""
        yield self.fm.features[types.TEXT_DOCUMENT_DID_CLOSE], (params,), None


