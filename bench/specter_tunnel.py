"""
Benchmark of the Specter gateway + tunnel data path.

A small static backend (Debian nginx, 100-byte file) is measured three ways
with wrk (HTTP/1.1, keep-alive) and h2load (HTTP/2):

  (a) directly;
  (b) through Debian nginx as a keepalive reverse proxy (plain HTTP; for
      HTTP/2, nginx terminating TLS + h2 and proxying HTTP/1.1 keep-alive
      to the backend: ``nginx_h2_rps``);
  (c) through a Specter gateway (TLS from the visitor, ALPN routed) and a
      ``specter client tunnel`` link (mTLS) to the backend.

Latency added by the tunnel is also measured at one connection (no
queueing): ``tunnel_added_p50_ms`` is p50(c) - p50(a) at concurrency 1.

The load generators send the tunnel hostname as SNI (the gateway answers
421 to a tunnel hostname on a connection whose certificate does not cover
it): h2load through ``--connect-to``; wrk, which takes its SNI from the
URL, runs in a private mount namespace (``unshare -rm``) whose
``/etc/hosts`` resolves the tunnel hostname to 127.0.0.1.

Usage::

    .venv/bin/python bench/specter_tunnel.py [--duration 8] [--connections 64]
        [--gateway ring|standalone] [--h2-only] [--h2-requests 20000]

``--http1-only`` measures only HTTP/1.1 (nginx, then the tunnel), with the
CPU per request of every process on each path (gateway, client, the nginx
worker as proxy or as backend, wrk) and the context switches per 1,000
requests of the gateway and the client (``*_waits_per_kreq``: it slept in
epoll; ``*_preempted_per_kreq``: the scheduler took the CPU away);
``--rounds N`` alternates the two phases N times and reports the median of
the N ratios, so that a change in the machine's load between two phases
8 s apart weighs less.  ``--profile DIR`` records py-spy stacks
(``--perf``: native perf profiles; ``--syscalls``: perf counts of the
socket and epoll calls of the gateway, the client and nginx's worker).

``--busy N`` keeps N CPU hogs (``yes > /dev/null``) running beside every
measurement (started after the warm-up, stopped at the end): the busy
machine of the targets is ``--busy 2`` on this 2-core host, both cores
saturated; ``busy=N`` is printed with the load average.

``--h2-only`` measures only HTTP/2 (nginx terminating h2, then the
tunnel) and adds the CPU time the gateway and the tunnel client spent per
tunnelled HTTP/2 request (``h2_gateway_cpu_us``, ``h2_client_cpu_us``:
process CPU time over the h2load run / requests completed), the figure
that stays comparable on a busy machine.

The last line holds the headline figures as key=value pairs, with the
load average (1/5/15 min) at the end of the run.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import _benchcli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The default run's last line (then the per-process CPU figures, see NOTE).
HEADLINE = [
    "direct_rps",
    "nginx_rps",
    "tunnel_rps",
    "tunnel_added_p50_ms",
    "h2_tunnel_rps",
    "h2_direct_rps",
    "direct_p50_ms",
    "direct_p99_ms",
    "nginx_p50_ms",
    "nginx_p99_ms",
    "tunnel_p50_ms",
    "tunnel_p99_ms",
    "tunnel_bulk_MBps",
    "nginx_tls_rps",
    "gateway_cpu_us",
    "client_cpu_us",
    "tunnel_path_cpu_us",
    "nginx_path_cpu_us",
    "cpu_ratio",
    "c_over_a",
    "c_over_b",
    "nginx_h2_rps",
    "h2_tunnel_over_nginx_h2",
    "busy",
    "loadavg",
]
NOTE = (
    "CPU figures (also with the h2_ prefix): gateway_cpu_us gateway_sys_us client_cpu_us client_sys_us"
    " tunnel_path_cpu_us nginx_path_cpu_us cpu_ratio gateway_waits_per_kreq gateway_preempted_per_kreq"
    " client_waits_per_kreq client_preempted_per_kreq nginx_proxy_cpu_us backend_cpu_us"
    " loadgen_nginx_cpu_us loadgen_tunnel_cpu_us.\n"
    "--h2-only: nginx_h2_rps h2_tunnel_rps h2_tunnel_over_nginx_h2, the h2_ CPU figures, busy loadavg.\n"
    "--http1-only: nginx_rps tunnel_rps c_over_b [c_over_b_rounds] tunnel_non2xx nginx_requests"
    " tunnel_requests, the CPU figures, busy loadavg.\n"
    "--bulk-only: tunnel_bulk_MBps bulk_gateway_cpu_ms_per_MiB bulk_client_cpu_ms_per_MiB busy loadavg."
)
BIN = os.path.dirname(sys.executable)
APEX = "bench.test"


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def waitPort(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


NGINX = """
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp_body;
  proxy_temp_path {d}/tmp_proxy;
  fastcgi_temp_path {d}/tmp_fcgi;
  uwsgi_temp_path {d}/tmp_uwsgi;
  scgi_temp_path {d}/tmp_scgi;
  keepalive_requests 10000000;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
  server {{ listen 127.0.0.1:{backend}; listen 127.0.0.1:{backendH2} http2; root {d}/www; }}
  server {{
    listen 127.0.0.1:{proxy};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  server {{
    listen 127.0.0.1:{proxyTLS} ssl;
    ssl_certificate {d}/tls.crt;
    ssl_certificate_key {d}/tls.key;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  server {{
    listen 127.0.0.1:{proxyH2} ssl http2;
    http2_max_concurrent_streams 128;
    ssl_certificate {d}/tls.crt;
    ssl_certificate_key {d}/tls.key;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def _named(url: str, host: str) -> tuple[str, str]:
    """
    C{url} (C{https://127.0.0.1:PORT/...}) with C{host} in place of the
    address, and the C{HOST:PORT} part.
    """
    address, _, rest = url.partition("://")[2].partition("/")
    port = address.rsplit(":", 1)[1]
    return f"https://{host}:{port}/{rest}", port


def wrk(url: str, duration: int, connections: int, threads: int, host: str | None = None) -> dict[str, float]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    hosts = ""
    if host:
        # wrk sends the URL's host as SNI, and the gateway answers 421 to a
        # Host its certificate for that SNI does not cover: the URL names
        # the tunnel, resolved to 127.0.0.1 by a hosts file of wrk's own
        # (a private mount namespace; the system's /etc/hosts is untouched)
        named, _ = _named(url, host)
        hosts = os.path.join(tempfile.gettempdir(), f"specter-bench-hosts-{os.getpid()}")
        with open(hosts, "w") as f:
            f.write(f"127.0.0.1 localhost {host}\n")
        argv[-1] = named
        argv[:0] = ["unshare", "-rm", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', hosts]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    finally:
        if host:
            os.unlink(hosts)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    count = re.search(r"(\d+) requests in", out)

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socketErrors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "requests": float(count.group(1)) if count else 0.0,
        "p50": pct("50"),
        "p99": pct("99"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socketErrors else 0.0,
    }


def h2load(
    url: str, requests: int, clients: int, streams: int, authority: str | None = None
) -> dict[str, float]:
    argv = ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), url]
    if authority:
        # SNI and :authority the tunnel hostname (else 421), the
        # connection to the URL's address
        named, port = _named(url, authority)
        argv[-1:] = ["--connect-to", f"127.0.0.1:{port}", named]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"requests: .* (\d+) succeeded, (\d+) failed", out)
    return {"rps": float(m.group(1)) if m else 0.0, "failed": float(ok.group(2)) if ok else float("nan")}


def cpuSeconds(pid: int, system: bool = False) -> float:
    """
    User + system CPU time of process C{pid} so far, in seconds (with
    C{system}, the system time only).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return ((0 if system else int(fields[11])) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def contextSwitches(pid: int) -> tuple[int, int]:
    """
    The voluntary (the process waited) and involuntary (it was preempted)
    context switches of process C{pid} so far, over all its threads.
    """
    voluntary = involuntary = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


def bulkMBps(host: str, port: int, cacert: str) -> float:
    argv = [
        "curl", "-sS", "--http1.1", "--cacert", cacert, "--resolve", f"{host}:{port}:127.0.0.1",
        "-o", "/dev/null", "-w", "%{size_download} %{time_total}", f"https://{host}:{port}/bulk.bin",
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout.split()
    return float(out[0]) / float(out[1]) / 1e6 if len(out) == 2 and float(out[1]) else 0.0


class Profiler:
    """
    py-spy recordings of the gateway and the tunnel client while one
    phase runs (collapsed stacks, C{DIR/<phase>-<process>.txt}).
    """

    def __init__(
        self, directory: str | None, pids: dict[str, int], syscalls: bool = False, perf: bool = False
    ) -> None:
        self.directory = directory
        self.perf = perf
        self.pids = pids
        self.syscalls = syscalls
        self.running: list[subprocess.Popen[bytes]] = []
        if directory is not None:
            tool = "perf" if syscalls or perf else "py-spy"
            if shutil.which(tool) is None and not os.path.exists(os.path.join(BIN, tool)):
                raise SystemExit(f"--profile needs {tool}")
            os.makedirs(directory, exist_ok=True)

    def start(self, phase: str) -> None:
        if self.directory is None:
            return
        spy = os.path.join(BIN, "py-spy") if os.path.exists(os.path.join(BIN, "py-spy")) else "py-spy"
        for name, pid in self.pids.items():
            out = os.path.join(self.directory, f"{phase}-{name}.txt")
            argv = [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                os.environ.get("PYSPY_RATE", "250"),
                "--format",
                "raw",
                "--nonblocking",
            ]
            if os.environ.get("PYSPY_GIL"):
                argv.append("--gil")  # only samples holding the GIL: no time in system calls
            if self.perf:  # a native profile: where the CPU goes (interpreter, OpenSSL, kernel)
                argv = ["perf", "record", "-F", "999", "-p", str(pid)]
            elif self.syscalls:
                events = ",".join(
                    f"syscalls:sys_enter_{call}"
                    for call in (
                        "sendto",
                        "recvfrom",
                        "epoll_wait",
                        "epoll_ctl",
                        "write",
                        "read",
                        "writev",
                        "sendmsg",
                        "readv",
                        "recvmsg",
                    )  # fmt: skip
                )
                argv = ["perf", "stat", "-e", events, "-p", str(pid)]
            self.running.append(
                subprocess.Popen([*argv, "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def stop(self) -> None:
        for proc in self.running:
            proc.send_signal(signal.SIGINT)
        for proc in self.running:
            proc.wait(30)
        self.running = []


def main() -> None:
    parser = _benchcli.parser(__doc__, HEADLINE, NOTE)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--gateway",
        choices=("ring", "standalone"),
        default="ring",
        help="specter server, or the gateway alone",
    )
    parser.add_argument("--h2-only", action="store_true", help="HTTP/2 figures and CPU per request only")
    parser.add_argument(
        "--http1-only", action="store_true", help="HTTP/1.1 nginx and tunnel figures and CPU per request only"
    )
    parser.add_argument(
        "--bulk-only", action="store_true", help="the 64 MiB download through the tunnel only"
    )
    parser.add_argument("--h2-requests", type=int, default=20000, help="h2load requests through the tunnel")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record py-spy profiles (collapsed stacks) of the gateway and the client during the tunnel runs",
    )
    parser.add_argument(
        "--tree",
        metavar="DIR",
        help="run the gateway and the tunnel client from another checkout (e.g. older code, for A/B runs)",
    )
    parser.add_argument(
        "--syscalls",
        action="store_true",
        help="with --profile: count send, receive and epoll_wait calls (perf stat) instead of sampling stacks",
    )
    parser.add_argument(
        "--perf",
        action="store_true",
        help="with --profile: record native profiles (perf record: interpreter, OpenSSL, kernel) instead",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --http1-only: measure nginx then the tunnel this many times, alternated; "
        "c_over_b is the median of the rounds' ratios (each pair measured a few seconds apart)",
    )
    parser.add_argument(
        "--tls-reference",
        action="store_true",
        help="with --http1-only: also nginx proxying TLS from wrk, with its CPU and wrk's per request",
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="keep N CPU hogs (yes > /dev/null) running during the measurements (a busy machine)",
    )
    args = parser.parse_args()
    if args.busy < 0:
        raise SystemExit("--busy must be 0 or more")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    _benchcli.setPhase("checking the tools")
    for tool in ("nginx", "wrk", "h2load"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is required")
    sys.path.insert(0, ROOT)
    from suite.pki.ca import initBundle, writeClientCertificate

    base = _benchcli.tempdir("specter-bench-")
    os.chmod(base, 0o755)  # nginx workers may run as another user
    procs: list[subprocess.Popen[bytes]] = []
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        _benchcli.setPhase("starting nginx, the gateway and the tunnel client")
        certs = os.path.join(base, "certs")
        bundle = initBundle(certs, ["127.0.0.1"])
        writeClientCertificate(bundle, "bench", os.path.join(base, "client"))
        ng = os.path.join(base, "nginx")
        os.makedirs(os.path.join(ng, "www"))
        with open(os.path.join(ng, "www", "index.html"), "wb") as f:
            f.write(b"x" * 99 + b"\n")
        with open(os.path.join(ng, "www", "bulk.bin"), "wb") as f:
            f.write(os.urandom(64 * 1024 * 1024))
        backend, backendH2, proxy, proxyTLS, gw = freePort(), freePort(), freePort(), freePort(), freePort()
        proxyH2 = freePort()
        from suite.pki.keys import certificateToPEM, keyToPEM
        from suite.pki.mint import mintSelfSigned

        cert, key = mintSelfSigned(["127.0.0.1"])
        with open(os.path.join(ng, "tls.crt"), "wb") as f:
            f.write(certificateToPEM(cert))
        with open(os.path.join(ng, "tls.key"), "wb") as f:
            f.write(keyToPEM(key))
        with open(os.path.join(ng, "nginx.conf"), "w") as f:
            f.write(
                NGINX.format(
                    d=ng,
                    backend=backend,
                    backendH2=backendH2,
                    proxy=proxy,
                    proxyTLS=proxyTLS,
                    proxyH2=proxyH2,
                )
            )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(
            subprocess.Popen(
                [nginx, "-c", os.path.join(ng, "nginx.conf"), "-p", ng], stderr=subprocess.DEVNULL
            )
        )
        waitPort(backend)
        waitPort(proxy)
        log = open(os.path.join(base, "gateway.log"), "wb")
        if args.gateway == "ring":
            argv = [
                os.path.join(BIN, "specter"), "server", "--data", os.path.join(base, "data"), "--cert", certs,
                "--apex", APEX, "--listen-tcp", f"127.0.0.1:{gw}", "--advertise-addr", f"127.0.0.1:{gw}",
                "--listen-rpc", f"tcp://127.0.0.1:{freePort()}", "--listen-internal", f"tcp://127.0.0.1:{freePort()}",
                "--kv", "memory", "--virtual", "1",
            ]  # fmt: skip
        else:
            argv = [
                sys.executable, "-m", "suite.specter.gateway", "--listen", f"tcp:{gw}:interface=127.0.0.1",
                "--cert-dir", certs, "--apex", APEX, "--data-dir", os.path.join(base, "data"),
            ]  # fmt: skip
        tree = os.path.abspath(args.tree) if args.tree else ROOT
        env = dict(os.environ, PYTHONPATH=tree) if args.tree else None
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tree, env=env))
        waitPort(gw)
        clientLog = os.path.join(base, "client.log")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "suite.specter.client",
                    "--server",
                    f"127.0.0.1:{gw}",
                    "--cert-dir",
                    os.path.join(base, "client"),
                    "tunnel",
                    "--links",
                    "1",
                    "--target",
                    f"http://127.0.0.1:{backend}",
                ],
                stdout=subprocess.PIPE,
                stderr=open(clientLog, "wb"),
                cwd=tree,
                env=env,
            )  # fmt: skip
        )
        assert procs[-1].stdout is not None
        host = procs[-1].stdout.readline().decode().strip()
        if not host:
            raise SystemExit(f"the tunnel client did not register; see {clientLog}")
        tunnelURL = f"https://127.0.0.1:{gw}/"
        _benchcli.setPhase("warm-up")
        # warm up
        wrk(tunnelURL, 2, 8, 1, host)
        for _ in range(args.busy):
            hogs.append(subprocess.Popen(["yes"], stdout=subprocess.DEVNULL))
        profiler = Profiler(
            args.profile, {"gateway": procs[-2].pid, "client": procs[-1].pid}, args.syscalls, args.perf
        )
        gatewayPid, clientPid = procs[-2].pid, procs[-1].pid

        nginxPid = procs[0].pid

        def nginxWorkers() -> list[int]:
            try:
                with open(f"/proc/{nginxPid}/task/{nginxPid}/children") as f:
                    return [int(p) for p in f.read().split()]
            except OSError:
                return []

        if args.syscalls:
            for worker in nginxWorkers():
                profiler.pids[f"nginx{worker}"] = worker

        def snapshot() -> dict[str, float]:
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            gatewaySwitches, clientSwitches = contextSwitches(gatewayPid), contextSwitches(clientPid)
            return {
                "gatewayWaits": gatewaySwitches[0],
                "gatewayPreempted": gatewaySwitches[1],
                "clientWaits": clientSwitches[0],
                "clientPreempted": clientSwitches[1],
                "gateway": cpuSeconds(gatewayPid),
                "gatewaySystem": cpuSeconds(gatewayPid, system=True),
                "clientSystem": cpuSeconds(clientPid, system=True),
                "client": cpuSeconds(clientPid),
                "nginx": sum(cpuSeconds(p) for p in nginxWorkers()),
                "loadgen": children.ru_utime + children.ru_stime,
            }

        def cpuPerRequest(phase: str, run: Any) -> tuple[dict[str, float], dict[str, float]]:
            """
            Run C{run()} (a load generator returning its figures); also
            return the CPU time per completed request (µs) of the gateway,
            the client, nginx's worker and the load generator.
            """
            _benchcli.setPhase(phase)
            profiler.start(phase)
            before = snapshot()
            result: dict[str, float] = run()
            after = snapshot()
            profiler.stop()
            done = max(1.0, result["requests"])
            return result, {k: (after[k] - before[k]) / done * 1e6 for k in before}

        def h2tunnelRun() -> dict[str, float]:
            result = h2load(tunnelURL, args.h2_requests, 16, 10, host)
            result["requests"] = args.h2_requests - result["failed"]
            return result

        load = lambda: f"busy={args.busy} loadavg={','.join(f'{x:.2f}' for x in os.getloadavg())}"  # noqa: E731
        d, c = args.duration, args.connections

        def h2nginxRun() -> dict[str, float]:
            result = h2load(f"https://127.0.0.1:{proxyH2}/", 100000, 16, 10)
            result["requests"] = 100000 - result["failed"]
            return result

        def figures(prefix: str, tunnel: dict[str, float], nginx: dict[str, float]) -> str:
            """
            CPU per request of each process, of the whole tunnel path
            (gateway, client, nginx as the backend, load generator) and of
            the nginx path (nginx as proxy and backend, load generator),
            and their ratio: what the throughput ratio would be if the
            processes had the CPUs to themselves.
            """
            tunnelPath = sum(v for k, v in tunnel.items() if k in ("gateway", "client", "nginx", "loadgen"))
            nginxPath = nginx["nginx"] + nginx["loadgen"]
            return (
                f"{prefix}gateway_cpu_us={tunnel['gateway']:.1f} {prefix}gateway_sys_us={tunnel['gatewaySystem']:.1f} "
                f"{prefix}client_cpu_us={tunnel['client']:.1f} {prefix}client_sys_us={tunnel['clientSystem']:.1f} "
                f"{prefix}tunnel_path_cpu_us={tunnelPath:.1f} {prefix}nginx_path_cpu_us={nginxPath:.1f} "
                f"{prefix}cpu_ratio={nginxPath / tunnelPath if tunnelPath else 0.0:.3f} "
                f"{prefix}gateway_waits_per_kreq={tunnel['gatewayWaits'] / 1000:.0f} "
                f"{prefix}gateway_preempted_per_kreq={tunnel['gatewayPreempted'] / 1000:.0f} "
                f"{prefix}client_waits_per_kreq={tunnel['clientWaits'] / 1000:.0f} "
                f"{prefix}client_preempted_per_kreq={tunnel['clientPreempted'] / 1000:.0f} "
                f"{prefix}nginx_proxy_cpu_us={nginx['nginx']:.1f} {prefix}backend_cpu_us={tunnel['nginx']:.1f} "
                f"{prefix}loadgen_nginx_cpu_us={nginx['loadgen']:.1f} {prefix}loadgen_tunnel_cpu_us={tunnel['loadgen']:.1f}"
            )

        if args.h2_only:
            _benchcli.setPhase("h2 warm-up")
            h2load(tunnelURL, 2000, 16, 10, host)
            h2nginx, h2nginxCpu = cpuPerRequest("h2nginx", h2nginxRun)
            h2tunnel, h2cpu = cpuPerRequest("h2", h2tunnelRun)
            print(f"h2load nginx_h2 rps={h2nginx['rps']:.0f} failed={h2nginx['failed']:.0f}")
            print(f"h2load tunnel rps={h2tunnel['rps']:.0f} failed={h2tunnel['failed']:.0f}")
            print(
                f"nginx_h2_rps={h2nginx['rps']:.0f} h2_tunnel_rps={h2tunnel['rps']:.0f} "
                f"h2_tunnel_over_nginx_h2={h2tunnel['rps'] / h2nginx['rps'] if h2nginx['rps'] else 0.0:.3f} "
                f"{figures('h2_', h2cpu, h2nginxCpu)} {load()}"
            )
            return
        if args.bulk_only:
            profiler.start("bulk")
            before = snapshot()
            bulk = bulkMBps(host, gw, os.path.join(base, "data", "gateway", "selfsigned.crt"))
            after = snapshot()
            profiler.stop()
            perMB = {k: (after[k] - before[k]) / 64 * 1e3 for k in ("gateway", "client")}
            print(
                f"tunnel_bulk_MBps={bulk:.0f} bulk_gateway_cpu_ms_per_MiB={perMB['gateway']:.2f} "
                f"bulk_client_cpu_ms_per_MiB={perMB['client']:.2f} {load()}"
            )
            return
        if args.http1_only:
            rounds = []
            for n in range(args.rounds):
                suffix = f"-{n + 1}" if n else ""
                viaNginx, nginxCpu = cpuPerRequest(
                    f"nginx{suffix}", lambda: wrk(f"http://127.0.0.1:{proxy}/", d, c, 2)
                )
                tunnel, cpu = cpuPerRequest(f"http1{suffix}", lambda: wrk(tunnelURL, d, c, 2, host))
                rounds.append((viaNginx, nginxCpu, tunnel, cpu))
                if args.rounds > 1:
                    print(
                        f"round {n + 1}: nginx_rps={viaNginx['rps']:.0f} tunnel_rps={tunnel['rps']:.0f} "
                        f"c_over_b={tunnel['rps'] / viaNginx['rps']:.3f} {figures('', cpu, nginxCpu)} {load()}"
                    )
            if args.tls_reference:
                viaTLS, tlsCpu = cpuPerRequest(
                    "nginxtls", lambda: wrk(f"https://127.0.0.1:{proxyTLS}/", d, c, 2)
                )
                print(
                    f"nginx_tls_rps={viaTLS['rps']:.0f} nginx_tls_worker_cpu_us={tlsCpu['nginx']:.1f} "
                    f"loadgen_tls_cpu_us={tlsCpu['loadgen']:.1f}"
                )
            ratios = sorted(t["rps"] / v["rps"] for v, _, t, _ in rounds)
            # CPU per request over all rounds (weighted by the requests of each)
            nginxDone = sum(max(1.0, v["requests"]) for v, _, _, _ in rounds)
            tunnelDone = sum(max(1.0, t["requests"]) for _, _, t, _ in rounds)
            nginxCpu = {
                k: sum(nc[k] * max(1.0, v["requests"]) for v, nc, _, _ in rounds) / nginxDone
                for k in rounds[0][1]
            }
            cpu = {
                k: sum(tc[k] * max(1.0, t["requests"]) for _, _, t, tc in rounds) / tunnelDone
                for k in rounds[0][3]
            }
            viaNginx = {
                "rps": sorted(v["rps"] for v, _, _, _ in rounds)[len(rounds) // 2],
                "requests": nginxDone,
            }
            tunnel = {
                "rps": sorted(t["rps"] for _, _, t, _ in rounds)[len(rounds) // 2],
                "requests": tunnelDone,
                "non2xx": sum(t["non2xx"] for _, _, t, _ in rounds),
            }
            cOverB = (
                ratios[len(ratios) // 2] if len(ratios) % 2 else sum(ratios[len(ratios) // 2 - 1 :][:2]) / 2
            )
            perRound = f"c_over_b_rounds={','.join(f'{r:.3f}' for r in ratios)} " if args.rounds > 1 else ""
            print(
                f"nginx_rps={viaNginx['rps']:.0f} tunnel_rps={tunnel['rps']:.0f} "
                f"c_over_b={cOverB:.3f} {perRound}tunnel_non2xx={tunnel['non2xx']:.0f} "
                f"nginx_requests={viaNginx['requests']:.0f} tunnel_requests={tunnel['requests']:.0f} "
                f"{figures('', cpu, nginxCpu)} {load()}"
            )
            return
        _benchcli.setPhase("direct")
        direct = wrk(f"http://127.0.0.1:{backend}/", d, c, 2)
        viaNginx, nginxCpu = cpuPerRequest("nginx", lambda: wrk(f"http://127.0.0.1:{proxy}/", d, c, 2))
        _benchcli.setPhase("nginx TLS")
        viaNginxTLS = wrk(f"https://127.0.0.1:{proxyTLS}/", d, c, 2)
        tunnel, cpu = cpuPerRequest("http1", lambda: wrk(tunnelURL, d, c, 2, host))
        _benchcli.setPhase("one connection")
        direct1 = wrk(f"http://127.0.0.1:{backend}/", 4, 1, 1)
        tunnel1 = wrk(tunnelURL, 4, 1, 1, host)
        _benchcli.setPhase("h2 direct")
        h2direct = h2load(f"http://127.0.0.1:{backendH2}/", 100000, 16, 10)
        h2nginx, h2nginxCpu = cpuPerRequest("h2nginx", h2nginxRun)
        h2tunnel, h2cpu = cpuPerRequest("h2", h2tunnelRun)
        _benchcli.setPhase("bulk download")
        bulk = bulkMBps(host, gw, os.path.join(base, "data", "gateway", "selfsigned.crt"))
        rows = [
            ("direct", direct),
            ("nginx", viaNginx),
            ("nginx_tls", viaNginxTLS),
            ("tunnel", tunnel),
            ("direct_c1", direct1),
            ("tunnel_c1", tunnel1),
        ]
        for name, r in rows:
            print(
                f"wrk {name:10s} rps={r['rps']:9.0f} p50={r['p50']:7.2f}ms p99={r['p99']:7.2f}ms non2xx={r['non2xx']:.0f}"
            )
        print(f"h2load direct rps={h2direct['rps']:.0f} failed={h2direct['failed']:.0f}")
        print(f"h2load nginx_h2 rps={h2nginx['rps']:.0f} failed={h2nginx['failed']:.0f}")
        print(f"h2load tunnel rps={h2tunnel['rps']:.0f} failed={h2tunnel['failed']:.0f}")
        print(
            f"ratios: tunnel/direct={tunnel['rps'] / direct['rps']:.3f} tunnel/nginx={tunnel['rps'] / viaNginx['rps']:.3f}"
        )
        print(f"bulk 64 MiB through the tunnel (curl --http1.1): {bulk:.0f} MB/s")
        print(f"gateway={args.gateway} connections={c} duration={d}s")
        print(
            f"direct_rps={direct['rps']:.0f} nginx_rps={viaNginx['rps']:.0f} tunnel_rps={tunnel['rps']:.0f} "
            f"tunnel_added_p50_ms={tunnel1['p50'] - direct1['p50']:.3f} h2_tunnel_rps={h2tunnel['rps']:.0f} "
            f"h2_direct_rps={h2direct['rps']:.0f} direct_p50_ms={direct['p50']:.2f} direct_p99_ms={direct['p99']:.2f} "
            f"nginx_p50_ms={viaNginx['p50']:.2f} nginx_p99_ms={viaNginx['p99']:.2f} tunnel_p50_ms={tunnel['p50']:.2f} "
            f"tunnel_p99_ms={tunnel['p99']:.2f} tunnel_bulk_MBps={bulk:.0f} nginx_tls_rps={viaNginxTLS['rps']:.0f} "
            f"{figures('', cpu, nginxCpu)} {figures('h2_', h2cpu, h2nginxCpu)} "
            f"c_over_a={tunnel['rps'] / direct['rps']:.3f} c_over_b={tunnel['rps'] / viaNginx['rps']:.3f} "
            f"nginx_h2_rps={h2nginx['rps']:.0f} h2_tunnel_over_nginx_h2={h2tunnel['rps'] / h2nginx['rps'] if h2nginx['rps'] else 0.0:.3f} "
            f"{load()}"
        )
    finally:
        for p in hogs:
            p.kill()
            p.wait()
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
