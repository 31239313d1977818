"""
The role machine alone (with recorded outputs) and single-node behaviour on
a L{task.Clock}.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from suite.raft.interfaces import IRaftTransport
from suite.raft.kv import KeyValueStateMachine, encodeCommand
from suite.raft.messages import Configuration, Message
from suite.raft.node import NotLeader, RaftNode
from suite.raft.roles import newRoleMachine
from suite.raft.storage import MemoryStorage


class Timers:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def stop(self) -> None:
        self.events.append("timersStopped")


class RecordingActions:
    """
    L{RoleActions} that records every output.
    """

    def __init__(self) -> None:
        self.events: list[str] = []

    def armElectionTimer(self) -> None:
        self.events.append("arm")

    def disarmElectionTimer(self) -> None:
        self.events.append("disarm")

    def beginPreVote(self) -> None:
        self.events.append("preVote")

    def beginElection(self, transfer: bool) -> None:
        self.events.append("electionTransfer" if transfer else "election")

    def startLeading(self) -> Timers:
        self.events.append("lead")
        return Timers(self.events)

    def stopLeading(self) -> None:
        self.events.append("resign")

    def noteRole(self, role: str) -> None:
        self.events.append(f"role:{role}")


class RoleMachineTests(SynchronousTestCase):
    """
    Inputs produce the right outputs in every role.
    """

    def setUp(self) -> None:
        self.actions = RecordingActions()
        self.role = newRoleMachine(self.actions)

    def test_electionPath(self) -> None:
        """
        Follower -> PreCandidate -> Candidate -> Leader, arming the election
        timer on each step and starting leader timers on election.
        """
        self.role.started()
        self.role.electionTimedOut()
        self.role.preVoteWon()
        self.role.electionWon()
        self.assertEqual(
            self.actions.events,
            [
                "role:follower",
                "arm",
                "role:pre-candidate",
                "arm",
                "preVote",
                "role:candidate",
                "arm",
                "election",
                "role:leader",
                "lead",
                "disarm",
            ],
        )

    def test_leaderStepsDownOnQuorumLoss(self) -> None:
        """
        CheckQuorum failure stops the leader's timers, resigns and re-arms
        the election timer as a follower.
        """
        self.role.started()
        self.role.electionTimedOut()
        self.role.preVoteWon()
        self.role.electionWon()
        del self.actions.events[:]
        self.role.quorumLost()
        self.assertEqual(self.actions.events, ["timersStopped", "resign", "role:follower", "arm"])

    def test_leaderIgnoresElectionTimeout(self) -> None:
        """
        A stray election timeout does nothing to a leader.
        """
        self.role.started()
        self.role.electionTimedOut()
        self.role.preVoteWon()
        self.role.electionWon()
        del self.actions.events[:]
        self.role.electionTimedOut()
        self.role.leaderDiscovered()
        self.assertEqual(self.actions.events, [])

    def test_preCandidateYieldsToLeader(self) -> None:
        """
        A pre-candidate that hears from a leader becomes a follower again.
        """
        self.role.started()
        self.role.electionTimedOut()
        del self.actions.events[:]
        self.role.leaderDiscovered()
        self.assertEqual(self.actions.events, ["role:follower", "arm"])

    def test_timeoutNowSkipsPreVote(self) -> None:
        """
        TimeoutNow starts a real (transfer) election at once.
        """
        self.role.started()
        del self.actions.events[:]
        self.role.timeoutNowReceived()
        self.assertEqual(self.actions.events, ["role:candidate", "arm", "electionTransfer"])

    def test_learnerNeverCampaigns(self) -> None:
        """
        A learner ignores timeouts until promoted.
        """
        self.role.started()
        self.role.demoted()
        del self.actions.events[:]
        self.role.electionTimedOut()
        self.role.timeoutNowReceived()
        self.assertEqual(self.actions.events, [])
        self.role.promoted()
        self.assertEqual(self.actions.events, ["role:follower", "arm"])

    def test_stoppedIgnoresEverything(self) -> None:
        """
        After stopping, no input produces output.
        """
        self.role.started()
        self.role.stopped()
        del self.actions.events[:]
        for name in ("electionTimedOut", "preVoteWon", "electionWon", "promoted", "timeoutNowReceived"):
            getattr(self.role, name)()
        self.assertEqual(self.actions.events, [])


@implementer(IRaftTransport)
class NullTransport:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def setReceiver(self, receiver: object) -> None:
        pass

    def updatePeers(self, addresses: Mapping[str, str]) -> None:
        pass


class SingleNodeTests(SynchronousTestCase):
    """
    A one-voter group on a Clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.kv = KeyValueStateMachine()
        self.node = RaftNode(
            "a",
            self.clock,
            MemoryStorage(),
            NullTransport(),
            self.kv,
            Configuration(frozenset({"a"})),
            rng=random.Random(1),
        )
        self.successResultOf(Deferred.fromCoroutine(self.node.start()))

    def tearDown(self) -> None:
        self.node.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_electsItselfWithinTheTimeoutRange(self) -> None:
        """
        No leader before 150 ms; leader by 300 ms.
        """
        self.clock.advance(0.149)
        self.assertIsNone(self.node.leader)
        self.assertIsInstance(self.failureResultOf(self.node.propose(b"x")).value, NotLeader)
        self.clock.advance(0.151)
        self.assertIsNotNone(self.node.leader)
        self.assertEqual(self.node.term, 1)

    def test_proposeAppliesOnce(self) -> None:
        """
        A proposal fires with its result; a retry with the same session and
        sequence returns the cached result without applying again.
        """
        self.clock.advance(0.3)
        d1 = self.node.propose(encodeCommand("append", "k", "x"), client="c", seq=1)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d1), "x")
        d2 = self.node.propose(encodeCommand("append", "k", "x"), client="c", seq=1)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d2), "x")
        self.assertEqual(self.kv.get("k"), "x")

    def test_readIndex(self) -> None:
        """
        A read index is granted once the leader committed its no-op.
        """
        self.clock.advance(0.3)
        d = self.node.readIndex()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), self.node.commitIndex)

    def test_whyNotLeader(self) -> None:
        """
        The explanation names the role and term when no leader is known.
        """
        self.assertIn("no leader is known in term 0", self.node.whyNotLeader())


