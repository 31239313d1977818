"""
The Raft role machine.

Inputs (L{RoleInputs}): started, electionTimedOut, preVoteWon, electionWon,
leaderDiscovered, higherTermSeen, quorumLost, timeoutNowReceived, promoted,
demoted, stopped.

Outputs (L{RoleActions} on the node, reached through L{RoleCore}):
armElectionTimer, disarmElectionTimer, beginPreVote, beginElection,
startLeading (returns the leader's timers), stopLeading.

States: Idle, Follower, PreCandidate, Candidate, Leader (data: its
L{LeaderTimers}), Learner, Stopped.

The machine decides role changes only; terms, votes and the log live in
L{suite.raft.node.RaftNode}, which feeds inputs and performs the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from automat import TypeMachineBuilder


class RoleInputs(Protocol):
    def started(self) -> None:
        """
        The node has loaded its state and joins the cluster.
        """

    def electionTimedOut(self) -> None:
        """
        No word from a leader for a randomized election timeout.
        """

    def preVoteWon(self) -> None:
        """
        A quorum said it would vote for us.
        """

    def electionWon(self) -> None:
        """
        A quorum voted for us in our term.
        """

    def leaderDiscovered(self) -> None:
        """
        A valid message from the leader of the current term arrived.
        """

    def higherTermSeen(self) -> None:
        """
        The node adopted a higher term (or must otherwise step down).
        """

    def quorumLost(self) -> None:
        """
        CheckQuorum: a quorum has not been heard from for an election timeout.
        """

    def timeoutNowReceived(self) -> None:
        """
        The leader is handing leadership to this node.
        """

    def promoted(self) -> None:
        """
        The configuration made this node a voter.
        """

    def demoted(self) -> None:
        """
        The configuration made this node a learner (or removed it).
        """

    def stopped(self) -> None:
        """
        The node is shutting down.
        """


@runtime_checkable
class LeaderTimers(Protocol):
    def stop(self) -> None:
        """
        Cancel the leader's heartbeat and check-quorum timers.
        """


class RoleActions(Protocol):
    def armElectionTimer(self) -> None: ...
    def disarmElectionTimer(self) -> None: ...
    def beginPreVote(self) -> None: ...
    def beginElection(self, transfer: bool) -> None: ...
    def startLeading(self) -> LeaderTimers: ...
    def stopLeading(self) -> None: ...
    def noteRole(self, role: str) -> None: ...


@dataclass
class RoleCore:
    actions: RoleActions


def _build() -> object:
    b = TypeMachineBuilder(RoleInputs, RoleCore)
    idle = b.state("Idle")
    follower = b.state("Follower")
    preCandidate = b.state("PreCandidate")
    candidate = b.state("Candidate")

    def leaderData(inputs: RoleInputs, core: RoleCore) -> LeaderTimers:
        core.actions.noteRole("leader")
        return core.actions.startLeading()

    leader = b.state("Leader", leaderData)
    learner = b.state("Learner")
    stopped = b.state("Stopped")

    everything = [
        RoleInputs.started,
        RoleInputs.electionTimedOut,
        RoleInputs.preVoteWon,
        RoleInputs.electionWon,
        RoleInputs.leaderDiscovered,
        RoleInputs.higherTermSeen,
        RoleInputs.quorumLost,
        RoleInputs.timeoutNowReceived,
        RoleInputs.promoted,
        RoleInputs.demoted,
        RoleInputs.stopped,
    ]

    def toFollower(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.noteRole("follower")
        core.actions.armElectionTimer()

    def toPreCandidate(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.noteRole("pre-candidate")
        core.actions.armElectionTimer()
        core.actions.beginPreVote()

    def toCandidate(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.noteRole("candidate")
        core.actions.armElectionTimer()
        core.actions.beginElection(False)

    def toTransferCandidate(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.noteRole("candidate")
        core.actions.armElectionTimer()
        core.actions.beginElection(True)

    def toLeader(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.disarmElectionTimer()

    def toLearner(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.noteRole("learner")
        core.actions.disarmElectionTimer()

    def toStopped(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.noteRole("stopped")
        core.actions.disarmElectionTimer()

    def ignore(inputs: RoleInputs, core: RoleCore) -> None:
        pass

    def ignoreLeading(inputs: RoleInputs, core: RoleCore, timers: LeaderTimers) -> None:
        pass

    def resign(inputs: RoleInputs, core: RoleCore, timers: LeaderTimers) -> None:
        timers.stop()
        core.actions.stopLeading()

    def resignToFollower(inputs: RoleInputs, core: RoleCore, timers: LeaderTimers) -> None:
        resign(inputs, core, timers)
        toFollower(inputs, core)

    def resignToLearner(inputs: RoleInputs, core: RoleCore, timers: LeaderTimers) -> None:
        resign(inputs, core, timers)
        toLearner(inputs, core)

    def resignToStopped(inputs: RoleInputs, core: RoleCore, timers: LeaderTimers) -> None:
        resign(inputs, core, timers)
        toStopped(inputs, core)

    # Idle
    idle.upon(RoleInputs.started).to(follower)(toFollower)
    idle.upon(RoleInputs.stopped).to(stopped)(toStopped)
    idle.upon(RoleInputs.demoted).to(learner)(toLearner)
    for i in everything:
        if i not in (RoleInputs.started, RoleInputs.stopped, RoleInputs.demoted):
            idle.upon(i).loop()(ignore)

    # Follower
    follower.upon(RoleInputs.electionTimedOut).to(preCandidate)(toPreCandidate)
    follower.upon(RoleInputs.leaderDiscovered).loop()(toFollower)
    follower.upon(RoleInputs.higherTermSeen).loop()(toFollower)
    follower.upon(RoleInputs.timeoutNowReceived).to(candidate)(toTransferCandidate)
    follower.upon(RoleInputs.demoted).to(learner)(toLearner)
    follower.upon(RoleInputs.stopped).to(stopped)(toStopped)
    for i in (
        RoleInputs.started,
        RoleInputs.preVoteWon,
        RoleInputs.electionWon,
        RoleInputs.quorumLost,
        RoleInputs.promoted,
    ):
        follower.upon(i).loop()(ignore)

    # PreCandidate
    preCandidate.upon(RoleInputs.electionTimedOut).loop()(toPreCandidate)
    preCandidate.upon(RoleInputs.preVoteWon).to(candidate)(toCandidate)
    preCandidate.upon(RoleInputs.leaderDiscovered).to(follower)(toFollower)
    preCandidate.upon(RoleInputs.higherTermSeen).to(follower)(toFollower)
    preCandidate.upon(RoleInputs.timeoutNowReceived).to(candidate)(toTransferCandidate)
    preCandidate.upon(RoleInputs.demoted).to(learner)(toLearner)
    preCandidate.upon(RoleInputs.stopped).to(stopped)(toStopped)
    for i in (RoleInputs.started, RoleInputs.electionWon, RoleInputs.quorumLost, RoleInputs.promoted):
        preCandidate.upon(i).loop()(ignore)

    # Candidate
    candidate.upon(RoleInputs.electionTimedOut).to(preCandidate)(toPreCandidate)
    candidate.upon(RoleInputs.electionWon).to(leader)(toLeader)
    candidate.upon(RoleInputs.leaderDiscovered).to(follower)(toFollower)
    candidate.upon(RoleInputs.higherTermSeen).to(follower)(toFollower)
    candidate.upon(RoleInputs.demoted).to(learner)(toLearner)
    candidate.upon(RoleInputs.stopped).to(stopped)(toStopped)
    for i in (
        RoleInputs.started,
        RoleInputs.preVoteWon,
        RoleInputs.quorumLost,
        RoleInputs.timeoutNowReceived,
        RoleInputs.promoted,
    ):
        candidate.upon(i).loop()(ignore)

    # Leader
    leader.upon(RoleInputs.higherTermSeen).to(follower)(resignToFollower)
    leader.upon(RoleInputs.quorumLost).to(follower)(resignToFollower)
    leader.upon(RoleInputs.demoted).to(learner)(resignToLearner)
    leader.upon(RoleInputs.stopped).to(stopped)(resignToStopped)
    for i in (
        RoleInputs.started,
        RoleInputs.electionTimedOut,
        RoleInputs.preVoteWon,
        RoleInputs.electionWon,
        RoleInputs.leaderDiscovered,
        RoleInputs.timeoutNowReceived,
        RoleInputs.promoted,
    ):
        leader.upon(i).loop()(ignoreLeading)

    # Learner
    learner.upon(RoleInputs.promoted).to(follower)(toFollower)
    learner.upon(RoleInputs.stopped).to(stopped)(toStopped)
    for i in everything:
        if i not in (RoleInputs.promoted, RoleInputs.stopped):
            learner.upon(i).loop()(ignore)

    # Stopped
    for i in everything:
        stopped.upon(i).loop()(ignore)

    return b.build()


RoleMachine = _build()
"""
Factory: C{RoleMachine(RoleCore(actions))} returns a L{RoleInputs}.
"""


def newRoleMachine(actions: RoleActions) -> RoleInputs:
    """
    Build a role machine driving C{actions}.
    """
    return RoleMachine(RoleCore(actions))  # type: ignore[operator,no-any-return]
