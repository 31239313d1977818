"""
One WAL shared by many Raft groups (L{suite.raft.wal.SharedWAL}): what one
reactor turn queues is made durable with one fsync, nothing is
acknowledged before that fsync, and a crash between a batch's write and its
fsync loses only unacknowledged writes.  The real WAL code runs on real
files; storage threads and durability are simulated (L{tests.raft.walsim}).

Replay one scenario: C{WAL_SEED=<seed> pytest tests/raft/test_sharedwal.py}.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import sys
import tempfile
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.raft.interfaces import IRaftStorage
from suite.raft.messages import Configuration, Entry, SnapshotMeta
from suite.raft.node import RaftNode
from suite.raft.settings import RaftSettings
from suite.raft.storage import Recovered
from suite.raft.wal import GroupStorage, SharedWAL
from tests.raft.walsim import SimDisk, SimRunner
from tests.support.raftsim import (
    Faults,
    Recorder,
    SimNetwork,
    SimTransport,
    checkReplicasAgree,
    proposeRecorded,
)

CONFIG = Configuration(frozenset({"n0", "n1", "n2"}))


def scratch(test: SynchronousTestCase) -> str:
    """
    A temporary directory (in memory where the host has /dev/shm).
    """
    where = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="walsim-", dir=where)
    test.addCleanup(shutil.rmtree, path, True)
    return path


class DiskTests(SynchronousTestCase):
    """
    The batching point on one node, step by step.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.rng = random.Random(7)
        self.disk = SimDisk(scratch(self), self.clock, self.rng)

    def open(self, *groups: str) -> tuple[SharedWAL, dict[str, GroupStorage], dict[str, Recovered]]:
        wal = self.disk.open()
        storages = {g: wal.group(g, self.disk.snapshotDir(g)) for g in groups}
        loads = {g: s.load() for g, s in storages.items()}
        self.settle()
        return wal, storages, {g: self.successResultOf(d) for g, d in loads.items()}

    def settle(self) -> None:
        for _ in range(50):
            self.clock.advance(0.01)

    def test_interface(self) -> None:
        """
        A group's storage is an L{IRaftStorage}.
        """
        _, storages, _ = self.open("g1")
        self.assertTrue(verifyObject(IRaftStorage, storages["g1"]))

    def test_oneFsyncPerTurnAcrossGroups(self) -> None:
        """
        Appends of three groups in one reactor turn are written as one batch
        with one fsync, and none is acknowledged before that fsync ends.
        """
        wal, storages, _ = self.open("g1", "g2", "g3")
        before = wal.batches, self.disk.files.batchSyncs
        ds = [s.appendEntries(None, [Entry(1, 1, 0, g.encode())]) for g, s in storages.items()]
        writer = self.disk.runners[0]
        while not writer.syncing:
            self.clock.advance(0.0001)
            for d in ds:
                self.assertNoResult(d)
        for d in ds:
            self.assertNoResult(d)
        self.settle()
        for d in ds:
            self.successResultOf(d)
        self.assertEqual((wal.batches, self.disk.files.batchSyncs), (before[0] + 1, before[1] + 1))

    def test_queuedDuringWriteGoesInTheNextBatch(self) -> None:
        """
        What is queued while a batch is being written waits for the next
        batch (and its own fsync); sync() covers everything queued before it.
        """
        wal, storages, _ = self.open("g1", "g2")
        first = storages["g1"].appendEntries(None, [Entry(1, 1)])
        self.clock.advance(0)
        second = storages["g2"].appendEntries(None, [Entry(1, 1)])
        synced = storages["g1"].sync()
        self.settle()
        self.successResultOf(first)
        self.successResultOf(second)
        self.successResultOf(synced)
        self.assertEqual(wal.batches, 2)

    def test_restartReadsEveryGroup(self) -> None:
        """
        Each group gets its own term, vote and entries back.
        """
        _, storages, _ = self.open("g1", "g2")
        storages["g1"].saveHardState(3, "n1")
        storages["g1"].appendEntries(None, [Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"b")])
        storages["g2"].saveHardState(5, None)
        storages["g2"].appendEntries(None, [Entry(2, 1, 0, b"x")])
        storages["g2"].appendEntries(0, [Entry(5, 1, 0, b"y")])
        self.settle()
        self.disk.crash()
        _, _, recovered = self.open("g1", "g2")
        self.assertEqual((recovered["g1"].term, recovered["g1"].votedFor), (3, "n1"))
        self.assertEqual([e.data for e in recovered["g1"].entries], [b"a", b"b"])
        self.assertEqual((recovered["g2"].term, recovered["g2"].votedFor), (5, None))
        self.assertEqual(recovered["g2"].entries, [Entry(5, 1, 0, b"y")])

    def test_crashBetweenWriteAndFsync(self) -> None:
        """
        A batch written but not yet synced when the machine dies is not
        acknowledged, and is gone after restart; what was synced before it
        is intact.
        """
        _, storages, _ = self.open("g1", "g2")
        storages["g1"].appendEntries(None, [Entry(1, 1, 0, b"one")])
        storages["g2"].appendEntries(None, [Entry(1, 1, 0, b"uno")])
        self.settle()
        late = [
            storages["g1"].appendEntries(None, [Entry(1, 2, 0, b"two")]),
            storages["g2"].appendEntries(None, [Entry(1, 2, 0, b"dos")]),
        ]
        writer = self.disk.runners[0]
        while not writer.syncing:
            self.clock.advance(0.0001)
        self.assertTrue(self.disk.crash())
        self.settle()
        for d in late:
            self.assertNoResult(d)
        _, _, recovered = self.open("g1", "g2")
        self.assertEqual([e.data for e in recovered["g1"].entries], [b"one"])
        self.assertEqual([e.data for e in recovered["g2"].entries], [b"uno"])

    def test_tornWriteBetweenWriteAndFsync(self) -> None:
        """
        When part of the unsynced batch reached the disk, start-up cuts the
        torn record; every synced record survives and nothing half-written
        is taken for an entry.
        """
        outcomes = set()
        for seed in range(12):
            self.rng.seed(seed)
            self.disk = SimDisk(scratch(self), self.clock, self.rng)
            _, storages, _ = self.open("g1")
            storages["g1"].appendEntries(None, [Entry(1, 1, 0, b"a" * 50)])
            self.settle()
            storages["g1"].appendEntries(None, [Entry(1, 2, 0, b"b" * 50)])
            storages["g1"].appendEntries(None, [Entry(1, 3, 0, b"c" * 50)])
            while not self.disk.runners[0].syncing:
                self.clock.advance(0.0001)
            self.disk.crash(torn=True)
            _, _, recovered = self.open("g1")
            got = [e.data[:1] for e in recovered["g1"].entries]
            self.assertIn(got, ([b"a"], [b"a", b"b"], [b"a", b"b", b"c"]))
            outcomes.add(len(got))
            self.disk.crash()
        self.assertIn(1, outcomes)

    def test_rotationCarriesEveryGroup(self) -> None:
        """
        A rotation (after a snapshot, once the segment is full) checkpoints
        every group the log holds, open or not; old segments go.
        """
        wal, storages, _ = self.open("g1", "g2", "g3")
        for i in range(1, 60):
            for s in storages.values():
                s.appendEntries(None, [Entry(1, i, 0, b"z" * 300)])
            self.clock.advance(0)
        self.settle()
        self.successResultOf(storages["g3"].close())
        storages["g1"].saveSnapshot(SnapshotMeta(50, 1, CONFIG), b"state")
        self.settle()
        segments = [n for n in os.listdir(os.path.join(self.disk.base, "wal")) if n.endswith(".log")]
        self.assertEqual(len(segments), 1)
        self.assertNotEqual(segments[0], "wal-0000000000000001.log")
        self.disk.crash()
        _, _, recovered = self.open("g1", "g2", "g3")
        self.assertEqual([e.index for e in recovered["g1"].entries], list(range(51, 60)))
        self.assertEqual([e.index for e in recovered["g2"].entries], list(range(1, 60)))
        self.assertEqual([e.index for e in recovered["g3"].entries], list(range(1, 60)))

    def test_drop(self) -> None:
        """
        A dropped group's state is gone after restart; others keep theirs.
        """
        wal, storages, _ = self.open("g1", "g2")
        storages["g1"].appendEntries(None, [Entry(1, 1)])
        storages["g2"].appendEntries(None, [Entry(1, 1)])
        self.settle()
        self.assertRaises(ValueError, wal.drop, "g2")
        self.successResultOf(storages["g2"].close())
        wal.drop("g2")
        self.settle()
        self.disk.crash()
        _, _, recovered = self.open("g1", "g2")
        self.assertEqual(len(recovered["g1"].entries), 1)
        self.assertEqual(recovered["g2"].entries, [])

    def test_badGroup(self) -> None:
        """
        Group ids are 1-255 bytes; a group is opened once.
        """
        wal = self.disk.open()
        wal.group("g", self.disk.snapshotDir("g"))
        self.assertRaises(ValueError, wal.group, "g", self.disk.snapshotDir("g"))
        self.assertRaises(ValueError, wal.group, "x" * 256, self.disk.snapshotDir("x"))

    def test_writeFailureFailsEveryone(self) -> None:
        """
        A failed write fails its batch and everything after it.
        """
        wal, storages, _ = self.open("g1")
        original = wal.writer.write

        def broken(chunks: Any) -> None:
            raise OSError(5, "Input/output error")

        wal.writer.write = broken  # type: ignore[method-assign]
        d = storages["g1"].appendEntries(None, [Entry(1, 1)])
        self.settle()
        self.failureResultOf(d, OSError)
        wal.writer.write = original  # type: ignore[method-assign]
        later = storages["g1"].appendEntries(None, [Entry(1, 2)])
        self.settle()
        self.failureResultOf(later, OSError)
        self.failureResultOf(storages["g1"].sync(), OSError)
        self.flushLoggedErrors(OSError)


