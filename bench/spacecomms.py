"""
SpaceComms benchmark.

1. Ingest: CDMs/s accepted through POST /cdms (JSON, then KVN) into a node
   with a file store, driven by wrk with unique CDMs per request.
2. Propagation: three nodes A-B-C in a line over mTLS plus a probe node D
   (in this process) peered with C; CDMs are posted to A at a steady rate
   and timed from the POST until D stores them: A->B->C->D is 3 hops.
3. Burst repair: a line A-B-C over mTLS where B rate-limits A to
   --burst-limit messages/s; --burst CDMs are posted to A as fast as it
   takes them, so B drops most relays; timed from the last POST until B and
   C hold every CDM (anti-entropy every --anti-entropy seconds, no session
   re-established).

Run: .venv/bin/python bench/spacecomms.py [--rate 200] [--seconds 15]
    [--phases ingest,propagation,burst] [--tree DIR]
--tree runs the daemons A, B, C (not the probe D) from another checkout of
the suite (e.g. an older commit, for an A/B comparison in the same minutes).
The last line holds the headline figures:
    ingest_cdms_per_s=... hop3_p99_ms=... converge_after_burst_s=...
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BIN = os.path.dirname(sys.executable)

import _benchcli  # noqa: E402

from suite.spacecomms.cdm import encode  # noqa: E402
from suite.spacecomms.cdm.sample import sampleCDM  # noqa: E402
from tests.spacecomms.support import ADMIN, NodeSpec, env, makeCertificates  # noqa: E402

HEADLINE = [
    "ingest_cdms_per_s",
    "ingest_kvn_cdms_per_s",
    "hop3_p50_ms",
    "hop3_p99_ms",
    "hop3_delivered",
    "converge_after_burst_s",
]

LUA = r"""
local counter = 0
local threadId = 0
local template = [==[TEMPLATE]==]
local nextId = 1
function setup(thread)
  thread:set("tid", nextId)
  nextId = nextId + 1
end
function init(args)
  threadId = tid
end
request = function()
  counter = counter + 1
  local id = string.format("B%d-%d", threadId, counter)
  local body = template:gsub("MSGIDXX", id):gsub("OBJIDXX", id)
  return wrk.format("POST", "/cdms", {["Authorization"] = "Bearer TOKEN", ["Content-Type"] = "CTYPE"}, body)
