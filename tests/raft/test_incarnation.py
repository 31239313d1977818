"""
Storage incarnations (L{suite.raft.incarnation}) and configuration epochs:
their encoding, the intact-vote rule, the incarnation file, and on the
simulator a member restarted on empty storage under the same id.
"""

from __future__ import annotations

import json
import os
import random

import msgpack
from twisted.trial.unittest import SynchronousTestCase

from suite.raft.incarnation import (
    FILENAME,
    Incarnation,
    MemoryIncarnations,
    claimFile,
    votesIntact,
)
from suite.raft.kv import encodeCommand
from suite.raft.membership import MembershipError, changed
from suite.raft.messages import (
    AppendEntriesResponse,
    Configuration,
    HeartbeatResponse,
    InstallSnapshotResponse,
    MalformedMessage,
    RequestVoteResponse,
    decodeMessage,
    encodeMessage,
)
from suite.raft.node import RaftNode, RaftSettings
from tests.support.raftsim import Faults, Simulation

ABC = frozenset({"a", "b", "c"})


class EncodingTests(SynchronousTestCase):
    """
    Epochs and incarnations on the wire and in the log.
    """

    def test_configurationRoundTrip(self) -> None:
        """
        A configuration with an epoch and incarnations survives encoding; one
        without them encodes as the three-field array of earlier versions.
        """
        config = Configuration(ABC, frozenset({"d"}), (("a", "h:1"),), 7, (("a", 11), ("d", 12)))
        self.assertEqual(Configuration.decode(config.encode()), config)
        self.assertEqual(config.incarnationOf("d"), 12)
        self.assertIsNone(config.incarnationOf("b"))
        plain = Configuration(ABC)
        self.assertEqual(len(msgpack.unpackb(plain.encode())), 3)
        self.assertEqual(Configuration.decode(plain.encode()), plain)

    def test_configurationMalformed(self) -> None:
        """
        Wrong shapes and types are refused.
        """
        for body in (
            [["a"], [], []],  # fine
            [["a"], [], [], 1],
            [["a"], [], [], -1, []],
            [["a"], [], [], 1, [["a", "x"]]],
            [["a"], [], [], True, []],
        ):
            data = msgpack.packb(body)
            if len(body) == 3:
                Configuration.decode(data)
            else:
                self.assertRaises(MalformedMessage, Configuration.decode, data)

    def test_optionalTail(self) -> None:
        """
        Responses carry the incarnation (votes their intactness) as a
        trailing field, left out at its default so that a node without
        incarnations speaks the earlier format; both forms decode.
        """
        for message, short in (
            (RequestVoteResponse("b", "a", 3, True, False, False), RequestVoteResponse("b", "a", 3, True)),
            (
                AppendEntriesResponse("b", "a", 3, True, 9, incarnation=5),
                AppendEntriesResponse("b", "a", 3, True, 9),
            ),
            (HeartbeatResponse("b", "a", 3, 1, 2, 5), HeartbeatResponse("b", "a", 3, 1, 2)),
            (
                InstallSnapshotResponse("b", "a", 3, 7, 2, True, 5),
                InstallSnapshotResponse("b", "a", 3, 7, 2, True),
            ),
        ):
            self.assertEqual(decodeMessage(encodeMessage(message)), message)
            self.assertEqual(decodeMessage(encodeMessage(short)), short)
            self.assertEqual(
                len(msgpack.unpackb(encodeMessage(message))), len(msgpack.unpackb(encodeMessage(short))) + 1
            )
        raw = list(msgpack.unpackb(encodeMessage(HeartbeatResponse("b", "a", 3, 1, 2, 5))))
        self.assertRaises(MalformedMessage, decodeMessage, msgpack.packb(raw[:-2]))
        self.assertRaises(MalformedMessage, decodeMessage, msgpack.packb([*raw, 0]))
        self.assertRaises(MalformedMessage, decodeMessage, msgpack.packb([*raw, 1, 1]))


class RuleTests(SynchronousTestCase):
    """
    When a vote counts, and what a change does to epochs and incarnations.
    """

    def test_votesIntact(self) -> None:
        """
        Without incarnations every vote counts; with them, a recorded member
        counts when the record is its current incarnation, an unrecorded one
        only when its storage is adopted.
        """
        config = Configuration(ABC, incarnations=(("a", 5),))
        self.assertTrue(votesIntact(config, "a", None))
        self.assertTrue(votesIntact(config, "a", Incarnation(5)))
        self.assertFalse(votesIntact(config, "a", Incarnation(6)))
        self.assertFalse(votesIntact(config, "a", Incarnation(6, adopted=True)))
        self.assertFalse(votesIntact(config, "b", Incarnation(6)))
        self.assertTrue(votesIntact(config, "b", Incarnation(6, adopted=True)))

    def test_changedEpochs(self) -> None:
        """
        A change records its epoch, never a lower one; C{epoch} records only
        the epoch; removing a member drops its incarnation.
        """
        config = Configuration(ABC, epoch=3, incarnations=(("a", 1), ("c", 3)))
        self.assertEqual(changed(config, "remove", "c", "").incarnations, (("a", 1),))
        self.assertEqual(changed(config, "remove", "c", "").epoch, 3)
        self.assertEqual(changed(config, "addLearner", "d", "h:4", 4).epoch, 4)
        self.assertRaises(MembershipError, changed, config, "addLearner", "d", "", 2)
        self.assertEqual(
            changed(config, "epoch", "", "", 5), Configuration(ABC, epoch=5, incarnations=config.incarnations)
        )
        self.assertRaises(MembershipError, changed, config, "epoch", "", "", 3)
        self.assertRaises(MembershipError, changed, config, "epoch", "", "")