class ImportTests(SynchronousTestCase):
    """
    A single-group WAL directory is taken over by a shared log that holds
    nothing for the group (migration from per-group logs, exported groups).
    """

    def test_import(self) -> None:
        """
        The group's term, vote and entries come from the old directory,
        whose segments are renamed so they are never read again; its other
        files (the incarnation) stay.
        """
        base = scratch(self)
        clock = Clock()
        disk = SimDisk(base, clock, random.Random(1))
        legacy = os.path.join(base, "wal", "p0")
        single = SharedWAL(
            legacy,
            clock,
            runner=SimRunner(clock, disk.rng, disk.files),
            spareRunner=SimRunner(clock, disk.rng, disk.files),
            writer=disk.files.writer(legacy, disk.segmentBytes),
        )
        old = single.group("", os.path.join(base, "snap", "p0"))

        def settle() -> None:
            for _ in range(30):
                clock.advance(0.01)

        d = old.load()
        settle()
        self.successResultOf(d)
        old.saveHardState(4, "n2")
        old.appendEntries(None, [Entry(4, 1, 0, b"old")])
        with open(os.path.join(legacy, "incarnation"), "w") as f:
            f.write('{"incarnation": 7}')
        closed = single.close()
        settle()
        self.successResultOf(closed)
        for _ in range(2):
            wal = disk.open()
            storage = wal.group("p0", os.path.join(base, "snap", "p0"), importFrom=legacy)
            loaded = storage.load()
            settle()
            recovered = self.successResultOf(loaded)
            self.assertEqual((recovered.term, recovered.votedFor), (4, "n2"))
            self.assertEqual(recovered.entries, [Entry(4, 1, 0, b"old")])
            names = sorted(os.listdir(legacy))
            self.assertEqual([n for n in names if n.endswith(".log")], [])
            self.assertTrue([n for n in names if n.endswith(".log.imported")])
            self.assertIn("incarnation", names)
            disk.crash()


