"""
L{RaftNode}: one Raft participant.

The node owns the term, vote, log, commit and apply indexes and the
configuration; it feeds the role machine (L{suite.raft.roles}) and performs
its outputs.  Leader-only work (replication, commit, reads, membership,
transfer) lives in L{suite.raft.leader.LeaderState}, created on election and
dropped on step-down.  Everything runs on one thread, driven by the injected
clock; durable writes go through L{IRaftStorage}, whose Deferreds gate every
reply that promises durability.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from suite.raft.follower import FollowerHandlers
from suite.raft.incarnation import Claim, Incarnation, votesIntact
from suite.raft.interfaces import IRaftStateMachine, IRaftStorage, IRaftTransport
from suite.raft.log import RaftLog
from suite.raft.membership import ConfigurationHistory
from suite.raft.messages import (
    CONFIG,
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from suite.raft.roles import LeaderTimers, newRoleMachine
from suite.raft.sessions import SessionApplier
from suite.raft.settings import NotLeader, RaftSettings
from suite.raft.storage import Recovered

log = Logger()


class RaftNode:
    """
    One member of a Raft group.
    """

    def __init__(
        self,
        nodeId: str,
        clock: IReactorTime,
        storage: IRaftStorage,
        transport: IRaftTransport,
        stateMachine: IRaftStateMachine,
        bootstrap: Configuration | None = None,
        settings: RaftSettings | None = None,
        rng: random.Random | None = None,
        incarnation: Claim | None = None,
    ) -> None:
        self.id = nodeId
        self.clock = clock
        self.storage = IRaftStorage(storage)
        self.transport = IRaftTransport(transport)
        self.applier = SessionApplier(stateMachine, (settings or RaftSettings()).maxSessions)
        self.settings = settings or RaftSettings()
        self.rng = rng or random.Random()
        self.term = 0
        self.votedFor: str | None = None
        self.durableTerm = 0
        self.log = RaftLog()
        self.configs = ConfigurationHistory(bootstrap or Configuration(frozenset()))
        self.commitIndex = 0
        self.lastApplied = 0
        self.leaderId: str | None = None
        self.roleName = "idle"
        self.lastLeaderContact = -1e18
        self.startedAt = -1e18
        self.leader: Any = None  # LeaderState while leading
        self._electionTimer: IDelayedCall | None = None
        # (kind, term, granted, intact): the votes of the running election.
        self._election: tuple[str, int, set[str], set[str]] | None = None
        self._claim = incarnation
        #: This node's storage incarnation (None: incarnations not in use).
        self.incarnation: Incarnation | None = None
        self._stopped = False
        self.follower = FollowerHandlers(self)
        self._dispatch: dict[type, Callable[[Any], None]] = {
            RequestVote: self._onRequestVote,
            RequestVoteResponse: self._onRequestVoteResponse,
            AppendEntries: self.follower.onAppendEntries,
            Heartbeat: self.follower.onHeartbeat,
            InstallSnapshot: self.follower.onInstallSnapshot,
            TimeoutNow: self.follower.onTimeoutNow,
            AppendEntriesResponse: self._onLeaderMessage,
            HeartbeatResponse: self._onLeaderMessage,
            InstallSnapshotResponse: self._onLeaderMessage,
        }
        self.role = newRoleMachine(self)
        self.transport.setReceiver(self.receive)
        self.appliedHooks: list[Callable[[int], None]] = []

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """
        Load durable state and join the group.
        """
        recovered: Recovered = await self.storage.load()
        if self._claim is not None:
            hasState = bool(recovered.term or recovered.votedFor or recovered.entries or recovered.snapshot)
            self.incarnation = await self._claim(hasState)
        self.term, self.votedFor = recovered.term, recovered.votedFor
        self.durableTerm = self.term
        if recovered.snapshot is not None:
            meta, data = recovered.snapshot
            self.log = RaftLog(meta.index, meta.term, recovered.entries)
            self.configs.reset(meta.index, meta.configuration)
            self.applier.restore(data)
            self.commitIndex = self.lastApplied = meta.index
        else:
            self.log = RaftLog(0, 0, recovered.entries)
        for e in recovered.entries:
            if e.kind == CONFIG:
                self.configs.append(e.index, Configuration.decode(e.data))
        self.transport.updatePeers(self.configs.latest().addressMap())
        log.info(
            "raft node {node} starting at term {term}, log {first}..{last}",
            node=self.id,
            term=self.term,
            first=self.log.snapshotIndex,
            last=self.log.lastIndex(),
        )
        self.startedAt = self.clock.seconds()
        if self.isVoter() and not self.votesIntact():
            log.warn(
                "node {node} runs on storage incarnation {number}, which its group has not recorded: "
                "its vote counts only once the leader has caught it up",
                node=self.id,
                number=self.incarnationNumber,
            )
        self.role.started()
        self._checkMembership()

    def bootstrap(self, address: str = "") -> bool:
        """
        Make this node the single voter of a new group, provided it has no
        history at all (term 0, empty log, no configuration); others join
        later through L{changeMembership}.  Return whether it did.  An
        embedder that bootstraps must pass the same one-voter configuration
        as C{bootstrap} when it restarts the node, since the group's first
        configuration is not a log entry.
        """
        if self._stopped or self.term != 0 or self.log.lastIndex() != 0 or self.configs.latest().members():
            return False
        addresses = ((self.id, address),) if address else ()
        self.configs.reset(0, Configuration(frozenset({self.id}), frozenset(), addresses))
        log.info("node {node} bootstraps a new group as its only voter", node=self.id)
        self._checkMembership()
        return True

    def stop(self) -> None:
        """
        Leave: stop timers, fail pending requests.
        """
        self._stopped = True
        self.role.stopped()

    # -- RoleActions ------------------------------------------------------

    def noteRole(self, role: str) -> None:
        self.roleName = role

    def armElectionTimer(self) -> None:
        self.disarmElectionTimer()
        s = self.settings
        delay = self.rng.uniform(s.electionTimeoutMin, s.electionTimeoutMax)
        self._electionTimer = self.clock.callLater(delay, self.role.electionTimedOut)

    def disarmElectionTimer(self) -> None:
        if self._electionTimer is not None and self._electionTimer.active():
            self._electionTimer.cancel()
        self._electionTimer = None

    def _ownVote(self) -> tuple[set[str], set[str]]:
        return {self.id}, ({self.id} if self.votesIntact() else set())

    def beginPreVote(self) -> None:
        self.leaderId = None
        self._election = ("pre", self.term + 1, *self._ownVote())
        for peer in sorted(self.configs.latest().voters - {self.id}):
            self.send(
                RequestVote(
                    self.id, peer, self.term + 1, self.log.lastIndex(), self.log.lastTerm(), preVote=True
                )
            )
        self._countVotes()

    def beginElection(self, transfer: bool) -> None:
        self.term += 1
        self.votedFor = self.id
        self.leaderId = None
        term = self.term
        self._election = ("real", term, *self._ownVote())
        log.info("node {node} starts an election for term {term}", node=self.id, term=term)

        def persisted(_: object) -> None:
            if self._stopped or self._election is None or self._election[1] != term:
                return
            for peer in sorted(self.configs.latest().voters - {self.id}):
                self.send(
                    RequestVote(
                        self.id, peer, term, self.log.lastIndex(), self.log.lastTerm(), transfer=transfer
                    )
                )
            self._countVotes()

        self._saveHardState().addCallback(persisted).addErrback(self._storageFailed)

    def startLeading(self) -> LeaderTimers:
        from suite.raft.leader import LeaderState

        self._election = None
        self.leaderId = self.id
        log.info("node {node} is leader for term {term}", node=self.id, term=self.term)
        self.leader = LeaderState(self)
        return self.leader.start()

    def stopLeading(self) -> None:
        leader, self.leader = self.leader, None
        if leader is not None:
            leader.abandon(NotLeader(None, "this node stepped down as leader"))
        if self.leaderId == self.id:
            self.leaderId = None

    # -- helpers ----------------------------------------------------------

    def send(self, message: Message) -> None:
        if not self._stopped:
            self.transport.send(message)

    def whenDurable(self, action: Callable[[], None]) -> None:
        """
        Run C{action} once every write requested so far is durable.
        """

        def run(_: object) -> None:
            if not self._stopped:
                action()

        self.storage.sync().addCallback(run).addErrback(self._storageFailed)  # type: ignore[attr-defined]

    def _saveHardState(self) -> Deferred[None]:
        term = self.term

        def saved(_: object) -> None:
            self.durableTerm = max(self.durableTerm, term)

        d = self.storage.saveHardState(term, self.votedFor)
        d.addCallback(saved)
        d.addErrback(self._storageFailed)
        return d

    def _storageFailed(self, failure: Any) -> None:
        log.failure("node {node}: storage write failed; stopping", failure, node=self.id)
        self.stop()

    def isVoter(self) -> bool:
        return self.id in self.configs.latest().voters

    @property
    def incarnationNumber(self) -> int:
        """
        This node's storage incarnation (0 when incarnations are not in use).
        """
        return self.incarnation.number if self.incarnation is not None else 0

    def votesIntact(self) -> bool:
        """
        Whether this node's vote counts toward a majority: its configuration
        records its storage incarnation (L{suite.raft.incarnation}).
        """
        return votesIntact(self.configs.latest(), self.id, self.incarnation)

    def inLease(self) -> bool:
        """
        True while we believe a leader is alive (then ignore disruptive
        vote requests: leader stickiness, part of CheckQuorum).
        """
        if self.leader is not None:
            return True
        if self.clock.seconds() - self.startedAt < self.settings.electionTimeoutMin:
            # Just (re)started: a leader may hold a lease that counted on us.
            return True
        return (
            self.leaderId is not None
            and self.clock.seconds() - self.lastLeaderContact < self.settings.electionTimeoutMin
        )

    def _checkMembership(self) -> None:
        if self.isVoter():
            self.role.promoted()
        else:
            self.role.demoted()

    def _adoptTerm(self, term: int, leader: str | None, src: str = "") -> None:
        if self.leader is not None:
            log.warn(
                "leader {node} saw term {new} from {src}; stepping down from term {term}",
                node=self.id,
                new=term,
                src=src,
                term=self.term,
            )
        self.term, self.votedFor, self.leaderId = term, None, leader
        self._election = None
        self._saveHardState()
        self.role.higherTermSeen()

    def _logUpToDate(self, lastIndex: int, lastTerm: int) -> bool:
        mine = self.log.lastTerm()
        return lastTerm > mine or (lastTerm == mine and lastIndex >= self.log.lastIndex())

    def _countVotes(self) -> None:
        if self._election is None:
            return
        kind, term, votes, intact = self._election
        config = self.configs.latest()
        # A majority of intact votes, or every voter (see suite.raft.incarnation).
        if len(intact & config.voters) >= config.quorum() or config.voters <= votes:
            self._election = None
            if kind == "pre":
                self.role.preVoteWon()
            elif term == self.term:
                if len(intact & config.voters) < config.quorum() and self.log.lastIndex() > 0:
                    log.warn(
                        "node {node} elected by every voter for term {term} without a majority of "
                        "recorded storage: its log (up to {last}) is the most complete copy left",
                        node=self.id,
                        term=term,
                        last=self.log.lastIndex(),
                    )
                self.role.electionWon()

    # -- inbound ----------------------------------------------------------

    def receive(self, m: Message) -> None:
        """
        Handle one inbound message (from the transport).
        """
        if self._stopped or m.dst != self.id:
            return
        if isinstance(m, RequestVote) and m.src not in self.configs.latest().voters:
            log.info(
                "node {node}: ignoring vote request from {src}, which is not a voter", node=self.id, src=m.src
            )
            return
        if m.term > self.term:
            if isinstance(m, RequestVote):
                if not m.transfer and self.inLease():
                    return
                if not m.preVote:
                    self._adoptTerm(m.term, None, m.src)
            elif isinstance(m, RequestVoteResponse) and m.preVote and m.granted:
                pass
            else:
                leader = m.src if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)) else None
                self._adoptTerm(m.term, leader, m.src)
        elif m.term < self.term:
            log.info(
                "node {node}: rejecting {kind} from {src} with stale term {stale} (current {term})",
                node=self.id,
                kind=type(m).__name__,
                src=m.src,
                stale=m.term,
                term=self.term,
            )
            if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                self.send(AppendEntriesResponse(self.id, m.src, self.term, False, 0))
            elif isinstance(m, RequestVote) and m.preVote:
                self.send(RequestVoteResponse(self.id, m.src, self.term, False, preVote=True))
            return
        handler = self._dispatch.get(type(m))
        if handler is not None:
            handler(m)

    def _onRequestVote(self, m: RequestVote) -> None:
        upToDate = self._logUpToDate(m.lastLogIndex, m.lastLogTerm)
        if m.preVote:
            grant = m.term > self.term and upToDate and (m.transfer or not self.inLease())
            term = m.term if grant else self.term
            self.send(RequestVoteResponse(self.id, m.src, term, grant, True, self.votesIntact()))
            return
        grant = upToDate and self.votedFor in (None, m.src) and self.leader is None
        if grant:
            self.votedFor = m.src
            self._saveHardState()
            self.armElectionTimerIfFollowing()
        reply = RequestVoteResponse(self.id, m.src, self.term, grant, False, self.votesIntact())
        self.whenDurable(lambda: self.send(reply))

    def armElectionTimerIfFollowing(self) -> None:
        # Granting a vote restarts the wait, as a heartbeat would.
        if self._electionTimer is not None:
            self.armElectionTimer()

    def _onRequestVoteResponse(self, m: RequestVoteResponse) -> None:
        if self._election is None or not m.granted:
            return
        kind, term, votes, intact = self._election
        if (kind == "pre") != m.preVote or m.term != term:
            return
        votes.add(m.src)
        if m.intact:
            intact.add(m.src)
        self._countVotes()

    def _onLeaderMessage(self, m: Message) -> None:
        if self.leader is not None:
            self.leader.receive(m)

    # -- commit, apply, snapshots -----------------------------------------

    def _commitTo(self, index: int) -> None:
        if index > self.commitIndex:
            self.commitIndex = index
            self._applyCommitted()

    def _applyCommitted(self) -> None:
        while self.lastApplied < self.commitIndex:
            entry = self.log.entry(self.lastApplied + 1)
            result = self.applier.apply(entry)
            self.lastApplied = entry.index
            if self.leader is not None:
                self.leader.applied(entry, result)
        for hook in self.appliedHooks:
            hook(self.lastApplied)
        if self.leader is not None:
            self.leader.appliedUpTo(self.lastApplied)
        self._maybeSnapshot()

    def _maybeSnapshot(self) -> None:
        if self.lastApplied - self.log.snapshotIndex < self.settings.snapshotThreshold:
            return
        index = self.lastApplied
        term = self.log.term(index)
        assert term is not None
        meta = SnapshotMeta(index, term, self.configs.at(index))
        data = self.applier.snapshot()
        log.info("node {node} snapshots at {index} ({size} bytes)", node=self.id, index=index, size=len(data))
        self.log.compact(index, term)
        self.configs.compact(index, meta.configuration)
        self.storage.saveSnapshot(meta, data).addErrback(self._storageFailed)

    # -- client API -------------------------------------------------------

    def whyNotLeader(self) -> str:
        """
        A sentence explaining why this node does not accept writes.
        """
        if self._stopped:
            return "this node is stopped"
        if self.leader is not None:
            return "this node is the leader"
        if self.id not in self.configs.latest().members():
            return "this node is not a member of the current configuration"
        if not self.isVoter():
            return "this node is a non-voting learner"
        if self.leaderId is not None:
            return f"this node is a {self.roleName}; {self.leaderId} leads term {self.term}"
        return f"no leader is known in term {self.term} (this node is a {self.roleName})"

    def _notLeader(self) -> Deferred[Any]:
        return fail(NotLeader(self.leaderId, self.whyNotLeader()))

    def propose(self, command: bytes, client: str = "", seq: int = 0) -> Deferred[Any]:
        """
        Replicate C{command}; fires with the state machine's result once it
        is committed and applied, or fails with L{NotLeader}.
        """
        if self.leader is None:
            return self._notLeader()
        return self.leader.propose(command, client, seq)  # type: ignore[no-any-return]

    def submit(
        self, command: bytes, client: str, seq: int, done: Callable[[object, Exception | None], None]
    ) -> None:
        """
        L{propose} without a L{Deferred}, for hot paths: C{done(result,
        None)} once committed and applied, C{done(None, error)} on failure
        (called at once when this node is not the leader).
        """
        if self.leader is None:
            done(None, NotLeader(self.leaderId, self.whyNotLeader()))
            return
        self.leader.submit(command, client, seq, done)

    def readIndex(self) -> Deferred[int]:
        """
        Fires (with the read index) once the local state machine reflects
        every write committed before the call: a linearizable read point.
        """
        if self.leader is None:
            return self._notLeader()
        return self.leader.readIndex()  # type: ignore[no-any-return]

    def changeMembership(
        self, action: str, nodeId: str, address: str = "", epoch: int | None = None
    ) -> Deferred[Any]:
        """
        C{action} is one of C{addLearner}, C{addVoter} (learner first,
        promoted once caught up), C{remove}, or C{epoch} (only record
        C{epoch}).  C{epoch}, when given, is recorded with the new
        configuration; a change with an epoch below the configuration's
        fails with L{suite.raft.membership.MembershipError}.
        """
        if self.leader is None:
            return self._notLeader()
        return self.leader.changeMembership(action, nodeId, address, epoch)  # type: ignore[no-any-return]

    def transferLeadership(self, target: str | None = None) -> Deferred[Any]:
        """
        Hand leadership to C{target} (or the most up-to-date voter).
        """
        if self.leader is None:
            return self._notLeader()
        return self.leader.transfer(target)  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        """
        A snapshot of this node's indexes and role, for health and metrics.
        """
        config = self.configs.latest()
        return {
            "id": self.id,
            "role": self.roleName,
            "term": self.term,
            "leader": self.leaderId,
            "commitIndex": self.commitIndex,
            "appliedIndex": self.lastApplied,
            "lastIndex": self.log.lastIndex(),
            "snapshotIndex": self.log.snapshotIndex,
            "voters": sorted(config.voters),
            "learners": sorted(config.learners),
            "configEpoch": config.epoch,
            "incarnation": self.incarnationNumber,
            "voteIntact": self.votesIntact(),
            "matchIndex": self.leader.matchIndexes() if self.leader is not None else {},
        }
