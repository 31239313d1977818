"""
End to end: three real node processes on loopback over mTLS.
"""

from __future__ import annotations

import json
import sys
import time

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.raft.cluster import makeClient, makeCluster
from tests.support.process import DaemonProcess, freePort, sleep


class KillLeaderTests(TestCase):
    """
    kill -9 of the leader during a stream of writes.
    """

    timeout = 120

    async def test_killLeaderDuringWrites(self) -> None:
        """
        A new leader serves within 2 s of the kill, every acknowledged write
        is readable afterwards, and the killed node restarts and catches up
        through a snapshot because the others compacted past it.
        """
        base = self.mktemp()
        specs, clientDir = makeCluster(base, 3, freePort)
        procs = {}
        for s in specs:
            procs[s.id] = DaemonProcess(self, s.argv(snapshotThreshold=200), name=s.id).start()
        for s in specs:
            await procs[s.id].waitForPort(s.clientPort)
        client = makeClient(reactor, specs, clientDir, timeoutMs=500, retryAttempts=40, backoffMs=20)
        self.addCleanup(client.close)
        await client.call("put", "warmup", "1")
        status = await client.call("status")
        leader = status["leader"]
        self.assertIn(leader, procs)

        acknowledged: dict[str, str] = {}
        for i in range(150):
            key = f"k{i % 20}"
            await client.call("put", key, f"v{i}")
            acknowledged[key] = f"v{i}"
        procs[leader].kill9()
        killedAt = time.monotonic()
        # Keep writing: the first acknowledgement after the kill marks the new leader serving.
        firstAfter = None
        for i in range(150, 600):
            key = f"k{i % 20}"
            await client.call("put", key, f"v{i}")
            acknowledged[key] = f"v{i}"
            if firstAfter is None:
                firstAfter = time.monotonic() - killedAt
        assert firstAfter is not None
        sys.stderr.write(f"failover: first acknowledged write {firstAfter * 1000:.0f} ms after kill -9\n")
        self.assertLess(firstAfter, 2.0, "no new leader served a write within 2 s of kill -9")
        status = await client.call("status")
        self.assertNotEqual(status["leader"], leader)
        for key, value in sorted(acknowledged.items()):
            self.assertEqual(await client.call("get", key), value, key)

        # Restart the killed node: it is behind the others' snapshots.
        spec = next(s for s in specs if s.id == leader)
        restarted = DaemonProcess(self, spec.argv(snapshotThreshold=200), name=f"{leader}-restarted").start()
        target = status["commitIndex"]

        async def caughtUp() -> bool:
            import treq

            r = await treq.get(f"http://127.0.0.1:{spec.adminPort}/readyz", timeout=2, persistent=False)
            body = json.loads(await r.content())
            return _applied(body) >= target

        await restarted.waitFor(caughtUp, "restarted node to apply the committed log", timeout=30)
        await restarted.waitForLog("installs a snapshot", timeout=10)
        await sleep(0.1)


def _applied(body: object) -> int:
    """
    Find the largest appliedIndex anywhere in a /readyz JSON body.
    """
    best = -1
    if isinstance(body, dict):
        for k, v in body.items():
            if k == "appliedIndex" and isinstance(v, int):
                best = max(best, v)
            else:
                best = max(best, _applied(v))
    elif isinstance(body, list):
        for v in body:
            best = max(best, _applied(v))
    return best


class RefuseToStartTests(TestCase):
    """
    A node process with a damaged WAL exits naming the file and offset.
    """

    timeout = 60

    async def test_corruptRecordMidSegment(self) -> None:
        """
        A CRC failure followed by more records is corruption, not a torn
        tail: exit code 1 and one line naming the segment and the offset.
        """
        import os
        import struct

        data = self.mktemp()
        os.makedirs(os.path.join(data, "wal"))
        path = os.path.join(data, "wal", "wal-0000000000000001.log")
        record = struct.pack(">II", 5, 0xDEADBEEF) + b"\x01abcd"
        with open(path, "wb") as f:
            f.write(b"RWAL\x01" + record + record)
        argv = [
            sys.executable,
            "-m",
            "suite.raft",
            "--id",
            "n1",
            "--raft-listen",
            "tcp:0:interface=127.0.0.1",
            "--client-listen",
            "tcp:0:interface=127.0.0.1",
            "--insecure",
            "--data-dir",
            data,
        ]
        proc = DaemonProcess(self, argv, name="corrupt").start()
        self.assertEqual(await proc.waitExit(30), 1)
        self.assertIn(
            f"corrupt WAL record in {path} at offset 5: CRC mismatch; refusing to start", proc.output()
        )
