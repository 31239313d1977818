"""
Lua data functions: C{lua/<name>.lua} defines C{call(request)}.

Calls run in a small pool of worker processes (L{suite.goop.lua.pool}),
never in the peer: each worker runs one call at a time in a fresh lupa
runtime inside the sandbox of L{suite.goop.lua.sandbox}, under
C{setrlimit} limits (address space, CPU time).  A call past its time limit
(5 s) plus a grace of half a second has its worker killed and replaced, and
the caller gets C{time limit exceeded}; the reactor never waits on Lua.
Lua memory is capped at 10 MB (every allocation of the Lua state, C
functions included).  Rate limits: 30 calls/min per peer, 120/min overall,
and C{@rate_limit N} per function per peer.
"""

from __future__ import annotations

import collections
import os
import re
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from suite.goop.lua.errors import LuaError
from suite.goop.lua.pool import WorkerPool

__all__ = ["LuaEngine", "LuaError", "RateLimits"]

log = Logger()
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
RATE = re.compile(r"@rate_limit\s+(\d+)")
WRITES = re.compile(r"@writes\s+([A-Za-z0-9_, ]+)")
MAX_SOURCE = 256 * 1024
#: Address space of one worker process (Python, lupa, SQLite and the Lua heap).
WORKER_ADDRESS_SPACE = 512 * 1024 * 1024


@dataclass(frozen=True)
class _Script:
    """A function's source as last read, with what its annotations say."""

    key: tuple[int, int, int]
    source: str
    rateLimit: int | None
    writes: tuple[str, ...]


class RateLimits:
    """Sliding one-minute windows keyed by peer, globally, and per function."""

    def __init__(self, clock: Any, perPeer: int = 30, overall: int = 120, window: float = 60.0) -> None:
        self.clock = clock
        self.perPeer = perPeer
        self.overall = overall
        self.window = window
        self.hits: dict[str, collections.deque[float]] = {}

    def _count(self, key: str, now: float) -> collections.deque[float]:
        q = self.hits.setdefault(key, collections.deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def check(self, peer: str, function: str, functionLimit: int | None) -> str | None:
        """Record a call, or return why it is refused."""
        now = self.clock.seconds()
        checks = [("*", self.overall, "overall"), (f"peer:{peer}", self.perPeer, "per peer")]
        if functionLimit is not None:
            checks.append((f"fn:{function}:{peer}", functionLimit, f"{function} @rate_limit"))
        queues = []
        for key, limit, what in checks:
            q = self._count(key, now)
            if len(q) >= limit:
                return f"rate limit exceeded ({what}: {limit}/min)"
            queues.append(q)
        for q in queues:
            q.append(now)
        if len(self.hits) > 10000:
            for k in [k for k, q in self.hits.items() if not q]:
                del self.hits[k]
        return None


class LuaEngine:
    """Runs the peer's Lua functions in worker processes."""

    def __init__(
        self,
        reactor: Any,
        luaDir: str,
        dataPath: str,
        timeout: float = 5.0,
        maxMemory: int = 10 * 1024 * 1024,
        limits: RateLimits | None = None,
        workers: int = 2,
        grace: float = 0.5,
        addressSpace: int = WORKER_ADDRESS_SPACE,
    ) -> None:
        self.reactor = reactor
        self.luaDir = luaDir
        self.dataPath = dataPath
        self.timeout = timeout
        self.maxMemory = maxMemory
        self.limits = limits or RateLimits(reactor)
        self.sources: dict[str, _Script] = {}
        self.pool = WorkerPool(
            reactor,
            {"data_path": dataPath, "max_memory": maxMemory, "address_space": addressSpace},
            size=workers,
            grace=grace,
        )

    def start(self) -> None:
        """Start the worker processes (each call starts them too)."""
        self.pool.start()

    def stop(self) -> Deferred[None]:
        """Kill the workers; calls still waiting fail.  Fires when they have ended."""
        return self.pool.stop()

    def list(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.luaDir))
        except OSError:
            return []
        return [n[:-4] for n in names if n.endswith(".lua") and NAME.match(n[:-4])]

    def _source(self, function: str) -> _Script:
        if not isinstance(function, str) or not NAME.match(function):
            raise LuaError("invalid function name")
        path = os.path.join(self.luaDir, function + ".lua")
        try:
            st = os.stat(path)
        except OSError:
            raise LuaError(f"no such function: {function}") from None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self.sources.get(function)
        if cached is not None and cached.key == key:
            return cached
        try:
            with open(path, encoding="utf-8") as f:
                src = f.read(MAX_SOURCE + 1)
        except (OSError, UnicodeDecodeError):
            raise LuaError(f"no such function: {function}") from None
        if len(src) > MAX_SOURCE:
            raise LuaError("script too large")
        if len(self.sources) >= 256:
            self.sources.clear()
        m = RATE.search(src)
        w = WRITES.search(src)
        writes = tuple(sorted({t.strip() for t in w.group(1).split(",") if t.strip()})) if w else ()
        script = self.sources[function] = _Script(key, src, int(m.group(1)) if m else None, writes)
        return script

    def call(self, caller: str, function: str, params: Any) -> Deferred[Any]:
        """Run C{function} for C{caller}; fires with the result or fails with L{LuaError}."""
        try:
            script = self._source(function)
        except LuaError as e:
            return fail(e)
        refused = self.limits.check(caller, function, script.rateLimit)
        if refused:
            return fail(LuaError(refused))
        self.start()
        job = {
            "caller": caller,
            "function": function,
            "source": script.source,
            "params": params,
            "writes": script.writes,
            "timeout": self.timeout,
        }
        return self.pool.submit(job, self.timeout).addCallback(_answer)


def _answer(message: dict[str, Any]) -> Any:
    if message.get("ok"):
        return message.get("result")
    raise LuaError(str(message.get("error", "the call failed"))[:500])
