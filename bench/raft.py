"""
Benchmark suite.raft against etcd on this machine.

Starts 3 local Raft KV node processes (mTLS, WAL with fsync) and measures:
committed writes/s with 1 and with 64 concurrent clients (small values),
p50/p99 commit latency at a fixed 1,000 writes/s, and the median failover
time over repeated kill -9 of the leader (kill to first acknowledged write).
Then starts 3 etcd members on loopback and measures writes/s with 64
concurrent clients through its HTTP gateway (/v3/kv/put, driven by wrk).

    .venv/bin/python bench/raft.py [--quick] [--twisted-client] [--inflight K]
        [--coalesce-writes all|client|peers|none] [--no-etcd]

The closed-loop phases are driven by bench/raftload.py (standard-library
ssl, one process, one mTLS connection and session per client, like wrk for
etcd); --twisted-client drives them with suite.raft.client.RaftClient in
this process instead, as figures before 2026-12-02 were.  --inflight K
pipelines K sessions per connection in the 64-client phase (default 1, as
wrk against etcd); the 8x8 phase always runs 8 connections with 8 requests
in flight each (the same 64 outstanding writes).  With K > 1 etcd is also
driven with 64*K connections (as many outstanding writes as the pipelined
phase; its HTTP gateway serves one request at a time per connection) and
raft_vs_etcd_same_outstanding compares the two.  --coalesce-writes is
passed to the nodes (default none, as theirs).  CPU per acknowledged write sums the
CPU time of every process involved (three nodes and the load generator;
for etcd, three members and wrk) over the phase.

The last line holds the figures as key=value pairs.
"""

from __future__ import annotations

import asyncio  # noqa: F401  (keeps the stdlib event loop importable for wrk's subprocess use)
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _benchcli  # noqa: E402
from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.defer import ensureDeferred, gatherResults  # noqa: E402
from twisted.internet.utils import getProcessOutputAndValue  # noqa: E402

from tests.raft.cluster import makeClient, makeCluster  # noqa: E402
from tests.support.process import freePort  # noqa: E402

HEADLINE = [
    "raft_writes_per_s_64",
    "raft_writes_per_s_1",
    "raft_p50_ms_at_1000",
    "raft_p99_ms_at_1000",
    "raft_failover_ms_median",
    "etcd_writes_per_s_64",
    "etcd_writes_per_s_1",
    "raft_cpu_us_per_write_64",
    "etcd_cpu_us_per_write_64",
    "raft_writes_per_s_8x8",
    "raft_cpu_us_per_write_8x8",
]


def parseArgs() -> Any:
    parser = _benchcli.parser(
        __doc__,
        HEADLINE + ["raft_vs_etcd_64"],
        "With --inflight K > 1 also etcd_writes_per_s_same_outstanding"
        " etcd_cpu_us_per_write_same_outstanding raft_vs_etcd_same_outstanding.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 s phases and 3 failovers (8 s and 5 otherwise)"
    )
    parser.add_argument(
        "--twisted-client",
        action="store_true",
        help="drive the closed-loop phases with suite.raft.client.RaftClient in this process",
    )
    parser.add_argument(
        "--inflight", type=int, default=1, metavar="K", help="sessions per connection in the 64-client phase"
    )
    parser.add_argument(
        "--coalesce-writes",
        default="none",
        choices=["all", "client", "peers", "none"],
        help="passed to the nodes (default none)",
    )
    parser.add_argument(
        "--no-etcd", action="store_true", help="skip the etcd comparison (its figures print 0.0)"
    )
    return parser.parse_args()


QUICK = False
TWISTED_CLIENT = False
PHASE = 8.0
NO_ETCD = False
INFLIGHT = 1
COALESCE = "none"
TICK = os.sysconf("SC_CLK_TCK")


