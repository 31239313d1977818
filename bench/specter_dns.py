"""
Benchmark of the ACME DNS solver (``specter dns``) against Debian's knot.

One ``specter server`` (memory KV) holds the challenge TXT values; one
``specter dns`` answers the ACME zone from it through ``--rpc``.  Debian's
``knotd`` serves the same zone (SOA, NS with glue, the same TXT values)
from a zone file.  dnsperf (Debian) asks both, in the same run, the same
mix of questions over UDP: TXT of the managed name and of token names, SOA
and NS of the apex, and a name that does not exist.  Each server is
measured ``--rounds`` times, alternating, and the mean is reported.

Usage::

    .venv/bin/python bench/specter_dns.py [--duration 10] [--rounds 2]
        [--clients 4] [--solver-path DIR]

``--solver-path`` puts DIR first on the solver's PYTHONPATH (a checkout of
another revision's ``suite`` package, to measure before/after).

The last line holds the headline figures as key=value pairs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import _benchcli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADLINE = [
    "dns_qps",
    "knot_qps",
    "dns_vs_knot",
    "dns_lost",
    "knot_lost",
    "dns_latency_ms",
    "knot_latency_ms",
    "loadavg",
]
BIN = os.path.dirname(sys.executable)
ZONE = "acme.test"
TOKENS = [f"tok{i}" for i in range(8)]
VALUES = {"managed": ["apex-" + "a" * 38, "wildcard-" + "b" * 34]}
VALUES.update({t: [f"{t}-" + "c" * 40] for t in TOKENS})


def freePort() -> int:
    # a port free for both UDP and TCP
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
        s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
        return port


def waitDNS(port: int, timeout: float = 30.0) -> None:
    """
    Until an SOA query over UDP is answered.
    """
    query = b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    query += b"".join(bytes([len(p)]) + p.encode() for p in ZONE.split(".")) + b"\x00\x00\x06\x00\x01"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        while time.monotonic() < deadline:
            s.sendto(query, ("127.0.0.1", port))
            try:
                data = s.recv(4096)
            except OSError:
                continue
            if data[:2] == b"\x12\x34":
                return
    raise SystemExit(f"no DNS answer on port {port}")


KNOT = """
server:
    rundir: "{d}"
    listen: 127.0.0.1@{port}
    udp-workers: 2
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{d}"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{d}"
    file: "%s.zone"
    semantic-checks: on
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {zone}
"""


def zoneFile() -> str:
    lines = [
        f"$ORIGIN {ZONE}.",
        f"@ 3600 IN SOA ns1.{ZONE}. ops.example.net. 1 3600 600 1209600 10",
        f"@ 3600 IN NS ns1.{ZONE}.",
        "@ 3600 IN NS ns2.elsewhere.example.",
        "ns1 3600 IN A 127.0.0.1",
        "ns1 3600 IN AAAA ::1",
    ]
    for label, values in VALUES.items():
        lines += [f'{label} 10 IN TXT "{v}"' for v in values]
    return "\n".join(lines) + "\n"


def queryFile() -> str:
    lines = []
    for _ in range(4):
        lines.append(f"managed.{ZONE} TXT")
    for t in TOKENS:
        lines.append(f"{t}.{ZONE} TXT")
    lines += [f"{ZONE} SOA", f"{ZONE} NS", f"{ZONE} SOA", f"missing.{ZONE} TXT"]
    return "\n".join(lines) + "\n"


def dnsperf(port: int, queries: str, duration: int, clients: int) -> dict[str, float]:
    argv = [
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(duration),
        "-c", str(clients), "-T", "1", "-q", "200", "-t", "2",
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    codes = re.search(r"Response codes:\s+(.*)", out)
    latency = re.search(r"Average Latency \(s\):\s+([\d.]+)", out)
    if not qps:
        raise SystemExit(f"dnsperf gave no figure:\n{out}")
    return {
        "qps": float(qps.group(1)),
        "lost": float(lost.group(1)) if lost else float("nan"),
        "latency_ms": float(latency.group(1)) * 1000 if latency else float("nan"),
        "codes": codes.group(1).strip() if codes else "",  # type: ignore[dict-item]
    }


def loadAverage() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = _benchcli.parser(__doc__, HEADLINE)
    parser.add_argument("--duration", type=int, default=10, help="seconds per dnsperf run")
    parser.add_argument("--rounds", type=int, default=2, help="dnsperf runs per server, alternated")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf client sockets")
    parser.add_argument("--solver-path", default="", help="PYTHONPATH head for the solver")
    args = parser.parse_args()
    knotd = shutil.which("knotd") or "/usr/sbin/knotd"
    _benchcli.setPhase("checking the tools")
    for tool in ("dnsperf", knotd):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required (make bench-deps)")
    sys.path.insert(0, ROOT)
    from suite.pki.ca import initBundle

    base = _benchcli.tempdir("sdns-")
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    load0 = loadAverage()
    try:
        _benchcli.setPhase("starting specter server and writing the TXT values")
        certs = os.path.join(base, "certs")
        initBundle(certs, ["127.0.0.1"])
        rpc = f"unix://{base}/rpc.sock"
        ringPort = freePort()
        ringLog = open(os.path.join(base, "ring.log"), "wb")
        procs.append(
            subprocess.Popen(
                [
                    os.path.join(BIN, "specter"),
                    "server",
                    "--data",
                    os.path.join(base, "ring"),
                    "--cert",
                    certs,
                    "--listen-tcp",
                    f"127.0.0.1:{ringPort}",
                    "--advertise-addr",
                    f"127.0.0.1:{ringPort}",
                    "--listen-rpc",
                    rpc,
                    "--listen-internal",
                    f"tcp://127.0.0.1:{freePort()}",
                    "--kv",
                    "memory",
                    "--virtual",
                    "1",
                ],
                stdout=ringLog,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )  # fmt: skip
        )
        deadline = time.monotonic() + 60
        for label, values in VALUES.items():
            for v in values:
                while True:
                    done = subprocess.run(
                        [
                            os.path.join(BIN, "specter"),
                            "kv",
                            "--rpc",
                            rpc,
                            "append",
                            f"acme/challenge/{label}",
                            v,
                        ],
                        capture_output=True,
                        cwd=ROOT,
                    )
                    if done.returncode == 0:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"the ring did not take writes: {done.stderr.decode()}")
                    time.sleep(0.2)
        _benchcli.setPhase("starting specter dns and knotd")
        dnsPort = freePort()
        env = dict(os.environ)
        if args.solver_path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (args.solver_path, env.get("PYTHONPATH")) if p)
        dnsLog = open(os.path.join(base, "dns.log"), "wb")
        procs.append(
            subprocess.Popen(
                [
                    os.path.join(BIN, "specter"),
                    "dns",
                    "--acme",
                    f"acme://ops@example.net@{ZONE}",
                    "--acme-ns",
                    f"ns1.{ZONE}/127.0.0.1,::1",
                    "--acme-ns",
                    "ns2.elsewhere.example/192.0.2.2",
                    "--rpc",
                    rpc,
                    "--listen-addr",
                    f"127.0.0.1:{dnsPort}",
                ],
                stdout=dnsLog,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )  # fmt: skip
        )
        knotDir = os.path.join(base, "knot")
        os.makedirs(knotDir)
        knotPort = freePort()
        with open(os.path.join(knotDir, f"{ZONE}.zone"), "w") as f:
            f.write(zoneFile())
        with open(os.path.join(knotDir, "knot.conf"), "w") as f:
            f.write(KNOT.format(d=knotDir, port=knotPort, zone=ZONE))
        knotLog = open(os.path.join(base, "knot.log"), "wb")
        procs.append(
            subprocess.Popen(
                [knotd, "-c", os.path.join(knotDir, "knot.conf")], stdout=knotLog, stderr=subprocess.STDOUT
            )
        )
        waitDNS(dnsPort)
        waitDNS(knotPort)
        queries = os.path.join(base, "queries.txt")
        with open(queries, "w") as f:
            f.write(queryFile())
        _benchcli.setPhase("warm-up")
        # warm up: fills the solver's caches
        dnsperf(dnsPort, queries, 2, args.clients)
        results: dict[str, list[dict[str, float]]] = {"knot": [], "dns": []}
        for _ in range(args.rounds):
            for name, port in (("knot", knotPort), ("dns", dnsPort)):
                _benchcli.setPhase(f"dnsperf against {name}")
                r = dnsperf(port, queries, args.duration, args.clients)
                results[name].append(r)
                print(
                    f"dnsperf {name:4s} qps={r['qps']:9.0f} lost={r['lost']:.0f} "
                    f"avg_latency={r['latency_ms']:.3f}ms codes: {r['codes']} load={loadAverage()}",
                    flush=True,
                )

        def mean(name: str, field: str) -> float:
            rows = results[name]
            return sum(r[field] for r in rows) / len(rows)

        dnsQps, knotQps = mean("dns", "qps"), mean("knot", "qps")
        load1 = loadAverage()
        print(
            f"rounds={args.rounds} duration={args.duration}s clients={args.clients} "
            f"elapsed={time.monotonic() - started:.0f}s load_before={load0} load_after={load1}"
        )
        print(
            f"dns_qps={dnsQps:.0f} knot_qps={knotQps:.0f} dns_vs_knot={dnsQps / knotQps:.3f} "
            f"dns_lost={mean('dns', 'lost'):.0f} knot_lost={mean('knot', 'lost'):.0f} "
            f"dns_latency_ms={mean('dns', 'latency_ms'):.3f} knot_latency_ms={mean('knot', 'latency_ms'):.3f} "
            f"loadavg={load1.replace('/', ',')}"
        )
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    _benchcli.run(main)
