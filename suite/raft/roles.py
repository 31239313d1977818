"""
The Raft role machine.

Inputs (L{RoleInputs}), answered in every state:

 - role events: started, electionTimedOut, preVoteWon, electionWon,
   leaderDiscovered, higherTermSeen, quorumLost, timeoutNowReceived,
   promoted, demoted, stopped;
 - the vote tally: voteGranted (a peer granted a pre-vote or vote),
   voteSaved (the candidate's own vote is durable: it may ask for votes);
 - client requests: propose, read, changeMembership, transferLeadership.
   The Leader hands them to its L{Leadership}; every other role refuses
   them with the node's L{RoleActions.notLeader} error.

Outputs (L{RoleActions} on the node, reached through L{RoleCore}):
roleChanged, armElectionTimer, disarmElectionTimer, beginPreVote,
beginElection, openBallot, won, startLeading (returns the
L{Leadership}), stopLeading, notLeader.

States and their data: Idle, Follower, PreCandidate (its L{Ballot}),
Candidate (its L{Ballot}, opened once its own vote is durable), Leader
(L{Leading}: the leader's bookkeeping for its term), Learner, Stopped.

Terms, votes and the log live in L{suite.raft.node.RaftNode}, which feeds
inputs and performs the outputs.  The node and its callers read the role
at any moment, also from callbacks that run inside a transition (where
automat refuses to answer an input), so every change of role is announced
through C{roleChanged}: the role's name and, on entering Leader, that
state's L{Leadership} (None again as soon as leadership ends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred

from suite.raft.fsm import indexed

Done = Callable[[object, "Exception | None"], None]
"""
How a proposal's outcome is reported: C{done(result, None)} once the entry
is committed and applied, C{done(None, error)} when it failed.
"""


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

    def voteGranted(self, voter: str, term: int, preVote: bool, intact: bool) -> None:
        """
        C{voter} granted us its pre-vote (C{preVote}) or vote for C{term};
        C{intact} if its configuration records its storage incarnation
        (L{suite.raft.incarnation}).
        """

    def voteSaved(self, term: int, transfer: bool) -> None:
        """
        The vote this node gave itself for C{term} is durable; C{transfer}
        if the election was started by a leadership transfer.
        """

    def propose(self, command: bytes, client: str, seq: int, done: Done) -> None:
        """
        A client asks to replicate C{command} (session C{client}, sequence
        C{seq}); C{done} is told the outcome.
        """

    def read(self, result: Deferred[int]) -> None:
        """
        A client asks for a linearizable read point, fired into C{result}.
        """

    def changeMembership(
        self, action: str, nodeId: str, address: str, epoch: int | None, result: Deferred[Any]
    ) -> None:
        """
        A single-server membership change (recording C{epoch} if given);
        its outcome fires C{result}.
        """

    def transferLeadership(self, target: str | None, result: Deferred[Any]) -> None:
        """
        Hand leadership to C{target} (or the best voter); fires C{result}.
        """


class Leadership(Protocol):
    """
    What the Leader state asks of the leader's bookkeeping for its term
    (L{suite.raft.leader.LeaderState}).
    """

    def stop(self) -> None:
        """
        Cancel the leader's heartbeat and check-quorum timers.
        """

    def submit(self, command: bytes, client: str, seq: int, done: Done) -> None: ...
    def read(self, result: Deferred[int]) -> None: ...
    def changeMembership(
        self, action: str, nodeId: str, address: str, epoch: int | None, result: Deferred[Any]
    ) -> None: ...
    def transfer(self, target: str | None, result: Deferred[Any]) -> None: ...


@dataclass
class Ballot:
    """
    A (pre-)candidate's tally: the term it campaigns for, who granted, and
    which of those are intact (their storage incarnation is recorded).  A
    candidate's ballot is opened (term set, own vote counted) once its vote
    for itself is durable; until then it counts nothing.
    """

    term: int = 0
    votes: set[str] = field(default_factory=set)
    intact: set[str] = field(default_factory=set)


@dataclass
class Leading:
    """
    The Leader state's data.
    """

    leadership: Leadership


class RoleActions(Protocol):
    def roleChanged(self, role: str, leadership: Leadership | None) -> None:
        """
        The machine entered C{role} (idle, follower, pre-candidate,
        candidate, leader, learner, stopped); C{leadership} is the Leader
        state's data while leading, else None.
        """

    def armElectionTimer(self) -> None: ...
    def disarmElectionTimer(self) -> None: ...
    def beginPreVote(self, ballot: Ballot) -> None:
        """
        Fill C{ballot} for the next term with our own pre-vote and ask the
        voters for theirs.
        """

    def beginElection(self, transfer: bool) -> None:
        """
        Start a new term voting for ourselves; once that is durable, feed
        C{voteSaved}.
        """

    def openBallot(self, ballot: Ballot, term: int, transfer: bool) -> bool:
        """
        Our vote for C{term} is durable: if C{term} is still current, count
        it in C{ballot}, ask the voters and return True.
        """

    def won(self, ballot: Ballot, preVote: bool) -> bool:
        """
        Whether C{ballot} elects us: a majority of intact votes, or every
        voter (L{suite.raft.incarnation}).
        """

    def startLeading(self) -> Leadership: ...
    def stopLeading(self, leadership: Leadership) -> None: ...
    def notLeader(self) -> Exception: ...


@dataclass
class RoleCore:
    actions: RoleActions


def _build() -> TypeMachine[RoleInputs, RoleCore]:
    b = TypeMachineBuilder(RoleInputs, RoleCore)
    idle = b.state("Idle")
    follower = b.state("Follower")

    def preCandidacy(inputs: RoleInputs, core: RoleCore) -> Ballot:
        ballot = Ballot()
        campaign(inputs, core, ballot)
        return ballot

    def campaign(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        core.actions.roleChanged("pre-candidate", None)
        core.actions.armElectionTimer()
        core.actions.beginPreVote(ballot)
        if core.actions.won(ballot, True):
            inputs.preVoteWon()

    preCandidate = b.state("PreCandidate", preCandidacy)

    def candidacy(inputs: RoleInputs, core: RoleCore) -> Ballot:
        # The election starts in the transition (which knows whether a
        # transfer led here); the ballot opens once our vote is durable.
        core.actions.roleChanged("candidate", None)
        return Ballot()

    candidate = b.state("Candidate", candidacy)

    def leadership(inputs: RoleInputs, core: RoleCore) -> Leading:
        leading = Leading(core.actions.startLeading())
        core.actions.roleChanged("leader", leading.leadership)
        return leading

    leader = b.state("Leader", leadership)
    learner = b.state("Learner")
    stopped = b.state("Stopped")

    # -- role changes -------------------------------------------------------

    def toFollower(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.roleChanged("follower", None)
        core.actions.armElectionTimer()

    def ballotToFollower(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        toFollower(inputs, core)

    def toPreCandidate(inputs: RoleInputs, core: RoleCore) -> None:
        pass  # the PreCandidate state's data factory campaigns

    def ballotToPreCandidate(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        pass

    def recampaign(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        campaign(inputs, core, ballot)

    def elect(inputs: RoleInputs, core: RoleCore, transfer: bool) -> None:
        core.actions.armElectionTimer()
        core.actions.beginElection(transfer)

    def ballotToCandidate(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        elect(inputs, core, False)

    def toTransferCandidate(inputs: RoleInputs, core: RoleCore) -> None:
        elect(inputs, core, True)

    def ballotToTransferCandidate(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        elect(inputs, core, True)

    def toLeader(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        core.actions.disarmElectionTimer()

    def toLearner(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.roleChanged("learner", None)
        core.actions.disarmElectionTimer()

    def ballotToLearner(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        toLearner(inputs, core)

    def toStopped(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.roleChanged("stopped", None)
        core.actions.disarmElectionTimer()

    def ballotToStopped(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        toStopped(inputs, core)

    def resign(core: RoleCore, leading: Leading, role: str) -> None:
        # Announced first: whoever the leader's failed waiters call back
        # finds this node no longer leading.
        core.actions.roleChanged(role, None)
        leading.leadership.stop()
        core.actions.stopLeading(leading.leadership)

    def resignToFollower(inputs: RoleInputs, core: RoleCore, leading: Leading) -> None:
        resign(core, leading, "follower")
        core.actions.armElectionTimer()

    def resignToLearner(inputs: RoleInputs, core: RoleCore, leading: Leading) -> None:
        resign(core, leading, "learner")
        core.actions.disarmElectionTimer()

    def resignToStopped(inputs: RoleInputs, core: RoleCore, leading: Leading) -> None:
        resign(core, leading, "stopped")
        core.actions.disarmElectionTimer()

    def ignore(inputs: RoleInputs, core: RoleCore) -> None:
        pass

    def ignoreInCampaign(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        pass

    def ignoreLeading(inputs: RoleInputs, core: RoleCore, leading: Leading) -> None:
        pass

    # Idle
    idle.upon(RoleInputs.started).to(follower)(toFollower)
    idle.upon(RoleInputs.stopped).to(stopped)(toStopped)
    idle.upon(RoleInputs.demoted).to(learner)(toLearner)
    for i in (
        RoleInputs.electionTimedOut,
        RoleInputs.preVoteWon,
        RoleInputs.electionWon,
        RoleInputs.leaderDiscovered,
        RoleInputs.higherTermSeen,
        RoleInputs.quorumLost,
        RoleInputs.timeoutNowReceived,
        RoleInputs.promoted,
    ):
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
    preCandidate.upon(RoleInputs.electionTimedOut).loop()(recampaign)
    preCandidate.upon(RoleInputs.preVoteWon).to(candidate)(ballotToCandidate)
    preCandidate.upon(RoleInputs.leaderDiscovered).to(follower)(ballotToFollower)
    preCandidate.upon(RoleInputs.higherTermSeen).to(follower)(ballotToFollower)
    preCandidate.upon(RoleInputs.timeoutNowReceived).to(candidate)(ballotToTransferCandidate)
    preCandidate.upon(RoleInputs.demoted).to(learner)(ballotToLearner)
    preCandidate.upon(RoleInputs.stopped).to(stopped)(ballotToStopped)
    for i in (RoleInputs.started, RoleInputs.electionWon, RoleInputs.quorumLost, RoleInputs.promoted):
        preCandidate.upon(i).loop()(ignoreInCampaign)

    # Candidate
    candidate.upon(RoleInputs.electionTimedOut).to(preCandidate)(ballotToPreCandidate)
    candidate.upon(RoleInputs.electionWon).to(leader)(toLeader)
    candidate.upon(RoleInputs.leaderDiscovered).to(follower)(ballotToFollower)
    candidate.upon(RoleInputs.higherTermSeen).to(follower)(ballotToFollower)
    candidate.upon(RoleInputs.demoted).to(learner)(ballotToLearner)
    candidate.upon(RoleInputs.stopped).to(stopped)(ballotToStopped)
    for i in (
        RoleInputs.started,
        RoleInputs.preVoteWon,
        RoleInputs.quorumLost,
        RoleInputs.timeoutNowReceived,
        RoleInputs.promoted,
    ):
        candidate.upon(i).loop()(ignoreInCampaign)

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
    for i in (
        RoleInputs.started,
        RoleInputs.electionTimedOut,
        RoleInputs.preVoteWon,
        RoleInputs.electionWon,
        RoleInputs.leaderDiscovered,
        RoleInputs.higherTermSeen,
        RoleInputs.quorumLost,
        RoleInputs.timeoutNowReceived,
        RoleInputs.demoted,
    ):
        learner.upon(i).loop()(ignore)

    # Stopped
    for i in (
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
    ):
        stopped.upon(i).loop()(ignore)

    # -- the vote tally -------------------------------------------------------

    def count(ballot: Ballot, voter: str, intact: bool) -> None:
        ballot.votes.add(voter)
        if intact:
            ballot.intact.add(voter)

    @preCandidate.upon(RoleInputs.voteGranted).loop()
    def preVoteGranted(
        inputs: RoleInputs, core: RoleCore, ballot: Ballot, voter: str, term: int, preVote: bool, intact: bool
    ) -> None:
        if preVote and term == ballot.term:
            count(ballot, voter, intact)
            if core.actions.won(ballot, True):
                inputs.preVoteWon()

    @candidate.upon(RoleInputs.voteGranted).loop()
    def voteGranted(
        inputs: RoleInputs, core: RoleCore, ballot: Ballot, voter: str, term: int, preVote: bool, intact: bool
    ) -> None:
        if not preVote and ballot.term and term == ballot.term:
            count(ballot, voter, intact)
            if core.actions.won(ballot, False):
                inputs.electionWon()

    @candidate.upon(RoleInputs.voteSaved).loop()
    def openBallot(inputs: RoleInputs, core: RoleCore, ballot: Ballot, term: int, transfer: bool) -> None:
        if not ballot.term and core.actions.openBallot(ballot, term, transfer):
            if core.actions.won(ballot, False):
                inputs.electionWon()

    def grantIgnored(
        inputs: RoleInputs, core: RoleCore, voter: str, term: int, preVote: bool, intact: bool
    ) -> None:
        pass

    def grantIgnoredLeading(
        inputs: RoleInputs,
        core: RoleCore,
        leading: Leading,
        voter: str,
        term: int,
        preVote: bool,
        intact: bool,
    ) -> None:
        pass

    def savedIgnored(inputs: RoleInputs, core: RoleCore, term: int, transfer: bool) -> None:
        pass

    def savedIgnoredInCampaign(
        inputs: RoleInputs, core: RoleCore, ballot: Ballot, term: int, transfer: bool
    ) -> None:
        pass

    def savedIgnoredLeading(
        inputs: RoleInputs, core: RoleCore, leading: Leading, term: int, transfer: bool
    ) -> None:
        pass

    for s in (idle, follower, learner, stopped):
        s.upon(RoleInputs.voteGranted).loop()(grantIgnored)
        s.upon(RoleInputs.voteSaved).loop()(savedIgnored)
    preCandidate.upon(RoleInputs.voteSaved).loop()(savedIgnoredInCampaign)
    leader.upon(RoleInputs.voteGranted).loop()(grantIgnoredLeading)
    leader.upon(RoleInputs.voteSaved).loop()(savedIgnoredLeading)

    # -- client requests: the Leader serves them, every other role refuses ----

    @leader.upon(RoleInputs.propose).loop()
    def propose(
        inputs: RoleInputs,
        core: RoleCore,
        leading: Leading,
        command: bytes,
        client: str,
        seq: int,
        done: Done,
    ) -> None:
        leading.leadership.submit(command, client, seq, done)

    @leader.upon(RoleInputs.read).loop()
    def read(inputs: RoleInputs, core: RoleCore, leading: Leading, result: Deferred[int]) -> None:
        leading.leadership.read(result)

    @leader.upon(RoleInputs.changeMembership).loop()
    def changeMembership(
        inputs: RoleInputs,
        core: RoleCore,
        leading: Leading,
        action: str,
        nodeId: str,
        address: str,
        epoch: int | None,
        result: Deferred[Any],
    ) -> None:
        leading.leadership.changeMembership(action, nodeId, address, epoch, result)

    @leader.upon(RoleInputs.transferLeadership).loop()
    def transfer(
        inputs: RoleInputs, core: RoleCore, leading: Leading, target: str | None, result: Deferred[Any]
    ) -> None:
        leading.leadership.transfer(target, result)

    def refusePropose(
        inputs: RoleInputs, core: RoleCore, command: bytes, client: str, seq: int, done: Done
    ) -> None:
        done(None, core.actions.notLeader())

    def refuseRead(inputs: RoleInputs, core: RoleCore, result: Deferred[int]) -> None:
        result.errback(core.actions.notLeader())

    def refuseChange(
        inputs: RoleInputs,
        core: RoleCore,
        action: str,
        nodeId: str,
        address: str,
        epoch: int | None,
        result: Deferred[Any],
    ) -> None:
        result.errback(core.actions.notLeader())

    def refuseTransfer(inputs: RoleInputs, core: RoleCore, target: str | None, result: Deferred[Any]) -> None:
        result.errback(core.actions.notLeader())

    def refuseProposeInCampaign(
        inputs: RoleInputs, core: RoleCore, ballot: Ballot, command: bytes, client: str, seq: int, done: Done
    ) -> None:
        done(None, core.actions.notLeader())

    def refuseReadInCampaign(
        inputs: RoleInputs, core: RoleCore, ballot: Ballot, result: Deferred[int]
    ) -> None:
        result.errback(core.actions.notLeader())

    def refuseChangeInCampaign(
        inputs: RoleInputs,
        core: RoleCore,
        ballot: Ballot,
        action: str,
        nodeId: str,
        address: str,
        epoch: int | None,
        result: Deferred[Any],
    ) -> None:
        result.errback(core.actions.notLeader())

    def refuseTransferInCampaign(
        inputs: RoleInputs, core: RoleCore, ballot: Ballot, target: str | None, result: Deferred[Any]
    ) -> None:
        result.errback(core.actions.notLeader())

    for s in (idle, follower, learner, stopped):
        s.upon(RoleInputs.propose).loop()(refusePropose)
        s.upon(RoleInputs.read).loop()(refuseRead)
        s.upon(RoleInputs.changeMembership).loop()(refuseChange)
        s.upon(RoleInputs.transferLeadership).loop()(refuseTransfer)
    for c in (preCandidate, candidate):
        c.upon(RoleInputs.propose).loop()(refuseProposeInCampaign)
        c.upon(RoleInputs.read).loop()(refuseReadInCampaign)
        c.upon(RoleInputs.changeMembership).loop()(refuseChangeInCampaign)
        c.upon(RoleInputs.transferLeadership).loop()(refuseTransferInCampaign)

    return b.build()


RoleMachine = indexed(_build())
"""
Factory: C{RoleMachine(RoleCore(actions))} returns a L{RoleInputs}.
"""


def newRoleMachine(actions: RoleActions) -> RoleInputs:
    """
    Build a role machine driving C{actions}, in Idle.
    """
    return RoleMachine(RoleCore(actions))