def cpuSeconds(pids: list[int]) -> float:
    """
    User plus system CPU time of the processes C{pids} (all threads).
    """
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def waitPort(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


class Cluster:
    def __init__(self, base: str) -> None:
        self.base = base
        self.specs, self.clientDir = makeCluster(base, 3, freePort)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, nodeId: str) -> None:
        spec = next(s for s in self.specs if s.id == nodeId)
        log = open(os.path.join(self.base, f"{nodeId}.log"), "ab")
        self.procs[nodeId] = subprocess.Popen(
            spec.argv(snapshotThreshold=20000) + ["--coalesce-writes", COALESCE],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def startAll(self) -> None:
        for s in self.specs:
            self.start(s.id)
        for s in self.specs:
            waitPort(s.clientPort)

    def kill9(self, nodeId: str) -> None:
        p = self.procs.pop(nodeId)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = {}


async def closedLoop(
    cluster: Cluster, clients: int, seconds: float, inflight: int = 1
) -> tuple[float, float]:
    """
    Committed writes/s and CPU microseconds per committed write with
    C{clients} closed-loop connections (C{inflight} sessions, each with one
    outstanding write, per connection), driven by bench/raftload.py in its
    own process; with C{--twisted-client}, by L{RaftClient}s in this
    process instead (CPU then counts the nodes only).
    """
    pids = [p.pid for p in cluster.procs.values()]
    cpu = cpuSeconds(pids)
    if TWISTED_CLIENT:
        rate, writes = await closedLoopTwisted(cluster, clients * inflight, seconds)
        return rate, (cpuSeconds(pids) - cpu) * 1e6 / max(writes, 1)
    argv = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "raftload.py")]
    argv += ["--cert-dir", cluster.clientDir, "--clients", str(clients), "--seconds", str(seconds)]
    argv += ["--inflight", str(inflight)]
    for s in cluster.specs:
        argv += ["--server", f"{s.id}=127.0.0.1:{s.clientPort}"]
    out, err, code = await getProcessOutputAndValue(sys.executable, argv, env=dict(os.environ))
    if code != 0:
        raise SystemExit(f"raftload failed ({code}): {err.decode(errors='replace').strip()[-500:]}")
    fields = dict(item.split("=", 1) for item in out.decode().split())
    writes = int(fields["writes"])
    used = cpuSeconds(pids) - cpu + float(fields["cpu"])
    return writes / float(fields["seconds"]), used * 1e6 / max(writes, 1)


async def closedLoopTwisted(cluster: Cluster, clients: int, seconds: float) -> tuple[float, int]:
    pool = [
        makeClient(reactor, cluster.specs, cluster.clientDir, timeoutMs=2000, retryAttempts=20)
        for _ in range(clients)
    ]
    await gatherResults([ensureDeferred(c.call("put", "warm", "x")) for c in pool])
    done = [0]
    end = time.monotonic() + seconds

    async def worker(i: int, c: Any) -> None:
        n = 0
        while time.monotonic() < end:
            await c.call("put", f"k{i}-{n % 100}", "v" * 16)
            n += 1
            done[0] += 1

    started = time.monotonic()
    await gatherResults([ensureDeferred(worker(i, c)) for i, c in enumerate(pool)])
    elapsed = time.monotonic() - started
    for c in pool:
        c.close()
    return done[0] / elapsed, done[0]


async def fixedRate(cluster: Cluster, rate: float, seconds: float) -> tuple[float, float, float]:
    pool = [
        makeClient(reactor, cluster.specs, cluster.clientDir, timeoutMs=2000, retryAttempts=20)
        for _ in range(64)
    ]
    await gatherResults([ensureDeferred(c.call("put", "warm", "x")) for c in pool])
    idle = list(pool)
    latencies: list[float] = []
    backlog: list[float] = []
    inflight: list[Any] = []

    async def one(c: Any, scheduled: float) -> None:
        await c.call("put", f"r{len(latencies) % 100}", "v" * 16)
        latencies.append((time.monotonic() - scheduled) * 1000.0)
        idle.append(c)
        if backlog:
            launch(backlog.pop(0))

    def launch(scheduled: float) -> None:
        if not idle:
            backlog.append(scheduled)
            return
        inflight.append(ensureDeferred(one(idle.pop(), scheduled)))

    start = time.monotonic()
    count = int(rate * seconds)
    tick = 0.001
    sent = 0
    while sent < count:
        now = time.monotonic()
        due = min(count, int((now - start) * rate) + 1)
        while sent < due:
            launch(start + sent / rate)
            sent += 1
        await task.deferLater(reactor, tick, lambda: None)
    while len(latencies) < count:
        await task.deferLater(reactor, 0.01, lambda: None)
    achieved = count / (time.monotonic() - start)
    for c in pool:
        c.close()
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1], achieved


async def failovers(cluster: Cluster, rounds: int) -> list[float]:
    times = []
    for r in range(rounds):
        client = makeClient(
            reactor, cluster.specs, cluster.clientDir, timeoutMs=100, retryAttempts=400, backoffMs=5
        )
        await client.call("put", "f", str(r))
        leader = (await client.call("status"))["leader"]
        client.close()
        # Background writes keep flowing; measure kill -> first acknowledged write.
        client = makeClient(
            reactor, cluster.specs, cluster.clientDir, timeoutMs=100, retryAttempts=400, backoffMs=5
        )
        client.target = next(s.id for s in cluster.specs if s.id != leader)
        cluster.kill9(leader)
        killed = time.monotonic()
        await client.call("put", "f", f"after-{r}")
        times.append((time.monotonic() - killed) * 1000.0)
        client.close()
        cluster.start(leader)
        spec = next(s for s in cluster.specs if s.id == leader)
        waitPort(spec.clientPort)
        await task.deferLater(reactor, 1.0, lambda: None)
    return times