class ToolTests(SynchronousTestCase):
    """
    C{python -m suite.raft wal}: list, export and drop groups offline.
    """

    def test_exportImportDrop(self) -> None:
        """
        An exported group is taken over by another node's log; a dropped
        group is gone from the log it was dropped from.
        """
        from suite.raft import walctl

        clock = Clock()
        base = scratch(self)
        disk = SimDisk(os.path.join(base, "a"), clock, random.Random(3))
        wal = disk.open()
        storages = {g: wal.group(g, disk.snapshotDir(g)) for g in ("g1", "g2")}
        loads = [s.load() for s in storages.values()]
        for _ in range(30):
            clock.advance(0.01)
        for d in loads:
            self.successResultOf(d)
        storages["g1"].saveHardState(7, "n1")
        storages["g1"].appendEntries(None, [Entry(7, 1, 0, b"kept")])
        storages["g2"].appendEntries(None, [Entry(1, 1, 0, b"other")])
        for _ in range(30):
            clock.advance(0.01)
        disk.crash()
        walDir = os.path.join(base, "a", "wal")
        listing = walctl.describe(walctl.readGroups(walDir))
        self.assertEqual(len(listing), 2)
        self.assertIn("g1\tterm=7\tvote=n1\tcompacted_to=0\tlast_index=1", listing)
        dest = os.path.join(base, "b", "wal", "g1")
        self.assertEqual(walctl.main(["export", walDir, "g1", dest]), 0)
        self.assertEqual(walctl.main(["export", walDir, "g1", dest]), 1)
        self.assertEqual(walctl.main(["export", walDir, "nope", dest + "x"]), 1)
        other = SimDisk(os.path.join(base, "b"), clock, random.Random(4))
        storage = other.open().group("g1", other.snapshotDir("g1"), importFrom=dest)
        loaded = storage.load()
        for _ in range(30):
            clock.advance(0.01)
        recovered = self.successResultOf(loaded)
        self.assertEqual((recovered.term, recovered.votedFor), (7, "n1"))
        self.assertEqual(recovered.entries, [Entry(7, 1, 0, b"kept")])
        self.assertEqual(walctl.main(["drop", walDir, "g2"]), 0)
        self.assertEqual(walctl.main(["drop", walDir, "g2"]), 1)
        self.assertEqual([line.split("\t")[0] for line in walctl.describe(walctl.readGroups(walDir))], ["g1"])
        self.assertEqual(walctl.main(["groups"]), 2)
        self.assertEqual(walctl.main(["groups", os.path.join(base, "missing")]), 1)

    def test_runningNodeRefused(self) -> None:
        """
        C{export} and C{drop} refuse a WAL that a running node holds (its
        daemon locks the directory); C{groups} only reads, and works.
        """
        from suite.raft import walctl
        from tests.test_fileutil import lockedElsewhere

        walDir = os.path.join(scratch(self), "wal")
        os.makedirs(walDir)
        pid = lockedElsewhere(self, walDir)
        errors = io.StringIO()
        self.patch(sys, "stderr", errors)
        self.assertEqual(walctl.main(["drop", walDir, "g1"]), 1)
        self.assertEqual(walctl.main(["export", walDir, "g1", walDir + "-out"]), 1)
        self.assertEqual(walctl.main(["groups", walDir]), 0)
        self.assertEqual(
            errors.getvalue().splitlines(),
            [f"suite.raft wal: {walDir} is in use by another process (pid {pid}): stop the node first"] * 2,
        )
        self.assertFalse(os.path.exists(walDir + "-out"))


