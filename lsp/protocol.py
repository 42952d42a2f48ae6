"""pygls' LSP protocol made strict where a client is careless, or hostile.

Malformed messages are answered instead of dropped (see `SuperpieProtocol`); documents go to the
server's own store (not pygls' workspace), so a change that does not fit the text is reported
instead of silently lost.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import RPCRequest
from pygls.protocol.language_server import lsp_method

log = logging.getLogger("superpie.lsp")

PARSE_ERROR, INVALID_REQUEST = -32700, -32600
# what a didChange's `"version": null` is read as (lsprotocol wants an int32); the handler maps it to None
NULL_VERSION = -(2**31)


def valid_id(msg_id: object) -> bool:
    """Whether a JSON-RPC id is one the protocol allows: a string or an integer (not a bool, float, object or array)."""
    return isinstance(msg_id, int | str) and not isinstance(msg_id, bool)


class _Answered:
    """Stands in for a message that was answered (or reported) while it was read."""

    jsonrpc = "answered"


class SuperpieProtocol(LanguageServerProtocol):
    """pygls' protocol, answering malformed messages instead of dropping them, with its own documents.

    - a request whose id is not a string or an integer: Invalid Request with a null id;
    - a request whose params do not parse: Invalid Params; a notification that does not parse is
      logged and counted (`dropped_notifications`), never silently lost;
    - a request after `shutdown`: Invalid Request; a second `initialize`: Invalid Request, and the
      session keeps its options and model;
    - error responses never carry a Python traceback (it goes to the log).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dropped_notifications = 0
        self._initialize_seen = False

    def structure_message(self, data: dict[str, Any]) -> Any:
        """Structure a message, answering (or counting) the ones that cannot be."""
        if "jsonrpc" not in data:
            return data  # an inner object, or not JSON-RPC (answered by handle_message)
        request = "method" in data and "id" in data
        if "id" in data and not valid_id(data["id"]):
            log.warning("message with an id that is neither a string nor an integer: %.200r", data["id"])
            if request:
                self.send_raw_error(None, INVALID_REQUEST, "Invalid Request: an id is a string or an integer")
            return _Answered()
        if data.get("method") == types.TEXT_DOCUMENT_DID_CHANGE:
            data = _null_version_read(data)
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if request:
                self._send_response(data["id"], error=JsonRpcInvalidParams(f"bad params: {exc}").to_response_error())
            else:
                self.dropped_notifications += 1
                log.error("%s could not be read and was dropped: %s", data.get("method", "a message"), exc)
            return _Answered()

    def handle_message(self, message: Any) -> None:
        """Dispatch a message; answer anything that is not JSON-RPC 2.0 with InvalidRequest."""
        if isinstance(message, _Answered):
            return
        if getattr(message, "jsonrpc", None) != self.VERSION:
            msg_id = message.get("id") if isinstance(message, dict) else None
            log.warning("not a JSON-RPC 2.0 message: %.200r", message)
            self.send_raw_error(msg_id if valid_id(msg_id) else None, INVALID_REQUEST, "Invalid Request")
            return
        if self._shutdown and isinstance(message, RPCRequest) and message.method != types.EXIT:
            log.warning("%s after shutdown: refused", message.method)
            self.send_raw_error(message.id, INVALID_REQUEST, "Invalid Request: the server is shut down")
            return
        super().handle_message(message)

    def send_raw_error(self, msg_id: int | str | None, code: int, message: str) -> None:
        """An error response written as plain JSON (so that a null id stays in the message)."""
        self._send_data({"jsonrpc": self.VERSION, "id": msg_id, "error": {"code": code, "message": message}})

    def _send_response(self, msg_id: Any, result: Any | None = None, error: types.ResponseError | None = None) -> None:
        """Send a response; an error's traceback (pygls puts it in `data`) stays in the log."""
        if error is not None and isinstance(error.data, dict) and "traceback" in error.data:
            log.debug("error answered to %s: %s\n%s", msg_id, error.message, "".join(error.data["traceback"]))
            error = types.ResponseError(code=error.code, message=error.message)
        super()._send_response(msg_id, result, error)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, types.InitializeResult]:
        """Initialize (once), preferring UTF-8 positions whenever the client offers them."""
        if self._initialize_seen:
            raise JsonRpcInvalidRequest("Invalid Request: the session is already initialized")
        self._initialize_seen = True
        general = params.capabilities.general
        if general is not None and types.PositionEncodingKind.Utf8 in (general.position_encodings or []):
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




def _null_version_read(data: dict[str, Any]) -> dict[str, Any]:
    """A didChange whose document version is null, with `NULL_VERSION` in its place (its changes still apply)."""
    params = data.get("params")
    if not isinstance(params, dict):
        return data
    document = params.get("textDocument")
    if isinstance(document, dict) and "version" in document and document["version"] is None:
        params = {**params, "textDocument": {**document, "version": NULL_VERSION}}
        return {**data, "params": params}
    return data
