"""
Interoperability with real memberlist nodes: Debian's C{serf} agents and
C{python -m suite.gossip} processes in one cluster on loopback, with and
without encryption.

A serf agent sees our nodes alive (with their metadata as tags), failed
after C{kill -9} and left after SIGTERM; our nodes see the serf agents,
including one that joined through us; no side logs a packet it cannot
decode.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.process import DaemonProcess, freePort

SERF = shutil.which("serf")


class SerfInteropTests(TestCase):
    """
    Two serf agents and two suite nodes.
    """

    timeout = 120

    def setUp(self) -> None:
        if SERF is None:
            raise SkipTest("Debian's serf is not installed (make system-deps installs it)")

    def serf(self, name: str, port: int, rpc: int, *args: str) -> DaemonProcess:
        assert SERF is not None
        argv = [
            SERF,
            "agent",
            f"-node={name}",
            f"-bind=127.0.0.1:{port}",
            f"-rpc-addr=127.0.0.1:{rpc}",
            "-log-level=debug",
            *(["-encrypt", self.key] if self.key else []),
            *args,
        ]
        return DaemonProcess(self, argv, name=name).start()

    def ours(self, name: str, port: int, *args: str) -> DaemonProcess:
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
        if self.key:
            argv += ["--key-file", self.keyFile]
        return DaemonProcess(self, [*argv, *args], name=name).start()

    async def members(self, rpc: int) -> dict[str, tuple[str, str]]:
        """
        C{serf members} of the agent at C{rpc}: name to (status, tags).
        """

        def run() -> str:
            return subprocess.run(
                [SERF or "serf", "members", f"-rpc-addr=127.0.0.1:{rpc}"],
                capture_output=True,
                timeout=10,
                check=False,
            ).stdout.decode()

        out = await deferToThread(run)
        result = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 3:
                result[fields[0]] = (fields[2], " ".join(fields[3:]))
        return result

    async def waitStatus(self, proc: DaemonProcess, rpc: int, name: str, status: str, timeout: float) -> None:
        async def check() -> bool:
            return (await self.members(rpc)).get(name, ("", ""))[0] == status

        await proc.waitFor(check, f"serf to show {name} as {status}", timeout, interval=0.5)

    async def cluster(self) -> None:
        ports = [freePort() for _ in range(6)]
        serf1 = self.serf("serf1", ports[0], ports[1])
        await serf1.waitForLog("Serf agent running", timeout=20)
        alpha = self.ours("alpha", ports[2], "--join", f"127.0.0.1:{ports[0]}", "--meta", "role=web")
        bravo = self.ours("bravo", ports[3], "--join", f"127.0.0.1:{ports[0]}")
        await alpha.waitForLog("member serf1 joined", timeout=20)
        await bravo.waitForLog("member serf1 joined", timeout=20)
        # A serf agent joining through one of ours.
        serf2 = self.serf("serf2", ports[4], ports[5], f"-join=127.0.0.1:{ports[2]}")
        await alpha.waitForLog("member serf2 joined", timeout=20)
        await bravo.waitForLog("member serf2 joined", timeout=30)
        await self.waitStatus(serf1, ports[1], "alpha", "alive", 20)
        await self.waitStatus(serf1, ports[1], "bravo", "alive", 20)
        await self.waitStatus(serf2, ports[5], "bravo", "alive", 20)
        # serf1 hears of serf2 by gossip (from ours or from serf2), a moment
        # after ours have logged the join
        await self.waitStatus(serf1, ports[1], "serf2", "alive", 20)
        members = await self.members(ports[1])
        self.assertEqual(members["alpha"][1], "role=web")
        self.assertEqual(sorted(members), ["alpha", "bravo", "serf1", "serf2"])

        # A graceful stop is a leave; kill -9 is a failure.
        self.assertEqual(await alpha.stop(), 0)
        await self.waitStatus(serf1, ports[1], "alpha", "left", 20)
        await self.waitStatus(serf2, ports[5], "alpha", "left", 20)
        bravo.kill9()
        await bravo.waitExit(10)
        await self.waitStatus(serf1, ports[1], "bravo", "failed", 60)
        await self.waitStatus(serf2, ports[5], "bravo", "failed", 30)
        self.assertEqual((await self.members(ports[1]))["alpha"][0], "left")

        # Nothing either side could not read.
        for proc in (serf1, serf2):
            bad = [
                line
                for line in proc.output().splitlines()
                if re.search(r"\[(ERR|WARN)\] memberlist", line)
                and "alpha" not in line
                and "bravo" not in line
            ]
            bad += [line for line in proc.output().splitlines() if "Failed to decode" in line]
            self.assertEqual(bad, [], f"{proc.name} logged errors")
        for proc in (alpha, bravo):
            self.assertNotIn("dropped", proc.output())

    async def test_plain(self) -> None:
        """
        Without encryption.
        """
        self.key = ""
        await self.cluster()

    async def test_encrypted(self) -> None:
        """
        With an AES-256 key given to serf as -encrypt and to ours as a key
        file (an old key listed after the primary changes nothing).
        """
        raw = os.urandom(32)
        self.key = base64.b64encode(raw).decode()
        base = self.mktemp()
        os.makedirs(base)
        self.keyFile = os.path.join(base, "keys")
        with open(self.keyFile, "w") as f:
            f.write(self.key + "\n" + base64.b64encode(os.urandom(16)).decode() + "\n")
        await self.cluster()
