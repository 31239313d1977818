"""
A node still loading its durable state answers nothing from the network:
its term, vote and log are unknown until the load completes, so it must
neither vote, adopt a term or leader, write to storage, nor acknowledge.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.raft.kv import KeyValueStateMachine
from suite.raft.messages import (
    AppendEntries,
    Configuration,
    Entry,
    Heartbeat,
    InstallSnapshot,
    Message,
    RequestVote,
    SnapshotMeta,
    TimeoutNow,
)
from suite.raft.node import NotLeader, RaftNode
from suite.raft.storage import MemoryStorage, Recovered
from tests.raft.test_roles import NullTransport
from tests.raft.test_sharedwal import scratch
from tests.raft.walsim import SimDisk


class HeldStorage(MemoryStorage):
    """
    L{MemoryStorage} whose L{load} waits until the test releases it, and
    which records every write asked of it.
    """

    def __init__(self, state: Recovered) -> None:
        super().__init__()
        self.state = state
        self.loading: Deferred[Recovered] | None = None
        self.writes: list[str] = []

    def load(self) -> Deferred[Recovered]:
        self.loading = Deferred()
        return self.loading

    def release(self) -> None:
        s = self.state
        assert self.loading is not None
        self.loading.callback(Recovered(s.term, s.votedFor, s.snapshot, list(s.entries)))

    def saveHardState(self, term: int, votedFor: str | None) -> Deferred[None]:
        self.writes.append(f"hardState:{term}:{votedFor}")
        return super().saveHardState(term, votedFor)

    def appendEntries(self, truncateAfter: int | None, entries: Sequence[Entry]) -> Deferred[None]:
        self.writes.append(f"append:{truncateAfter}:{len(entries)}")
        return super().appendEntries(truncateAfter, entries)

    def saveSnapshot(self, meta: SnapshotMeta, data: bytes) -> Deferred[None]:
        self.writes.append(f"snapshot:{meta.index}")
        return super().saveSnapshot(meta, data)

    def sync(self) -> Deferred[None]:
        return succeed(None)


class LoadingNodeTests(SynchronousTestCase):
    """
    Node "a" of {a, b, c} has voted for "c" in term 5 and holds two entries
    of term 4; its load is held while messages arrive.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.storage = HeldStorage(Recovered(5, "c", None, [Entry(4, 1), Entry(4, 2)]))
        self.transport = NullTransport()
        self.node = RaftNode(
            "a",
            self.clock,
            self.storage,
            self.transport,
            KeyValueStateMachine(),
            Configuration(frozenset({"a", "b", "c"})),
            rng=random.Random(1),
        )
        self.started = Deferred.fromCoroutine(self.node.start())
        self.addCleanup(self.node.stop)

    def deliver(self, *messages: Message) -> None:
        for m in messages:
            self.node.receive(m)
        self.clock.advance(0)

    def assertUntouched(self) -> None:
        self.assertEqual(self.storage.writes, [])
        self.assertEqual(self.transport.sent, [])
        self.assertEqual((self.node.term, self.node.votedFor, self.node.leaderId), (0, None, None))
        self.assertEqual(self.node.roleName, "loading")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noVoteBeforeLoaded(self) -> None:
        """
        A vote request for the term the node already voted in (for another
        candidate) is not granted while loading, nor after: the vote is
        the one on disk.
        """
        self.deliver(
            RequestVote("b", "a", 5, 9, 5, preVote=True),
            RequestVote("b", "a", 5, 9, 5),
            RequestVote("b", "a", 6, 9, 5, transfer=True),
        )
        self.assertUntouched()
        self.storage.release()
        self.successResultOf(self.started)
        self.assertEqual((self.node.term, self.node.votedFor), (5, "c"))
        self.assertEqual(self.storage.writes, [])

    def test_noAppendBeforeLoaded(self) -> None:
        """
        AppendEntries, heartbeats, snapshots and TimeoutNow from a leader
        are dropped while loading: no storage write, no acknowledgement,
        no leader adopted.
        """
        meta = SnapshotMeta(9, 6, Configuration(frozenset({"a", "b", "c"})))
        self.deliver(
            AppendEntries("b", "a", 6, 0, 0, (Entry(6, 1),), 1),
            Heartbeat("b", "a", 6, 1, 1),
            InstallSnapshot("b", "a", 6, meta, 0, b"", True, 0),
            TimeoutNow("b", "a", 6),
        )
        self.assertUntouched()
        self.storage.release()
        self.successResultOf(self.started)
        self.assertEqual(self.storage.writes, [])
        self.assertEqual([e.term for e in self.node.log.slice(1, 3, 1 << 20)], [4, 4])
        self.assertEqual((self.node.term, self.node.roleName, self.node.commitIndex), (5, "follower", 0))

    def test_clientsRefusedWhileLoading(self) -> None:
        """
        Client requests fail with NotLeader, saying the node is loading;
        bootstrapping is refused.
        """
        error = self.failureResultOf(self.node.propose(b"x"), NotLeader).value
        self.assertIn("loading", str(error))
        self.failureResultOf(self.node.readIndex(), NotLeader)
        self.failureResultOf(self.node.changeMembership("addVoter", "d"), NotLeader)
        self.failureResultOf(self.node.transferLeadership(), NotLeader)
        self.assertFalse(self.node.bootstrap())
        self.assertUntouched()

    def test_servesOnceLoaded(self) -> None:
        """
        Once loaded the node answers: its election timer runs and a vote
        request for a later term is granted and made durable.
        """
        self.storage.release()
        self.successResultOf(self.started)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1)  # past the lease a restarted node honours
        self.deliver(RequestVote("b", "a", 7, 2, 4))
        self.assertEqual((self.node.term, self.node.votedFor), (7, "b"))
        self.assertIn("hardState:7:b", self.storage.writes)

    def test_stoppedWhileLoading(self) -> None:
        """
        A node stopped before its load completes stays stopped: nothing is
        started once the load fires.
        """
        self.node.stop()
        self.storage.release()
        self.successResultOf(self.started)
        self.assertEqual(self.node.roleName, "stopped")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.storage.writes, [])


