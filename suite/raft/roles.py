"""
The Raft role machine.

Inputs (L{RoleInputs}), answered in every state:

 - role events: started, electionTimedOut, preVoteWon, electionWon,
   leaderDiscovered, higherTermSeen, quorumLost, timeoutNowReceived,
   promoted, demoted, stopped;
 - the vote tally: voteGranted (a peer granted a pre-vote or vote),
   voteSaved (the candidate's own vote is durable: it may ask for votes),
   voteCast (this node granted its vote: the wait for a leader restarts);
 - messages from peers: received, which answers whether the node may
   handle the message (not while Loading, when its term, vote and log are
   still unknown, nor once Stopped: the sender resends);
 - client requests: propose, read, changeMembership, transferLeadership.
   The Leader hands them to its L{Leadership}; every other role refuses
   them with the node's L{RoleActions.notLeader} error.

Outputs (L{RoleActions} on the node, reached through L{RoleCore}):
roleChanged, startElectionTimer and restartElectionTimer (return the
L{Timer}), messageDropped,
beginPreVote, beginElection, openBallot, won, startLeading (returns the
L{Leadership}), stopLeading, notLeader.

States and their data: Loading (from construction until the node has
loaded its durable state: no timer runs, every message is dropped, client
requests are refused), Follower (L{Waiting}: its election timer),
PreCandidate and Candidate (L{Campaign}: the election timer and the
L{Ballot}, a candidate's opened once its own vote is durable), Leader
(L{Leading}: the leader's bookkeeping for its term), Learner, Stopped.
The election timer exists exactly while the node follows or campaigns: it
is started on entering Follower, PreCandidate or Candidate and cancelled
by the transition that leaves.

Terms, votes and the log live in L{suite.raft.node.RaftNode}, which feeds
inputs and performs the outputs.  The node and its callers read the role
at any moment, also from callbacks that run inside a transition (where
automat postpones any input until the transition is over), so every
change of role is announced through C{roleChanged}: the role's name and,
on entering Leader, that state's L{Leadership} (None again as soon as
leadership ends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred

from suite.fsm import indexed
from suite.raft.messages import Message

Done = Callable[[object, "Exception | None"], None]
"""
How a proposal's outcome is reported: C{done(result, None)} once the entry
is committed and applied, C{done(None, error)} when it failed.
"""


class RoleInputs(Protocol):
    def started(self) -> None:
        """
        The node has loaded its durable state and joins the cluster.
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

    def voteCast(self) -> None:
        """
        This node granted its vote to a candidate: like a message from a
        leader, that restarts the wait before campaigning.
        """

    def received(self, message: Message) -> bool:
        """
        C{message} arrived from a peer: whether the node may handle it.
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


class Timer(Protocol):
    """
    A pending call (an L{twisted.internet.interfaces.IDelayedCall}).
    """

    def active(self) -> bool: ...
    def cancel(self) -> None: ...
    def reset(self, secondsFromNow: float) -> None: ...


def stopTimer(timer: Timer) -> None:
    """
    Cancel C{timer} unless it already ran.
    """
    if timer.active():
        timer.cancel()


@dataclass
class Waiting:
    """
    The Follower state's data: the election timer, which campaigns when no
    leader is heard from for a randomized election timeout.
    """

    timer: Timer


@dataclass
class Campaign(Waiting):
    """
    The PreCandidate and Candidate states' data: the election timer (a new
    campaign when it runs out) and the tally.
    """

    ballot: Ballot = field(default_factory=Ballot)


@dataclass
class Leading:
    """
    The Leader state's data.
    """

    leadership: Leadership


class RoleActions(Protocol):
    def roleChanged(self, role: str, leadership: Leadership | None) -> None:
        """
        The machine entered C{role} (loading, follower, pre-candidate,
        candidate, leader, learner, stopped); C{leadership} is the Leader
        state's data while leading, else None.
        """

    def startElectionTimer(self) -> Timer:
        """
        Start a randomized election timeout that feeds C{electionTimedOut}.
        """

    def restartElectionTimer(self, timer: Timer) -> Timer:
        """
        Wait a new randomized election timeout: C{timer} moved if it has
        not run yet (cheaper than a new one), else a new timer.
        """

    def messageDropped(self, message: Message) -> None:
        """
        C{message} arrived before the node loaded its durable state and is
        dropped (its sender resends).
        """

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
    loading = b.state("Loading")

    # Entering a state that has an election timer starts it (the state data
    # factories); every transition leaving such a state cancels it.

    def waiting(inputs: RoleInputs, core: RoleCore) -> Waiting:
        core.actions.roleChanged("follower", None)
        return Waiting(core.actions.startElectionTimer())

    follower = b.state("Follower", waiting)

    def canvass(inputs: RoleInputs, core: RoleCore, ballot: Ballot) -> None:
        core.actions.beginPreVote(ballot)
        if core.actions.won(ballot, True):
            inputs.preVoteWon()

    def preCandidacy(inputs: RoleInputs, core: RoleCore) -> Campaign:
        core.actions.roleChanged("pre-candidate", None)
        campaign = Campaign(core.actions.startElectionTimer())
        canvass(inputs, core, campaign.ballot)
        return campaign

    preCandidate = b.state("PreCandidate", preCandidacy)

    def candidacy(inputs: RoleInputs, core: RoleCore) -> Campaign:
        # The election starts in the transition (which knows whether a
        # transfer led here); the ballot opens once our vote is durable.
        core.actions.roleChanged("candidate", None)
        return Campaign(core.actions.startElectionTimer())

    candidate = b.state("Candidate", candidacy)

    def leadership(inputs: RoleInputs, core: RoleCore) -> Leading:
        leading = Leading(core.actions.startLeading())
        core.actions.roleChanged("leader", leading.leadership)
        return leading

    leader = b.state("Leader", leadership)
    learner = b.state("Learner")
    stopped = b.state("Stopped")

    # -- role changes -------------------------------------------------------
    #
    # Transitions into Follower, PreCandidate, Candidate and Leader are
    # announced by those states' data factories; into Learner and Stopped
    # by the transition.

    def entered(inputs: RoleInputs, core: RoleCore) -> None:
        pass  # the new state's data factory did the work

    def left(inputs: RoleInputs, core: RoleCore, data: Waiting) -> None:
        stopTimer(data.timer)

    def rearm(inputs: RoleInputs, core: RoleCore, data: Waiting) -> None:
        data.timer = core.actions.restartElectionTimer(data.timer)

    def recampaign(inputs: RoleInputs, core: RoleCore, campaign: Campaign) -> None:
        core.actions.roleChanged("pre-candidate", None)
        rearm(inputs, core, campaign)
        canvass(inputs, core, campaign.ballot)

    def elect(inputs: RoleInputs, core: RoleCore, campaign: Campaign) -> None:
        stopTimer(campaign.timer)
        core.actions.beginElection(False)

    def electOnTransfer(inputs: RoleInputs, core: RoleCore, data: Waiting) -> None:
        stopTimer(data.timer)
        core.actions.beginElection(True)

    def toLearner(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.roleChanged("learner", None)

    def waitingToLearner(inputs: RoleInputs, core: RoleCore, data: Waiting) -> None:
        core.actions.roleChanged("learner", None)
        stopTimer(data.timer)

    def toStopped(inputs: RoleInputs, core: RoleCore) -> None:
        core.actions.roleChanged("stopped", None)

    def waitingToStopped(inputs: RoleInputs, core: RoleCore, data: Waiting) -> None:
        core.actions.roleChanged("stopped", None)
        stopTimer(data.timer)

    def resign(inputs: RoleInputs, core: RoleCore, leading: Leading) -> None:
        # Announced first (by the Follower state's factory, or here): whoever
        # the leader's failed waiters call back finds this node no longer
        # leading.
        leading.leadership.stop()
        core.actions.stopLeading(leading.leadership)

    def resignToLearner(inputs: RoleInputs, core: RoleCore, leading: Leading) -> None:
        core.actions.roleChanged("learner", None)
        resign(inputs, core, leading)

    def resignToStopped(inputs: RoleInputs, core: RoleCore, leading: Leading) -> None:
        core.actions.roleChanged("stopped", None)
        resign(inputs, core, leading)

    def ignore(inputs: RoleInputs, core: RoleCore) -> None:
        pass

    def ignoreWith(inputs: RoleInputs, core: RoleCore, data: object) -> None:
        pass

    # Loading: nothing happens until the node has loaded its state.
    loading.upon(RoleInputs.started).to(follower)(entered)
    loading.upon(RoleInputs.stopped).to(stopped)(toStopped)
    for i in (
        RoleInputs.electionTimedOut,
        RoleInputs.preVoteWon,
        RoleInputs.electionWon,
        RoleInputs.leaderDiscovered,
        RoleInputs.higherTermSeen,
        RoleInputs.quorumLost,
        RoleInputs.timeoutNowReceived,
        RoleInputs.promoted,
        RoleInputs.demoted,
        RoleInputs.voteCast,
    ):
        loading.upon(i).loop()(ignore)

    # Follower
    follower.upon(RoleInputs.electionTimedOut).to(preCandidate)(left)
    follower.upon(RoleInputs.leaderDiscovered).loop()(rearm)
    follower.upon(RoleInputs.higherTermSeen).loop()(rearm)
    follower.upon(RoleInputs.voteCast).loop()(rearm)
    follower.upon(RoleInputs.timeoutNowReceived).to(candidate)(electOnTransfer)
    follower.upon(RoleInputs.demoted).to(learner)(waitingToLearner)
    follower.upon(RoleInputs.stopped).to(stopped)(waitingToStopped)
    for i in (
        RoleInputs.started,
        RoleInputs.preVoteWon,
        RoleInputs.electionWon,
        RoleInputs.quorumLost,
        RoleInputs.promoted,
    ):
        follower.upon(i).loop()(ignoreWith)

    # PreCandidate
    preCandidate.upon(RoleInputs.electionTimedOut).loop()(recampaign)
    preCandidate.upon(RoleInputs.voteCast).loop()(rearm)
    preCandidate.upon(RoleInputs.preVoteWon).to(candidate)(elect)
    preCandidate.upon(RoleInputs.leaderDiscovered).to(follower)(left)
    preCandidate.upon(RoleInputs.higherTermSeen).to(follower)(left)
    preCandidate.upon(RoleInputs.timeoutNowReceived).to(candidate)(electOnTransfer)
    preCandidate.upon(RoleInputs.demoted).to(learner)(waitingToLearner)
    preCandidate.upon(RoleInputs.stopped).to(stopped)(waitingToStopped)
    for i in (RoleInputs.started, RoleInputs.electionWon, RoleInputs.quorumLost, RoleInputs.promoted):
        preCandidate.upon(i).loop()(ignoreWith)

    # Candidate
    candidate.upon(RoleInputs.electionTimedOut).to(preCandidate)(left)
    candidate.upon(RoleInputs.voteCast).loop()(rearm)
    candidate.upon(RoleInputs.electionWon).to(leader)(left)
    candidate.upon(RoleInputs.leaderDiscovered).to(follower)(left)
    candidate.upon(RoleInputs.higherTermSeen).to(follower)(left)
    candidate.upon(RoleInputs.demoted).to(learner)(waitingToLearner)
    candidate.upon(RoleInputs.stopped).to(stopped)(waitingToStopped)
    for i in (
        RoleInputs.started,
        RoleInputs.preVoteWon,
        RoleInputs.quorumLost,
        RoleInputs.timeoutNowReceived,
        RoleInputs.promoted,
    ):
        candidate.upon(i).loop()(ignoreWith)

    # Leader
    leader.upon(RoleInputs.higherTermSeen).to(follower)(resign)
    leader.upon(RoleInputs.quorumLost).to(follower)(resign)
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
        RoleInputs.voteCast,
    ):
        leader.upon(i).loop()(ignoreWith)

    # Learner
    learner.upon(RoleInputs.promoted).to(follower)(entered)
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
        RoleInputs.voteCast,
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
        RoleInputs.voteCast,
    ):
        stopped.upon(i).loop()(ignore)

    # -- messages from peers --------------------------------------------------

    @loading.upon(RoleInputs.received).loop()
    def dropWhileLoading(inputs: RoleInputs, core: RoleCore, message: Message) -> bool:
        core.actions.messageDropped(message)
        return False

    @stopped.upon(RoleInputs.received).loop()
    def dropWhenStopped(inputs: RoleInputs, core: RoleCore, message: Message) -> bool:
        return False

    @learner.upon(RoleInputs.received).loop()
    def admit(inputs: RoleInputs, core: RoleCore, message: Message) -> bool:
        return True

    def admitWith(inputs: RoleInputs, core: RoleCore, data: object, message: Message) -> bool:
        return True

    for active in (follower, preCandidate, candidate, leader):
        active.upon(RoleInputs.received).loop()(admitWith)

    # -- the vote tally -------------------------------------------------------

    def count(ballot: Ballot, voter: str, intact: bool) -> None:
        ballot.votes.add(voter)
        if intact:
            ballot.intact.add(voter)

    @preCandidate.upon(RoleInputs.voteGranted).loop()
    def preVoteGranted(
        inputs: RoleInputs,
        core: RoleCore,
        campaign: Campaign,
        voter: str,
        term: int,
        preVote: bool,
        intact: bool,
    ) -> None:
        ballot = campaign.ballot
        if preVote and term == ballot.term:
            count(ballot, voter, intact)
            if core.actions.won(ballot, True):
                inputs.preVoteWon()

    @candidate.upon(RoleInputs.voteGranted).loop()
    def voteGranted(
        inputs: RoleInputs,
        core: RoleCore,
        campaign: Campaign,
        voter: str,
        term: int,
        preVote: bool,
        intact: bool,
    ) -> None:
        ballot = campaign.ballot
        if not preVote and ballot.term and term == ballot.term:
            count(ballot, voter, intact)
            if core.actions.won(ballot, False):
                inputs.electionWon()

    @candidate.upon(RoleInputs.voteSaved).loop()
    def openBallot(inputs: RoleInputs, core: RoleCore, campaign: Campaign, term: int, transfer: bool) -> None:
        ballot = campaign.ballot
        if not ballot.term and core.actions.openBallot(ballot, term, transfer):
            if core.actions.won(ballot, False):
                inputs.electionWon()

    def grantIgnored(
        inputs: RoleInputs, core: RoleCore, voter: str, term: int, preVote: bool, intact: bool
    ) -> None:
        pass

    def grantIgnoredWith(
        inputs: RoleInputs, core: RoleCore, data: object, voter: str, term: int, preVote: bool, intact: bool
    ) -> None:
        pass

    def savedIgnored(inputs: RoleInputs, core: RoleCore, term: int, transfer: bool) -> None:
        pass

    def savedIgnoredWith(inputs: RoleInputs, core: RoleCore, data: object, term: int, transfer: bool) -> None:
        pass

    for plain in (loading, learner, stopped):
        plain.upon(RoleInputs.voteGranted).loop()(grantIgnored)
        plain.upon(RoleInputs.voteSaved).loop()(savedIgnored)
    for notCampaigning in (follower, leader):
        notCampaigning.upon(RoleInputs.voteGranted).loop()(grantIgnoredWith)
    for notCandidate in (follower, preCandidate, leader):
        notCandidate.upon(RoleInputs.voteSaved).loop()(savedIgnoredWith)

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

    def refuseProposeWith(
        inputs: RoleInputs, core: RoleCore, data: object, command: bytes, client: str, seq: int, done: Done
    ) -> None:
        done(None, core.actions.notLeader())

    def refuseReadWith(inputs: RoleInputs, core: RoleCore, data: object, result: Deferred[int]) -> None:
        result.errback(core.actions.notLeader())

    def refuseChangeWith(
        inputs: RoleInputs,
        core: RoleCore,
        data: object,
        action: str,
        nodeId: str,
        address: str,
        epoch: int | None,
        result: Deferred[Any],
    ) -> None:
        result.errback(core.actions.notLeader())

    def refuseTransferWith(
        inputs: RoleInputs, core: RoleCore, data: object, target: str | None, result: Deferred[Any]
    ) -> None:
        result.errback(core.actions.notLeader())

    for dataless in (loading, learner, stopped):
        dataless.upon(RoleInputs.propose).loop()(refusePropose)
        dataless.upon(RoleInputs.read).loop()(refuseRead)
        dataless.upon(RoleInputs.changeMembership).loop()(refuseChange)
        dataless.upon(RoleInputs.transferLeadership).loop()(refuseTransfer)
    for timed in (follower, preCandidate, candidate):
        timed.upon(RoleInputs.propose).loop()(refuseProposeWith)
        timed.upon(RoleInputs.read).loop()(refuseReadWith)
        timed.upon(RoleInputs.changeMembership).loop()(refuseChangeWith)
        timed.upon(RoleInputs.transferLeadership).loop()(refuseTransferWith)

    return b.build()


RoleMachine = indexed(_build())
"""
Factory: C{RoleMachine(RoleCore(actions))} returns a L{RoleInputs}.
"""


def newRoleMachine(actions: RoleActions) -> RoleInputs:
    """
    Build a role machine driving C{actions}, in Loading.
    """
    return RoleMachine(RoleCore(actions))
