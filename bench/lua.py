"""
Benchmark Goop2's Lua data functions: the cost of one call through the
peer's worker-process pool (pipe to a worker, fresh sandboxed runtime,
answer back), as a peer runs them (2 workers, the 5 s / 10 MB limits).

The engine is driven in this process on the real reactor with the rate
limits lifted (a peer allows 120 calls/min; the point here is what a call
costs), 32 calls in flight, for a few seconds each:

  1. a trivial function (C{return request.params.n + 1});
  2. a DB-touching function (a count over 1,000 rows plus one indexed
     lookup in C{data.db}).

Last line: C{lua_calls_per_s=... lua_p99_ms=... lua_db_calls_per_s=...
lua_db_p99_ms=... cpu_us_per_call=... peer_cpu_us_per_call=...
worker_cpu_us_per_call=... trivial_peer_cpu_us=... trivial_worker_cpu_us=...
workers=... loadavg=...}; C{cpu_us_per_call} is the CPU time (this process
and the workers) per call over both runs, which says what a call costs
whatever else the machine is doing; the C{trivial_*} figures are the same for
the trivial run alone (the workers' share read from C{/proc}, Linux only).

Run: C{.venv/bin/python bench/lua.py}
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _benchcli  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402

from suite.goop.lua.engine import LuaEngine, RateLimits  # noqa: E402

HEADLINE = "lua_calls_per_s lua_p99_ms lua_db_calls_per_s lua_db_p99_ms cpu_us_per_call peer_cpu_us_per_call worker_cpu_us_per_call trivial_peer_cpu_us trivial_worker_cpu_us workers loadavg".split()

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
IN_FLIGHT = int(os.environ.get("BENCH_IN_FLIGHT", "32"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))

TRIVIAL = "function call(request) return request.params.n + 1 end\n"
DB = (
    "function call(request)\n"
    "  local n = goop.db.scalar('SELECT COUNT(*) FROM notes')\n"
    "  local row = goop.db.query('SELECT text FROM notes WHERE _id = ?', request.params.n % 1000 + 1)\n"
    "  return {count = n, text = row[1].text}\n"
    "end\n"
)


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process (the peer side) and of its reaped children (the workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def _workerCpu(engine: LuaEngine) -> float:
    """CPU seconds of the engine's live worker processes (from C{/proc}; 0 where there is none)."""
    total = 0.0
    for w in engine.pool.workers:
        pid = getattr(w.transport, "pid", None)
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


async def run(reactor: Any, engine: LuaEngine, function: str) -> tuple[int, float, float]:
    latencies: list[float] = []
    stop = time.monotonic() + SECONDS
    counter = [0]

    async def client() -> None:
        while time.monotonic() < stop:
            counter[0] += 1
            started = time.perf_counter()
            await engine.call("bench", function, {"n": counter[0]})
            latencies.append(time.perf_counter() - started)

    began = time.monotonic()
    await gatherResults([Deferred.fromCoroutine(client()) for _ in range(IN_FLIGHT)])
    elapsed = time.monotonic() - began
    return len(latencies), len(latencies) / elapsed, percentile(latencies, 0.99) * 1000


async def bench(reactor: Any) -> None:
    work = _benchcli.tempdir("bench-lua-")
    try:
        os.makedirs(os.path.join(work, "lua"))
        for name, src in (("trivial", TRIVIAL), ("db", DB)):
            with open(os.path.join(work, "lua", name + ".lua"), "w") as f:
                f.write(src)
        conn = sqlite3.connect(os.path.join(work, "data.db"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            'CREATE TABLE notes ("_id" INTEGER PRIMARY KEY AUTOINCREMENT, "_owner" TEXT NOT NULL DEFAULT \'\', '
            '"_created" REAL NOT NULL DEFAULT 0, text TEXT)'
        )
        conn.executemany("INSERT INTO notes (text) VALUES (?)", [(f"note {i}",) for i in range(1000)])
        conn.commit()
        conn.close()
        limits = RateLimits(reactor, perPeer=10**9, overall=10**9)
        engine = LuaEngine(
            reactor, os.path.join(work, "lua"), os.path.join(work, "data.db"), limits=limits, workers=WORKERS
        )
        _benchcli.setPhase("starting the Lua workers")
        engine.start()
        try:
            assert await engine.call("bench", "trivial", {"n": 1}) == 2
            assert (await engine.call("bench", "db", {"n": 1}))["count"] == 1000
            cpu0 = _cpu()
            workers0 = _workerCpu(engine)
            _benchcli.setPhase("trivial calls")
            trivialCalls, trivialRate, trivialP99 = await run(reactor, engine, "trivial")
            trivialPeer = (_cpu()[0] - cpu0[0]) / trivialCalls * 1e6
            trivialWorker = (_workerCpu(engine) - workers0) / trivialCalls * 1e6
            print(
                f"trivial: {trivialRate:.0f} calls/s, p99 {trivialP99:.2f} ms, CPU per call: "
                f"peer {trivialPeer:.0f} us, workers {trivialWorker:.0f} us",
                flush=True,
            )
            _benchcli.setPhase("DB calls")
            dbCalls, dbRate, dbP99 = await run(reactor, engine, "db")
            print(f"db: {dbRate:.0f} calls/s, p99 {dbP99:.2f} ms", flush=True)
            calls = trivialCalls + dbCalls
        finally:
            await engine.stop()
        # the workers' CPU time is counted once they have been reaped
        cpu1 = _cpu()
        peerPerCall = (cpu1[0] - cpu0[0]) / calls * 1e6
        workerPerCall = (cpu1[1] - cpu0[1]) / calls * 1e6
        print(
            f"lua_calls_per_s={trivialRate:.0f} lua_p99_ms={trivialP99:.2f} "
            f"lua_db_calls_per_s={dbRate:.0f} lua_db_p99_ms={dbP99:.2f} "
            f"cpu_us_per_call={peerPerCall + workerPerCall:.0f} peer_cpu_us_per_call={peerPerCall:.0f} "
            f"worker_cpu_us_per_call={workerPerCall:.0f} trivial_peer_cpu_us={trivialPeer:.0f} "
            f"trivial_worker_cpu_us={trivialWorker:.0f} workers={WORKERS} loadavg={os.getloadavg()[0]:.1f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    _benchcli.parser(__doc__, HEADLINE).parse_args()
    _benchcli.react(bench)


if __name__ == "__main__":
    _benchcli.run(main)
