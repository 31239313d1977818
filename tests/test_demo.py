"""
The README's first command: the local demo brings every daemon up on
loopback and stops them all cleanly on Ctrl-C.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import sys

import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from suite.demo.plan import plan
from tests.support.metriclint import GUIDE_NAMES, MILLISECOND_DAEMONS, lintExposition, promtool
from tests.support.process import DaemonProcess, scriptArgs

PORTS = (4001, 7440, 7946, 8080, 8081, 8088, 8300, 8443, 8787, 9090, 9990, 11180, 26010, 26020, 26021)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class DemoTests(TestCase):
    """
    C{python -m suite.demo} end to end.
    """

    timeout = 120

    def test_planNamesEveryDaemon(self) -> None:
        """
        The demo runs one process per daemon of the suite, each with at least
        one URL to print.
        """
        daemons = plan(self.mktemp())
        names = {d.argv[0] for d in daemons}
        self.assertEqual(names, {"specter", "spacecomms", "clustor-cp", "ceptra", "constellation", "goop2"})
        for d in daemons:
            self.assertTrue(d.urls, d.name)

    def test_portBaseMovesEveryPort(self) -> None:
        """
        C{--port-base} moves every port a daemon of the demo is given (the
        ports the end-to-end test checks are free are all of them).
        """
        ports: set[int] = set()
        for d in plan(self.mktemp(), 1):
            for arg in [*d.argv, *d.env.values()]:
                ports.update(int(p) for p in re.findall(r"(?:^|[:=])(\d{4,5})(?:$|:)", arg))
        self.assertEqual(sorted(p - 1 for p in ports if p - 1 in PORTS), sorted(p - 1 for p in ports))
        self.assertEqual({p - 1 for p in ports} | {4001, 8080, 8088, 8443, 8787, 9090}, set(PORTS))

    async def test_demoComesUpAndStops(self) -> None:
        """
        Every daemon of the demo answers on its printed URL, and SIGINT stops
        them all with exit code 0.
        """
        rng = random.Random()
        for _ in range(50):
            base = rng.randrange(1, 60) * 100
            if all(_free(p + base) for p in PORTS):
                break
        else:
            self.skipTest("no free set of demo ports")
        state = self.mktemp()
        proc = DaemonProcess(
            self,
            [sys.executable, "-m", "suite.demo", "--dir", state, "--port-base", str(base)],
            name="demo",
            stopTimeout=40,
        ).start()
        await proc.waitForLog("Ctrl-C stops everything", timeout=60)
        # The URLs are printed only once every daemon listens: each printed
        # port accepts a connection right away, without waiting.
        printed = {int(m) for m in re.findall(r"://127\.0\.0\.1:(\d+)", proc.output())}
        self.assertEqual(len(printed), 8, proc.output()[-3000:])
        notListening = sorted(p for p in printed if _free(p))
        self.assertEqual(notListening, [], proc.output()[-3000:])
        checks = [
            (f"http://127.0.0.1:{9990 + base}/readyz", 200),
            (f"http://127.0.0.1:{8080 + base}/health", 200),
            (f"http://127.0.0.1:{26020 + base}/healthz", 200),
            (f"http://127.0.0.1:{8081 + base}/api/http/routers", 200),
            (f"http://127.0.0.1:{8787 + base}/healthz", 200),
            (f"http://127.0.0.1:{8088 + base}/", 200),
        ]
        for url, code in checks:
            await proc.waitForHTTP(url, timeout=60, code=code)
        await self.adminSurface(proc, base)
        await self.kvHint(proc)
        self.assertNotIn("exited with code", proc.output())
        code = await proc.stop(signal.SIGINT, timeout=40)
        self.assertEqual(code, 0, proc.output()[-3000:])
        self.assertIn("all daemons stopped", proc.output())
        self.assertNotIn("exited with code", proc.output())

    async def kvHint(self, proc: DaemonProcess) -> None:
        """
        The KV RPC line's command works as printed: C{specter kv --rpc URI
        put k v}, with no token flag (the user's own node's token).
        """
        found = re.search(r"(tcp://127\.0\.0\.1:\d+)\s+\(specter kv --rpc \.\.\. put k v\)", proc.output())
        assert found is not None, proc.output()[-3000:]
        environ = {k: v for k, v in os.environ.items() if k != "SPECTER_RPC_TOKEN_FILE"}
        argv = scriptArgs("specter", "kv", "--rpc", found.group(1), "put", "k", "v")
        self.assertEqual(
            await getProcessOutputAndValue(argv[0], argv[1:], env=environ, reactor=reactor), (b"", b"", 0)
        )
        argv = scriptArgs("specter", "kv", "--rpc", found.group(1), "get", "k")
        self.assertEqual(
            await getProcessOutputAndValue(argv[0], argv[1:], env=environ, reactor=reactor), (b"v\n", b"", 0)
        )

    async def adminSurface(self, proc: DaemonProcess, base: int) -> None:
        """
        Every daemon of the demo serves /healthz, /readyz and /metrics
        (SpaceComms also the guide's /health); every exposition has one
        format version and passes the metric-name lint (and promtool, when
        installed).
        """
        admin = {
            "specter": 9990,
            "spacecomms": 8080,
            "ceptra": 26020,
            "constellation": 8081,
            "goop": 8787,
            "goop-peer": 8088,
        }
        versions = set()
        for daemon, port in admin.items():
            url = f"http://127.0.0.1:{port + base}"
            for path in ("/healthz", "/readyz"):
                r = await treq.get(url + path, timeout=10, persistent=False)
                await r.content()
                self.assertIn(r.code, (200, 503), f"{daemon} {path}")
            r = await treq.get(url + "/metrics", timeout=10, persistent=False)
            text = (await r.content()).decode()
            self.assertEqual(r.code, 200, f"{daemon} /metrics")
            versions.add(r.headers.getRawHeaders(b"content-type", [b""])[0].decode())
            name = "goop" if daemon.startswith("goop") else daemon
            self.assertEqual(lintExposition(text, name), [], f"{daemon} /metrics")
            self.assertEqual(promtool(text, _guideAndMilliseconds(text, name)) or [], [], daemon)
        self.assertEqual(len(versions), 1, versions)
        self.assertIn("version=0.0.4", versions.pop())


# A stand-in daemon: tells the demo it listens (READY=1 on NOTIFY_SOCKET, as
# the real ones do), records its pid, then waits for a signal.
_FAKE_DAEMON = """
import os, signal, socket, sys
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
signal.pause()
"""

# The demo with its plan replaced by two stand-in daemons.
_FAKE_DEMO = """
import os, sys
import suite.demo.cli as cli
from suite.demo.plan import DemoDaemon

def plan(base, portBase=0):
    return [
        DemoDaemon(name, [sys.executable, "-c", sys.argv[1], os.path.join(base, name + ".pid")],
                   urls=[("url", "http://127.0.0.1:1/")])
        for name in ("one", "two")
    ]

cli.plan = plan
cli.main(sys.argv[2:])
"""


class DemoSignalTests(TestCase):
    """
    Ctrl-C (SIGINT) and SIGTERM sent to the demo alone both stop every
    daemon it started, and the demo exits 0.
    """

    timeout = 60

    async def stopWith(self, sig: int) -> None:
        state = os.path.abspath(self.mktemp())
        proc = DaemonProcess(
            self,
            [sys.executable, "-c", _FAKE_DEMO, _FAKE_DAEMON, "--dir", state],
            name="demo",
            stopTimeout=30,
        ).start()
        await proc.waitForLog("Ctrl-C stops everything", timeout=30)
        pids = []
        for name in ("one", "two"):
            with open(os.path.join(state, name + ".pid")) as f:
                pids.append(int(f.read()))
        self.addCleanup(_killAlive, pids)
        code = await proc.stop(sig, timeout=30)
        self.assertEqual(code, 0, proc.output())
        self.assertIn("all daemons stopped", proc.output())
        for pid in pids:
            self.assertFalse(_alive(pid), f"daemon {pid} still runs after the demo exited")

    async def test_sigint(self) -> None:
        await self.stopWith(signal.SIGINT)

    async def test_sigterm(self) -> None:
        await self.stopWith(signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _killAlive(pids: list[int]) -> None:
    """
    Stop the stand-in daemons a failing demo left behind.
    """
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _guideAndMilliseconds(text: str, daemon: str) -> set[str]:
    allowed = set(GUIDE_NAMES.get(daemon, ()))
    if daemon in MILLISECOND_DAEMONS:
        allowed |= set(re.findall(r"^# TYPE (\S+_ms) ", text, re.M))
    return allowed