async def raftPhases() -> dict[str, float]:
    base = _benchcli.tempdir("raft-bench-")
    out: dict[str, float] = {}
    cluster = Cluster(base)
    try:
        _benchcli.setPhase("raft cluster start")
        cluster.startAll()
        _benchcli.setPhase("raft 1 client")
        out["raft_writes_per_s_1"], _ = await closedLoop(cluster, 1, PHASE)
        say(f"raft: {out['raft_writes_per_s_1']:.0f} writes/s with 1 client")
        _benchcli.setPhase("raft 64 clients")
        rate, cpu = await closedLoop(cluster, 64, PHASE, INFLIGHT)
        out["raft_writes_per_s_64"], out["raft_cpu_us_per_write_64"] = rate, cpu
        say(
            f"raft: {rate:.0f} writes/s with 64 connections x {INFLIGHT} in flight,"
            f" {cpu:.0f} us CPU per write (nodes + load generator)"
        )
        _benchcli.setPhase("raft 8x8 clients")
        rate, cpu = await closedLoop(cluster, 8, PHASE, 8)
        out["raft_writes_per_s_8x8"], out["raft_cpu_us_per_write_8x8"] = rate, cpu
        say(f"raft: {rate:.0f} writes/s with 8 connections x 8 in flight, {cpu:.0f} us CPU per write")
        _benchcli.setPhase("raft fixed rate 1000 writes/s")
        p50, p99, achieved = await fixedRate(cluster, 1000.0, PHASE)
        out["raft_p50_ms_at_1000"], out["raft_p99_ms_at_1000"] = p50, p99
        say(f"raft: at 1000 writes/s (achieved {achieved:.0f}/s) p50={p50:.2f} ms p99={p99:.2f} ms")
        _benchcli.setPhase("raft failovers")
        times = await failovers(cluster, 3 if QUICK else 5)
        times.sort()
        out["raft_failover_ms_median"] = times[len(times) // 2]
        say(f"raft: failover times (ms) {[round(t) for t in times]}")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return out


WRK_SCRIPT = r"""
local counter = 0
request = function()
  counter = counter + 1
  local key = "k" .. (counter % 1000)
  local body = '{"key":"' .. b64(key) .. '","value":"' .. b64("vvvvvvvvvvvvvvvv") .. '"}'
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"]="application/json"}, body)
end
local chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
function b64(data)
  return ((data:gsub('.', function(x)
    local r,b='',x:byte()
    for i=8,1,-1 do r=r..(b%2^i-b%2^(i-1)>0 and '1' or '0') end
    return r;
  end)..'0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if (#x < 6) then return '' end
    local c=0
    for i=1,6 do c=c+(x:sub(i,i)=='1' and 2^(6-i) or 0) end
    return chars:sub(c+1,c+1)
  end)..({ '', '==', '=' })[#data%3+1])
end
"""


def etcdPhase() -> dict[str, float]:
    if NO_ETCD:
        return {"etcd_writes_per_s_64": 0.0}
    if not shutil.which("etcd") or not shutil.which("wrk"):
        say("etcd or wrk missing: skipping the etcd comparison")
        return {"etcd_writes_per_s_64": 0.0}
    _benchcli.setPhase("etcd start")
    base = _benchcli.tempdir("etcd-bench-")
    names = ["e1", "e2", "e3"]
    ports = {n: (freePort(), freePort()) for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    procs = []
    try:
        for n in names:
            client, peer = ports[n]
            procs.append(
                subprocess.Popen(
                    [
                        "etcd",
                        "--name",
                        n,
                        "--data-dir",
                        os.path.join(base, n),
                        "--listen-client-urls",
                        f"http://127.0.0.1:{client}",
                        "--advertise-client-urls",
                        f"http://127.0.0.1:{client}",
                        "--listen-peer-urls",
                        f"http://127.0.0.1:{peer}",
                        "--initial-advertise-peer-urls",
                        f"http://127.0.0.1:{peer}",
                        "--initial-cluster",
                        initial,
                        "--initial-cluster-state",
                        "new",
                        "--log-level",
                        "error",
                    ],
                    stdout=open(os.path.join(base, f"{n}.log"), "ab"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        url = f"http://127.0.0.1:{ports['e1'][0]}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(
                ["curl", "-s", "-XPOST", f"{url}/v3/kv/put", "-d", '{"key":"YQ==","value":"Yg=="}'],
                capture_output=True,
                text=True,
            )
            if '"revision"' in r.stdout:
                break
            time.sleep(0.2)
        script = os.path.join(base, "put.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)
        out = {}
        phases = [(64, "etcd_writes_per_s_64"), (1, "etcd_writes_per_s_1")]
        if INFLIGHT > 1:
            # As many outstanding writes as the pipelined Raft phase, one per
            # connection (etcd's HTTP gateway answers a connection's requests
            # one at a time).
            phases.append((64 * INFLIGHT, "etcd_writes_per_s_same_outstanding"))
        for conns, key in phases:
            _benchcli.setPhase(f"etcd {conns} client(s)")
            cpu = cpuSeconds([p.pid for p in procs])
            wrk = subprocess.Popen(
                [
                    "wrk",
                    "-t",
                    "2" if conns > 1 else "1",
                    "-c",
                    str(conns),
                    "-d",
                    f"{int(PHASE)}s",
                    "-s",
                    script,
                    url,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert wrk.stdout is not None
            report = wrk.stdout.read()
            _, _, usage = os.wait4(wrk.pid, 0)
            wrk.returncode = 0
            used = cpuSeconds([p.pid for p in procs]) - cpu + usage.ru_utime + usage.ru_stime
            m = re.search(r"Requests/sec:\s+([\d.]+)", report)
            n = re.search(r"(\d+) requests in", report)
            out[key] = float(m.group(1)) if m else 0.0
            if conns == 64 and n:
                out["etcd_cpu_us_per_write_64"] = used * 1e6 / max(int(n.group(1)), 1)
            if conns > 64 and n:
                out["etcd_cpu_us_per_write_same_outstanding"] = used * 1e6 / max(int(n.group(1)), 1)
            say(
                f"etcd: {out[key]:.0f} writes/s with {conns} client(s) (wrk over the HTTP gateway),"
                f" {used * 1e6 / max(int(n.group(1)) if n else 0, 1):.0f} us CPU per write"
            )
        return out
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    global QUICK, TWISTED_CLIENT, PHASE, NO_ETCD, INFLIGHT, COALESCE
    import gc

    args = parseArgs()
    QUICK, TWISTED_CLIENT, NO_ETCD = args.quick, args.twisted_client, args.no_etcd
    PHASE = 3.0 if QUICK else 8.0
    INFLIGHT, COALESCE = args.inflight, args.coalesce_writes

    # The load generator is Python too: keep its collector out of the way,
    # as the node processes do (see suite/raft/__main__.py).
    gc.freeze()
    gc.set_threshold(20000, 50, 50)
    started = time.monotonic()
    results: dict[str, float] = {}

    async def run(_: Any) -> None:
        results.update(await raftPhases())

    _benchcli.react(run)
    results.update(etcdPhase())
    _benchcli.setPhase("report")
    ratio = (
        results["raft_writes_per_s_64"] / results["etcd_writes_per_s_64"]
        if results.get("etcd_writes_per_s_64")
        else 0.0
    )
    say(
        f"command: .venv/bin/python bench/raft.py{' --quick' if QUICK else ''}"
        f"{' --twisted-client' if TWISTED_CLIENT else ''} --inflight {INFLIGHT}"
        f" --coalesce-writes {COALESCE} ({time.monotonic() - started:.0f} s,"
        f" load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})"
    )
    line = " ".join(f"{k}={results.get(k, 0.0):.1f}" for k in HEADLINE)
    if INFLIGHT > 1:
        # raft_vs_etcd_64 then compares 64 connections each way, with
        # INFLIGHT times as many writes outstanding on the Raft side; this
        # one compares equal numbers of outstanding writes.
        same = results.get("etcd_writes_per_s_same_outstanding", 0.0)
        line += (
            f" etcd_writes_per_s_same_outstanding={same:.1f}"
            f" etcd_cpu_us_per_write_same_outstanding="
            f"{results.get('etcd_cpu_us_per_write_same_outstanding', 0.0):.1f}"
            f" raft_vs_etcd_same_outstanding={results['raft_writes_per_s_64'] / same if same else 0.0:.2f}"
        )
    say(f"{line} raft_vs_etcd_64={ratio:.2f}")


if __name__ == "__main__":
    _benchcli.run(main)
