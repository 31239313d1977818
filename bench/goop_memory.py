"""
Resident memory of an idle Goop2 CLI peer and rendezvous hub.

Starts C{goop2 rendezvous HUBDIR} and C{goop2 peer PEERDIR} (the guide's
defaults: mDNS on, the viewer on loopback, publishing to the hub) on free
loopback ports, waits until the hub lists the peer and both answer
C{/healthz}, lets them settle, then reads C{/proc/PID/status} (C{VmRSS},
C{RssAnon}, C{RssFile}) and the CPU time each used to start
(C{/proc/PID/stat}).  Also measured: a peer with mDNS off, and the floor of
any Twisted web server on this interpreter (reactor + C{twisted.web}
serving one port), with and without Twisted's HTTP/2 module (which
C{goop2} keeps out).  With C{--imports}, the resident memory after each step
of importing what a peer imports, in a fresh interpreter.

In the mDNS-on runs, after the idle reading, a standard workload (see
L{workload}: 1,212 viewer requests including ten Lua calls) runs against the
peer; then the peer's memory is read again with that of its Lua worker
processes (how many, each, together), and its requests/s and CPU time per
request are reported.
C{--quick} skips the floors and the mDNS-off runs (for alternated A/B runs).

Each figure is the median of C{BENCH_RUNS} (default 3) runs.  The
processes load compiled bytecode as an installed suite does (pip compiles
it at install): the bench compiles C{suite/} first and runs its children
without C{PYTHONDONTWRITEBYTECODE}; compiling modules from source at every
start would add several MB of heap to each process.

Last line: C{peer_rss_mb=... hub_rss_mb=... peer_nomdns_rss_mb=...
peer_anon_mb=... hub_anon_mb=... peer_pss_mb=... peer_uss_mb=...
twisted_floor_rss_mb=... twisted_floor_noh2_rss_mb=... peer_work_rss_mb=...
peer_work_uss_mb=... lua_workers=... lua_worker_rss_mb=... lua_worker_uss_mb=...
lua_workers_rss_mb=... peer_req_per_s=... peer_cpu_us_per_req=... peer_start_cpu_s=... hub_start_cpu_s=... loadavg=...}.
RSS is the headline; PSS and USS (from C{/proc/PID/smaps_rollup}) show how
much of it is library code shared with other processes.

Run: C{.venv/bin/python bench/goop_memory.py [--imports] [--quick]}
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import _benchcli

HEADLINE = [
    "peer_rss_mb",
    "hub_rss_mb",
    "peer_nomdns_rss_mb",
    "peer_anon_mb",
    "hub_anon_mb",
    "peer_pss_mb",
    "peer_uss_mb",
    "twisted_floor_rss_mb",
    "twisted_floor_noh2_rss_mb",
    "peer_work_rss_mb",
    "peer_work_uss_mb",
    "lua_workers",
    "lua_worker_rss_mb",
    "lua_worker_uss_mb",
    "lua_workers_rss_mb",
    "peer_req_per_s",
    "peer_cpu_us_per_req",
    "peer_start_cpu_s",
    "hub_start_cpu_s",
    "loadavg",
]

BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The children's environment: bytecode is read (and written) as installed.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "3"))
#: Rounds of the standard workload (WORKLOAD_PER_ROUND viewer requests each).
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "200"))
WORKLOAD_PER_ROUND = 6
#: Lua data function calls in the workload (a peer allows 30 a minute).
LUA_CALLS = 10
ECHO_LUA = "function call(request) return {n = request.params.n + 1} end\n"

FLOOR = """
import sys
if sys.argv[1:] == ["--no-http2"]:
    sys.modules["twisted.web._http2"] = None
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site
reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
def show():
    print(open("/proc/self/status").read())
    reactor.stop()
reactor.callLater(1, show)
reactor.run()
"""

#: What a peer imports, in import order, for C{--imports}.
IMPORT_STEPS = [
    "zope.interface",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "cryptography.x509",
    "ssl",
    "OpenSSL.SSL",
    "twisted.internet.defer",
    "twisted.internet.reactor",
    "twisted.web.server",
    "twisted.scripts.twistd",
    "suite.daemon",
    "suite.goop.tap",
    "suite.goop.peer.service",
    "suite.goop.p2p.discovery",
    "twisted.web.client",
    "zeroconf",
]

#: The steps run as the goop2 console script runs: without Twisted's HTTP/2
#: module (suite.goop.cli.withoutHTTP2).
STEPS = """
import importlib, sys
sys.modules["twisted.web._http2"] = None
def rss():
    out = {}
    for line in open("/proc/self/status"):
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) / 1024.0
    return out
