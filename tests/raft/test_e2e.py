"""
End to end: three real node processes on loopback over mTLS.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from suite.raft.groupid import readGroupFile
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


async def _readyApplied(port: int, target: int) -> bool:
    import treq

    r = await treq.get(f"http://127.0.0.1:{port}/readyz", timeout=2, persistent=False)
    return _applied(json.loads(await r.content())) >= target


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


class MembershipTests(TestCase):
    """
    An operator grows the group from three to five nodes (one added as a
    voter in one step, one as a learner then promoted) and shrinks it back
    with C{python -m suite.raft member} while clients write.
    """

    timeout = 180

    async def member(self, clientDir: str, servers: str, *args: str) -> dict[str, Any]:
        argv = [sys.executable, "-m", "suite.raft", "member", *args, "--cert-dir", clientDir]
        for server in servers.split(","):
            argv += ["--server", server]
        proc = DaemonProcess(self, argv, name=f"member-{args[0]}-{args[1]}").start()
        code = await proc.waitExit(60)
        self.assertEqual(code, 0, proc.output())
        lines = [line for line in proc.output().splitlines() if line.startswith("{")]
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    async def test_threeToFiveToThree(self) -> None:
        """
        Two nodes join as voters and are removed again under a steady write
        load: every acknowledged write is readable at the end, and writes
        never stall for longer than one election (here no election is
        needed at all, so the bound is an election timeout plus the
        client's retry delay).
        """
        base = self.mktemp()
        specs, clientDir = makeCluster(base, 5, freePort)
        first, extra = specs[:3], specs[3:]
        old = {s.id for s in first}
        procs = {}
        for s in first:
            s.peers = {p: port for p, port in s.peers.items() if p in old}
            procs[s.id] = DaemonProcess(self, s.argv(), name=s.id).start()
        for s in first:
            await procs[s.id].waitForPort(s.clientPort)
        client = makeClient(reactor, first, clientDir, timeoutMs=500, retryAttempts=40, backoffMs=20)
        self.addCleanup(client.close)
        await client.call("put", "warmup", "1")

        acknowledged: dict[str, str] = {}
        acks: list[float] = []
        running = [True]

        async def load() -> None:
            i = 0
            while running[0]:
                key = f"k{i % 20}"
                await client.call("put", key, f"v{i}")
                acknowledged[key] = f"v{i}"
                acks.append(time.monotonic())
                i += 1

        writer = Deferred.fromCoroutine(load())
        servers = ",".join(f"{s.id}=127.0.0.1:{s.clientPort}" for s in first)
        for s in extra:
            procs[s.id] = DaemonProcess(self, s.argv() + ["--join"], name=s.id).start()
            await procs[s.id].waitForPort(s.clientPort)
            address = f"127.0.0.1:{s.raftPort}"
            if s.id == "n4":
                config = await self.member(clientDir, servers, "add-voter", s.id, address)
            else:
                config = await self.member(clientDir, servers, "add-learner", s.id, address)
                self.assertIn(s.id, config["learners"])
                target = (await client.call("status"))["commitIndex"]
                await procs[s.id].waitFor(
                    lambda spec=s, target=target: _readyApplied(spec.adminPort, target),
                    "the learner to catch up",
                )
                config = await self.member(clientDir, servers, "promote", s.id)
            self.assertIn(s.id, config["voters"])
        self.assertEqual(sorted(config["voters"]), ["n1", "n2", "n3", "n4", "n5"])
        await sleep(1.0)
        status = await client.call("status")
        self.assertEqual(status["voters"], ["n1", "n2", "n3", "n4", "n5"])
        # One Raft group id, recorded by every member (the static three
        # bound it from the first leader's no-op, the joiners from their leader).
        groups = {readGroupFile(os.path.join(s.dataDir, "wal")) for s in first + extra}
        self.assertEqual(len(groups), 1)
        self.assertNotIn(0, groups)
        for s in extra:
            config = await self.member(clientDir, servers, "remove", s.id)
            self.assertNotIn(s.id, config["voters"] + config["learners"])
        self.assertEqual(sorted(config["voters"]), ["n1", "n2", "n3"])
        for s in extra:
            procs[s.id].kill9()
        await sleep(1.0)
        running[0] = False
        await writer
        status = await client.call("status")
        self.assertEqual((status["voters"], status["learners"]), (["n1", "n2", "n3"], []))
        gaps = [b - a for a, b in zip(acks, acks[1:], strict=False)]
        sys.stderr.write(f"membership 3->5->3: {len(acks)} writes, longest gap {max(gaps) * 1000:.0f} ms\n")
        self.assertGreater(len(acks), 50)
        self.assertLess(max(gaps), 0.3 + 0.5 + 0.2, "writes stalled for longer than an election")
        for key, value in sorted(acknowledged.items()):
            self.assertEqual(await client.call("get", key), value, key)


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