# -- the multi-group simulation -------------------------------------------------


class Member:
    """
    One node: one simulated disk and shared WAL, one Raft node per group.
    """

    def __init__(self, sim: WALSim, name: str) -> None:
        self.sim, self.name = sim, name
        self.disk = SimDisk(os.path.join(sim.base, name), sim.clock, sim.rng)
        self.nodes: dict[str, RaftNode] = {}
        self.machines: dict[str, Recorder] = {}
        self.transports: dict[str, SimTransport] = {}
        self.up = False

    def start(self) -> None:
        sim = self.sim
        wal = self.disk.open()
        for g in sim.groups:
            machine = self.machines[g] = Recorder()
            transport = self.transports[g] = SimTransport(sim.networks[g], self.name)
            node = RaftNode(
                self.name,
                sim.clock,
                wal.group(g, self.disk.snapshotDir(g)),
                transport,
                machine,
                CONFIG,
                sim.settings,
                random.Random(sim.rng.random()),
            )
            self.nodes[g] = node
            # As a daemon does (the multi-Raft transport's paused groups):
            # no messages reach a node before it has loaded its storage.
            transport.up = False

            def loaded(_: object, g: str = g, transport: SimTransport = transport) -> None:
                transport.up = self.up and self.transports[g] is transport

            Deferred.fromCoroutine(node.start()).addCallbacks(loaded, sim.failed, errbackArgs=(self.name,))
        self.up = True

    def crash(self, torn: bool) -> bool:
        if not self.up:
            return False
        self.up = False
        for t in self.transports.values():
            t.up = False
        between = self.disk.crash(torn)
        for node in self.nodes.values():
            node.stop()
        return between


