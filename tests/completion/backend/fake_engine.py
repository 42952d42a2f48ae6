"""A scripted stand-in for a serving engine (the standard library's http.server), for the error paths.

Each test says how the fake answers (`FakeEngine.routes`: path -> a function of the request body that
returns (status, JSON) or sleeps); the fake records every request it got, so tests can count round trips
and read what superpie sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[dict[str, Any]], tuple[int, Any]]


class FakeEngine:
    """An HTTP server on 127.0.0.1 answering from `routes`; 404 elsewhere."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []  # method, path, body, headers
        self.disconnected = threading.Event()  # a handler found its client gone while answering
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                fake.requests.append((method, self.path, body, dict(self.headers)))
                route = fake.routes.get(self.path)
                status, answer = route(body) if route is not None else (404, {"error": {"message": "not found"}})
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    fake.disconnected.set()

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posted(self, path: str) -> list[dict[str, Any]]:
        """The bodies POSTed to `path`, in order."""
        return [body for method, p, body, _ in self.requests if method == "POST" and p == path]


def llama_props(body: dict[str, Any]) -> tuple[int, Any]:
    """/props of a llama.cpp server."""
    return 200, {"default_generation_settings": {"n_ctx": 2048}, "model_path": "/m/fake-model.gguf"}


def no_infill(body: dict[str, Any]) -> tuple[int, Any]:
    """/infill of a model without fill-in-the-middle tokens."""
    return 501, {"error": {"code": 501, "message": "Infill is not supported by this model", "type": "not_supported"}}


def llama_result(content: str, tokens: list[str], logprob: float = -0.5, stop_type: str = "word") -> dict[str, Any]:
    """One /completion result as llama.cpp's server writes it (with n_probs)."""
    assert "".join(tokens) == content
    return {
        "index": 0,
        "content": content,
        "stop_type": stop_type,
        "tokens_evaluated": 40,
        "tokens_cached": 39,
        "timings": {"cache_n": 36, "prompt_n": 4},
        "completion_probabilities": [
            {"id": 100 + i, "token": t, "logprob": logprob, "top_logprobs": []} for i, t in enumerate(tokens)
        ],
    }
