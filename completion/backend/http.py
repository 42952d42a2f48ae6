"""JSON over HTTP to a serving engine with the standard library: timeouts, cancellation, bounded retries.

The request runs on a short-lived daemon thread while the caller polls its cancel token, so an editor's
cancel (or a newer keystroke) closes the socket at once: the caller stops waiting and the engine sees
the client gone (llama.cpp's server then stops generating). A request that could not be delivered
(refused, reset, 503 while the engine loads) is retried a bounded number of times; one that was
delivered and timed out is not (the engine is busy: asking again would only queue more work).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from superpie.completion.backend.base import EngineDown, EngineRefused
from superpie.completion.decoding.task import Cancelled, never_cancelled

_POLL_S = 0.005  # how often the caller looks at the cancel token while the request is in flight
_BACKOFF_S = 0.1  # before retry i: _BACKOFF_S * 2**i


class RequestCancelled(Exception):
    """The caller's cancel token fired while the request was in flight; the connection was closed."""


@dataclass(frozen=True)
class HttpSettings:
    """Where the engine is and how long to wait for it."""

    url: str  # base URL, e.g. http://127.0.0.1:8080 (a path prefix is kept: http://host/llama)
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 10.0
    retries: int = 1
    api_key: str | None = None  # sent as a bearer token; read from the environment by the caller


class _Retry(Exception):
    """A failure before the engine took the request: safe to send again."""


class HttpTransport:
    """GET and POST of JSON against one base URL."""

    def __init__(self, settings: HttpSettings) -> None:
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"model.url must be an http(s) URL, got {settings.url!r}")
        self.settings = settings
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self.requests = 0  # HTTP requests sent (retries included)
        self.retried = 0

    def get(self, path: str, cancelled: Cancelled = never_cancelled) -> Any:
        """The JSON answer of GET `path`."""
        return self._request("GET", path, None, cancelled)

    def post(self, path: str, body: dict[str, Any], cancelled: Cancelled = never_cancelled) -> Any:
        """The JSON answer of POST `path` with `body`."""
        return self._request("POST", path, json.dumps(body).encode(), cancelled)

    def _request(self, method: str, path: str, body: bytes | None, cancelled: Cancelled) -> Any:
        last: Exception | None = None
        for attempt in range(self.settings.retries + 1):
            if attempt:
                self.retried += 1
                _sleep(_BACKOFF_S * 2 ** (attempt - 1), cancelled)
            try:
                return self._once(method, path, body, cancelled)
            except _Retry as exc:
                last = exc
        tries = self.settings.retries + 1
        raise EngineDown(f"{last}" + (f" ({tries} tries)" if tries > 1 else ""))

    def _once(self, method: str, path: str, body: bytes | None, cancelled: Cancelled) -> Any:
        s = self.settings
        conn_type = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = conn_type(self._host, self._port, timeout=s.connect_timeout_s)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                conn.connect()
                assert conn.sock is not None
                conn.sock.settimeout(s.read_timeout_s)
                conn.request(method, self._base + path, body=body, headers=headers)
                resp = conn.getresponse()
                outcome["answer"] = (resp.status, resp.read())
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                done.set()

        self.requests += 1
        threading.Thread(target=run, name="superpie-http", daemon=True).start()
        deadline = time.monotonic() + s.connect_timeout_s + s.read_timeout_s + 0.5
        try:
            while not done.wait(_POLL_S):
                if cancelled():
                    raise RequestCancelled(f"{method} {path} cancelled")
                if time.monotonic() > deadline:
                    raise EngineDown(f"{path}: no answer within {s.read_timeout_s:g} s (timed out)")
        finally:
            if not done.is_set():
                _abort(conn)
            conn.close()
        if "error" in outcome:
            raise _classify(outcome["error"], s)
        status, data = outcome["answer"]
        return _decode(status, data, path)


def _abort(conn: http.client.HTTPConnection) -> None:
    """Close an in-flight connection from the caller's thread: the request thread's read fails at once."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _classify(exc: BaseException, s: HttpSettings) -> Exception:
    if isinstance(exc, ConnectionRefusedError | ConnectionResetError | http.client.RemoteDisconnected):
        return _Retry(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, socket.timeout | TimeoutError):
        return EngineDown(f"timed out ({exc})")
    if isinstance(exc, OSError | http.client.HTTPException):
        return _Retry(f"{type(exc).__name__}: {exc}")
    return EngineRefused(f"{type(exc).__name__}: {exc}")


def _decode(status: int, data: bytes, path: str) -> Any:
    if status == 503:  # loading the model, or every slot busy: worth another try
        raise _Retry(f"{path}: 503 {_message(data)}")
    if status >= 400:
        raise EngineRefused(f"{path}: HTTP {status} {_message(data)}")
    try:
        return json.loads(data)
    except ValueError:
        raise EngineRefused(f"{path}: the answer is not JSON ({data[:80]!r})") from None


def _message(data: bytes) -> str:
    """The engine's error message (llama.cpp and OpenAI both answer {"error": {"message": ...}})."""
    try:
        err = json.loads(data).get("error")
        return str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        return data[:200].decode("utf-8", "replace")


def _sleep(seconds: float, cancelled: Cancelled) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cancelled():
            raise RequestCancelled("cancelled before a retry")
        time.sleep(min(_POLL_S, max(0.0, end - time.monotonic())))
