"""Start-up: from `superpie serve` starting to its answer to `initialize` (issue 17: at most 300 ms, median of 10).

Each run starts the `superpie` console script (`superpie serve`, stdio), writes `initialize` at once
(as an editor does) and times the moment the whole answer has been read. It then asks for
`superpie.stats` and times that answer too ("serving": the server proper, with pygls, the engine,
torch and jedi, imported and made), and ends the session with shutdown/exit before the next run.
The CPU time the server had used when its answer was read is recorded too (a busy machine inflates
wall time, much less CPU time). For scale, each run also times the bare interpreter (`python -c
pass`, site and the editable install's finder included), the floor under any answer. No model is
loaded (no `initialized`).

An installed server reads its modules' bytecode from `__pycache__`; a shell with
`PYTHONDONTWRITEBYTECODE` set compiles every edited module from source on every start instead. So the
server is started with that variable removed and `PYTHONPYCACHEPREFIX` pointing to a folder of its
own (written by the first, uncounted start; the checkout gets no `__pycache__`), unless `--as-is`.

    .venv/bin/python benchmarks/startup.py                    # 10 starts
    .venv/bin/python benchmarks/startup.py --runs 20 --command "python -m superpie.lsp.cli serve"

Figures go to benchmarks/RESULTS.md; the raw runs to benchmarks/out/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

OUT = Path(__file__).parent / "out"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def framed(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def read_frame(stream: IO[bytes]) -> dict[str, Any]:
    """One LSP frame from a blocking stream (ValueError at its end)."""
    length = None
    while (line := stream.readline()) != b"\r\n":
        if not line:
            raise ValueError("the server closed its output")
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    assert length is not None
    return json.loads(stream.read(length))


def answer_to(stream: IO[bytes], msg_id: object) -> dict[str, Any]:
    while True:
        message = read_frame(stream)
        if message.get("id") == msg_id and "method" not in message:
            return message


def one_start(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Milliseconds from the process starting to the initialize answer and to the first other answer."""
    params = {"processId": os.getpid(), "rootUri": None, "capabilities": {}}
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(framed({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}))
    proc.stdin.flush()
    answer = answer_to(proc.stdout, 1)
    t_answer = time.perf_counter()
    cpu_ms = cpu_time_ms(proc.pid)
    assert "result" in answer, answer
    stats = {"jsonrpc": "2.0", "id": 2, "method": "workspace/executeCommand", "params": {"command": "superpie.stats"}}
    proc.stdin.write(framed(stats))
    proc.stdin.flush()
    assert "result" in answer_to(proc.stdout, 2)
    t_serving = time.perf_counter()
    proc.stdin.write(framed({"jsonrpc": "2.0", "id": 3, "method": "shutdown"}))
    proc.stdin.write(framed({"jsonrpc": "2.0", "method": "exit"}))
    proc.stdin.flush()
    answer_to(proc.stdout, 3)
    code = proc.wait(120)
    assert code == 0, f"exit status {code}"
    return {"answer_ms": (t_answer - t0) * 1000, "answer_cpu_ms": cpu_ms, "serving_ms": (t_serving - t0) * 1000}


def cpu_time_ms(pid: int) -> float:
    """CPU time (user + system) the process has used so far, from /proc (10 ms ticks).

    Read as soon as the answer is in: an upper bound on the CPU the answer took, a figure that a
    busy machine does not inflate the way it inflates wall time.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def bare_python_ms() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - t0) * 1000


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "p90": round(percentile(values, 90), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    default = str(Path(sys.executable).parent / "superpie") + " serve"
    parser.add_argument("--command", default=default, help=f"the server to start (default: {default})")
    parser.add_argument("--out", default=str(OUT / "startup.json"))
    parser.add_argument("--as-is", action="store_true", help="keep the environment's bytecode settings")
    args = parser.parse_args()
    command = shlex.split(args.command)
    env = dict(os.environ)
    if not args.as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="superpie-startup-pycache-")
    one_start(command, env)  # warm the page cache and the .pyc files: not counted
    runs = []
    for i in range(args.runs):
        load = os.getloadavg()[0]
        run = {**one_start(command, env), "python_ms": bare_python_ms(), "loadavg_1min": load}
        runs.append(run)
        print(f"run {i + 1}: answer {run['answer_ms']:.0f} ms (CPU {run['answer_cpu_ms']:.0f} ms), "
              f"serving {run['serving_ms']:.0f} ms, "
              f"bare python {run['python_ms']:.0f} ms, load {load:.2f}", file=sys.stderr)  # fmt: skip
    report = {
        "command": args.command,
        "bytecode": "as the environment has it" if args.as_is else "cached (PYTHONPYCACHEPREFIX, warmed by one start)",
        "runs": len(runs),
        "initialize_answer_ms": summary([r["answer_ms"] for r in runs]),
        "initialize_answer_cpu_ms": summary([r["answer_cpu_ms"] for r in runs]),
        "serving_ms": summary([r["serving_ms"] for r in runs]),
        "bare_python_ms": summary([r["python_ms"] for r in runs]),
        "loadavg_1min": summary([r["loadavg_1min"] for r in runs]),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "raw": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "raw"}, indent=1))


if __name__ == "__main__":
    main()
