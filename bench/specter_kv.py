"""
Specter ring KV benchmark.

    .venv/bin/python bench/specter_kv.py [--quick]

Measures, in one run:
  - put and get ops/s through --listen-rpc on a 3-process ring (aof, R=3,
    5 vnodes each, mTLS between processes), clients keeping 64 requests in
    flight on each of six connections spread over the three processes (best
    of two runs);
  - put ops/s on the aof and sqlite backends alone (one store, in process,
    best of three runs; aof includes the final write+fsync), and the CPU
    time per put (all threads of the process, so load-independent);
  - lookup hop count versus ring size (converged rings built in memory,
    iterative lookups from random vnodes with successor lists of 4);
  - the time a leaving process takes to hand its keys over (2-process ring,
    R=1), scaled to 100,000 keys, and the CPU time both processes spend
    on it.
The last line holds the figures as key=value pairs.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import _benchcli  # noqa: E402

HEADLINE = [
    "ring_puts_per_s",
    "ring_gets_per_s",
    "aof_puts_per_s",
    "sqlite_puts_per_s",
    "handover_100k_s",
    "handover_keys",
    "hops_16",
    "hops_64",
    "hops_256",
    "hops_1024",
    "ring_cpu_us_per_put",
    "aof_cpu_us_per_put",
    "sqlite_cpu_us_per_put",
    "handover_100k_cpu_s",
    "load1",
]

BIN = os.path.dirname(sys.executable)


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


class Proc:
    """
    One C{specter server}; C{env}, if given, replaces the environment.
    """

    def __init__(
        self, base: str, name: str, cert: str, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.port, self.rpc, self.http = freePort(), freePort(), freePort()
        self.addr = f"127.0.0.1:{self.port}"
        self.data = os.path.join(base, name)
        self.log = open(os.path.join(base, name + ".log"), "ab")
        self.env = env
        self.argv = [
            os.path.join(BIN, "specter"),
            "server",
            "--data",
            self.data,
            "--cert",
            cert,
            "--listen-tcp",
            self.addr,
            "--listen-rpc",
            f"tcp://127.0.0.1:{self.rpc}",
            "--listen-internal",
            f"tcp://127.0.0.1:{self.http}",
            *extra,
        ]
        self.start()

    def start(self) -> None:
        """
        Start the process (again, after L{kill}: same ports, same data).
        """
        self.p = subprocess.Popen(
            self.argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env
        )

    def ready(self, timeout: float = 60) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.addr} not ready")

    def kill(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()


def rpcToken(dataDir: str) -> bytes | None:
    """
    A node's RPC token (its data directory's rpc.token); None for a node of
    an older tree (``--old-tree``), which has no token and takes calls
    without one.
    """
    from suite.specter.rpcauth import TOKEN_FILE, readTokenFile

    path = os.path.join(dataDir, TOKEN_FILE)
    return readTokenFile("--data", path) if os.path.exists(path) else None


def runClients(nodes: list[tuple[int, str]], op: str, keys: list[bytes], window: int = 64) -> float:
    """
    Issue one op per key through the nodes' RPC ports (each given with its
    data directory, for the token) with C{window} requests in flight per
    connection; returns ops/s.
    """
    from twisted.internet import defer, task
    from twisted.python.failure import Failure

    from suite.specter.rpc import connectRPC

    result: list[float] = []

    async def main(reactor: Any) -> None:
        clients = [
            await connectRPC(reactor, f"tcp:host=127.0.0.1:port={p}", rpcToken(d))
            for p, d in nodes
            for _ in range(2)
        ]
        chunks = [keys[i :: len(clients)] for i in range(len(clients))]
        start = time.perf_counter()

        def worker(c: Any, ks: list[bytes]) -> defer.Deferred[None]:
            # a sliding window: a new request goes out as each answer comes in
            done: defer.Deferred[None] = defer.Deferred()
            it = iter(ks)
            state = {"inflight": 0}

            def issue() -> None:
                for k in it:
                    state["inflight"] += 1
                    d = c.kv("put", k, b"v" * 64) if op == "put" else c.kv("get", k)
                    d.addBoth(answered)
                    return
                if state["inflight"] == 0 and not done.called:
                    done.callback(None)

            def answered(result: Any) -> None:
                state["inflight"] -= 1
                if isinstance(result, Failure):
                    failures.append(result)
                issue()

            for _ in range(window):
                issue()
            return done

        failures: list[Any] = []
        await defer.gatherResults([worker(c, ks) for c, ks in zip(clients, chunks, strict=True)])
        if failures:
            raise SystemExit(f"{len(failures)} {op}s failed: {failures[0].getErrorMessage()}")
        result.append(len(keys) / (time.perf_counter() - start))
        for c in clients:
            c.close()

    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
    except SystemExit as e:
        if e.code:
            raise
    return result[0]


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU seconds used so far by process C{pid} (all its threads).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def benchRing(base: str, cert: str, n: int) -> tuple[float, float, float]:
    procs = [Proc(base, "r0", cert, "--replicas", "3")]
    try:
        procs[0].ready()
        for i in (1, 2):
            procs.append(Proc(base, f"r{i}", cert, "--replicas", "3", "--join", procs[0].addr))
        for p in procs:
            p.ready()
        time.sleep(3)
        nodes = [(p.rpc, p.data) for p in procs]
        puts = gets = 0.0
        cpu = float("inf")
        for attempt in range(2):  # best of two: other work on the machine adds noise
            keys = [b"bench-%d-%d" % (attempt, i) for i in range(n)]
            before = sum(cpuSeconds(p.p.pid) for p in procs)
            puts = max(puts, _inChild(runClients, nodes, "put", keys))
            cpu = min(cpu, (sum(cpuSeconds(p.p.pid) for p in procs) - before) / n)
            gets = max(gets, _inChild(runClients, nodes, "get", keys))
        return puts, gets, cpu
    finally:
        for p in procs:
            p.kill()


def _inChild(fn: Any, *args: Any) -> Any:
    """
    Run C{fn} in a forked child (each run gets a fresh reactor).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # A signal stops the child where it is; the parent reports it.
        for signum in _benchcli.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        # The child says nothing itself (Twisted would log a failure's
        # traceback there): why it failed goes to the parent below.
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)
        os.close(r)
        code = 1
        try:
            value = fn(*args)
            os.write(w, repr(value).encode())
            code = 0
        except BaseException as e:
            # Why, for the parent's one line (the child writes nothing itself).
            reason = str(e.code if isinstance(e, SystemExit) else e) or type(e).__name__
            os.write(w, b"!" + reason.encode(errors="replace")[-500:])
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    try:
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data or data.startswith(b"!"):
        why = data[1:].decode(errors="replace") if data.startswith(b"!") else f"wait status {status}"
        raise SystemExit(f"benchmark step {getattr(fn, '__name__', fn)} failed: {why}")
    return eval(data.decode())


