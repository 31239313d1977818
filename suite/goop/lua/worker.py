"""
The Lua worker process: C{python -m suite.goop.lua.worker CONFIG-JSON}.

It reads one JSON job per line on stdin and answers on stdout with JSON
lines: C{{"ready": true}} once at start, C{{"log": [level, text]}} for the
running function's log lines, and C{{"ok": ..., "result"|"error": ...}} when
the call ends.  Its own stdout is pointed at C{/dev/null} after the pipe is
set aside, so nothing but these lines reaches the peer.

Limits set here, before any job: address space (C{RLIMIT_AS}), no core
files, no new files beyond a few descriptors, and before each job a CPU-time
limit of the job's time plus one to two seconds (C{SIGXCPU} ends a worker
the peer could not reach; see L{CpuBudget}).  The peer kills the worker at
the wall-clock limit in any case and starts another.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any

__all__ = ["main", "CpuBudget", "MAX_JOB_BYTES"]

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


class CpuBudget:
    """
    The CPU-time limit (C{RLIMIT_CPU}) of the worker, moved before each job so
    that the job may use at least C{seconds} and at most C{seconds + 1} more
    CPU seconds (a limit counts whole seconds).  The limit is set again only
    when what is left of it falls below C{seconds}, so most jobs cost one
    C{getrusage} and no C{setrlimit}.
    """

    def __init__(self) -> None:
        self.hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        self.soft: float = -1.0

    def allow(self, seconds: float) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = usage.ru_utime + usage.ru_stime
        if self.soft - used >= seconds:
            return
        soft = int(used + seconds) + 1
        if self.hard != resource.RLIM_INFINITY:
            soft = min(soft, self.hard)
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, self.hard))
        except (ValueError, OSError):
            return
        self.soft = soft


# allow_nan=False: a result holding 1/0 or 0/0 would be JSON no client parses
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_decode = json.JSONDecoder().decode


def _write(out: int, message: dict[str, Any]) -> None:
    _writeAll(out, _encode(message).encode() + b"\n")


def _writeAll(out: int, data: bytes) -> None:
    while data:
        data = data[os.write(out, data) :]


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
    out = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    applyLimits(int(config.get("address_space", 0)))
    import lupa  # noqa: F401  (loaded before the first job)

    from suite.goop.lua.sandbox import Sandbox

    sandbox = Sandbox(str(config.get("data_path", "")), int(config.get("max_memory", 10 * 1024 * 1024)))
    budget = CpuBudget()
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
            job = _decode(line.decode("utf-8"))
        except ValueError:
            _write(out, {"ok": False, "error": "job is not JSON"})
            continue
        budget.allow(float(job.get("timeout", 5.0)) + 1.0)

        function = str(job.get("function", ""))[:64]

        def emit(level: str, text: str, function: str = function) -> None:
            # the function's name leads each of its lines in the peer's log
            _write(out, {"log": [level, f"{function}: {text}"]})

        try:
            answer = _encode(sandbox.run(job, emit)).encode()
        except (TypeError, ValueError) as e:
            answer = json.dumps({"ok": False, "error": f"result is not JSON: {e}"[:500]}).encode()
        if len(answer) > MAX_RESULT_BYTES:
            answer = b'{"ok":false,"error":"result larger than 1 MiB"}'
        _writeAll(out, answer + b"\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