class LoadingOnTheWALTests(SynchronousTestCase):
    """
    The same on the real shared WAL (files in a scratch directory, storage
    threads simulated on a clock that only moves when the test says): what
    arrives while the WAL is being read back writes no record.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.disk = SimDisk(scratch(self), self.clock, random.Random(3))
        wal = self.disk.open()
        storage = wal.group("p0", self.disk.snapshotDir("p0"))
        loaded = storage.load()
        self.settle()
        self.successResultOf(loaded)
        storage.saveHardState(5, "c")
        storage.appendEntries(None, [Entry(4, 1), Entry(4, 2)])
        closed = wal.close()
        self.settle()
        self.successResultOf(closed)

    def settle(self) -> None:
        for _ in range(50):
            self.clock.advance(0.01)

    def reopen(self) -> Recovered:
        wal = self.disk.open()
        loaded = wal.group("p0", self.disk.snapshotDir("p0")).load()
        self.settle()
        recovered = self.successResultOf(loaded)
        closed = wal.close()
        self.settle()
        self.successResultOf(closed)
        return recovered

    def test_nothingWrittenWhileLoading(self) -> None:
        """
        Vote requests and appends delivered before the WAL has been read
        back are dropped: no record is queued, the node starts from the
        term, vote and entries on disk, and the disk still holds them.
        """
        wal = self.disk.open()
        transport = NullTransport()
        node = RaftNode(
            "a",
            self.clock,
            wal.group("p0", self.disk.snapshotDir("p0")),
            transport,
            KeyValueStateMachine(),
            Configuration(frozenset({"a", "b", "c"})),
            rng=random.Random(1),
        )
        started = Deferred.fromCoroutine(node.start())
        for m in (
            RequestVote("b", "a", 5, 9, 5),
            RequestVote("b", "a", 6, 9, 5, preVote=True),
            AppendEntries("b", "a", 6, 0, 0, (Entry(6, 1),), 1),
            Heartbeat("b", "a", 6, 1, 1),
        ):
            node.receive(m)
        self.assertEqual((wal._queue.items, transport.sent, node.term), ([], [], 0))
        self.settle()
        self.successResultOf(started)
        self.assertEqual((node.term, node.votedFor, node.log.lastIndex(), wal.batches), (5, "c", 2, 0))
        node.stop()
        closed = wal.close()
        self.settle()
        self.successResultOf(closed)
        recovered = self.reopen()
        self.assertEqual((recovered.term, recovered.votedFor), (5, "c"))
        self.assertEqual(recovered.entries, [Entry(4, 1), Entry(4, 2)])
