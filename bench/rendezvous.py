"""
Benchmark the Goop2 rendezvous hub.

Starts C{twistd goop rendezvous DIR} on a free loopback port, then:

  1. 10,000 peers publish (signed) and publish again as a heartbeat;
     client-side latency of each C{/publish} gives p50/p99 (one client thread,
     keep-alive connections, each peer behind its own X-Forwarded-For address
     as behind a reverse proxy);
  2. C{/peers.json} with 10,000 peers: mean latency over 10 requests;
  3. resident memory of the hub (VmRSS) before and after: MB per 1,000 peers;
  4. 1,000 concurrent C{/events} clients; one more peer joins; count the
     clients that receive its join event within 1 s.

Last line: C{peers=... publish_p50_ms=... publish_p99_ms=... peers_json_ms=...
mb_per_1k_peers=... sse_clients_ok=...}.

Run: C{.venv/bin/python bench/rendezvous.py}
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _benchcli  # noqa: E402

from suite.goop.identity import Identity  # noqa: E402
from suite.goop.p2p.discovery import signedPublication  # noqa: E402

HEADLINE = [
    "peers",
    "publish_p50_ms",
    "publish_p99_ms",
    "peers_json_ms",
    "mb_per_1k_peers",
    "sse_clients_ok",
    "sse_clients",
    "loadavg",
]

PEERS = int(os.environ.get("BENCH_PEERS", "10000"))
SSE_CLIENTS = int(os.environ.get("BENCH_SSE", "1000"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return int(p)


def rssMB(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def ipFor(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def publishAll(port: int, work: list[tuple[int, bytes, str]], out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i, body, sig in work:
        t0 = time.perf_counter()
        conn.request(
            "POST",
            "/publish",
            body=body,
            headers={
                "content-type": "application/json",
                "x-goop-signature": sig,
                "x-forwarded-for": ipFor(i),
            },
        )
        r = conn.getresponse()
        r.read()
        out.append((time.perf_counter() - t0) * 1000.0)
        if r.status != 200:
            raise SystemExit(f"publish failed: {r.status}")
    conn.close()


def round_(port: int, idents: list[Identity]) -> list[float]:
    now = time.time()
    work = []
    for i, ident in enumerate(idents):
        body, sig = signedPublication(ident, f"peer-{i}", 4001, 600, now=now + i * 1e-6)
        work.append((i, body, sig))
    chunks = [work[k::THREADS] for k in range(THREADS)]
    outs: list[list[float]] = [[] for _ in range(THREADS)]
    threads = [
        threading.Thread(target=publishAll, args=(port, c, o)) for c, o in zip(chunks, outs, strict=False)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for o in outs for x in o]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def sseTest(port: int, n: int) -> int:
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(
            f"GET /events HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 172.{i >> 8}.{i & 255}.1\r\n\r\n".encode()
        )
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
    # wait until every client is connected (has the preamble)
    deadline = time.time() + 30
    ready = 0
    while ready < n and time.time() < deadline:
        for key, _ in sel.select(0.5):
            buf = key.data
            buf.extend(key.fileobj.recv(65536))
        ready = sum(1 for k in sel.get_map().values() if b": connected" in k.data)
    joiner = Identity.__new__(Identity)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    joiner.privateKey = Ed25519PrivateKey.generate()
    body, sig = signedPublication(joiner, "sse-joiner", 4001, 600)
    for k in sel.get_map().values():
        k.data.clear()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.time()
    c.request(
        "POST", "/publish", body=body, headers={"content-type": "application/json", "x-goop-signature": sig}
    )
    c.getresponse().read()
    needle = joiner.peerId.encode()
    got: set[int] = set()
    while time.time() - t0 < 1.0 and len(got) < n:
        for key, _ in sel.select(0.05):
            try:
                key.data.extend(key.fileobj.recv(65536))
            except BlockingIOError:
                continue
            if needle in key.data:
                got.add(key.fd)
    for s in socks:
        s.close()
    return len(got)


def main() -> None:
    _benchcli.parser(
        __doc__,
        HEADLINE,
        "Environment: BENCH_PEERS (10000), BENCH_SSE (1000 /events clients), BENCH_THREADS (1 publishing"
        " thread), BENCH_PROFILE (write the hub's cProfile stats to this file).",
    ).parse_args()
    _benchcli.setPhase("hub start")
    tmp = _benchcli.tempdir("goop-bench-")
    port = freePort()
    with open(os.path.join(tmp, "goop.json"), "w") as f:
        # this script plays the loopback reverse proxy: the hub believes its X-Forwarded-For
        presence = {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": port}
        json.dump({"presence": {**presence, "trusted_proxies": ["127.0.0.1"]}}, f)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    logf = open(os.path.join(tmp, "hub.log"), "wb")
    prefix = []
    if os.environ.get("BENCH_PROFILE"):
        prefix = [sys.executable, "-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]]
    proc = subprocess.Popen(
        prefix
        + [
            twistd,
            "-n",
            "--pidfile=",
            "--logger=suite.logging.observer",
            "goop",
            "rendezvous",
            "--max-sse-clients",
            "4096",
            tmp,
        ],
        stdout=logf,
        stderr=logf,
    )
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("the hub did not answer /healthz within 10 s (see its log, hub.log)")
        _benchcli.setPhase(f"{PEERS} peers publishing")
        base = rssMB(proc.pid)
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        idents = [Identity(Ed25519PrivateKey.generate()) for _ in range(PEERS)]
        t0 = time.time()
        first = round_(port, idents)
        heart = round_(port, idents)
        elapsed = time.time() - t0
        lat = first + heart
        after = rssMB(proc.pid)
        _benchcli.setPhase("/peers.json")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times = []
        count = 0
        for _ in range(10):
            t1 = time.perf_counter()
            c.request("GET", "/peers.json")
            raw = c.getresponse().read()
            times.append((time.perf_counter() - t1) * 1000)
            count = len(json.loads(raw))
        _benchcli.setPhase(f"{SSE_CLIENTS} /events clients")
        sseOK = sseTest(port, SSE_CLIENTS)
        mb = (after - base) / (PEERS / 1000.0)
        print(
            f"publishes={len(lat)} in {elapsed:.1f}s ({len(lat) / elapsed:.0f}/s); rss {base:.1f} -> {after:.1f} MB; "
            f"peers.json has {count} peers"
        )
        print(
            f"peers={count} publish_p50_ms={pct(lat, 0.5):.2f} publish_p99_ms={pct(lat, 0.99):.2f} "
            f"peers_json_ms={sum(times) / len(times):.1f} mb_per_1k_peers={mb:.2f} sse_clients_ok={sseOK} sse_clients={SSE_CLIENTS} "
            f"loadavg={os.getloadavg()[0]:.1f}"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    _benchcli.run(main)
