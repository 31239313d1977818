"""
Cluster behaviour on the simulator without random faults: CheckQuorum,
PreVote, leadership transfer, membership changes, reads, sessions,
snapshots and crash recovery.
"""

from __future__ import annotations

from typing import cast

from twisted.trial.unittest import SynchronousTestCase

from suite.raft.kv import encodeCommand
from suite.raft.membership import MembershipError
from suite.raft.messages import CONFIG, Configuration, Heartbeat
from suite.raft.node import NotLeader, RaftNode, RaftSettings
from tests.support.raftsim import Faults, Simulation


def elect(sim: Simulation) -> RaftNode:
    assert sim.runUntil(lambda: sim.leader() is not None, 3.0), "no leader elected"
    leader = sim.leader()
    assert leader is not None
    sim.run(0.05)
    return leader


class ElectionTests(SynchronousTestCase):
    """
    Elections, heartbeats, PreVote and CheckQuorum.
    """

    def test_oneLeaderAndHeartbeats(self) -> None:
        """
        Three nodes elect one leader, which sends a heartbeat to each
        follower every 50 ms.
        """
        sim = Simulation(11, 3)
        leader = elect(sim)
        seen: list[Heartbeat] = []
        original = sim.network.deliver

        def spy(m: object) -> None:
            if isinstance(m, Heartbeat):
                seen.append(m)
            original(m)  # type: ignore[arg-type]

        sim.network.deliver = spy  # type: ignore[method-assign]
        sim.run(0.5)
        self.assertEqual(sim.leader(), leader)
        self.assertTrue(18 <= len(seen) <= 22, len(seen))

    def test_checkQuorumStepsDown(self) -> None:
        """
        A leader cut off from every follower steps down within about an
        election timeout, and the majority elects a new leader.
        """
        sim = Simulation(12, 3)
        leader = elect(sim)
        others = set(sim.nodes) - {leader.id}
        sim.network.partition({leader.id}, others)
        sim.run(0.7)
        self.assertIsNone(leader.leader)
        new = sim.leader()
        self.assertIsNotNone(new)
        assert new is not None
        self.assertIn(new.id, others)

    def test_higherTermStepDownLogged(self) -> None:
        """
        A leader that sees a higher term steps down and says so in the log,
        naming the term and the node it came from.
        """
        from twisted.logger import ILogObserver, formatEvent, globalLogPublisher

        sim = Simulation(14, 3)
        leader = elect(sim)
        other = next(n for n in sim.live() if n is not leader)
        events: list[dict[str, object]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        term = leader.term
        leader.receive(Heartbeat(other.id, leader.id, term + 1, 0, 0))
        self.assertIsNone(leader.leader)
        self.assertEqual(leader.term, term + 1)
        lines = [formatEvent(e) for e in events]
        self.assertIn(
            f"leader {leader.id} saw term {term + 1} from {other.id}; stepping down from term {term}", lines
        )

    def test_preVoteKeepsTermsStable(self) -> None:
        """
        An isolated follower keeps failing pre-votes without raising its
        term, so when it returns the leader is not disturbed.
        """
        sim = Simulation(13, 3)
        leader = elect(sim)
        follower = next(n for n in sim.live() if n is not leader)
        term = leader.term
        sim.network.partition({follower.id}, set(sim.nodes) - {follower.id})
        sim.run(2.0)
        self.assertEqual(follower.term, term)
        sim.network.heal()
        sim.run(1.0)
        self.assertIs(sim.leader(), leader)
        self.assertEqual(leader.term, term)

    def test_transferLeadership(self) -> None:
        """
        TimeoutNow hands leadership to the chosen node.
        """
        sim = Simulation(14, 3)
        leader = elect(sim)
        target = sorted(set(sim.nodes) - {leader.id})[0]
        d = leader.transferLeadership(target)
        sim.run(0.5)
        self.assertEqual(self.successResultOf(d), target)
        new = sim.leader()
        assert new is not None
        self.assertEqual(new.id, target)

    def test_proposalsRefusedDuringTransfer(self) -> None:
        """
        While a transfer runs, the old leader refuses new proposals.
        """
        sim = Simulation(15, 3)
        leader = elect(sim)
        sim.network.partition({leader.id}, set(sim.nodes) - {leader.id})
        leader.transferLeadership().addErrback(lambda f: None)
        f = self.failureResultOf(leader.propose(b"x"))
        self.assertIsInstance(f.value, NotLeader)
        self.assertIn("transferred", str(f.value))


class ReplicationTests(SynchronousTestCase):
    """
    Commit, sessions, reads, snapshots, restart.
    """

    def test_sessionDeduplicatesRetries(self) -> None:
        """
        The same (client, sequence) proposed twice is applied once.
        """
        sim = Simulation(21, 3)
        leader = elect(sim)
        d1 = leader.propose(encodeCommand("append", "k", "a"), "c1", 1)
        d2 = leader.propose(encodeCommand("append", "k", "a"), "c1", 1)
        sim.run(0.1)
        self.assertEqual(self.successResultOf(d1), "a")
        self.assertEqual(self.successResultOf(d2), "a")
        for n in sim.live():
            self.assertEqual(n.applier.stateMachine.get("k"), "a")  # type: ignore[attr-defined]

    def test_readIndexNeedsQuorum(self) -> None:
        """
        A leader that lost its followers cannot serve a ReadIndex read.
        """
        sim = Simulation(22, 3)
        leader = elect(sim)
        sim.network.partition({leader.id}, set(sim.nodes) - {leader.id})
        d = leader.readIndex()
        sim.run(0.1)
        self.assertNoResult(d)
        sim.run(0.5)
        self.assertIsInstance(self.failureResultOf(d).value, NotLeader)

    def test_leaseRead(self) -> None:
        """
        With lease reads, a leader serves reads without a heartbeat round
        while a quorum acknowledged it within 0.9 x electionTimeoutMin, and
        stops once the lease has run out.
        """
        sim = Simulation(25, 3, Faults(), RaftSettings(leaseReads=True))
        leader = elect(sim)
        sim.run(0.1)
        sim.network.partition({leader.id}, set(sim.nodes) - {leader.id})
        d = leader.readIndex()
        sim.clock.advance(0)
        self.successResultOf(d)
        sim.run(0.2)
        late = leader.readIndex()
        sim.run(0.02)
        self.assertNoResult(late)
        late.addErrback(lambda f: None)

    def test_snapshotCatchUp(self) -> None:
        """
        A node that was down while the others compacted their logs catches
        up through InstallSnapshot, in chunks.
        """
        settings = RaftSettings(snapshotThreshold=20, snapshotChunkBytes=50)
        sim = Simulation(23, 3, Faults(), settings)
        leader = elect(sim)
        lagging = sorted(set(sim.nodes) - {leader.id})[0]
        sim.crash(lagging)
        for i in range(60):
            leader.propose(encodeCommand("put", f"k{i}", "v"))
        sim.run(0.5)
        self.assertGreater(leader.log.snapshotIndex, 0)
        sim.restart(lagging)
        node = sim.nodes[lagging].node
        assert node is not None
        self.assertTrue(sim.runUntil(lambda: node.lastApplied == leader.commitIndex, 3.0))
        self.assertGreater(node.log.snapshotIndex, 0)
        self.assertEqual(node.applier.stateMachine.get("k59"), "v")  # type: ignore[attr-defined]

    def test_crashLosesOnlyUnsyncedWrites(self) -> None:
        """
        Every write acknowledged before a whole-cluster crash survives it.
        """
        sim = Simulation(24, 3, Faults(diskDelay=(0.005, 0.01)))
        leader = elect(sim)
        acked = [leader.propose(encodeCommand("put", f"k{i}", "v")) for i in range(20)]
        sim.run(0.2)
        for d in acked:
            self.successResultOf(d)
        leader.propose(encodeCommand("put", "late", "v")).addErrback(lambda f: None)
        for n in sorted(sim.nodes):
            sim.crash(n)
        for n in sorted(sim.nodes):
            sim.restart(n)
        new = elect(sim)
        d = new.readIndex()
        sim.run(0.2)
        self.successResultOf(d)
        for i in range(20):
            self.assertEqual(new.applier.stateMachine.get(f"k{i}"), "v")  # type: ignore[attr-defined]


class MembershipTests(SynchronousTestCase):
    """
    Single-server changes.
    """

    def test_addVoterCatchesUpAsLearnerFirst(self) -> None:
        """
        A new node joins as a learner, is promoted once caught up, and then
        counts as a voter.
        """
        sim = Simulation(31, 3)
        leader = elect(sim)
        for i in range(30):
            leader.propose(encodeCommand("put", f"k{i}", "v"))
        sim.run(0.2)
        sim.addNode("n4")
        d = leader.changeMembership("addVoter", "n4")
        sim.run(1.0)
        self.successResultOf(d)
        configs = [Configuration.decode(e.data) for e in leader.log.entries() if e.kind == CONFIG]
        self.assertEqual(
            [("n4" in c.learners, "n4" in c.voters) for c in configs], [(True, False), (False, True)]
        )
        n4 = sim.nodes["n4"].node
        assert n4 is not None
        self.assertEqual(n4.applier.stateMachine.get("k29"), "v")  # type: ignore[attr-defined]
        self.assertEqual(n4.roleName, "follower")

    def test_learnerCaughtUpWhileConfigUncommitted(self) -> None:
        """
        A learner that catches up while the configuration adding it is still
        uncommitted (the other voter of a group of two is slow to
        acknowledge) is promoted once that configuration commits, although
        it makes no progress after it.
        """
        sim = Simulation(34, 2)
        leader = elect(sim)
        for i in range(5):
            leader.propose(encodeCommand("put", f"k{i}", "v"))
        sim.run(0.2)
        other = next(n for n in sim.nodes if n != leader.id)
        sim.addNode("n3")
        sim.network.partition({other}, set(sim.nodes) - {other})
        d = leader.changeMembership("addVoter", "n3")
        sim.run(0.15)
        n3 = sim.nodes["n3"].node
        assert n3 is not None
        self.assertEqual(n3.log.lastIndex(), leader.log.lastIndex())  # caught up
        self.assertNoResult(d)
        sim.network.heal()
        sim.run(0.5)
        self.successResultOf(d)
        self.assertEqual(leader.configs.latest().voters, {leader.id, other, "n3"})

    def test_silentLearnerNotPromoted(self) -> None:
        """
        A learner that never answered is not promoted, however short the
        log (its match index is within the catch-up margin of nothing).
        """
        sim = Simulation(35, 3)
        leader = elect(sim)
        d = leader.changeMembership("addVoter", "absent")
        sim.run(1.0)
        self.assertNoResult(d)
        config = leader.configs.latest()
        self.assertEqual((config.voters, config.learners), (set(sim.nodes), {"absent"}))

    def test_removedMemberLearnsItLeft(self) -> None:
        """
        A removed follower is told that the configuration removing it
        committed (a last heartbeat with the commit index), so it knows it
        may stop; before that, it is replicated to like any member.
        """
        sim = Simulation(36, 3)
        leader = elect(sim)
        gone = sorted(n for n in sim.nodes if n != leader.id)[0]
        d = leader.changeMembership("remove", gone)
        sim.run(0.5)
        self.successResultOf(d)
        node = sim.nodes[gone].node
        assert node is not None
        index = leader.configs.latestIndex()
        self.assertGreaterEqual(node.commitIndex, index)
        self.assertNotIn(gone, node.configs.at(node.commitIndex).members())
        self.assertNotIn(gone, leader.leader.progress if leader.leader else {})

    def test_oneChangeAtATime(self) -> None:
        """
        A second change while one is uncommitted is refused with a reason.
        """
        sim = Simulation(32, 3)
        leader = elect(sim)
        sim.network.partition({leader.id}, set(sim.nodes) - {leader.id})
        leader.changeMembership("addLearner", "x1").addErrback(lambda f: None)
        f = self.failureResultOf(leader.changeMembership("addLearner", "x2"))
        self.assertIsInstance(f.value, MembershipError)
        self.assertIn("uncommitted", str(f.value))

    def test_removeLeader(self) -> None:
        """
        A leader that removes itself steps down once the change commits and
        the rest elect a new leader.
        """
        sim = Simulation(33, 5)
        leader = elect(sim)
        d = leader.changeMembership("remove", leader.id)
        sim.run(1.0)
        self.successResultOf(d)
        new = sim.leader()
        assert new is not None
        self.assertNotEqual(new.id, leader.id)
        self.assertNotIn(leader.id, new.configs.latest().voters)