class WALSim:
    """
    C{size} nodes each hosting every one of C{groups}, over one seeded
    clock; nodes crash (some between a batch's write and its fsync, some
    with torn writes) and restart from their files.
    """

    def __init__(self, seed: int, base: str, size: int = 3, groups: int = 3) -> None:
        self.seed = seed
        self.base = base
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.settings = RaftSettings(snapshotThreshold=40)
        self.names = [f"n{i}" for i in range(size)]
        self.groups = [f"g{i}" for i in range(groups)]
        faults = Faults(drop=0.01)
        self.networks = {g: SimNetwork(self.clock, self.rng, faults) for g in self.groups}
        self.members = {n: Member(self, n) for n in self.names}
        self.acked: dict[str, list[bytes]] = {g: [] for g in self.groups}
        self.leaders: dict[tuple[str, int], str] = {}
        self.counter = 0
        self.errors: list[str] = []
        self.betweenCrashes = 0

    def failed(self, f: Any, name: str) -> None:
        self.errors.append(f"{name}: {f.getTraceback()}")

    def leader(self, group: str) -> RaftNode | None:
        best = None
        for m in self.members.values():
            n = m.nodes.get(group)
            if m.up and n is not None and n.leader is not None and (best is None or n.term > best.term):
                best = n
        return best

    def propose(self) -> None:
        for g in self.groups:
            leader = self.leader(g)
            if leader is None:
                continue
            self.counter += 1
            command = f"{g}:{self.counter}:".encode() + b"p" * self.rng.randint(0, 300)
            proposeRecorded(leader, command, self.acked[g])

    def check(self) -> None:
        if self.errors:
            raise AssertionError(f"seed {self.seed}: {self.errors[0]}")
        for g in self.groups:
            logs = []
            for m in self.members.values():
                n = m.nodes.get(g)
                if not m.up or n is None:
                    continue
                if n.leader is not None:
                    other = self.leaders.setdefault((g, n.term), m.name)
                    if other != m.name:
                        raise AssertionError(f"seed {self.seed}: two leaders of {g} in term {n.term}")
                logs.append(m.machines[g].applied)
            checkReplicasAgree(self.seed, g, logs)

    def run(self, seconds: float, step: float = 0.002) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            self.check()

    def runUntil(self, predicate: Any, seconds: float, step: float = 0.0002) -> bool:
        for _ in range(int(seconds / step)):
            if predicate():
                return True
            self.clock.advance(step)
            self.check()
        return bool(predicate())

    def scenario(self) -> None:
        plan = random.Random(self.seed * 7919 + 1)
        for m in self.members.values():
            m.start()
        self.run(1.0)
        for _ in range(8):
            for _ in range(8):
                self.propose()
                self.run(0.02)
            victim = self.members[plan.choice(self.names)]
            what = plan.choice(["between", "between", "torn", "anytime", "nothing"])
            if what in ("between", "torn") and victim.up:
                # Crash while a batch of this node is written but not synced.
                writer = victim.disk.runners[0]
                self.propose()
                self.runUntil(lambda w=writer: w.syncing, 0.5)
                self.betweenCrashes += victim.crash(torn=what == "torn")
            elif what == "anytime":
                victim.crash(torn=plan.random() < 0.5)
            self.propose()
            self.run(0.3)
            for m in self.members.values():
                if not m.up and plan.random() < 0.6:
                    m.start()
        for m in self.members.values():
            if not m.up:
                m.start()
        self.run(2.0)
        for _ in range(5):
            self.propose()
            self.run(0.05)
        self.run(2.0)
        for g in self.groups:
            logs = [m.machines[g].applied for m in self.members.values()]
            for other in logs[1:]:
                assert logs[0] == other, f"seed {self.seed}: replicas of {g} differ after healing"
            missing = [c[:20] for c in self.acked[g] if c not in set(logs[0])]
            assert not missing, f"seed {self.seed}: acknowledged commands lost in {g}: {missing[:3]}"
            assert len(logs[0]) == len(set(logs[0])), f"seed {self.seed}: duplicates in {g}"
            assert self.acked[g], f"seed {self.seed}: nothing committed in {g}"