class FileTests(SynchronousTestCase):
    """
    The incarnation file beside a WAL.
    """

    def test_claim(self) -> None:
        """
        The first claim creates the file, later ones read it; storage found
        without a file is adopted; an empty storage never is.
        """
        directory = self.mktemp()
        first = claimFile(directory, hasState=False, rng=random.Random(1))
        self.assertFalse(first.adopted)
        self.assertEqual(claimFile(directory, hasState=True), first)
        with open(os.path.join(directory, FILENAME)) as f:
            self.assertEqual(json.load(f), {"incarnation": first.number, "adopted": False})

        restored = self.mktemp()
        adopted = claimFile(restored, hasState=True)
        self.assertTrue(adopted.adopted)
        self.assertEqual(claimFile(restored, hasState=True), adopted)
        emptied = claimFile(restored, hasState=False)
        self.assertEqual(emptied, Incarnation(adopted.number, adopted=False))
        self.assertFalse(claimFile(restored, hasState=True).adopted)

    def test_unreadable(self) -> None:
        """
        A damaged file gives a new, unadopted incarnation.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        for junk in (b"{", b'{"incarnation": "x"}', b'{"incarnation": 0}', b"[]"):
            with open(os.path.join(directory, FILENAME), "wb") as f:
                f.write(junk)
            claimed = claimFile(directory, hasState=True)
            self.assertFalse(claimed.adopted)
            self.assertGreater(claimed.number, 0)

    def test_memory(self) -> None:
        """
        L{MemoryIncarnations} follows the same rules; C{forget} loses the disk.
        """
        store = MemoryIncarnations(random.Random(2))
        first = self.successResultOf(store.claim("n1")(False))
        self.assertEqual(self.successResultOf(store.claim("n1")(True)), first)
        store.forget("n1")
        second = self.successResultOf(store.claim("n1")(False))
        self.assertNotEqual(second.number, first.number)
        self.assertTrue(self.successResultOf(store.claim("n2")(True)).adopted)


def elect(sim: Simulation) -> RaftNode:
    assert sim.runUntil(lambda: sim.leader() is not None and sim.leader().leader.committedInTerm, 3.0)  # type: ignore[union-attr]
    leader = sim.leader()
    assert leader is not None
    return leader


def write(sim: Simulation, node: RaftNode, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        node.propose(encodeCommand("put", f"k{i}", i), "w", i + 1).addErrback(lambda f: None)
    sim.run(0.2)


class SimulatedTests(SynchronousTestCase):
    """
    A member restarted with empty storage under the same id.
    """

    def sim(self, seed: int = 3, threshold: int = 10000) -> Simulation:
        return Simulation(seed, 3, Faults(), RaftSettings(snapshotThreshold=threshold), incarnations=True)

    def test_formationRecordsEveryone(self) -> None:
        """
        A new group (nobody recorded) elects only unanimously; its leader
        then records every member's incarnation and votes count as usual.
        """
        sim = self.sim()
        leader = elect(sim)
        sim.run(0.3)
        config = leader.configs.latest()
        self.assertEqual(
            dict(config.incarnations),
            {n: sim.nodes[n].node.incarnationNumber for n in sim.nodes},  # type: ignore[union-attr]
        )
        self.assertTrue(all(n.votesIntact() for n in sim.live()))
        sim.crash(leader.id)
        self.assertIsNotNone(elect(sim))

    def test_formationNeedsEveryVoter(self) -> None:
        """
        With one founding member missing, no leader is elected (its storage
        might be the only copy of a group that already existed).
        """
        sim = self.sim()
        sim.crash("n3")
        sim.run(3.0)
        self.assertIsNone(sim.leader())
        sim.restart("n3")
        self.assertIsNotNone(elect(sim))

    def test_emptyMemberCaughtUpBeforeItVotes(self) -> None:
        """
        A follower restarted empty counts as a voter whose vote does not:
        while it catches up (a snapshot here) the other follower lags and the
        leader crashes, and no leader is elected on the empty log; once the
        leader is back, the member is caught up, its new incarnation is
        recorded and its vote counts again; nothing committed is lost.
        """
        sim = self.sim(threshold=20)
        leader = elect(sim)
        sim.run(0.3)
        victim, lagging = sorted(set(sim.nodes) - {leader.id})
        old = sim.nodes[victim].node.incarnationNumber  # type: ignore[union-attr]
        sim.network.oneWay(leader.id, lagging)
        write(sim, leader, 30)
        committed = leader.commitIndex
        self.assertGreater(committed, sim.nodes[lagging].node.log.lastIndex())  # type: ignore[union-attr]
        sim.wipe(victim)
        sim.restart(victim)
        fresh = sim.nodes[victim].node
        assert fresh is not None
        self.assertNotEqual(fresh.incarnationNumber, old)
        self.assertFalse(fresh.votesIntact())
        sim.crash(leader.id)
        sim.network.heal()
        sim.run(3.0)
        self.assertIsNone(sim.leader(), "a leader was elected with the empty member's vote")
        sim.restart(leader.id)
        elect(sim)
        self.assertTrue(sim.runUntil(fresh.votesIntact, 3.0))
        self.assertGreaterEqual(fresh.log.snapshotIndex, 20)
        self.assertGreaterEqual(fresh.commitIndex, committed)
        now = sim.leader()
        assert now is not None
        self.assertEqual(now.configs.latest().incarnationOf(victim), fresh.incarnationNumber)
        self.assertEqual(fresh.applier.stateMachine.data, now.applier.stateMachine.data)  # type: ignore[attr-defined]

    def test_emptyVoteOnlyUnanimous(self) -> None:
        """
        The empty member's vote (flagged not intact) makes no majority, but
        counts toward a unanimous election: with all three up, the lagging
        follower cannot win, the up-to-date one can.
        """
        sim = self.sim()
        leader = elect(sim)
        victim, other = sorted(set(sim.nodes) - {leader.id})
        sim.wipe(victim)
        sim.restart(victim)
        fresh = sim.nodes[victim].node
        assert fresh is not None
        votes: list[RequestVoteResponse] = []
        original = sim.network.deliver

        def spy(m: object) -> None:
            if isinstance(m, RequestVoteResponse) and m.src == victim:
                votes.append(m)
            original(m)  # type: ignore[arg-type]

        sim.network.deliver = spy  # type: ignore[method-assign]
        # Cut the leader off before it hears from the member.
        sim.network.partition({leader.id}, {victim, other})
        sim.run(2.0)
        self.assertIsNone(sim.leader() if sim.leader() is not leader else None)
        self.assertTrue(votes and not any(v.intact for v in votes), votes)
        sim.network.heal()
        elect(sim)
        self.assertTrue(sim.runUntil(fresh.votesIntact, 3.0))

    def test_followerRebuiltUnderTheSameLeader(self) -> None:
        """
        The leader notices a follower's new incarnation in its responses,
        forgets what the lost copy had acknowledged and rebuilds it from the
        start; later writes reach it.
        """
        sim = self.sim()
        leader = elect(sim)
        write(sim, leader, 10)
        victim = sorted(set(sim.nodes) - {leader.id})[0]
        sim.wipe(victim)
        sim.restart(victim)
        fresh = sim.nodes[victim].node
        assert fresh is not None
        self.assertTrue(sim.runUntil(fresh.votesIntact, 3.0))
        self.assertIs(sim.leader(), leader)
        write(sim, leader, 5, start=10)
        self.assertEqual(fresh.applier.stateMachine.data, leader.applier.stateMachine.data)  # type: ignore[attr-defined]
        self.assertEqual(len(fresh.applier.stateMachine.data), 15)  # type: ignore[attr-defined]

    def test_leaderLosesItsDisk(self) -> None:
        """
        The leader's disk is lost: the two others elect, and the old leader
        returns empty, is caught up and recorded again.
        """
        sim = self.sim()
        leader = elect(sim)
        write(sim, leader, 10)
        sim.wipe(leader.id)
        sim.restart(leader.id)
        successor = elect(sim)
        self.assertNotEqual(successor.id, leader.id)
        back = sim.nodes[leader.id].node
        assert back is not None
        self.assertTrue(sim.runUntil(back.votesIntact, 3.0))
        self.assertEqual(back.applier.stateMachine.data, successor.applier.stateMachine.data)  # type: ignore[attr-defined]

    def test_epochs(self) -> None:
        """
        Membership changes record the embedder's epoch; an older epoch is
        refused; C{epoch} alone can be recorded.
        """
        sim = self.sim()
        leader = elect(sim)
        sim.run(0.2)
        d = leader.changeMembership("epoch", "", epoch=4)
        sim.run(0.2)
        self.successResultOf(d)
        self.assertEqual(leader.configs.latest().epoch, 4)
        self.failureResultOf(leader.changeMembership("remove", "n3", epoch=3), MembershipError)
        sim.addNode("n4")
        d = leader.changeMembership("addVoter", "n4", epoch=5)
        sim.run(1.0)
        self.successResultOf(d)
        config = leader.configs.latest()
        self.assertEqual((config.epoch, "n4" in config.voters), (5, True))
        self.assertEqual(config.incarnationOf("n4"), sim.nodes["n4"].node.incarnationNumber)  # type: ignore[union-attr]
        self.assertEqual(leader.status()["configEpoch"], 5)