def benchBackend(base: str, backend: str, n: int) -> tuple[float, float]:
    from twisted.internet import defer, task
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    from suite.kv import openStore

    out: list[tuple[float, float]] = []

    async def main(reactor: Any) -> None:
        pool = ThreadPool(1, 1)
        pool.start()
        kind = backend.rstrip("0123456789")
        store = openStore(
            kind, os.path.join(base, backend), 0, reactor, lambda f: deferToThreadPool(reactor, pool, f)
        )
        value = b"v" * 64
        start = time.perf_counter()
        cpu = time.process_time()
        batch = []
        for i in range(n):
            batch.append(store.put(b"key-%d" % i, value))
            if len(batch) >= 1024:
                await defer.gatherResults(batch)
                batch = []
        await defer.gatherResults(batch)
        if kind == "aof":
            await store.flush()
        out.append((n / (time.perf_counter() - start), (time.process_time() - cpu) / n))
        await store.close()
        pool.stop()

    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
    except SystemExit as e:
        if e.code:
            raise
    return out[0]


def _hops(size: int, lookups: int) -> float:
    """
    Average remote hops of iterative lookups on a converged ring of C{size}
    single-vnode processes (successor lists of 4, full finger tables).
    """
    import bisect

    from twisted.internet import defer
    from twisted.internet.task import Clock

    from suite.kv.memory import MemoryStore
    from suite.specter.chord.ids import RING_BITS, RING_SIZE, fingerStart
    from suite.specter.chord.node import ChordConfig, ChordNode
    from tests.support.chordsim import SimNetwork, SimTransport

    clock = Clock()
    rng = random.Random(size)
    net = SimNetwork(clock, rng, delay=(0.0, 0.0))
    config = ChordConfig(virtual=1, replicas=1, successors=4)

    def store(i: int) -> MemoryStore:
        return MemoryStore(clock)

    nodes = []
    for i in range(size):
        name = f"n{i}:1"
        node = ChordNode(name, SimTransport(net, name), clock, config, store, rng=random.Random(i))
        net.nodes[name] = node
        nodes.append(node)
    ring = sorted((n.vnodes[0] for n in nodes), key=lambda v: v.ref.id)
    ids = [v.ref.id for v in ring]

    def owner(x: int) -> Any:
        return ring[bisect.bisect_left(ids, x) % len(ring)]

    for j, v in enumerate(ring):
        v.view.pred = ring[j - 1].ref
        v.view.succs = [ring[(j + k) % size].ref for k in range(1, 5)]
        v.view.fingers = [owner(fingerStart(v.ref.id, k)).ref for k in range(RING_BITS)]
        # a converged ring: enter Active without joining or maintenance
        v.beginJoin = lambda: None  # type: ignore[method-assign]
        v.becameActive = lambda: None  # type: ignore[method-assign]
        v.membership.start()
        v.membership.joined()
    total = 0
    for _ in range(lookups):
        src = rng.choice(nodes)
        target = rng.randrange(RING_SIZE)
        found: list[Any] = []
        defer.Deferred.fromCoroutine(src.findSuccessor(target, start=src.vnodes[0].ref)).addBoth(found.append)
        while not found:
            clock.advance(0.001)
        ref, hops = found[0]
        if ref != owner(target).ref:
            raise SystemExit(f"lookup of {target:x} found {ref} instead of {owner(target).ref}")
        total += hops
    return total / lookups


