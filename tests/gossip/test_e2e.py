"""
End to end: three real C{python -m suite.gossip} processes on loopback over
real UDP and TCP; C{kill -9} of one is logged as dead by the others.
"""

from __future__ import annotations

import base64
import os
import sys

from twisted.trial.unittest import TestCase

from tests.support.process import DaemonProcess, freePort


class ThreeProcessTests(TestCase):
    """
    A three-node cluster of real processes.
    """

    timeout = 90

    def node(self, name: str, port: int, *args: str) -> DaemonProcess:
        argv = [
            sys.executable,
            "-m",
            "suite.gossip",
            "--bind",
            f"127.0.0.1:{port}",
            "--name",
            name,
            "--profile",
            "local",
            "--key-file",
            self.keyFile,
            *args,
        ]
        return DaemonProcess(self, argv, name=name).start()

    async def test_killNineIsDetected(self) -> None:
        """
        Two nodes join through the first; after kill -9 of the third, both
        survivors log it as dead; a graceful stop is logged as left.
        """
        base = self.mktemp()
        os.makedirs(base)
        self.keyFile = os.path.join(base, "key")
        with open(self.keyFile, "w") as f:
            f.write(base64.b64encode(b"0123456789abcdef0123456789abcdef").decode() + "\n")
        ports = [freePort() for _ in range(3)]
        a = self.node("alpha", ports[0])
        await a.waitForLog("gossip node alpha started")
        b = self.node("bravo", ports[1], "--join", f"127.0.0.1:{ports[0]}")
        c = self.node("charlie", ports[2], "--join", f"127.0.0.1:{ports[0]}", "--meta", "role=web")
        for proc, others in ((a, ("bravo", "charlie")), (b, ("alpha", "charlie")), (c, ("alpha", "bravo"))):
            for other in others:
                await proc.waitForLog(f"member {other} joined", timeout=20)
        c.kill9()
        await c.waitExit(10)
        await a.waitForLog("member charlie at 127.0.0.1:[0-9]+ is dead", timeout=30)
        await b.waitForLog("member charlie at 127.0.0.1:[0-9]+ is dead", timeout=30)
        self.assertEqual(await b.stop(), 0)
        await a.waitForLog("member bravo at 127.0.0.1:[0-9]+ left", timeout=20)
        self.assertNotIn(
            "member bravo at", "".join(line for line in a.output().splitlines() if "is dead" in line)
        )