end
"""


#: Another checkout to run the daemons from (--tree); None: this one.
TREE: str | None = None


def startProcess(spec: NodeSpec, logPath: str) -> subprocess.Popen[bytes]:
    spec.write()
    extra = {"PYTHONPATH": TREE} if TREE else {}
    log = open(logPath, "ab")
    argv = [
        os.path.join(BIN, "twistd"),
        "--nodaemon",
        "--pidfile=",
        "--logger=suite.logging.observer",
        "spacecomms",
        "--config",
        spec.configPath,
    ]
    return subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env(), **extra},
        start_new_session=True,
    )


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of a process so far (Linux /proc).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def httpJSON(url: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def waitFor(pred: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: timed out waiting for {what}")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def ingest(base: str, fmt: str, seconds: int, connections: int) -> tuple[float, int, str]:
    """
    Run wrk against one node; return accepted CDMs/s, accepted count and
    wrk's output.
    """
    spec = NodeSpec(base, f"ingest-{fmt}", None)
    proc = startProcess(spec, os.path.join(base, f"ingest-{fmt}.log"))
    try:
        waitFor(lambda: httpJSON(spec.url("/health"))["status"], "ingest node")
        template = encode(sampleCDM("MSGIDXX", object2="OBJIDXX"), fmt)
        ctype = "application/json" if fmt == "json" else "text/plain"
        script = os.path.join(base, f"post-{fmt}.lua")
        with open(script, "w") as f:
            f.write(LUA.replace("TEMPLATE", template).replace("TOKEN", ADMIN).replace("CTYPE", ctype))
        before = httpJSON(spec.url("/health"))["cdms_active"]
        cpu0 = cpuSeconds(proc.pid)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script, spec.url("/cdms")],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
        cpu = cpuSeconds(proc.pid) - cpu0
        after = httpJSON(spec.url("/health"))["cdms_active"]
        m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
        elapsed = float(m.group(2)) / (1000 if m and m.group(3) == "ms" else 1) if m else float(seconds)
        accepted = after - before
        return accepted / elapsed, accepted, out + f"\nCPU per CDM: {cpu / max(1, accepted) * 1e6:.0f} us"
    finally:
        stop([proc])


def propagation(base: str, rate: int, seconds: int, warmup: int) -> dict[str, Any]:
    """
    Steady-rate posting to A, timing arrival at the probe D three hops away.
    """
    certs = makeCertificates(os.path.join(base, "pki"), ["A", "B", "C", "D"])
    a, b, c, d = (NodeSpec(base, n, certs[n]) for n in "ABCD")
    for s in (a, b, c, d):
        s.protocol.update(heartbeat_interval_seconds=5, session_timeout_seconds=30)
    a.addPeer(b)
    b.addPeer(a)
    b.addPeer(c)
    c.addPeer(b)
    c.addPeer(d)
    d.addPeer(c)
    procs = [startProcess(s, os.path.join(base, f"{s.name}.log")) for s in (a, b, c)]
    try:
        return _drive(a, d, rate, seconds, warmup, procs)
    finally:
        stop(procs)


GENERATOR = r"""
import http.client, json, sys, threading, time
host, port, token, rate, count, bodyFile, outFile = sys.argv[1:8]
rate, count = int(rate), int(count)
bodies = json.load(open(bodyFile))
sent, codes = {}, {}
start = time.time() + 0.5
def worker(k, n):
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for i in range(k, count, n):
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        t = time.time()
        try:
            conn.request("POST", "/cdms", bodies[i], {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
            r = conn.getresponse(); r.read()
            codes[r.status] = codes.get(r.status, 0) + 1
            sent["P-%d" % i] = t
        except Exception:
            codes[0] = codes.get(0, 0) + 1
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
threads = [threading.Thread(target=worker, args=(k, 4)) for k in range(4)]
for th in threads: th.start()
for th in threads: th.join()
json.dump({"start": start, "sent": sent, "codes": codes}, open(outFile, "w"))
"""


def _drive(
    a: NodeSpec, d: NodeSpec, rate: int, seconds: int, warmup: int, procs: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    """
    The probe node D runs in this process and notes when each CDM arrives;
    a separate process posts the CDMs to A at the steady rate (4 keep-alive
    connections) and notes when each was sent.  Both use the wall clock.
    """
    from twisted.internet import reactor, task

    from suite.spacecomms.config import parseConfig
    from suite.spacecomms.service import SpaceCommsService

    doc = d.document()
    doc["storage"] = {"type": "memory"}
    cfg = parseConfig(doc, env(), d.configPath)
    probe = SpaceCommsService(cfg, reactor)
    if TREE:
        # Daemons of another checkout may not sign what they originate.
        probe.node.signer = None
    arrived: dict[str, float] = {}
    realPut = probe.node.store.put

    def put(record: Any) -> None:
        if record.kind == "cdm" and record.key not in arrived:
            arrived[record.key] = time.time()
        realPut(record)

    probe.node.store.put = put  # type: ignore[method-assign]
    result: dict[str, Any] = {}
    base = os.path.dirname(d.configPath)
    count = rate * (seconds + warmup)
    bodyFile = os.path.join(base, "bodies.json")
    with open(bodyFile, "w") as f:
        json.dump([encode(sampleCDM(f"P-{i}", object2=f"9{i}"), "json") for i in range(count)], f)
    outFile = os.path.join(base, "sent.json")

    async def run() -> None:
        probe.startService()
        deadline = time.monotonic() + 60
        while len(probe.node.links) < 1 or not _connected(a):
            if time.monotonic() > deadline:
                raise SystemExit("bench: line A-B-C-D did not come up")
            await task.deferLater(reactor, 0.2, lambda: None)
        cpu0 = [cpuSeconds(p.pid) for p in procs]
        gen = subprocess.Popen(
            [
                sys.executable,
                "-c",
                GENERATOR,
                "127.0.0.1",
                str(a.apiPort),
                ADMIN,
                str(rate),
                str(count),
                bodyFile,
                outFile,
            ]
        )
        while gen.poll() is None:
            await task.deferLater(reactor, 0.2, lambda: None)
        with open(outFile) as f:
            report = json.load(f)
        sent: dict[str, float] = report["sent"]
        start = report["start"]
        wait = time.monotonic() + 20
        while len(arrived) < len(sent) and time.monotonic() < wait:
            await task.deferLater(reactor, 0.1, lambda: None)
        cpu = [cpuSeconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        result["cpu_us_per_cdm"] = " ".join(
            f"{n}={c / max(1, len(sent)) * 1e6:.0f}" for n, c in zip("ABC", cpu, strict=True)
        )
        series = [(sent[k] - start, (arrived[k] - sent[k]) * 1000) for k in sent if k in arrived]
        with open(os.path.join(base, "latencies.json"), "w") as f:
            json.dump(series, f)
        lat = sorted(ms for t, ms in series if t >= warmup)
        allLat = sorted(ms for _, ms in series)
        result.update(
            sent=len(sent),
            arrived=len(series),
            p50=lat[len(lat) // 2] if lat else float("nan"),
            p99=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
            max=lat[-1] if lat else float("nan"),
            p99_with_warmup=allLat[min(len(allLat) - 1, int(len(allLat) * 0.99))] if allLat else float("nan"),
            http_errors=sum(v for k, v in report["codes"].items() if k != "201"),
        )
        await probe.stopService()

    # The reactor runs once per process: this is the only phase that uses it.
    _benchcli.react(lambda _: run())
    return result


def burst(base: str, count: int, limit: int, interval: float) -> dict[str, Any]:
    """
    Post C{count} CDMs to A at once; B takes at most C{limit}/s from A.
    Return how long after the last POST B and C held them all.
    """
    base = os.path.join(base, "burst")
    os.makedirs(base)
    certs = makeCertificates(os.path.join(base, "pki"), ["A", "B", "C"])
    a, b, c = (NodeSpec(base, n, certs[n]) for n in "ABC")
    for s in (a, b, c):
        s.protocol.update(
            heartbeat_interval_seconds=5, session_timeout_seconds=30, anti_entropy_interval_seconds=interval
        )
    a.addPeer(b)
    b.addPeer(a, rate_limit_per_second=limit, rate_limit_burst=limit)
    b.addPeer(c)
    c.addPeer(b)
    procs = [startProcess(s, os.path.join(base, f"{s.name}.log")) for s in (a, b, c)]
    try:
        waitFor(lambda: httpJSON(b.url("/health"))["peers"]["connected"] == 2, "burst line A-B-C", 60)
        bodyFile = os.path.join(base, "bodies.json")
        with open(bodyFile, "w") as f:
            json.dump([encode(sampleCDM(f"P-{i}", object2=f"8{i}"), "json") for i in range(count)], f)
        outFile = os.path.join(base, "sent.json")
        subprocess.run(
            [
                sys.executable,
                "-c",
                GENERATOR,
                "127.0.0.1",
                str(a.apiPort),
                ADMIN,
                "100000",
                str(count),
                bodyFile,
                outFile,
            ],
            check=True,
            timeout=300,
        )
        ended = time.time()
        with open(outFile) as f:
            accepted = json.load(f)["codes"].get("201", 0)
        atEnd = {n.name: httpJSON(n.url("/health"))["cdms_active"] for n in (b, c)}

        def converged() -> bool:
            return all(httpJSON(n.url("/health"))["cdms_active"] >= accepted for n in (b, c))

        waitFor(converged, "B and C to hold every CDM of the burst", 240)
        took = time.time() - ended
        # The rate-limit line of the last interval comes up to 5 s later.
        time.sleep(6)
        with open(os.path.join(base, "B.log")) as f:
            blog = f.read()
        dropped = sum(int(m) for m in re.findall(r"rate limit exceeded: peer A: dropped (\d+)", blog))
        warnings = len(re.findall(r"rate limit exceeded: peer A", blog))
        lost = len(re.findall(r"peer session lost", blog))
        return {
            "accepted": accepted,
            "at_end": atEnd,
            "seconds": took,
            "dropped": dropped,
            "warnings": warnings,
            "sessions_lost": lost,
        }
    finally:
        stop(procs)


def _connected(a: NodeSpec) -> bool:
    try:
        return bool(httpJSON(a.url("/health"))["peers"]["connected"] >= 1)
    except Exception:
        return False


def main() -> None:
    parser = _benchcli.parser(__doc__, HEADLINE)
    parser.add_argument(
        "--rate", type=int, default=200, help="CDMs per second posted for the propagation run"
    )
    parser.add_argument("--seconds", type=int, default=15, help="length of the propagation run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds posted at the rate before measuring")
    parser.add_argument("--ingest-seconds", type=int, default=10, help="length of each ingest run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for the ingest runs")
    parser.add_argument("--burst", type=int, default=2500, help="CDMs posted at once for the repair run")
    parser.add_argument("--burst-limit", type=int, default=50, help="B's rate limit on A (messages/s)")
    parser.add_argument("--anti-entropy", type=float, default=2.0, help="anti-entropy interval (s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument(
        "--phases",
        default="ingest,propagation,burst",
        help="comma-separated phases to run (skipped ones print nan)",
    )
    parser.add_argument(
        "--tree",
        default=None,
        help="run the daemons from this checkout of the suite instead (A/B comparisons)",
    )
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    global TREE
    TREE = os.path.abspath(args.tree) if args.tree else None
    base = _benchcli.tempdir("spacecomms-bench-")
    if args.keep:
        _benchcli.keep(base)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if TREE:
        print(f"daemons run from {TREE}")
    nan = float("nan")
    try:
        rates = {"json": nan, "kvn": nan}
        for fmt in ("json", "kvn") if "ingest" in phases else ():
            _benchcli.setPhase(f"ingest {fmt}")
            rate, accepted, out = ingest(base, fmt, args.ingest_seconds, args.connections)
            rates[fmt] = rate
            print(
                f"ingest {fmt}: {accepted} CDMs accepted, {rate:.0f}/s ({args.connections} connections, file store)"
            )
            print(
                "  "
                + " | ".join(
                    line.strip()
                    for line in out.splitlines()
                    if "Latency" in line or "Requests/sec" in line or "Non-2xx" in line or "CPU per" in line
                )
            )
        prop: dict[str, Any] = {"p50": nan, "p99": nan, "arrived": 0, "sent": 0}
        if "propagation" in phases:
            _benchcli.setPhase("propagation A->B->C->D")
            prop = propagation(base, args.rate, args.seconds, args.warmup)
            print(
                f"propagation A->B->C->D at {args.rate}/s for {args.seconds}s (after {args.warmup}s warm-up) over mTLS: "
                f"{prop['arrived']:.0f}/{prop['sent']:.0f} arrived, p50 {prop['p50']:.1f} ms, "
                f"p99 {prop['p99']:.1f} ms, max {prop['max']:.1f} ms, HTTP errors {prop['http_errors']:.0f}; "
                f"p99 including warm-up {prop['p99_with_warmup']:.1f} ms; node CPU per CDM (us): {prop['cpu_us_per_cdm']}"
            )
        rep: dict[str, Any] = {"seconds": nan}
        if "burst" in phases:
            _benchcli.setPhase("burst repair")
            rep = burst(base, args.burst, args.burst_limit, args.anti_entropy)
            print(
                f"burst repair A->B->C: {rep['accepted']} CDMs posted to A at once, B limits A to {args.burst_limit}/s; "
                f"held at the end of the burst {rep['at_end']}; B dropped {rep['dropped']} relays "
                f"({rep['warnings']} rate-limit lines); B and C held all {rep['seconds']:.1f} s after the last POST "
                f"(anti-entropy every {args.anti_entropy:g} s, sessions lost: {rep['sessions_lost']})"
            )
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        print(
            f"command: {' '.join([os.path.relpath(sys.executable, ROOT), 'bench/spacecomms.py', *sys.argv[1:]])}"
        )
        print(
            f"ingest_cdms_per_s={rates['json']:.0f} ingest_kvn_cdms_per_s={rates['kvn']:.0f} "
            f"hop3_p50_ms={prop['p50']:.1f} hop3_p99_ms={prop['p99']:.1f} hop3_delivered={prop['arrived']:.0f}/{prop['sent']:.0f} "
            f"converge_after_burst_s={rep['seconds']:.1f}"
        )
    finally:
        if args.keep:
            print(f"logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    _benchcli.run(main)