class SimulationTests(SynchronousTestCase):
    """
    Seeded multi-group scenarios on shared WALs with crashes at fsync time.
    """

    def seeds(self) -> list[int]:
        if "WAL_SEED" in os.environ:
            return [int(os.environ["WAL_SEED"])]
        return list(range(int(os.environ.get("WAL_SCENARIOS", "6"))))

    def test_acknowledgedWritesSurviveCrashes(self) -> None:
        """
        Across seeds: replicas never diverge, no two leaders share a term,
        every acknowledged command survives crashes (including crashes
        between a batch's write and its fsync, and torn writes), and the
        groups' appends share fsyncs.
        """
        between = 0
        for seed in self.seeds():
            sim = WALSim(seed, scratch(self))
            sim.scenario()
            between += sim.betweenCrashes
        self.assertGreater(between, 0)

    def test_groupsShareFsyncs(self) -> None:
        """
        With three groups busy on every node, a node's batches (one fsync
        each) are fewer than the records its groups write.
        """
        sim = WALSim(1234, scratch(self))
        for m in sim.members.values():
            m.start()
        sim.run(1.0)
        records = {}
        for m in sim.members.values():
            assert m.disk.wal is not None
            records[m.name] = 0
            submit = m.disk.wal.submit

            def counting(item: Any, name: str = m.name, submit: Any = submit) -> Deferred[None]:
                records[name] += 1
                return submit(item)

            m.disk.wal.submit = counting  # type: ignore[method-assign]
        before = {m.name: m.disk.wal.batches for m in sim.members.values() if m.disk.wal is not None}
        for _ in range(50):
            sim.propose()
            sim.run(0.01)
        for m in sim.members.values():
            assert m.disk.wal is not None
            batches = m.disk.wal.batches - before[m.name]
            self.assertGreater(records[m.name], 0)
            self.assertLess(batches, records[m.name], m.name)
