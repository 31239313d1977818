"""
Raft group ids (L{suite.raft.groupid}): the wire format, refusing another
group's messages, adopting a leader's id, binding the id a log commits,
storage from before group ids and the group file.  The seeded simulations
of two groups that formed apart and then meet (L{tests.raft.groupsim}) are
the C{groupsMeet} family of tests/raft/test_simulation.py.
"""

from __future__ import annotations

import os
import random
from typing import Any, cast

import msgpack
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.raft.groupid import (
    FileGroupStore,
    GroupFileError,
    MemoryGroupStore,
    entryGroup,
    formatGroup,
    noopData,
    parseGroup,
    readGroupFile,
    writeGroupFile,
)
from suite.raft.interfaces import IRaftGroupStore, IRaftTransport
from suite.raft.membership import MembershipError
from suite.raft.messages import (
    NOOP,
    NORMAL,
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    GroupMismatch,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    MalformedMessage,
    Message,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
    decodeMessage,
    encodeMessage,
)
from suite.raft.node import RaftNode
from suite.raft.storage import MemoryStorage
from tests.support.raftsim import Recorder, Simulation

G1 = 0x1111_2222_3333_4444
G2 = 0xAAAA_BBBB_CCCC_DDDD


@implementer(IRaftTransport)
class ListTransport:
    """
    Records what a node sends.
    """

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.receiver: Any = None

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def setReceiver(self, receiver: Any) -> None:
        self.receiver = receiver

    def updatePeers(self, addresses: Any) -> None:
        pass


class SlowGroupStore(MemoryGroupStore):
    """
    A group store whose writes become durable when the test says so.
    """

    def __init__(self, group: int = 0) -> None:
        super().__init__(group)
        self.pending: list[Deferred[None]] = []

    def save(self, group: int) -> Deferred[None]:
        self.group = group
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


def startedNode(
    group: int = 0,
    config: Configuration | None = None,
    storage: MemoryStorage | None = None,
    store: MemoryGroupStore | None = None,
) -> tuple[RaftNode, ListTransport, MemoryGroupStore, Clock]:
    clock = Clock()
    transport = ListTransport()
    store = store if store is not None else MemoryGroupStore(group)
    node = RaftNode(
        "n1",
        clock,
        storage or MemoryStorage(),
        transport,
        Recorder(),
        config if config is not None else Configuration(frozenset({"n1", "n2", "n3"})),
        rng=random.Random(1),
        groupStore=store,
    )
    started = Deferred.fromCoroutine(node.start())
    clock.advance(0)
    failures: list[Any] = []
    started.addErrback(failures.append)
    assert not failures, failures[0].getTraceback()
    return node, transport, store, clock