last = rss()
print(f"{'(interpreter)':52s} {last['VmRSS']:6.1f} MB")
for name in sys.argv[1:]:
    importlib.import_module(name)
    now = rss()
    d = {k: now[k] - last[k] for k in now}
    print(
        f"{name:52s} {now['VmRSS']:6.1f} MB  (+{d['VmRSS']:.1f}: anonymous +{d['RssAnon']:.1f}, "
        f"file +{d['RssFile']:.1f}; {len(sys.modules)} modules)"
    )
    last = now
"""


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def status(pid: int) -> dict[str, float]:
    """
    VmRSS, RssAnon and RssFile of C{pid} in MB, and from C{smaps_rollup}
    its Pss (shared pages divided among the processes mapping them) and
    Uss (pages only it maps: what one more such process costs).
    """
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) / 1024.0
    out["Uss"] = 0.0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key == "Pss":
                out["Pss"] = int(rest.split()[0]) / 1024.0
            elif key in ("Private_Clean", "Private_Dirty"):
                out["Uss"] += int(rest.split()[0]) / 1024.0
    return out


def cpuSeconds(pid: int) -> float:
    """User + system CPU time C{pid} has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> float:
    """How many threads C{pid} runs."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return float(line.split()[1])
    return 0.0


def children(pid: int) -> list[int]:
    """The processes C{pid} started (a peer's Lua workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), b""
    except OSError:
        return 0, b""


def waitFor(
    check: Any, what: str, proc: subprocess.Popen[bytes], timeout: float = 60.0, log: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = ""
            if log:
                with open(log, "rb") as f:
                    tail = f.read()[-2000:].decode("utf-8", "replace")
            raise SystemExit(f"{what}: the process exited with {proc.returncode}\n{tail}")
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"{what}: not within {timeout:.0f} s")


def writeConfig(d: str, doc: dict[str, Any]) -> str:
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "goop.json"), "w") as f:
        json.dump(doc, f)
    return d


