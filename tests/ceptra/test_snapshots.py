"""
Partition snapshots encoded off the reactor thread, on the simulated
cluster: the encoding of each capture finishes 50 ms (simulated) later, while
the replicas go on applying batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.machine import PartitionMachine, eventsEntry, rulesEntry
from suite.ceptra.partitions import SNAPSHOT_BACKSTOP
from suite.raft.sessions import SessionApplier
from tests.ceptra.test_partitions import RULES, Cluster, events


class SlowEncodingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.encoded: list[int] = []
        holder: dict[str, Cluster] = {}

        def later(encode: Callable[[], bytes]) -> Deferred[bytes]:
            def run() -> bytes:
                data = encode()
                self.encoded.append(len(data))
                return data

            return deferLater(holder["c"].clock, 0.05, run)

        self.c = holder["c"] = Cluster(["a", "b", "c"], {"p0": ["a", "b", "c"]}, snapshotRunner=later)
        self.c.run(2.0)
        #: (node, applied index) -> the replica's state hash then
        self.hashes: dict[tuple[str, int], str] = {}
        for m in self.c.managers.values():
            self.record(m.spiffe, m.partitions["p0"])

    def record(self, name: str, part: Any) -> None:
        def applied(index: int) -> None:
            self.hashes[name, index] = part.machine.stateHash()

        part.node.appliedHooks.append(applied)

    def load(self, batches: int, start: int = 0) -> list[Any]:
        acked: list[Any] = []
        for k in range(batches):
            leader = self.c.leader("p0")
            assert leader is not None
            if k == 0 and start == 0:
                leader.propose("p0", rulesEntry(RULES))
            leader.propose("p0", eventsEntry(events(3, start + k * 3))).addCallback(acked.append)
            self.c.run(0.02)
        self.c.run(1.0)
        return acked

    def test_snapshotsWhileApplying(self) -> None:
        """
        Every replica snapshots (captures encoded later, entries applied
        meanwhile); each saved snapshot holds the state of its own index and
        nothing after it; no event is lost and the replicas agree.
        """
        acked = self.load(60)
        self.assertEqual(len(acked), 60)
        self.assertEqual(len(self.c.hashes("p0")), 1)
        self.assertGreater(len(self.encoded), 3)
        for m in self.c.managers.values():
            part = m.partitions["p0"]
            self.assertEqual(part.machine.events, 180)
            self.assertGreater(part.node.log.snapshotIndex, 0)
            self.assertLess(part.node.settings.snapshotThreshold, 26 * SNAPSHOT_BACKSTOP)
            snap = part.storage.readSnapshot()
            assert snap is not None
            meta, data = snap
            self.assertEqual(meta.index, part.node.log.snapshotIndex)
            self.assertLess(meta.index, part.node.lastApplied)
            copy = PartitionMachine("p0")
            SessionApplier(copy).restore(data)
            self.assertEqual(copy.lastIndex, meta.index)
            self.assertEqual(copy.stateHash(), self.hashes[m.spiffe, meta.index])
            self.assertLess(copy.events, 180)

    def test_wipedReplicaRebuiltFromSnapshot(self) -> None:
        """
        A replica whose disk is lost is rebuilt from a snapshot encoded in
        the background, then the log, and agrees with the others.
        """
        self.load(40)
        self.c.crash("c", wipe=True)
        self.c.start("c")
        self.c.run(2.0)
        self.load(20, start=120)
        self.c.run(3.0)
        self.assertEqual(len(self.c.hashes("p0")), 1)
        self.assertEqual(self.c.managers["c"].partitions["p0"].machine.events, 180)


class LeaderKilledWhileEncodingTests(SynchronousTestCase):
    """
    Seeded simulations: batches are proposed one at a time (each resent
    until acknowledged), encodings take a random 0-0.4 s (simulated, often
    longer than the next capture is due, so the node's own snapshot steps in
    too), and the leader is killed at a random batch, with encodings in
    flight, and restarted from its disk a random while later.
    """

    def simulate(self, seed: int) -> tuple[Cluster, list[str], dict[str, int]]:
        rng = random.Random(seed)
        counts = {"encoded": 0, "crashedWhileEncoding": 0}
        holder: dict[str, Cluster] = {}

        def later(encode: Callable[[], bytes]) -> Deferred[bytes]:
            def run() -> bytes:
                counts["encoded"] += 1
                return encode()

            return deferLater(holder["c"].clock, rng.uniform(0.0, 0.4), run)

        c = holder["c"] = Cluster(
            ["a", "b", "c"], {"p0": ["a", "b", "c"]}, seed=seed, snapshotThreshold=6, snapshotRunner=later
        )
        c.run(2.0)
        acked: list[str] = []
        batches = 70
        killAt = rng.randrange(15, 45)
        restartAt = killAt + rng.randrange(3, 12)
        killed: str | None = None
        for k in range(batches):
            batch = events(3, k * 3)
            body = rulesEntry(RULES) if k == 0 else eventsEntry(batch)
            while True:
                leader = c.leader("p0")
                if leader is None:
                    c.run(0.05)
                    continue
                box: list[Any] = []
                leader.propose("p0", body).addBoth(box.append)
                if k == killAt and killed is None:
                    # Kill the leader with this batch in flight.
                    killed = next(n for n, m in c.managers.items() if m is leader)
                    part = leader.partitions["p0"]
                    if part.snapshots is not None and part.snapshots.pending() is not None:
                        counts["crashedWhileEncoding"] += 1
                    c.crash(killed)
                for _ in range(50):
                    if box:
                        break
                    c.run(0.02)
                if box and not isinstance(box[0], Failure):
                    break
            if k:
                acked.extend(e["event_id"] for e in batch)
            if k == restartAt and killed is not None:
                c.start(killed)
            c.run(0.02)
        c.run(3.0)
        return c, acked, counts

    def test_acknowledgedEventsSurvive(self) -> None:
        """
        Every acknowledged event is held by every replica, the replicas
        agree, and each replica's saved snapshot restores to a state that
        holds no entry after its index.
        """
        crashedWhileEncoding = 0
        for seed in range(4):
            c, acked, counts = self.simulate(seed)
            self.assertGreater(counts["encoded"], 5, seed)
            crashedWhileEncoding += counts["crashedWhileEncoding"]
            self.assertEqual(len(c.managers), 3, seed)
            self.assertEqual(len(c.hashes("p0")), 1, seed)
            for name, m in c.managers.items():
                part = m.partitions["p0"]
                held = part.machine.engine._seen
                self.assertEqual([e for e in acked if e not in held], [], (seed, name))
                self.assertEqual(part.machine.events, len(acked), (seed, name))
                snap = part.storage.readSnapshot()
                assert snap is not None
                meta, data = snap
                copy = PartitionMachine("p0")
                SessionApplier(copy).restore(data)
                self.assertEqual(copy.lastIndex, meta.index, (seed, name))
        self.assertGreater(crashedWhileEncoding, 0)
