"""
Snapshots encoded off the reactor thread (L{suite.raft.snapshotter}): the
machine alone (every input in every state, over a recording host), then on
a one-voter L{RaftNode} whose encodings finish when the test says so.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer, implementer_only
from zope.interface.verify import verifyObject

from suite.raft.interfaces import IRaftSnapshotCapture, IRaftStateMachine
from suite.raft.messages import NORMAL, Configuration, Entry, SnapshotMeta
from suite.raft.node import RaftNode
from suite.raft.sessions import SessionApplier
from suite.raft.settings import RaftSettings
from suite.raft.snapshot import binHeader
from suite.raft.snapshotter import SnapshotCore, SnapshotInputs, Snapshotter, newSnapshotter
from suite.raft.storage import MemoryStorage
from tests.raft.test_roles import NullTransport

META = SnapshotMeta(7, 2, Configuration(frozenset({"a"})))


def stateOf(inputs: SnapshotInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class Host:
    """
    Records what the machine asks of its host; encodings wait in C{pending}.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.pending: list[Deferred[bytes]] = []
        self.isDue = True
        self.accept = True
        self.machine = Snapshotter(SnapshotCore(self, 5, self.run))

    def due(self, threshold: int) -> SnapshotMeta | None:
        self.events.append(f"due {threshold}")
        return META if self.isDue else None

    def capture(self) -> Callable[[], bytes]:
        self.events.append("capture")
        return lambda: b"state"

    def install(self, meta: SnapshotMeta, data: bytes) -> bool:
        self.events.append(f"install {meta.index} {data!r}")
        return self.accept

    def run(self, encode: Callable[[], bytes]) -> Deferred[bytes]:
        self.events.append(f"run {encode()!r}")
        d: Deferred[bytes] = Deferred()
        self.pending.append(d)
        return d


#: How to reach each state from a new machine.
PATHS: dict[str, tuple[Callable[[Host], None], ...]] = {
    "Idle": (),
    "Encoding": (lambda h: h.machine.applied(7),),
}

#: One call of each input (the machine's whole alphabet), returning what it
#: answered.
CALLS: dict[str, Callable[[Host], object]] = {
    "applied": lambda h: h.machine.applied(9),
    "begin": lambda h: h.machine.begin(META),
    "encoded": lambda h: h.machine.encoded(b"bytes"),
    "failed": lambda h: h.machine.failed(Failure(RuntimeError("disk on fire"))),
    "pending": lambda h: h.machine.pending(),
}

#: (state, input) -> (events, answer, next state).
TABLE: dict[tuple[str, str], tuple[list[str], object, str]] = {
    ("Idle", "applied"): (["due 5", "capture", "run b'state'"], None, "Encoding"),
    ("Idle", "begin"): (["capture", "run b'state'"], None, "Encoding"),
    ("Idle", "encoded"): ([], None, "Idle"),
    ("Idle", "failed"): ([], None, "Idle"),
    ("Idle", "pending"): ([], None, "Idle"),
    ("Encoding", "applied"): ([], None, "Encoding"),
    ("Encoding", "begin"): ([], None, "Encoding"),
    ("Encoding", "encoded"): (["install 7 b'bytes'"], None, "Idle"),
    ("Encoding", "failed"): ([], None, "Idle"),
    ("Encoding", "pending"): ([], 7, "Encoding"),
}


