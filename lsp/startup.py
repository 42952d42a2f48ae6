"""What `superpie serve` needs before its first answer: logging, and `initialize` answered without pygls.

An editor waits for the answer to `initialize` before it sends anything else. The server proper
(pygls and lsprotocol, the engine, torch, transformers, jedi, tree-sitter) takes seconds to import,
and nothing in that answer needs it: the capabilities are fixed, and the one thing negotiated, the
position encoding, is read off the client's capabilities here. So over stdio the transport answers
a well-formed `initialize` from this module, imports and builds the server after, and hands it the
same message; pygls' own answer to it is held back (`Screen`) and checked against the one sent.

This module imports the standard library only; `tests/lsp/test_startup.py` holds that seam and holds
`CAPABILITIES` and `position_encoding` to what pygls answers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger("superpie.lsp")

LOG_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}

# What the server announces (`handlers.FEATURES` and `COMMANDS` as pygls' capabilities builder turns
# them into JSON), less what depends on the client (`positionEncoding`, `sync_options`). A feature or
# command added there changes pygls' answer: tests/lsp/test_startup.py fails until this matches it.
CAPABILITIES: dict[str, Any] = {
    "completionProvider": {"triggerCharacters": ["."]},
    "executeCommandProvider": {"commands": ["superpie.stats", "superpie.accept", "superpie.document"]},
    "inlineCompletionProvider": {},
    "textDocumentSync": {"change": 2, "openClose": True, "save": False},
    "workspace": {"fileOperations": {}, "workspaceFolders": {"changeNotifications": True, "supported": True}},
}
ENCODINGS = ("utf-8", "utf-16", "utf-32")
_TRACE = ("off", "messages", "verbose")


def configure_logging(level: str) -> None:
    """superpie's log records to stderr at `level` (one of `LOG_LEVELS`); pygls' only from warnings up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(LOG_LEVELS[level])
    logging.getLogger("superpie").addHandler(handler)
    logging.getLogger("superpie").setLevel(LOG_LEVELS[level])
    logging.getLogger("pygls").setLevel(logging.WARNING)  # pygls logs every message body at INFO


