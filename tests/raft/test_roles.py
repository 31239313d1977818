"""
The role machine alone (with recorded outputs) and single-node behaviour on
a L{task.Clock}.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from suite.raft.interfaces import IRaftTransport
from suite.raft.kv import KeyValueStateMachine, encodeCommand
from suite.raft.messages import AppendEntries, Configuration, Message
from suite.raft.node import NotLeader, RaftNode
from suite.raft.roles import Ballot, Done, Leadership, RoleInputs, Timer, newRoleMachine
from suite.raft.storage import MemoryStorage


class FakeLeadership:
    """
    A L{Leadership} that records what the Leader state asks of it.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def stop(self) -> None:
        self.events.append("timersStopped")

    def submit(self, command: bytes, client: str, seq: int, done: Done) -> None:
        self.events.append("submit")

    def read(self, result: Deferred[int]) -> None:
        self.events.append("read")

    def changeMembership(
        self, action: str, nodeId: str, address: str, epoch: int | None, result: Deferred[Any]
    ) -> None:
        self.events.append("change")

    def transfer(self, target: str | None, result: Deferred[Any]) -> None:
        self.events.append("transfer")


class FakeTimer:
    """
    An election timer that records its cancellation.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.cancelled = self.fired = False

    def active(self) -> bool:
        return not (self.cancelled or self.fired)

    def cancel(self) -> None:
        assert self.active(), "cancelled after it ran or twice"
        self.cancelled = True
        self.events.append("cancel")

    def reset(self, secondsFromNow: float) -> None:
        assert self.active(), "reset after it ran or was cancelled"


class RecordingActions:
    """
    L{RoleActions} that records every output; a quorum is C{quorum} votes.
    """

    def __init__(self, quorum: int = 2) -> None:
        self.events: list[str] = []
        self.quorum = quorum
        self.term = 0
        self.refusal = NotLeader(None, "not the leader")
        self.role = "loading"
        self.leadership: Leadership | None = None
        self.timers: list[FakeTimer] = []

    def roleChanged(self, role: str, leadership: Leadership | None) -> None:
        self.events.append(f"role:{role}")
        self.role, self.leadership = role, leadership

    def startElectionTimer(self) -> FakeTimer:
        self.events.append("arm")
        timer = FakeTimer(self.events)
        self.timers.append(timer)
        return timer

    def restartElectionTimer(self, timer: Timer) -> Timer:
        if timer.active():
            self.events.append("reset")
            timer.reset(1)
            return timer
        return self.startElectionTimer()

    def fire(self) -> None:
        """
        The running election timer runs out (it is no longer active).
        """
        (timer,) = [t for t in self.timers if t.active()]
        timer.fired = True

    def activeTimers(self) -> int:
        return sum(1 for t in self.timers if t.active())

    def messageDropped(self, message: Message) -> None:
        self.events.append("drop")

    def beginPreVote(self, ballot: Ballot) -> None:
        self.events.append("preVote")
        ballot.term, ballot.votes, ballot.intact = self.term + 1, {"me"}, {"me"}

    def beginElection(self, transfer: bool) -> None:
        self.events.append("electionTransfer" if transfer else "election")
        self.term += 1

    def openBallot(self, ballot: Ballot, term: int, transfer: bool) -> bool:
        if term != self.term:
            self.events.append(f"staleBallot:{term}")
            return False
        self.events.append(f"ballot:{term}" + (":transfer" if transfer else ""))
        ballot.term, ballot.votes, ballot.intact = term, {"me"}, {"me"}
        return True

    def won(self, ballot: Ballot, preVote: bool) -> bool:
        return len(ballot.intact) >= self.quorum

    def startLeading(self) -> FakeLeadership:
        self.events.append("lead")
        return FakeLeadership(self.events)

    def stopLeading(self, leadership: Leadership) -> None:
        self.events.append("resign")

    def notLeader(self) -> Exception:
        self.events.append("refuse")
        return self.refusal


#: How to reach each state from a new machine.
PATHS: dict[str, tuple[str, ...]] = {
    "loading": (),
    "follower": ("started",),
    "pre-candidate": ("started", "electionTimedOut"),
    "candidate": ("started", "electionTimedOut", "preVoteWon"),
    "leader": ("started", "electionTimedOut", "preVoteWon", "electionWon"),
    "learner": ("started", "demoted"),
    "stopped": ("stopped",),
}


def quiet() -> Deferred[Any]:
    """
    A Deferred whose failure (a refusal) is consumed.
    """
    d: Deferred[Any] = Deferred()
    d.addErrback(lambda f: None)
    return d


#: One call of each input (the machine's whole alphabet); an input that
#: answers returns its answer.
CALLS: dict[str, Callable[[RoleInputs], object]] = {
    "started": lambda r: r.started(),
    "electionTimedOut": lambda r: r.electionTimedOut(),
    "preVoteWon": lambda r: r.preVoteWon(),
    "electionWon": lambda r: r.electionWon(),
    "leaderDiscovered": lambda r: r.leaderDiscovered(),
    "higherTermSeen": lambda r: r.higherTermSeen(),
    "quorumLost": lambda r: r.quorumLost(),
    "timeoutNowReceived": lambda r: r.timeoutNowReceived(),
    "promoted": lambda r: r.promoted(),
    "demoted": lambda r: r.demoted(),
    "stopped": lambda r: r.stopped(),
    # a pre-vote for the next term, which completes a quorum of two
    "voteGranted": lambda r: r.voteGranted("b", 1, True, True),
    # this node's vote for term 1 is durable
    "voteSaved": lambda r: r.voteSaved(1, False),
    # this node granted its vote to a candidate
    "voteCast": lambda r: r.voteCast(),
    # a leader's append arrives
    "received": lambda r: r.received(AppendEntries("b", "me", 1, 0, 0, (), 0)),
    "propose": lambda r: r.propose(b"x", "c", 1, lambda result, error: None),
    "read": lambda r: r.read(quiet()),
    "changeMembership": lambda r: r.changeMembership("addVoter", "d", "", None, quiet()),
    "transferLeadership": lambda r: r.transferLeadership(None, quiet()),
}

REFUSED = {
    "propose": (["refuse"], None),
    "read": (["refuse"], None),
    "changeMembership": (["refuse"], None),
    "transferLeadership": (["refuse"], None),
}

#: (state, input) -> (outputs, new state; None: unchanged).  Every pair not
#: listed is ignored: no output, same state.  An input that answers adds
#: "answer:<answer>".  Entering a state with data runs its factory first,
#: then the transition's output (which cancels the timer of the state left).
EXPECTED: dict[str, dict[str, tuple[list[str], str | None]]] = {
    "loading": {
        "started": (["role:follower", "arm"], "follower"),
        "stopped": (["role:stopped"], "stopped"),
        "received": (["drop", "answer:False"], None),
        **REFUSED,
    },
    "follower": {
        "electionTimedOut": (["role:pre-candidate", "arm", "preVote", "cancel"], "pre-candidate"),
        "leaderDiscovered": (["reset"], None),
        "higherTermSeen": (["reset"], None),
        "voteCast": (["reset"], None),
        "timeoutNowReceived": (["role:candidate", "arm", "cancel", "electionTransfer"], "candidate"),
        "demoted": (["role:learner", "cancel"], "learner"),
        "stopped": (["role:stopped", "cancel"], "stopped"),
        "received": (["answer:True"], None),
        **REFUSED,
    },
    "pre-candidate": {
        "electionTimedOut": (["role:pre-candidate", "reset", "preVote"], None),
        "voteCast": (["reset"], None),
        "preVoteWon": (["role:candidate", "arm", "cancel", "election"], "candidate"),
        "leaderDiscovered": (["role:follower", "arm", "cancel"], "follower"),
        "higherTermSeen": (["role:follower", "arm", "cancel"], "follower"),
        "timeoutNowReceived": (["role:candidate", "arm", "cancel", "electionTransfer"], "candidate"),
        "demoted": (["role:learner", "cancel"], "learner"),
        "stopped": (["role:stopped", "cancel"], "stopped"),
        "voteGranted": (["role:candidate", "arm", "cancel", "election"], "candidate"),
        "received": (["answer:True"], None),
        **REFUSED,
    },
    "candidate": {
        "electionTimedOut": (["role:pre-candidate", "arm", "preVote", "cancel"], "pre-candidate"),
        "voteCast": (["reset"], None),
        "electionWon": (["lead", "role:leader", "cancel"], "leader"),
        "leaderDiscovered": (["role:follower", "arm", "cancel"], "follower"),
        "higherTermSeen": (["role:follower", "arm", "cancel"], "follower"),
        "demoted": (["role:learner", "cancel"], "learner"),
        "stopped": (["role:stopped", "cancel"], "stopped"),
        "voteSaved": (["ballot:1"], None),
        "received": (["answer:True"], None),
        **REFUSED,
    },
    "leader": {
        "higherTermSeen": (["role:follower", "arm", "timersStopped", "resign"], "follower"),
        "quorumLost": (["role:follower", "arm", "timersStopped", "resign"], "follower"),
        "demoted": (["role:learner", "timersStopped", "resign"], "learner"),
        "stopped": (["role:stopped", "timersStopped", "resign"], "stopped"),
        "propose": (["submit"], None),
        "read": (["read"], None),
        "changeMembership": (["change"], None),
        "transferLeadership": (["transfer"], None),
        "received": (["answer:True"], None),
    },
    "learner": {
        "promoted": (["role:follower", "arm"], "follower"),
        "stopped": (["role:stopped"], "stopped"),
        "received": (["answer:True"], None),
        **REFUSED,
    },
    "stopped": {"received": (["answer:False"], None), **REFUSED},
}

#: The roles that wait for a leader or campaign: each has one election
#: timer running; no other role has one.
TIMED = {"follower", "pre-candidate", "candidate"}


def machineIn(state: str, quorum: int = 2) -> tuple[RoleInputs, RecordingActions]:
    actions = RecordingActions(quorum)
    role = newRoleMachine(actions)
    for name in PATHS[state]:
        CALLS[name](role)
    assert actions.role == state, (state, actions.role)
    del actions.events[:]
    return role, actions


class RoleMachineTests(SynchronousTestCase):
    """
    Inputs produce the right outputs in every role.
    """

    def setUp(self) -> None:
        self.actions = RecordingActions()
        self.role = newRoleMachine(self.actions)

    def test_everyInputInEveryState(self) -> None:
        """
        Every state answers every input as the table says; the leader's
        data is announced exactly while in Leader; an election timer runs
        exactly while following or campaigning.
        """
        self.assertEqual(set(CALLS), {n for n in dir(RoleInputs) if not n.startswith("_")})
        self.assertEqual(set(EXPECTED), set(PATHS))
        for state in PATHS:
            for name, call in CALLS.items():
                role, actions = machineIn(state)
                answer = call(role)
                if answer is not None:
                    actions.events.append(f"answer:{answer}")
                events, after = EXPECTED[state].get(name, ([], None))
                self.assertEqual(
                    (actions.events, actions.role), (events, after or state), f"{name} in {state}"
                )
                self.assertEqual(
                    actions.leadership is not None, actions.role == "leader", f"{name} in {state}"
                )
                self.assertEqual(
                    actions.activeTimers(), 1 if actions.role in TIMED else 0, f"{name} in {state}"
                )

    def test_electionPath(self) -> None:
        """
        Follower -> PreCandidate -> Candidate -> Leader, starting a new
        election timer on each step (cancelling the running one) and
        starting the leader on election, which runs no election timer.
        """
        self.role.started()
        self.actions.fire()
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
                "cancel",
                "election",
                "lead",
                "role:leader",
                "cancel",
            ],
        )
        self.assertEqual(self.actions.activeTimers(), 0)

    def test_timerRestarts(self) -> None:
        """
        A running election timer is moved (a leader's message, a vote
        given); once it has run out, a new campaign starts a new one.
        """
        role, actions = machineIn("follower")
        role.leaderDiscovered()
        role.voteCast()
        self.assertEqual((actions.events, len(actions.timers)), (["reset", "reset"], 1))
        actions.fire()
        role.electionTimedOut()
        actions.fire()
        role.electionTimedOut()
        self.assertEqual(
            actions.events[2:],
            ["role:pre-candidate", "arm", "preVote", "role:pre-candidate", "arm", "preVote"],
        )
        self.assertEqual((actions.activeTimers(), len(actions.timers)), (1, 3))

    def test_preVoteTally(self) -> None:
        """
        Only pre-votes for the ballot's term count, and toward the majority
        only intact ones; a quorum of them makes the node a candidate.
        """
        role, actions = machineIn("pre-candidate", quorum=3)
        role.voteGranted("b", 1, False, True)
        role.voteGranted("b", 2, True, True)
        role.voteGranted("b", 1, True, True)
        role.voteGranted("b", 1, True, True)
        role.voteGranted("c", 1, True, False)
        self.assertEqual((actions.events, actions.role), ([], "pre-candidate"))
        role.voteGranted("d", 1, True, True)
        self.assertEqual(
            (actions.events, actions.role), (["role:candidate", "arm", "cancel", "election"], "candidate")
        )

    def test_votesCountOnceTheOwnVoteIsDurable(self) -> None:
        """
        A candidate counts votes only for its term and only once its own
        vote is durable; a stale durability notice opens nothing.
        """
        role, actions = machineIn("candidate")
        role.voteGranted("b", 1, False, True)
        role.voteSaved(0, False)
        self.assertEqual((actions.events, actions.role), (["staleBallot:0"], "candidate"))
        role.voteSaved(1, False)
        role.voteSaved(1, False)
        role.voteGranted("b", 1, True, True)
        role.voteGranted("b", 2, False, True)
        self.assertEqual((actions.events[1:], actions.role), (["ballot:1"], "candidate"))
        role.voteGranted("b", 1, False, True)
        self.assertEqual((actions.events[2:], actions.role), (["lead", "role:leader", "cancel"], "leader"))

    def test_singleVoterElectsItself(self) -> None:
        """
        With a quorum of one, the pre-vote and (once durable) the vote are
        won at once.
        """
        role, actions = machineIn("follower", quorum=1)
        actions.fire()
        role.electionTimedOut()
        self.assertEqual(actions.role, "candidate")
        role.voteSaved(1, False)
        self.assertEqual(actions.role, "leader")
        self.assertEqual(
            actions.events,
            [
                "role:pre-candidate",
                "arm",
                "preVote",
                "role:candidate",
                "arm",
                "cancel",
                "election",
                "ballot:1",
                "lead",
                "role:leader",
                "cancel",
            ],
        )

    def test_transferElection(self) -> None:
        """
        TimeoutNow starts a real election at once, flagged as a transfer
        when the vote requests go out.
        """
        role, actions = machineIn("follower")
        role.timeoutNowReceived()
        role.voteSaved(1, True)
        self.assertEqual(
            actions.events, ["role:candidate", "arm", "cancel", "electionTransfer", "ballot:1:transfer"]
        )

    def test_refusalsReachTheCaller(self) -> None:
        """
        Outside Leader, requests fail with the node's explanation.
        """
        role, actions = machineIn("follower")
        outcome: list[object] = []
        role.propose(b"x", "c", 1, lambda result, error: outcome.append(error))
        d: Deferred[int] = Deferred()
        role.read(d)
        self.assertEqual(outcome, [actions.refusal])
        self.assertIs(self.failureResultOf(d, NotLeader).value, actions.refusal)

    def test_leaderStepsDownOnQuorumLoss(self) -> None:
        """
        CheckQuorum failure announces the follower role (so the leader's
        failed waiters find no leader) and starts its election timer, then
        stops the leader's timers and resigns.
        """
        role, actions = machineIn("leader")
        self.assertIsInstance(actions.leadership, FakeLeadership)
        role.quorumLost()
        self.assertEqual(actions.events, ["role:follower", "arm", "timersStopped", "resign"])
        self.assertIsNone(actions.leadership)

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