def start(args: list[str], log: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [os.path.join(BIN, "goop2"), *args], stdout=out, stderr=subprocess.STDOUT, env=ENV
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def workload(viewer: int) -> int:
    """
    The standard workload against a peer's viewer, on one keep-alive
    HTTP/1.1 connection, one request at a time: the settings page (for the
    install's token), a table created, then C{ROUNDS} rounds of C{/healthz},
    the site's index page (read off the reactor thread), C{/api/peers},
    C{/self} as JSON, one row inserted and a ten-row query through
    C{/api/data}; then C{LUA_CALLS} Lua data function calls, one at a
    time (a worker process starts at the first).  Returns the number of requests made.
    """
    conn = http.client.HTTPConnection("127.0.0.1", viewer, timeout=30)
    count = 0

    def call(method: str, path: str, doc: Any = None, accept: str = "*/*") -> bytes:
        nonlocal count
        headers = {"accept": accept}
        body = None
        if doc is not None:
            body = json.dumps(doc).encode()
            headers.update({"content-type": "application/json", "x-goop-token": token})
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        count += 1
        if response.status != 200:
            raise SystemExit(f"workload: {method} {path}: HTTP {response.status} {data[:200]!r}")
        return data

    def data(request: dict[str, Any]) -> Any:
        answer = json.loads(call("POST", "/api/data", {"request": request}))
        if not answer.get("ok"):
            raise SystemExit(f"workload: {request['op']}: {answer}")
        return answer.get("data")

    token = ""
    found = re.search(rb"name=goop-token content='([^']*)'", call("GET", "/self"))
    if found is None:
        raise SystemExit("workload: no token on the settings page")
    token = found.group(1).decode()
    data({"op": "create-table", "table": "notes", "columns": ["text"]})
    for i in range(ROUNDS):
        call("GET", "/healthz")
        call("GET", "/site/")
        call("GET", "/api/peers")
        call("GET", "/self", accept="application/json")
        data({"op": "insert", "table": "notes", "data": {"text": f"note {i} " + "x" * 100}})
        data({"op": "query", "table": "notes", "limit": 10, "offset": i})
    for i in range(LUA_CALLS):
        answer = data({"op": "lua-call", "function": "echo", "params": {"n": i}})
        if answer != {"n": i + 1}:
            raise SystemExit(f"workload: lua-call: {answer}")
    conn.close()
    return count


def oneRun(root: str, mdns: bool) -> dict[str, float]:
    """One hub and one peer; their memory and start-up CPU."""
    hubPort, hubViewer, p2p, viewer = freePort(), freePort(), freePort(), freePort()
    hubDir = writeConfig(
        os.path.join(root, "hub"),
        {
            "presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": hubPort},
            "viewer": {"http_addr": f"127.0.0.1:{hubViewer}"},
        },
    )
    peerDir = writeConfig(
        os.path.join(root, "peer"),
        {
            "profile": {"label": "bench"},
            "p2p": {"listen_port": p2p, "mdns_tag": "goop-bench" if mdns else ""},
            "presence": {"rendezvous_wan": f"http://127.0.0.1:{hubPort}"},
            "viewer": {"http_addr": f"127.0.0.1:{viewer}"},
        },
    )
    os.makedirs(os.path.join(peerDir, "lua"))
    with open(os.path.join(peerDir, "lua", "echo.lua"), "w") as f:
        f.write(ECHO_LUA)
    hub = start(["rendezvous", hubDir], os.path.join(root, "hub.log"))
    peer: subprocess.Popen[bytes] | None = None
    try:
        waitFor(lambda: get(f"http://127.0.0.1:{hubPort}/healthz")[0] == 200, "hub", hub)
        peerLog = os.path.join(root, "peer.log")
        peer = start(["peer", peerDir], peerLog)
        p = peer
        waitFor(lambda: get(f"http://127.0.0.1:{viewer}/healthz")[0] == 200, "peer viewer", p, log=peerLog)
        waitFor(lambda: b'"label":"bench"' in get(f"http://127.0.0.1:{hubPort}/peers.json")[1], "publish", p)
        time.sleep(SETTLE)
        h, q = status(hub.pid), status(peer.pid)
        out = {
            "hub_rss": h["VmRSS"],
            "hub_anon": h["RssAnon"],
            "hub_file": h["RssFile"],
            "hub_cpu": cpuSeconds(hub.pid),
            "peer_rss": q["VmRSS"],
            "peer_anon": q["RssAnon"],
            "peer_file": q["RssFile"],
            "peer_pss": q["Pss"],
            "peer_uss": q["Uss"],
            "peer_cpu": cpuSeconds(peer.pid),
            "peer_threads": threads(peer.pid),
        }
        if mdns:
            began, cpu = time.monotonic(), cpuSeconds(peer.pid)
            requests = workload(viewer)
            wall, used = time.monotonic() - began, cpuSeconds(peer.pid) - cpu
            time.sleep(SETTLE)
            w = status(peer.pid)
            workers = [status(c) for c in children(peer.pid)]
            if not workers:
                raise SystemExit("workload: no Lua worker process")
            out.update(
                {
                    "work_rss": w["VmRSS"],
                    "work_anon": w["RssAnon"],
                    "work_pss": w["Pss"],
                    "work_uss": w["Uss"],
                    "work_threads": threads(peer.pid),
                    "worker_rss": statistics.mean(x["VmRSS"] for x in workers),
                    "worker_uss": statistics.mean(x["Uss"] for x in workers),
                    "workers": float(len(workers)),
                    "workers_rss": sum(x["VmRSS"] for x in workers),
                    "req_per_s": requests / wall,
                    "cpu_us_per_req": used / requests * 1e6,
                }
            )
        return out
    finally:
        if peer is not None:
            stop(peer)
        stop(hub)