def captureLog(test: SynchronousTestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class WireTests(SynchronousTestCase):
    """
    The group id on the wire: last, left out while 0.
    """

    MESSAGES: list[Message] = [
        RequestVote("a", "b", 3, 4, 2, True, False),
        RequestVoteResponse("b", "a", 3, True),
        AppendEntries("a", "b", 3, 4, 2, (Entry(3, 5, NORMAL, b"x"),), 4),
        AppendEntriesResponse("b", "a", 3, True, 9),
        Heartbeat("a", "b", 3, 4, 7),
        HeartbeatResponse("b", "a", 3, 7, 9),
        InstallSnapshot("a", "b", 3, SnapshotMeta(4, 2, Configuration(frozenset({"a"}))), 0, b"s", True, 1),
        InstallSnapshotResponse("b", "a", 3, 4, 1, True),
        TimeoutNow("a", "b", 3),
        GroupMismatch("b", "a", 3, "node b belongs to another group"),
    ]

    def test_roundTrip(self) -> None:
        """
        Every message decodes to itself with and without a group id; with
        one, it is the last element and one element longer.
        """
        for message in self.MESSAGES:
            stamped = type(message)(**{**message.__dict__, "group": G1})
            self.assertEqual(decodeMessage(encodeMessage(message)), message)
            self.assertEqual(decodeMessage(encodeMessage(stamped)), stamped)
            self.assertEqual(decodeMessage(encodeMessage(stamped)).group, G1)
            raw = msgpack.unpackb(encodeMessage(stamped))
            self.assertEqual(raw[-1], G1)

    def test_withoutGroupIsTheEarlierFormat(self) -> None:
        """
        Without a group id, messages are encoded as nodes without group ids
        encode them (an AppendEntries has eight fields).
        """
        raw = msgpack.unpackb(encodeMessage(self.MESSAGES[2]))
        self.assertEqual(len(raw), 9)
        raw = msgpack.unpackb(encodeMessage(AppendEntriesResponse("b", "a", 3, True, 9)))
        self.assertEqual(len(raw), 10)

    def test_badGroup(self) -> None:
        """
        A group id that is 0, negative, too large or not an integer, and an
        overlong reason, are malformed.
        """
        for message in (self.MESSAGES[2], self.MESSAGES[0], self.MESSAGES[5]):
            raw = list(msgpack.unpackb(encodeMessage(type(message)(**{**message.__dict__, "group": G1}))))
            for bad in (0, -1, "g", 1.5):
                raw[-1] = bad
                self.assertRaises(MalformedMessage, decodeMessage, msgpack.packb(raw))
        mismatch = GroupMismatch("b", "a", 3, "x" * 513, group=G1)
        self.assertRaises(MalformedMessage, decodeMessage, encodeMessage(mismatch))

    def test_configurationGroup(self) -> None:
        """
        A configuration records a group id (in snapshots) and decodes it;
        without one it keeps its earlier encoding.
        """
        plain = Configuration(frozenset({"a"}), addresses=(("a", "h:1"),))
        stamped = Configuration(frozenset({"a"}), addresses=(("a", "h:1"),), group=G2)
        self.assertEqual(Configuration.decode(stamped.encode()), stamped)
        self.assertEqual(Configuration.decode(plain.encode()), plain)
        self.assertEqual(len(msgpack.unpackb(plain.encode())), 3)
        raw = msgpack.unpackb(stamped.encode())
        raw[-1] = -5
        self.assertRaises(MalformedMessage, Configuration.decode, msgpack.packb(raw))

    def test_noopData(self) -> None:
        """
        A leader's no-op carries a group id; other entries carry none.
        """
        self.assertEqual(entryGroup(Entry(1, 1, NOOP, noopData(G1))), G1)
        self.assertEqual(entryGroup(Entry(1, 1, NOOP)), 0)
        self.assertEqual(entryGroup(Entry(1, 1, NORMAL, noopData(G1))), 0)
        self.assertEqual(entryGroup(Entry(1, 1, NOOP, b"raft-group:")), 0)
        self.assertEqual(parseGroup(formatGroup(G2)), G2)
        self.assertEqual((formatGroup(0), parseGroup("zz"), parseGroup("x" * 16)), ("", 0, 0))


class RefusalTests(SynchronousTestCase):
    """
    A node with a group id and the messages of another group.
    """

    def test_refusesEveryRequest(self) -> None:
        """
        Vote requests, appends, heartbeats, snapshots and TimeoutNow from
        another group, even of a higher term, change nothing: no term, vote
        or leader is taken, and each is answered with a reason.
        """
        node, transport, _, _ = startedNode(G1)
        meta = SnapshotMeta(9, 9, Configuration(frozenset({"x"})))
        for m in (
            RequestVote("n2", "n1", 50, 100, 50, group=G2),
            RequestVote("n2", "n1", 50, 100, 50, preVote=True, group=G2),
            AppendEntries("n2", "n1", 50, 0, 0, (Entry(50, 1, NORMAL, b"x"),), 1, group=G2),
            Heartbeat("n2", "n1", 50, 1, group=G2),
            InstallSnapshot("n2", "n1", 50, meta, 0, b"", True, 0, group=G2),
            TimeoutNow("n2", "n1", 50, group=G2),
        ):
            transport.sent.clear()
            node.receive(m)
            self.assertEqual((node.term, node.votedFor, node.leaderId), (0, None, None), m)
            self.assertEqual(node.log.lastIndex(), 0)
            self.assertEqual(node.roleName, "follower")
            [reply] = transport.sent
            assert isinstance(reply, GroupMismatch)
            self.assertEqual((reply.dst, reply.group, reply.term), ("n2", G1, 0))
            self.assertIn(formatGroup(G1), reply.reason)
            self.assertIn(formatGroup(G2), reply.reason)
        self.assertEqual(node.foreignPeers, {"n2": G2})
        self.assertEqual(node.status()["foreignPeers"], {"n2": formatGroup(G2)})
        self.assertEqual(node.status()["group"], formatGroup(G1))

    def test_responsesAndMismatchesNotAnswered(self) -> None:
        """
        Another group's responses are dropped unanswered, and a refusal is
        never answered nor its term taken: no ping-pong between groups.
        """
        node, transport, _, _ = startedNode(G1)
        node.receive(AppendEntriesResponse("n2", "n1", 40, True, 3, group=G2))
        node.receive(GroupMismatch("n3", "n1", 60, "no", group=G2))
        self.assertEqual(transport.sent, [])
        self.assertEqual(node.term, 0)
        self.assertEqual(node.foreignPeers, {"n2": G2, "n3": G2})

    def test_sameGroupAndNoGroupAccepted(self) -> None:
        """
        Messages of the node's own group, and of nodes without a group id
        (older nodes, members not yet bound), are handled as ever.
        """
        node, transport, _, _ = startedNode(G1)
        node.receive(Heartbeat("n2", "n1", 2, 0, group=G1))
        self.assertEqual((node.term, node.leaderId), (2, "n2"))
        node.receive(Heartbeat("n3", "n1", 3, 0))
        self.assertEqual((node.term, node.leaderId), (3, "n3"))
        self.assertEqual(node.foreignPeers, {})
        self.assertTrue(all(m.group == G1 for m in transport.sent))

    def test_logRateLimited(self) -> None:
        """
        One log line per foreign group and minute, naming both groups.
        """
        events = captureLog(self)
        node, _, _, clock = startedNode(G1)

        def lines() -> list[dict[str, Any]]:
            return [e for e in events if "another Raft group" in e.get("log_format", "")]

        for _ in range(5):
            node.receive(Heartbeat("n2", "n1", 5, 0, group=G2))
            clock.advance(1)
        self.assertEqual(len(lines()), 1)
        self.assertEqual((lines()[0]["mine"], lines()[0]["other"]), (formatGroup(G1), formatGroup(G2)))
        clock.advance(60)
        node.receive(Heartbeat("n3", "n1", 5, 0, group=G2))
        self.assertEqual(len(lines()), 2)

    def test_leaderNeverAddsForeignMember(self) -> None:
        """
        A leader refuses to add a node known to be in another group, and a
        learner being caught up fails once it refuses the leader's appends.
        """
        node, transport, _, clock = startedNode(G1, Configuration(frozenset({"n1"})))
        clock.advance(2)
        self.assertIsNotNone(node.leader)
        clock.advance(0.1)
        adding = node.changeMembership("addVoter", "n4")
        clock.advance(0.1)
        node.receive(GroupMismatch("n4", "n1", 0, "other group", group=G2))
        self.failureResultOf(adding, MembershipError)
        again = self.failureResultOf(node.changeMembership("addLearner", "n4"), MembershipError)
        self.assertIn(formatGroup(G2), again.getErrorMessage())

    def test_foreignForgotten(self) -> None:
        """
        A peer counts as foreign for a minute after its last word of
        another group (it may come back new, its data moved aside, to be
        added), and no longer once it speaks for this group.
        """
        node, _, _, clock = startedNode(G1)
        node.receive(Heartbeat("n2", "n1", 5, 0, group=G2))
        node.receive(Heartbeat("n3", "n1", 5, 0, group=G2))
        clock.advance(30)
        node.receive(HeartbeatResponse("n3", "n1", 5, group=G2))
        self.assertEqual(node.foreignPeers, {"n2": G2, "n3": G2})
        clock.advance(31)
        self.assertEqual(node.foreignPeers, {"n3": G2})
        node.receive(HeartbeatResponse("n3", "n1", 0, group=G1))
        self.assertEqual(node.foreignPeers, {})


class AdoptionTests(SynchronousTestCase):
    """
    Nodes without a group id take one.
    """

    def test_joinerAdoptsLeaderGroup(self) -> None:
        """
        A fresh node takes the group id of the leader whose appends it
        accepts, acknowledges only once the id is durable, and then refuses
        the other group.
        """
        store = SlowGroupStore()
        node, transport, _, _ = startedNode(config=Configuration(frozenset()), store=store)
        node.receive(AppendEntries("L", "n1", 1, 0, 0, (Entry(1, 1, NOOP, noopData(G1)),), 0, group=G1))
        self.assertEqual(node.groupId, G1)
        self.assertEqual(store.group, G1)
        self.assertEqual(transport.sent, [])
        store.pending[0].callback(None)
        [reply] = transport.sent
        assert isinstance(reply, AppendEntriesResponse)
        self.assertTrue(reply.success)
        self.assertEqual(reply.group, G1)
        node.receive(Heartbeat("M", "n1", 9, 1, group=G2))
        self.assertEqual((node.term, node.leaderId), (1, "L"))

    def test_heartbeatReplyWaitsForGroup(self) -> None:
        """
        A heartbeat that gives a node its group id is answered once the id is
        durable.
        """
        store = SlowGroupStore()
        node, transport, _, _ = startedNode(store=store)
        node.receive(Heartbeat("n2", "n1", 1, 0, group=G1))
        self.assertEqual(transport.sent, [])
        store.pending[0].callback(None)
        self.assertEqual([type(m) for m in transport.sent], [HeartbeatResponse])

    def test_founderRecordsGroup(self) -> None:
        """
        Founding a group chooses a random id and records it; a restart on
        the same store keeps it.
        """
        node, _, store, clock = startedNode(config=Configuration(frozenset()))
        self.assertTrue(node.bootstrap("127.0.0.1:1"))
        self.assertNotEqual(node.groupId, 0)
        self.assertEqual(store.group, node.groupId)
        clock.advance(3)
        self.assertIsNotNone(node.leader)
        clock.advance(0.1)
        self.assertEqual(entryGroup(node.log.entry(1)), node.groupId)
        again, _, _, _ = startedNode(store=MemoryGroupStore(store.group))
        self.assertEqual(again.groupId, store.group)
        # A node that kept an id but no log founds a new group under a new id.
        emptied, _, kept, _ = startedNode(G1, Configuration(frozenset()))
        self.assertTrue(emptied.bootstrap())
        self.assertNotIn(emptied.groupId, (0, G1))
        self.assertEqual(kept.group, emptied.groupId)

    def test_snapshotKeepsGroup(self) -> None:
        """
        A snapshot taken by a node with a group id records it; a node
        starting from that snapshot without a group file binds it.
        """
        storage = MemoryStorage()
        node, _, _, clock = startedNode(G1, Configuration(frozenset({"n1"})), storage=storage)
        clock.advance(3)
        clock.advance(0.1)
        node.compactTo(SnapshotMeta(1, node.log.term(1) or 0, node.configs.at(1)), node.applier.snapshot())
        snapshot = storage.readSnapshot()
        assert snapshot is not None
        self.assertEqual(snapshot[0].configuration.group, G1)
        restarted, _, store, _ = startedNode(0, Configuration(frozenset({"n1"})), storage=storage)
        self.assertEqual((restarted.groupId, store.group), (G1, G1))

    def test_proposedGroup(self) -> None:
        """
        A leader without a group id proposes its snapshot's, else the first
        one its log carries, else a new one.
        """
        node, _, _, _ = startedNode()
        fresh = node.proposedGroup()
        self.assertNotEqual(fresh, 0)
        node.log.append([Entry(1, 1, NOOP), Entry(2, 2, NOOP, noopData(G2)), Entry(3, 3, NOOP, noopData(G1))])
        self.assertEqual(node.proposedGroup(), G2)
        node.configs.reset(0, Configuration(frozenset({"n1"}), group=G1))
        self.assertEqual(node.proposedGroup(), G1)


class UpgradeTests(SynchronousTestCase):
    """
    Storage written before group ids.
    """

    def test_legacyGroupBindsOneId(self) -> None:
        """
        A group whose storage has a log but no group id elects a leader as
        before; the leader's opening no-op proposes an id, and once it is
        committed every member binds the same id (and records it).
        """
        sim = Simulation(5, 3)
        for nodeId in sorted(sim.nodes):
            sim.crash(nodeId)
            state = sim.nodes[nodeId].disk.state
            state.term = 4
            state.entries = [Entry(1, 1, NOOP), Entry(1, 2, NORMAL, b"x"), Entry(4, 3, NOOP)]
        for nodeId in sorted(sim.nodes):
            sim.restart(nodeId)
        self.assertTrue(sim.runUntil(lambda: sim.leader() is not None, 3.0))
        self.assertTrue(sim.runUntil(lambda: all(n.groupId for n in sim.live()), 2.0))
        groups = {n.groupId for n in sim.live()}
        self.assertEqual(len(groups), 1)
        group = groups.pop()
        self.assertEqual({s.disk.groups.group for s in sim.nodes.values()}, {group})
        leader = sim.leader()
        assert leader is not None
        self.assertEqual(entryGroup(leader.log.entry(4)), group)

    def test_uncommittedProposalOverwritten(self) -> None:
        """
        An id proposed in a no-op that never committed binds nobody: the
        entry is overwritten like any uncommitted entry, and the id of the
        no-op that commits is bound.
        """
        storage = MemoryStorage()
        storage.state.term = 1
        storage.state.entries = [Entry(1, 1, NOOP, noopData(G2))]
        node, transport, store, _ = startedNode(storage=storage)
        self.assertEqual(node.groupId, 0)
        node.receive(AppendEntries("n2", "n1", 2, 0, 0, (Entry(2, 1, NOOP, noopData(G1)),), 0))
        self.assertEqual((node.groupId, node.log.entry(1).term), (0, 2))
        node.receive(Heartbeat("n2", "n1", 2, 1))
        self.assertEqual((node.groupId, store.group), (G1, G1))
        self.assertEqual(transport.sent[-1].group, G1)


class StoreTests(SynchronousTestCase):
    """
    The group file.
    """

    def test_file(self) -> None:
        """
        No file reads as no group; a written id reads back; a damaged file
        is an error naming the file (the node must not start).
        """
        directory = self.mktemp()
        self.assertEqual(readGroupFile(directory), 0)
        writeGroupFile(directory, G2)
        self.assertEqual(readGroupFile(directory), G2)
        with open(os.path.join(directory, "group"), "w") as f:
            f.write("{not json")
        error = self.assertRaises(GroupFileError, readGroupFile, directory)
        self.assertIn(os.path.join(directory, "group"), str(error))
        with open(os.path.join(directory, "group"), "w") as f:
            f.write('{"group": "0000000000000000"}')
        self.assertRaises(GroupFileError, readGroupFile, directory)

    def test_stores(self) -> None:
        """
        Both stores provide L{IRaftGroupStore}; the file store runs its file
        work through the runner it was given.
        """
        directory = self.mktemp()
        ran: list[str] = []

        def run(fn: Any, *args: Any) -> Deferred[Any]:
            ran.append(fn.__name__)
            return succeed(fn(*args))

        store = FileGroupStore(directory, run)
        self.assertTrue(verifyObject(IRaftGroupStore, store))
        self.assertTrue(verifyObject(IRaftGroupStore, MemoryGroupStore()))
        self.assertEqual(self.successResultOf(store.load()), 0)
        self.successResultOf(store.save(G1))
        self.assertEqual(self.successResultOf(store.load()), G1)
        self.assertEqual(ran, ["readGroupFile", "writeGroupFile", "readGroupFile"])
