"""
The Lua worker process: C{python -m suite.goop.lua.worker CONFIG-JSON}.

It reads one JSON job per line on stdin and answers on stdout with JSON
lines: C{{"ready": true}} once at start, C{{"log": [level, text]}} for the
running function's log lines, and C{{"ok": ..., "result"|"error": ...}} when
the call ends.  Its own stdout is pointed at C{/dev/null} after the pipe is
set aside, so nothing but these lines reaches the peer.

Limits set here, before any job: address space (C{RLIMIT_AS}), no core
files, no new files beyond a few descriptors, and before each job a CPU-time
limit of the job's time plus a second (C{SIGXCPU} ends a worker the peer
could not reach).  The peer kills the worker at the wall-clock limit in any
case and starts another.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any, BinaryIO

__all__ = ["main", "MAX_JOB_BYTES"]

MAX_JOB_BYTES = 1024 * 1024
MAX_RESULT_BYTES = 1024 * 1024


def _limit(which: int, soft: int, hard: int | None = None) -> None:
    cur = resource.getrlimit(which)[1]
    want = soft if hard is None else hard
    if cur != resource.RLIM_INFINITY:
        want = min(want, cur)
        soft = min(soft, cur)
    try:
        resource.setrlimit(which, (soft, want))
    except (ValueError, OSError):
        pass


def applyLimits(addressSpace: int) -> None:
    """Resource limits of the whole worker process."""
    _limit(resource.RLIMIT_CORE, 0, 0)
    if addressSpace:
        _limit(resource.RLIMIT_AS, addressSpace, addressSpace)
    _limit(resource.RLIMIT_NOFILE, 64, 64)
    _limit(resource.RLIMIT_FSIZE, 1 << 30, 1 << 30)


def cpuLimit(seconds: float) -> None:
    """Let this process use at most C{seconds} more CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    soft = int(used + seconds) + 1
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ValueError, OSError):
        pass


def _write(out: BinaryIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    out.flush()


def _prepare(sandbox: Any) -> None:
    """
    Build the next call's runtime while no job is waiting (a failure here is
    met again, and answered, by the call itself).
    """
    try:
        sandbox.prepare()
    except Exception:
        pass


def main(argv: list[str]) -> int:
    config = json.loads(argv[1]) if len(argv) > 1 else {}
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    applyLimits(int(config.get("address_space", 0)))
    import lupa  # noqa: F401  (loaded before the first job)

    from suite.goop.lua.sandbox import Sandbox

    sandbox = Sandbox(str(config.get("data_path", "")), int(config.get("max_memory", 10 * 1024 * 1024)))
    _write(out, {"ready": True})
    stdin = sys.stdin.buffer
    while True:
        _prepare(sandbox)
        line = stdin.readline(MAX_JOB_BYTES + 1)
        if not line:
            return 0
        if len(line) > MAX_JOB_BYTES or not line.endswith(b"\n"):
            _write(out, {"ok": False, "error": "job too large"})
            return 1
        try:
            job = json.loads(line)
        except ValueError:
            _write(out, {"ok": False, "error": "job is not JSON"})
            continue
        cpuLimit(float(job.get("timeout", 5.0)) + 1.0)

        def emit(level: str, text: str) -> None:
            _write(out, {"log": [level, text]})

        try:
            answer = json.dumps(sandbox.run(job, emit), separators=(",", ":")).encode()
        except (TypeError, ValueError) as e:
            answer = json.dumps({"ok": False, "error": f"result is not JSON: {e}"[:500]}).encode()
        if len(answer) > MAX_RESULT_BYTES:
            answer = b'{"ok":false,"error":"result larger than 1 MiB"}'
        out.write(answer + b"\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