def benchHops(sizes: list[int], lookups: int = 2000) -> dict[int, float]:
    return {size: _hops(size, lookups) for size in sizes}


def benchHandover(base: str, cert: str, n: int) -> tuple[float, int, float]:
    a = Proc(base, "h0", cert, "--replicas", "1")
    procs = [a]
    try:
        a.ready()
        b = Proc(base, "h1", cert, "--replicas", "1", "--join", a.addr)
        procs.append(b)
        b.ready()
        time.sleep(2)
        keys = [b"handover-%d" % i for i in range(n)]
        _inChild(runClients, [(a.rpc, a.data), (b.rpc, b.data)], "put", keys)
        held = _inChild(_records, a.rpc, a.data)
        cpuBefore = cpuSeconds(a.p.pid) + cpuSeconds(b.p.pid)
        start = time.perf_counter()
        a.p.send_signal(signal.SIGTERM)
        # wait4 gives the CPU time of the leaver's whole life
        _, status, usage = os.wait4(a.p.pid, 0)
        a.p.returncode = status
        elapsed = time.perf_counter() - start
        cpu = usage.ru_utime + usage.ru_stime + cpuSeconds(b.p.pid) - cpuBefore
        kept = _inChild(_records, b.rpc, b.data)
        if kept < n:
            raise SystemExit(f"handover lost keys: the remaining process holds {kept} of {n}")
        return elapsed, held, cpu
    finally:
        for p in procs:
            p.kill()


def _records(port: int, dataDir: str) -> int:
    from twisted.internet import defer, task

    from suite.specter.rpc import connectRPC

    out: list[int] = []

    async def main(reactor: Any) -> None:
        c = await connectRPC(reactor, f"tcp:host=127.0.0.1:port={port}", rpcToken(dataDir))
        stats = await c.call("stats")
        out.append(sum(v["store"]["records"] for v in stats["vnodes"]))
        c.close()

    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
    except SystemExit as e:
        if e.code:
            raise
    return out[0]


def main() -> None:
    parser = _benchcli.parser(__doc__, HEADLINE, "With --quick: hops_16 and hops_64 only.")
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    base = _benchcli.tempdir("specter-bench-")
    try:
        from suite.pki.ca import initBundle

        _benchcli.setPhase("certificates")
        cert = os.path.join(base, "cert")
        initBundle(cert, ["127.0.0.1"])
        _benchcli.setPhase("aof backend")
        runs = [_inChild(benchBackend, base, f"aof{i}", int(200_000 * scale)) for i in range(3)]
        aof, aofCpu = max(r[0] for r in runs), min(r[1] for r in runs)
        print(f"aof backend: {aof:,.0f} puts/s, {aofCpu * 1e6:.1f} us CPU per put", flush=True)
        _benchcli.setPhase("sqlite backend")
        runs = [_inChild(benchBackend, base, f"sqlite{i}", int(50_000 * scale)) for i in range(3)]
        sqlite, sqliteCpu = max(r[0] for r in runs), min(r[1] for r in runs)
        print(f"sqlite backend: {sqlite:,.0f} puts/s, {sqliteCpu * 1e6:.1f} us CPU per put", flush=True)
        _benchcli.setPhase("lookup hops")
        hops = benchHops([16, 64, 256, 1024] if not args.quick else [16, 64])
        for size, h in hops.items():
            print(f"lookup hops, ring of {size} vnodes: {h:.2f} (log2 N = {math.log2(size):.0f})", flush=True)
        _benchcli.setPhase("3-process ring")
        puts, gets, ringCpu = benchRing(base, cert, int(60_000 * scale))
        print(
            f"ring (3 processes, 15 vnodes, R=3, aof): {puts:,.0f} puts/s, {gets:,.0f} gets/s, "
            f"{ringCpu * 1e6:.0f} us server CPU per put",
            flush=True,
        )
        _benchcli.setPhase("handover")
        elapsed, held, handoverCpu = benchHandover(base, cert, int(200_000 * scale))
        per100k = elapsed * 100_000 / max(held, 1)
        cpu100k = handoverCpu * 100_000 / max(held, 1)
        print(
            f"handover: {held} keys in {elapsed:.2f}s (scaled to 100k keys: {per100k:.2f}s, "
            f"{cpu100k:.2f}s CPU of both processes)",
            flush=True,
        )
        hopText = " ".join(f"hops_{size}={h:.2f}" for size, h in hops.items())
        print(
            f"ring_puts_per_s={puts:.0f} ring_gets_per_s={gets:.0f} aof_puts_per_s={aof:.0f} "
            f"sqlite_puts_per_s={sqlite:.0f} handover_100k_s={per100k:.2f} handover_keys={held} {hopText} "
            f"ring_cpu_us_per_put={ringCpu * 1e6:.0f} aof_cpu_us_per_put={aofCpu * 1e6:.1f} "
            f"sqlite_cpu_us_per_put={sqliteCpu * 1e6:.1f} handover_100k_cpu_s={cpu100k:.2f} "
            f"load1={os.getloadavg()[0]:.2f}"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    _benchcli.run(main)
