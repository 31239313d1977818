"""
Constellation's membership figures, at memberlist's LAN timers.

1. Failure detection with real processes: three C{python -m suite.gossip}
   nodes on loopback (LAN profile); one is killed with SIGKILL and the time
   until a survivor logs it dead is measured (and until both do).  Repeated
   C{--rounds} times with a fresh cluster.
2. Failure detection at n=50 on the simulator (one clock, 1 % loss): five
   crashes one after another in one cluster, time until the first and until
   every member sees the crashed one dead.
3. State convergence on the simulator: 50 nodes replicate per-origin
   versioned state through the delegate (user broadcasts plus push-pull);
   a node writes a new version and the time until each other node has it is
   recorded; p50/p99 over all receivers of C{--updates} writes.
4. DNS failover with real processes: BIND 9 (C{named}) and three agents
   (Raft leases, RFC 2136 + TSIG, lease 5 s, election timeout 300 ms); the
   LB leader is killed with SIGKILL and the time until bind9 answers the
   apex with another node's address is measured; the killed agent is then
   restarted from its data directory and takes the leases back.  Repeated
   C{--failovers} times (skipped when named is not installed).

Usage: .venv/bin/python bench/constellation.py [--rounds 5] [--updates 20] [--seed 1] [--failovers 5]
The last line holds the headline figures as key=value pairs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import _benchcli  # noqa: E402

from tests.support.gossipsim import Simulation  # noqa: E402

HEADLINE = [
    "detect_ms_median",
    "detect_all_ms_median",
    "sim50_detect_ms_median",
    "sim50_detect_all_ms_median",
    "converge_ms_p50",
    "converge_ms_p99",
    "failover_dns_ms_median",
    "failover_dns_ms_p99",
]


def freePort() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return int(port)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def processRound(workdir: str) -> tuple[float, float]:
    ports = [freePort() for _ in range(3)]
    names = ["alpha", "bravo", "charlie"]
    procs, logs = [], []
    for i, (name, port) in enumerate(zip(names, ports, strict=True)):
        path = os.path.join(workdir, f"{name}-{port}.log")
        logs.append(path)
        argv = [
            sys.executable,
            "-m",
            "suite.gossip",
            "--bind",
            f"127.0.0.1:{port}",
            "--name",
            name,
            "--verbose",
        ]
        if i:
            argv += ["--join", f"127.0.0.1:{ports[0]}"]
        with open(path, "wb") as out:
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT))
        time.sleep(0.3)

    def text(i: int) -> str:
        with open(logs[i], encoding="utf-8", errors="replace") as f:
            return f.read()

    try:
        deadline = time.monotonic() + 30
        while not all(all(f"member {o} joined" in text(i) for o in names if o != names[i]) for i in range(3)):
            if time.monotonic() > deadline:
                raise RuntimeError("the three processes did not join")
            time.sleep(0.05)
        time.sleep(3.0)  # a few probe rounds of steady state
        dead = re.compile(r"member charlie at \S+ is dead")
        procs[2].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        seen: dict[int, float] = {}
        while len(seen) < 2:
            for i in (0, 1):
                if i not in seen and dead.search(text(i)):
                    seen[i] = time.monotonic() - killed
            if time.monotonic() - killed > 60:
                raise RuntimeError("the survivors did not declare the killed node dead within 60 s")
            time.sleep(0.01)
        return min(seen.values()), max(seen.values())
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()


def simulatedDetection(seed: int, crashes: int = 5) -> tuple[list[float], list[float]]:
    sim = Simulation(seed)
    sim.baseLoss = 0.01
    names = sim.cluster(50, seeds=3, spread=5.0)
    sim.runUntil(lambda: sim.allAlive(), 90.0, "50 nodes converging")
    first, everyone = [], []
    for victim in names[-crashes:]:
        sim.run(10.0)
        start = sim.clock.seconds()
        sim.crash(victim)
        sim.runUntil(
            lambda v=victim: bool(sim.eventsAbout(v, "dead")), 120.0, "a first dead verdict", step=0.01
        )
        first.append(sim.clock.seconds() - start)
        sim.runUntil(lambda v=victim: sim.allSee(v, "dead"), 120.0, "every node seeing the crash", step=0.05)
        everyone.append(sim.clock.seconds() - start)
    sim.stopAll()
    return first, everyone


def simulatedConvergence(seed: int, updates: int) -> list[float]:
    sim = Simulation(seed + 1)
    sim.withState = True
    sim.baseLoss = 0.01
    names = sim.cluster(50, seeds=3, spread=5.0)
    sim.runUntil(lambda: sim.allAlive(), 90.0, "50 nodes converging")
    times: list[float] = []
    for u in range(updates):
        writer = names[(u * 7) % len(names)]
        sim.states[writer].set(f"update-{u}")
        version = sim.states[writer].entries[writer][0]
        start = sim.clock.seconds()
        pending = set(names) - {writer}
        while pending:
            for name in list(pending):
                if sim.states[name].entries.get(writer, (0, ""))[0] >= version:
                    times.append(sim.clock.seconds() - start)
                    pending.discard(name)
            if sim.clock.seconds() - start > 3 * sim.settings.pushPullInterval:
                raise RuntimeError(f"update {u} did not reach {sorted(pending)}")
            sim.run(0.01)
    sim.stopAll()
    return times


NAMED = "/usr/sbin/named"
ZONE = "example.test"
IPS = {"cloudserver1": "192.0.2.1", "edge2": "192.0.2.2", "edge3": "192.0.2.3"}


def startNamed(workdir: str) -> tuple[subprocess.Popen[bytes], int, str]:
    import base64
    import pwd

    d = _benchcli.tempdir("named-", dir="/tmp")
    os.chmod(d, 0o755)
    port = freePort()
    secret = base64.b64encode(os.urandom(32)).decode()
    key = f'key "bench" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
    with open(os.path.join(d, "update.key"), "w") as f:
        f.write(key)
    with open(os.path.join(d, "zone.db"), "w") as f:
        f.write(
            f"$TTL 60\n@ IN SOA ns1.{ZONE}. admin.{ZONE}. 1 60 60 600 60\n@ IN NS ns1.{ZONE}.\nns1 IN A 127.0.0.1\n"
        )
    with open(os.path.join(d, "named.conf"), "w") as f:
        f.write(
            key + f'options {{ directory "{d}"; pid-file "{d}/named.pid"; session-keyfile "{d}/s.key"; '
            f"listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; notify no; }};\n"
            f'zone "{ZONE}" {{ type primary; file "{d}/zone.db"; update-policy {{ grant bench zonesub ANY; }}; '
            "allow-transfer { key bench; }; };\n"
        )
    argv = [NAMED, "-g", "-c", os.path.join(d, "named.conf"), "-n", "1"]
    if os.getuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for name in [d, *[os.path.join(d, n) for n in os.listdir(d)]]:
            os.chown(name, nobody.pw_uid, nobody.pw_gid)
        argv += ["-u", "nobody"]
    out = open(os.path.join(workdir, "named.log"), "wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("named did not start")
        time.sleep(0.05)
    return proc, port, os.path.join(d, "update.key")


def apexAddresses(port: int) -> list[str]:
    import dns.message
    import dns.query

    try:
        answer = dns.query.tcp(dns.message.make_query(ZONE + ".", "A"), "127.0.0.1", port=port, timeout=1)
    except Exception:
        return []
    return sorted(r.to_text() for rrset in answer.answer for r in rrset)


class _Agent:
    def __init__(self, workdir: str, name: str, dnsPort: int, keyFile: str, join: int | None) -> None:
        self.name = name
        self.gossip, self.raft, self.http = freePort(), freePort(), freePort()
        self.data = os.path.join(workdir, name)
        self.log = os.path.join(workdir, f"{name}.log")
        self.argv = [
            os.path.join(os.path.dirname(sys.executable), "constellation"),
            "--http-provider", f"tcp:{self.http}:interface=127.0.0.1",
            "--bind-addr", "127.0.0.1", "--bind-port", str(self.gossip), "--raft-port", str(self.raft),
            "--gossip-profile", "local", "--dns-server", f"127.0.0.1:{dnsPort}", "--tsig-key-file", keyFile,
            "--raft-election-ms", "300", "--lease-seconds", "5", "--raft-bootstrap-wait", "2",
            "--raft-remove-after", "600", "--discover", "none",
        ]  # fmt: skip
        self.argv += ["--bootstrap"] if join is None else ["--join", f"127.0.0.1:{join}"]
        self.env = dict(
            os.environ,
            TS_HOSTNAME=name,
            DOMAIN=ZONE,
            PUBLIC_IP=IPS[name],
            DATA_DIR=self.data,
            CONSTELLATION_PUBLIC_IP_SOURCES="none",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def waitUntil(predicate: object, what: str, timeout: float) -> float:
    began = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - began


def failovers(rounds: int) -> list[float]:
    if not os.path.exists(NAMED):
        print("DNS failover skipped: named (Debian bind9) is not installed")
        return []
    out: list[float] = []
    with tempfile.TemporaryDirectory() as workdir:
        named, port, keyFile = startNamed(workdir)
        first = _Agent(workdir, "cloudserver1", port, keyFile, None)
        agents = [first] + [_Agent(workdir, n, port, keyFile, first.gossip) for n in ("edge2", "edge3")]
        try:
            for a in agents:
                a.start()
            preferred = [IPS["cloudserver1"]]
            waitUntil(lambda: apexAddresses(port) == preferred, "the first DNS write", 60)
            time.sleep(3.0)  # all three are voters by now
            for r in range(rounds):
                first.kill()
                killed = time.monotonic()
                waitUntil(lambda: apexAddresses(port) not in ([], preferred), "the new apex", 30)
                took = time.monotonic() - killed
                out.append(took)
                print(
                    f"failover round {r + 1}: kill -9 of the LB leader to bind9 answering {apexAddresses(port)}: {took * 1000:.0f} ms"
                )
                first.start()
                waitUntil(lambda: apexAddresses(port) == preferred, "the restarted preferred node", 60)
                time.sleep(2.0)
        finally:
            for a in agents:
                a.kill()
            named.send_signal(signal.SIGTERM)
            named.wait(20)
    return out


def main() -> None:
    parser = _benchcli.parser(
        __doc__, HEADLINE, "failover_dns_ms_* only when named (bind9) is installed and --failovers > 0."
    )
    parser.add_argument("--rounds", type=int, default=5, help="failure detection rounds with real processes")
    parser.add_argument("--updates", type=int, default=20, help="simulated writes for the convergence figure")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--failovers", type=int, default=5, help="DNS failover kills (0 skips the phase)")
    args = parser.parse_args()
    began = time.monotonic()

    firsts, alls = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(args.rounds):
            _benchcli.setPhase(f"n=3 processes round {r + 1}")
            first, everyone = processRound(workdir)
            firsts.append(first)
            alls.append(everyone)
            print(
                f"n=3 processes round {r + 1}: first dead verdict {first * 1000:.0f} ms, both {everyone * 1000:.0f} ms"
            )
    _benchcli.setPhase("n=50 simulated detection")
    simFirst, simAll = simulatedDetection(args.seed)
    print(
        "n=50 simulated detection (s): first "
        + ", ".join(f"{x:.2f}" for x in simFirst)
        + "; everyone "
        + ", ".join(f"{x:.2f}" for x in simAll)
    )
    _benchcli.setPhase("n=50 simulated convergence")
    converge = simulatedConvergence(args.seed, args.updates)
    print(
        f"n=50 simulated convergence of {args.updates} writes to 49 receivers: "
        f"p50 {percentile(converge, 50) * 1000:.0f} ms, p99 {percentile(converge, 99) * 1000:.0f} ms, "
        f"max {max(converge) * 1000:.0f} ms"
    )
    _benchcli.setPhase("DNS failover")
    fail = failovers(args.failovers) if args.failovers else []
    if fail:
        print(
            f"DNS failover over {len(fail)} kills: median {statistics.median(fail) * 1000:.0f} ms, "
            f"p99 {percentile(fail, 99) * 1000:.0f} ms, max {max(fail) * 1000:.0f} ms"
        )
    print(f"elapsed {time.monotonic() - began:.0f} s, load average {os.getloadavg()[0]:.2f}")
    print(
        f"detect_ms_median={statistics.median(firsts) * 1000:.0f} "
        f"detect_all_ms_median={statistics.median(alls) * 1000:.0f} "
        f"sim50_detect_ms_median={statistics.median(simFirst) * 1000:.0f} "
        f"sim50_detect_all_ms_median={statistics.median(simAll) * 1000:.0f} "
        f"converge_ms_p50={percentile(converge, 50) * 1000:.0f} "
        f"converge_ms_p99={percentile(converge, 99) * 1000:.0f}"
        + (
            f" failover_dns_ms_median={statistics.median(fail) * 1000:.0f}"
            f" failover_dns_ms_p99={percentile(fail, 99) * 1000:.0f}"
            if fail
            else ""
        )
    )


if __name__ == "__main__":
    _benchcli.run(main)