class MachineTests(SynchronousTestCase):
    def test_everyInputInEveryState(self) -> None:
        """
        Every input in every state: what the host is asked, the answer and
        the next state, as the table says.
        """
        self.assertEqual(set(TABLE), {(s, i) for s in PATHS for i in CALLS})
        for (state, name), (events, answer, after) in TABLE.items():
            host = Host()
            for step in PATHS[state]:
                step(host)
            self.assertEqual(stateOf(host.machine), state)
            del host.events[:]
            self.assertEqual(CALLS[name](host), answer, (state, name))
            self.assertEqual(host.events, events, (state, name))
            self.assertEqual(stateOf(host.machine), after, (state, name))
        self.flushLoggedErrors(RuntimeError)

    def test_notDue(self) -> None:
        """
        Applied entries below the threshold capture nothing.
        """
        host = Host()
        host.isDue = False
        host.machine.applied(3)
        self.assertEqual((host.events, stateOf(host.machine)), (["due 5"], "Idle"))

    def test_counts(self) -> None:
        """
        Installed and discarded snapshots are counted; a failed encoding is
        logged and the next one starts afresh.
        """
        host = Host()
        core: SnapshotCore = host.machine.__automat_core__  # type: ignore[attr-defined]
        host.machine.applied(7)
        host.pending.pop().callback(b"one")
        host.accept = False
        host.machine.applied(14)
        host.pending.pop().callback(b"two")
        host.machine.applied(21)
        host.pending.pop().errback(RuntimeError("no"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual((core.installed, core.discarded), (1, 1))
        host.machine.applied(28)
        self.assertEqual(host.machine.pending(), 7)

    def test_runnerRaises(self) -> None:
        """
        A runner that raises is a failed encoding, not a stuck machine.
        """
        host = Host()

        def broken(encode: Callable[[], bytes]) -> Deferred[bytes]:
            raise RuntimeError("no threads")

        machine = Snapshotter(SnapshotCore(host, 5, broken))
        machine.applied(7)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(machine.pending())


@implementer(IRaftStateMachine, IRaftSnapshotCapture)
class Journal:
    """
    A state machine holding every command applied, capturing by copy.
    """

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.captures = 0

    def apply(self, index: int, command: bytes) -> object:
        self.commands.append(command)
        return len(self.commands)

    def snapshot(self) -> bytes:
        packed: bytes = msgpack.packb(self.commands)
        return packed

    def restore(self, data: bytes) -> None:
        self.commands = msgpack.unpackb(data)

    def captureSnapshot(self) -> Callable[[], bytes]:
        self.captures += 1
        frozen = self.commands[:]
        return lambda: msgpack.packb(frozen)


class NodeTests(SynchronousTestCase):
    """
    A one-voter node snapshotting every 5 applied entries in a "thread"
    the test finishes; its own snapshot threshold is 40 (the backstop).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.storage = MemoryStorage()
        self.journal = Journal()
        self.encodings: list[tuple[Callable[[], bytes], Deferred[bytes]]] = []
        self.node = self.startNode(self.journal)
        self.clock.advance(0.3)
        self.assertIsNotNone(self.node.leader)

    def startNode(self, machine: Any) -> RaftNode:
        node = RaftNode(
            "a",
            self.clock,
            self.storage,
            NullTransport(),
            machine,
            Configuration(frozenset({"a"})),
            RaftSettings(snapshotThreshold=40),
            random.Random(1),
        )
        self.snapshots = newSnapshotter(node, 5, self.encodeLater)
        self.successResultOf(Deferred.fromCoroutine(node.start()))
        return node

    def tearDown(self) -> None:
        self.node.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def encodeLater(self, encode: Callable[[], bytes]) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.encodings.append((encode, d))
        return d

    def finish(self) -> None:
        encode, d = self.encodings.pop(0)
        d.callback(encode())

    def propose(self, *commands: bytes) -> None:
        for c in commands:
            self.node.propose(c)
        self.clock.advance(0)

    def test_appliedWhileEncoding(self) -> None:
        """
        The capture is taken at the threshold; entries applied while it
        encodes are applied (not lost) and stay in the log; once encoded,
        the log is compacted at the capture's index and the saved snapshot
        holds the state of that index, not the later entries.  A node
        restarted from the storage holds everything.
        """
        verifyObject(IRaftSnapshotCapture, self.journal)
        # Index 1 is the leader's no-op: four commands reach index 5.
        self.propose(b"c1", b"c2", b"c3", b"c4")
        self.assertEqual(self.node.lastApplied, 5)
        self.assertEqual(self.snapshots.pending(), 5)
        self.assertEqual(self.node.log.snapshotIndex, 0)
        self.propose(b"c5", b"c6", b"c7")
        self.assertEqual(self.journal.commands[-1], b"c7")
        self.assertEqual(self.journal.captures, 1)
        self.finish()
        self.assertIsNone(self.snapshots.pending())
        self.assertEqual(self.node.log.snapshotIndex, 5)
        self.assertEqual([e.index for e in self.node.log.entries()], [6, 7, 8])
        snap = self.storage.readSnapshot()
        assert snap is not None
        meta, data = snap
        self.assertEqual((meta.index, meta.term), (5, self.node.term))
        copy = SessionApplier(Journal())
        copy.restore(data)
        self.assertEqual(copy.stateMachine.commands, [b"c1", b"c2", b"c3", b"c4"])  # type: ignore[attr-defined]
        self.node.stop()
        restarted = Journal()
        self.node = self.startNode(restarted)
        self.clock.advance(0.3)
        self.assertEqual(restarted.commands, [b"c1", b"c2", b"c3", b"c4", b"c5", b"c6", b"c7"])

    def test_nextSnapshotAfterEncoding(self) -> None:
        """
        One encoding at a time: the next capture waits for the first to
        finish and for the threshold after its index.
        """
        self.propose(*[b"x"] * 4)
        self.propose(*[b"x"] * 8)
        self.assertEqual(len(self.encodings), 1)
        self.finish()
        self.assertEqual(self.node.log.snapshotIndex, 5)
        self.propose(b"y")
        self.assertEqual(self.snapshots.pending(), 14)
        self.finish()
        self.assertEqual(self.node.log.snapshotIndex, 14)

    def test_nodeMovedPast(self) -> None:
        """
        An encoding that finishes after the node's own (backstop) snapshot
        went past its index is dropped: the log keeps the newer point.
        """
        self.propose(*[b"x"] * 4)
        self.assertEqual(self.snapshots.pending(), 5)
        self.propose(*[b"z"] * 40)
        self.assertEqual(self.node.log.snapshotIndex, 45)
        self.finish()
        core: SnapshotCore = self.snapshots.__automat_core__  # type: ignore[attr-defined]
        self.assertEqual((core.installed, core.discarded), (0, 1))
        self.assertEqual(self.node.log.snapshotIndex, 45)
        snap = self.storage.readSnapshot()
        assert snap is not None
        self.assertEqual(snap[0].index, 45)

    def test_stoppedWhileEncoding(self) -> None:
        """
        A node stopped while its snapshot encodes does not take it.
        """
        self.propose(*[b"x"] * 4)
        self.node.stop()
        self.finish()
        self.assertEqual(self.node.log.snapshotIndex, 0)
        self.assertIsNone(self.storage.readSnapshot())

    def test_withoutCapture(self) -> None:
        """
        A state machine without L{IRaftSnapshotCapture} is snapshotted at
        the capture, on the reactor thread; the rest is the same.
        """

        @implementer_only(IRaftStateMachine)
        class Plain(Journal):
            def captureSnapshot(self) -> Callable[[], bytes]:
                raise AssertionError("not a capturing machine")

        self.node.stop()
        plain = Plain()
        self.node = self.startNode(plain)
        self.clock.advance(0.3)
        self.propose(*[b"p"] * 4)
        self.propose(b"later")
        self.finish()
        snap = self.storage.readSnapshot()
        assert snap is not None
        copy = SessionApplier(Journal())
        copy.restore(snap[1])
        self.assertEqual(copy.stateMachine.commands, [b"p"] * 4)  # type: ignore[attr-defined]

    def test_synchronousRunner(self) -> None:
        """
        A runner that encodes at once (a reactor without threads) takes
        the snapshot in the same turn.
        """
        self.node.stop()
        self.storage = MemoryStorage()
        node = RaftNode(
            "a",
            self.clock,
            self.storage,
            NullTransport(),
            Journal(),
            Configuration(frozenset({"a"})),
            RaftSettings(snapshotThreshold=40),
            random.Random(1),
        )
        newSnapshotter(node, 5, lambda encode: succeed(encode()))
        self.successResultOf(Deferred.fromCoroutine(node.start()))
        self.node = node
        self.clock.advance(0.3)
        self.propose(*[b"s"] * 4)
        self.assertEqual(node.log.snapshotIndex, 5)


class FormatTests(SynchronousTestCase):
    def test_binHeader(self) -> None:
        """
        The header plus the bytes is msgpack's encoding of the bytes, at
        every header width.
        """
        for n in (0, 1, 255, 256, 65535, 65536, 70000):
            data = b"x" * n
            self.assertEqual(binHeader(n) + data, msgpack.packb(data, use_bin_type=True), n)

    def test_sessionsFormat(self) -> None:
        """
        A session applier's snapshot is the msgpack pair [sessions, state].
        """
        applier = SessionApplier(Journal())
        applier.apply(Entry(1, 1, NORMAL, b"c", "client", 3))
        data = applier.snapshot()
        self.assertEqual(data, msgpack.packb([[["client", 3, 1]], msgpack.packb([b"c"])], use_bin_type=True))