def floor(*args: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", FLOOR, *args], capture_output=True, text=True, check=True, env=ENV
    ).stdout
    for line in out.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise SystemExit("floor: no VmRSS")


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = _benchcli.parser(
        __doc__,
        HEADLINE,
        "Environment: BENCH_RUNS (runs per figure, 3), BENCH_SETTLE (seconds before reading, 3),"
        " BENCH_ROUNDS (workload rounds, 200).",
    )
    parser.add_argument(
        "--imports", action="store_true", help="first print the resident memory after each import step"
    )
    parser.add_argument("--quick", action="store_true", help="skip the floors and the mDNS-off runs")
    args = parser.parse_args()
    root = _benchcli.tempdir("goop-memory-")
    began = time.monotonic()
    _benchcli.setPhase("compiling suite/ to bytecode")
    compileall = [
        sys.executable,
        "-m",
        "compileall",
        "-q",
        os.path.join(HERE, "suite"),
        os.path.join(HERE, "twisted"),
    ]
    subprocess.run(compileall, check=True, env=ENV)
    try:
        if args.imports:
            _benchcli.setPhase("import steps")
            print("resident memory after each import (fresh interpreter):")
            sys.stdout.flush()
            subprocess.run([sys.executable, "-c", STEPS, *IMPORT_STEPS], check=True, env=ENV)
        quick = args.quick
        _benchcli.setPhase("Twisted web server floor")
        floors = [0.0] if quick else [floor() for _ in range(RUNS)]
        bare = [0.0] if quick else [floor("--no-http2") for _ in range(RUNS)]
        _benchcli.setPhase("peer and hub, mDNS on, with the workload")
        runs = [oneRun(os.path.join(root, f"run{i}"), mdns=True) for i in range(RUNS)]
        _benchcli.setPhase("peer and hub, mDNS off")
        quiet = runs if quick else [oneRun(os.path.join(root, f"quiet{i}"), mdns=False) for i in range(RUNS)]
        _benchcli.setPhase("report")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for label, rs in (("peer, mDNS on", runs), ("peer, mDNS off", quiet)):
        print(
            f"{label}: peer RSS {median(rs, 'peer_rss'):.1f} MB "
            f"(anonymous {median(rs, 'peer_anon'):.1f}, file-backed {median(rs, 'peer_file'):.1f}; "
            f"PSS {median(rs, 'peer_pss'):.1f}, USS {median(rs, 'peer_uss'):.1f}), "
            f"start-up CPU {median(rs, 'peer_cpu'):.2f} s; "
            f"hub RSS {median(rs, 'hub_rss'):.1f} MB "
            f"(anonymous {median(rs, 'hub_anon'):.1f}, file-backed {median(rs, 'hub_file'):.1f}), "
            f"start-up CPU {median(rs, 'hub_cpu'):.2f} s"
        )
    print(
        f"Twisted web server floor: {statistics.median(floors):.1f} MB RSS, "
        f"{statistics.median(bare):.1f} MB without HTTP/2 (as goop2 runs)"
    )
    print(
        f"peer after the workload ({ROUNDS * WORKLOAD_PER_ROUND + LUA_CALLS + 2} requests): "
        f"RSS {median(runs, 'work_rss'):.1f} MB (anonymous {median(runs, 'work_anon'):.1f}; "
        f"PSS {median(runs, 'work_pss'):.1f}, USS {median(runs, 'work_uss'):.1f}), "
        f"threads {median(runs, 'peer_threads'):.0f} idle, {median(runs, 'work_threads'):.0f} after; "
        f"{median(runs, 'workers'):.0f} Lua worker(s), each RSS {median(runs, 'worker_rss'):.1f} MB "
        f"(USS {median(runs, 'worker_uss'):.1f}), {median(runs, 'workers_rss'):.1f} MB together; "
        f"{median(runs, 'req_per_s'):.0f} requests/s, {median(runs, 'cpu_us_per_req'):.0f} us CPU per request"
    )
    print(f"elapsed {time.monotonic() - began:.0f} s, {RUNS} runs each, medians")
    print(
        f"peer_rss_mb={median(runs, 'peer_rss'):.1f} hub_rss_mb={median(runs + quiet, 'hub_rss'):.1f} "
        f"peer_nomdns_rss_mb={median(quiet, 'peer_rss'):.1f} "
        f"peer_anon_mb={median(runs, 'peer_anon'):.1f} hub_anon_mb={median(runs + quiet, 'hub_anon'):.1f} "
        f"peer_pss_mb={median(runs, 'peer_pss'):.1f} peer_uss_mb={median(runs, 'peer_uss'):.1f} "
        f"twisted_floor_rss_mb={statistics.median(floors):.1f} "
        f"twisted_floor_noh2_rss_mb={statistics.median(bare):.1f} "
        f"peer_work_rss_mb={median(runs, 'work_rss'):.1f} peer_work_uss_mb={median(runs, 'work_uss'):.1f} "
        f"lua_workers={median(runs, 'workers'):.0f} lua_worker_rss_mb={median(runs, 'worker_rss'):.1f} "
        f"lua_worker_uss_mb={median(runs, 'worker_uss'):.1f} lua_workers_rss_mb={median(runs, 'workers_rss'):.1f} "
        f"peer_req_per_s={median(runs, 'req_per_s'):.0f} peer_cpu_us_per_req={median(runs, 'cpu_us_per_req'):.0f} "
        f"peer_start_cpu_s={median(runs, 'peer_cpu'):.2f} hub_start_cpu_s={median(runs + quiet, 'hub_cpu'):.2f} "
        f"loadavg={os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    _benchcli.run(main)