class CommitRuleTests(SynchronousTestCase):
    """
    The leader commits only entries of its own term by counting replicas.
    """

    def test_previousTermEntryNotCommittedByCounting(self) -> None:
        """
        A new leader whose term-2 entry reaches a majority does not commit it
        until an entry of its own term (its no-op) is also on a majority.
        """
        from suite.raft.messages import AppendEntriesResponse, Entry, RequestVoteResponse

        clock = Clock()
        storage = MemoryStorage()
        storage.state.term = 2
        storage.state.entries = [Entry(1, 1), Entry(2, 2)]
        transport = NullTransport()
        node = RaftNode(
            "a",
            clock,
            storage,
            transport,
            KeyValueStateMachine(),
            Configuration(frozenset({"a", "b", "c"})),
            rng=random.Random(3),
        )
        self.successResultOf(Deferred.fromCoroutine(node.start()))
        self.addCleanup(node.stop)
        clock.advance(0.31)
        node.receive(RequestVoteResponse("b", "a", 3, True, preVote=True))
        node.receive(RequestVoteResponse("b", "a", 3, True))
        self.assertIsNotNone(node.leader)
        self.assertEqual(node.term, 3)
        node.receive(AppendEntriesResponse("b", "a", 3, True, 2))
        self.assertEqual(node.commitIndex, 0)
        clock.advance(0)
        node.receive(AppendEntriesResponse("b", "a", 3, True, 3))
        self.assertEqual((node.commitIndex, node.lastApplied), (3, 3))