def server_version() -> str:
    """superpie's version as the server announces it (`serverInfo.version`): `importlib.metadata`'s answer.

    Read from the installed `superpie-*.dist-info/METADATA` on `sys.path` first: importing
    `importlib.metadata` (email, csv, zipfile) costs more than the rest of the answer.
    """
    for entry in sys.path:
        try:
            names = [n for n in os.listdir(entry or ".") if n.startswith("superpie-") and n.endswith(".dist-info")]
        except OSError:
            continue
        for name in names:
            try:
                with open(os.path.join(entry or ".", name, "METADATA"), encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("Version:"):
                            return line.partition(":")[2].strip()
                        if not line.strip():  # the end of the headers
                            break
            except OSError:
                continue
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("superpie")
    except PackageNotFoundError:
        return "unknown"


def position_encoding(encodings: list[str] | None) -> str:
    """The position encoding the session will use, given the client's `general.positionEncodings`.

    UTF-8 whenever the client offers it (`protocol.SuperpieProtocol.lsp_initialize`), else the first
    one offered that the server knows, else UTF-16 (pygls' choice, and LSP's default).
    """
    offered = encodings or []
    if "utf-8" in offered:
        return "utf-8"
    return next((e for e in offered if e in ENCODINGS), "utf-16")


def _str_or_none(value: object) -> bool:
    return value is None or isinstance(value, str)


def _folder(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("uri"), str) and isinstance(value.get("name"), str)


def _plain_params(params: Mapping[str, Any]) -> bool:
    """Whether the fields of InitializeParams outside `capabilities` have the types LSP gives them."""
    pid = params.get("processId")
    folders = params.get("workspaceFolders")
    info = params.get("clientInfo")
    token = params.get("workDoneToken")
    return (
        (pid is None or isinstance(pid, int) and not isinstance(pid, bool))
        and all(_str_or_none(params.get(k)) for k in ("rootUri", "rootPath", "locale"))
        and (folders is None or isinstance(folders, list) and all(map(_folder, folders)))
        and params.get("trace") in (None, *_TRACE)
        and (info is None or isinstance(info, dict) and isinstance(info.get("name"), str))
        and (info is None or _str_or_none(info.get("version")))
        and (token is None or isinstance(token, int | str) and not isinstance(token, bool))
    )


def offered_encodings(params: Mapping[str, Any]) -> list[str] | None:
    """The client's `general.positionEncodings`; None when absent, ValueError when not a list of strings."""
    general = params["capabilities"].get("general")
    if general is None:
        return None
    if not isinstance(general, dict):
        raise ValueError("capabilities.general is not an object")
    encodings = general.get("positionEncodings")
    if encodings is not None and not (isinstance(encodings, list) and all(isinstance(e, str) for e in encodings)):
        raise ValueError("capabilities.general.positionEncodings is not a list of strings")
    return encodings


def sync_options(capabilities: Mapping[str, Any]) -> dict[str, Any]:
    """`textDocumentSync` as pygls writes it: `willSave: false` (and `willSaveWaitUntil`) where the client set its own.

    ValueError where `textDocument.synchronization` is not an object.
    """
    document = capabilities.get("textDocument")
    if document is not None and not isinstance(document, dict):
        raise ValueError("capabilities.textDocument is not an object")
    sync = (document or {}).get("synchronization")
    if sync is not None and not isinstance(sync, dict):
        raise ValueError("capabilities.textDocument.synchronization is not an object")
    stated = {k: False for k in ("willSave", "willSaveWaitUntil") if (sync or {}).get(k) is not None}
    return {**CAPABILITIES["textDocumentSync"], **stated}


def early_answer(message: object) -> dict[str, Any] | None:
    """The response to a first message that is a well-formed `initialize`; None for anything else.

    Anything unusual (a batch, an id that is not a string or an integer, params or fields of the
    wrong type) gets None: the server proper reads it and answers as it always did. Deeper in
    `capabilities` pygls may still refuse what this accepts; the transport then gives pygls the
    params with only the encoding this answer chose (`reduced_params`).
    """
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or message.get("method") != "initialize":
        return None
    msg_id, params = message.get("id"), message.get("params")
    if not isinstance(msg_id, int | str) or isinstance(msg_id, bool) or not isinstance(params, dict):
        return None
    capabilities = params.get("capabilities")
    if not isinstance(capabilities, dict) or not _plain_params(params):
        return None
    try:
        encoding = position_encoding(offered_encodings(params))
        sync = sync_options(capabilities)
    except ValueError:
        return None
    result = {
        "capabilities": {**CAPABILITIES, "textDocumentSync": sync, "positionEncoding": encoding},
        "serverInfo": {"name": "superpie", "version": server_version()},
    }
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def reduced_params(message: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The early-answered initialize with the client's capabilities replaced by the encoding answered.

    For when pygls cannot read the client's capabilities: the session goes on as answered, without them
    (pygls' answer to these params is the one sent: the same encoding, the same will-save flags).
    """
    capabilities = answer["result"]["capabilities"]
    flags = {k: True for k in ("willSave", "willSaveWaitUntil") if k in capabilities["textDocumentSync"]}
    reduced = {
        "general": {"positionEncodings": [capabilities["positionEncoding"]]},
        "textDocument": {"synchronization": flags},
    }
    return {**message, "params": {**message["params"], "capabilities": reduced}}


def frame(message: object) -> bytes:
    """One LSP frame: the Content-Length header and the JSON body."""
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


class Writer(Protocol):
    """What pygls writes its frames to (`pygls.io_.StdoutWriter`)."""

    def write(self, data: bytes) -> None:
        """Write one frame."""

    def close(self) -> None:
        """Close the stream."""


class Screen:
    """A writer that passes every frame on except the server's own answer to the early-answered initialize.

    That answer is kept in `held`: a result is compared with the one sent (a difference is logged as
    an error: `CAPABILITIES` is out of date), an error (pygls could not read the params) is left for
    the transport, which then sends `reduced_params`.
    """

    def __init__(self, writer: Writer, sent: dict[str, Any]) -> None:
        self.writer, self.sent = writer, sent
        self.held: dict[str, Any] | None = None
        self.waiting = True

    def expect_again(self) -> None:
        """Hold back the next answer to the same id too (the reduced initialize's)."""
        self.held, self.waiting = None, True

    def write(self, data: bytes) -> None:
        """Pass a frame on, unless it is the answer awaited."""
        if self.waiting and self._is_the_answer(data):
            return
        self.writer.write(data)

    def close(self) -> None:
        """Close the writer underneath."""
        self.writer.close()

    def _is_the_answer(self, data: bytes) -> bool:
        _, sep, body = data.partition(b"\r\n\r\n")
        try:
            message = json.loads(body) if sep else None
        except ValueError:
            return False
        if not isinstance(message, dict) or "method" in message or message.get("id") != self.sent["id"]:
            return False
        self.held, self.waiting = message, False
        if "error" in message:
            log.warning("initialize was answered early; pygls then refused it: %s", message["error"])
        elif message.get("result") != self.sent["result"]:
            log.error("initialize answered early with %s, pygls answers %s", self.sent["result"], message.get("result"))
        return True
