"""
L{RaftNode}: one Raft participant.

The node owns the term, vote, log, commit and apply indexes and the
configuration; it feeds the role machine (L{suite.raft.roles}) and performs
its outputs.  The role and what belongs to it (the election timer, a
candidate's vote tally, the leader's bookkeeping, being stopped) live in
that machine, whose states also decide which peers' messages are handled
(L{receive}): until the node has loaded its durable state (L{start}) the
machine is in Loading and drops every message, since the term, vote and
log it would answer from are not known yet.  Client requests
(L{propose}, L{readIndex}, L{changeMembership}, L{transferLeadership}) are
its inputs, which the Leader state hands to its
L{suite.raft.leader.LeaderState} and every other state refuses.
Everything runs on one thread, driven by the injected clock; durable
writes go through L{IRaftStorage}, whose Deferreds gate every reply that
promises durability.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from suite.raft.follower import FollowerHandlers
from suite.raft.groupid import MemoryGroupStore, entryGroup, formatGroup, newGroupId
from suite.raft.incarnation import Claim, Incarnation, votesIntact
from suite.raft.interfaces import IRaftGroupStore, IRaftStateMachine, IRaftStorage, IRaftTransport
from suite.raft.leader import LeaderState, firing
from suite.raft.log import RaftLog
from suite.raft.membership import ConfigurationHistory
from suite.raft.messages import (
    CONFIG,
    NOOP,
    AppendEntries,
    AppendEntriesResponse,
    CommitAnswer,
    CommitQuery,
    Configuration,
    GroupMismatch,
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
from suite.raft.roles import Ballot, Done, Leadership, Timer, newRoleMachine
from suite.raft.sessions import SessionApplier
from suite.raft.settings import NotLeader, RaftSettings
from suite.raft.storage import Recovered

log = Logger()

__all__ = ["NotLeader", "RaftNode", "RaftSettings"]

#: Seconds between two log lines about the same foreign group.
FOREIGN_LOG_INTERVAL = 60.0
#: Seconds a peer counts as foreign after its last message of another group
#: (it may have moved its data aside and come back new, to join this group).
FOREIGN_MEMORY = 60.0


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
        groupStore: IRaftGroupStore | None = None,
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
        #: The role, as the role machine last announced it (roleChanged).
        self.roleName = "loading"
        self._leader: LeaderState | None = None
        self.lastLeaderContact = -1e18
        self.startedAt = -1e18
        #: Messages dropped because they arrived while loading.
        self.droppedWhileLoading = 0
        self._claim = incarnation
        #: This node's storage incarnation (None: incarnations not in use).
        self.incarnation: Incarnation | None = None
        self.groupStore = IRaftGroupStore(groupStore) if groupStore is not None else MemoryGroupStore()
        #: The id of the Raft group this node belongs to (L{suite.raft.groupid}); 0: none yet.
        self.groupId = 0
        #: The write recording the group id, until it is durable.
        self._groupSaving: Deferred[None] | None = None
        self._groupWaiters: list[Deferred[None]] = []
        #: peer -> (the other group id it spoke for, when it last did)
        self._foreignSeen: dict[str, tuple[int, float]] = {}
        self._foreignLogged: dict[int, float] = {}
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
        Load durable state and join the group.  Until then the node answers
        no peer and refuses every request (the role machine's Loading).
        """
        recovered: Recovered = await self.storage.load()
        if self._claim is not None and not self.stopped:
            hasState = bool(recovered.term or recovered.votedFor or recovered.entries or recovered.snapshot)
            self.incarnation = await self._claim(hasState)
        if not self.stopped:
            self.groupId = await self.groupStore.load()
        if self.stopped:
            return
        self.term, self.votedFor = recovered.term, recovered.votedFor
        self.durableTerm = self.term
        if recovered.snapshot is not None:
            meta, data = recovered.snapshot
            if not self.groupId and meta.configuration.group:
                self.bindGroup(meta.configuration.group, "recorded in its snapshot")
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
            "raft node {node} starting at term {term}, log {first}..{last}, group {group}",
            node=self.id,
            term=self.term,
            first=self.log.snapshotIndex,
            last=self.log.lastIndex(),
            group=formatGroup(self.groupId) or "none yet",
        )
        if self.droppedWhileLoading:
            log.info(
                "node {node} dropped {n} messages from peers while loading (they are resent)",
                node=self.id,
                n=self.droppedWhileLoading,
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
        if (
            self.loading
            or self.stopped
            or self.term != 0
            or self.log.lastIndex() != 0
            or self.configs.latest().members()
        ):
            return False
        addresses = ((self.id, address),) if address else ()
        self.configs.reset(0, Configuration(frozenset({self.id}), frozenset(), addresses))
        if self.groupId:
            log.warn(
                "node {node} leaves Raft group {group}, whose log it no longer holds, to found a new one",
                node=self.id,
                group=formatGroup(self.groupId),
            )
        # A new group always gets a new id, so it never passes for an old one.
        self.bindGroup(newGroupId(self.rng), "founded")
        log.info(
            "node {node} bootstraps a new group {group} as its only voter",
            node=self.id,
            group=formatGroup(self.groupId),
        )
        self._checkMembership()
        return True

    def stop(self) -> None:
        """
        Leave: stop timers, fail pending requests.
        """
        self.role.stopped()

    # -- the role, as announced ---------------------------------------------

    @property
    def leader(self) -> LeaderState | None:
        """
        While this node leads: the leader's bookkeeping for its term (the
        role machine's Leader state data), else None.
        """
        return self._leader

    @property
    def stopped(self) -> bool:
        return self.roleName == "stopped"

    @property
    def loading(self) -> bool:
        """
        True until the node has loaded its durable state.
        """
        return self.roleName == "loading"

    # -- RoleActions ------------------------------------------------------

    def roleChanged(self, role: str, leadership: Leadership | None) -> None:
        self.roleName = role
        # The machine leads with what startLeading returned.
        self._leader = cast(LeaderState | None, leadership)

    def _electionTimeout(self) -> float:
        s = self.settings
        return self.rng.uniform(s.electionTimeoutMin, s.electionTimeoutMax)

    def startElectionTimer(self) -> IDelayedCall:
        return self.clock.callLater(self._electionTimeout(), self.role.electionTimedOut)

    def restartElectionTimer(self, timer: Timer) -> Timer:
        delay = self._electionTimeout()
        if timer.active():
            timer.reset(delay)
            return timer
        return self.clock.callLater(delay, self.role.electionTimedOut)

    def messageDropped(self, message: Message) -> None:
        if not self.droppedWhileLoading:
            log.info(
                "node {node} is still loading its log: dropping messages from peers until it has",
                node=self.id,
            )
        self.droppedWhileLoading += 1

    def _ownVote(self, ballot: Ballot, term: int) -> None:
        ballot.term, ballot.votes = term, {self.id}
        ballot.intact = {self.id} if self.votesIntact() else set()

    def beginPreVote(self, ballot: Ballot) -> None:
        self.leaderId = None
        self._ownVote(ballot, self.term + 1)
        for peer in sorted(self.configs.latest().voters - {self.id}):
            self.send(
                RequestVote(
                    self.id, peer, self.term + 1, self.log.lastIndex(), self.log.lastTerm(), preVote=True
                )
            )

    def beginElection(self, transfer: bool) -> None:
        self.term += 1
        self.votedFor = self.id
        self.leaderId = None
        term = self.term
        log.info("node {node} starts an election for term {term}", node=self.id, term=term)

        def persisted(_: object) -> None:
            self.role.voteSaved(term, transfer)

        self._saveHardState().addCallback(persisted).addErrback(self._storageFailed)

    def openBallot(self, ballot: Ballot, term: int, transfer: bool) -> bool:
        if term != self.term:
            return False
        self._ownVote(ballot, term)
        for peer in sorted(self.configs.latest().voters - {self.id}):
            self.send(
                RequestVote(self.id, peer, term, self.log.lastIndex(), self.log.lastTerm(), transfer=transfer)
            )
        return True

    def won(self, ballot: Ballot, preVote: bool) -> bool:
        config = self.configs.latest()
        # A majority of intact votes, or every voter (see suite.raft.incarnation).
        majority = len(ballot.intact & config.voters) >= config.quorum()
        if not (majority or config.voters <= ballot.votes):
            return False
        if not preVote and not majority and self.log.lastIndex() > 0:
            log.warn(
                "node {node} elected by every voter for term {term} without a majority of "
                "recorded storage: its log (up to {last}) is the most complete copy left",
                node=self.id,
                term=ballot.term,
                last=self.log.lastIndex(),
            )
        return True

    def startLeading(self) -> Leadership:
        self.leaderId = self.id
        log.info("node {node} is leader for term {term}", node=self.id, term=self.term)
        return LeaderState(self).start()

    def stopLeading(self, leadership: Leadership) -> None:
        cast(LeaderState, leadership).abandon(NotLeader(None, "this node stepped down as leader"))
        if self.leaderId == self.id:
            self.leaderId = None

    def notLeader(self) -> Exception:
        return NotLeader(self.leaderId, self.whyNotLeader())

    # -- helpers ----------------------------------------------------------

    def send(self, message: Message) -> None:
        if not self.stopped:
            if self.groupId:
                # Stamped here, once, before the message leaves (it is not
                # shared before): every message carries the group id.
                object.__setattr__(message, "group", self.groupId)
            self.transport.send(message)

    def whenDurable(self, action: Callable[[], None]) -> None:
        """
        Run C{action} once every write requested so far is durable (the
        group id included).
        """

        def run(_: object) -> None:
            if not self.stopped:
                action()

        d = self.storage.sync()
        if self._groupSaving is not None:
            waiting: Deferred[None] = Deferred()
            self._groupWaiters.append(waiting)
            d.addCallback(lambda _: waiting)
        d.addCallback(run).addErrback(self._storageFailed)

    @property
    def groupDurable(self) -> bool:
        """
        Whether the group id (if any) is durable.
        """
        return self._groupSaving is None

    # -- group ids ----------------------------------------------------------

    def bindGroup(self, group: int, how: str) -> None:
        """
        Make C{group} this node's group id, for good, and record it.
        """
        self.groupId = group
        log.info(
            "node {node} belongs to Raft group {group} ({how})",
            node=self.id,
            group=formatGroup(group),
            how=how,
        )
        saving = self.groupStore.save(group)
        self._groupSaving = saving

        def saved(_: object) -> None:
            if self._groupSaving is saving:
                self._groupSaving = None
                waiters, self._groupWaiters = self._groupWaiters, []
                for waiting in waiters:
                    waiting.callback(None)

        saving.addCallback(saved).addErrback(self._storageFailed)

    def proposedGroup(self) -> int:
        """
        The group id a new leader writes in its opening no-op: its own, or
        the first one its log carries, or a new one (L{suite.raft.groupid}).
        """
        if self.groupId:
            return self.groupId
        if self.configs.base.group:
            return self.configs.base.group
        for index in range(self.log.snapshotIndex + 1, self.log.lastIndex() + 1):
            entry = self.log.entry(index)
            if entry.kind == NOOP:
                found = entryGroup(entry)
                if found:
                    return found
        return newGroupId(self.rng)

    def _bindCommitted(self, start: int, end: int) -> None:
        """
        Entries C{start}..C{end} were just committed: bind the first group id
        they carry (this node has none yet).
        """
        for index in range(max(start, self.log.snapshotIndex + 1), end + 1):
            entry = self.log.entry(index)
            if entry.kind == NOOP:
                found = entryGroup(entry)
                if found:
                    self.bindGroup(found, f"committed at {index}")
                    return

    def adoptGroup(self, group: int, leader: str) -> None:
        """
        A message of C{leader}, which this node follows, carried C{group}.
        """
        if group and not self.groupId:
            self.bindGroup(group, f"adopted from leader {leader}")

    @property
    def foreignPeers(self) -> dict[str, int]:
        """
        Peers known to belong to another group -> their group id: those
        whose refusal or message of another group came in the last
        L{FOREIGN_MEMORY} seconds.
        """
        now = self.clock.seconds()
        for peer, (_, seen) in list(self._foreignSeen.items()):
            if now - seen > FOREIGN_MEMORY:
                del self._foreignSeen[peer]
        return {peer: group for peer, (group, _) in self._foreignSeen.items()}

    def _foreign(self, peer: str, group: int, what: str) -> None:
        """
        C{peer} belongs to Raft group C{group}, not ours: note it, and say
        so (once a minute per group).
        """
        now = self.clock.seconds()
        self._foreignSeen[peer] = (group, now)
        last = self._foreignLogged.get(group)
        if last is None or now - last >= FOREIGN_LOG_INTERVAL:
            self._foreignLogged[group] = now
            log.warn(
                "node {node} (Raft group {mine}): {what} from {peer} of another Raft group {other}; the groups "
                "stay apart (merging them is an operator's decision)",
                node=self.id,
                mine=formatGroup(self.groupId),
                what=what,
                peer=peer,
                other=formatGroup(group),
            )
        leader = self.leader
        if leader is not None:
            leader.membership.foreign(peer, group)

    def _refuseForeign(self, m: Message) -> None:
        self._foreign(m.src, m.group, f"refusing {type(m).__name__}")
        if isinstance(m, (RequestVote, AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow)):
            reason = (
                f"node {self.id} belongs to Raft group {formatGroup(self.groupId)}, not to the sender's "
                f"group {formatGroup(m.group)}: {type(m).__name__} refused"
            )
            self.send(GroupMismatch(self.id, m.src, self.term, reason))

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
        self._saveHardState()
        self.role.higherTermSeen()

    def _logUpToDate(self, lastIndex: int, lastTerm: int) -> bool:
        mine = self.log.lastTerm()
        return lastTerm > mine or (lastTerm == mine and lastIndex >= self.log.lastIndex())

    # -- inbound ----------------------------------------------------------

    def receive(self, m: Message) -> None:
        """
        Handle one inbound message (from the transport).
        """
        if m.dst != self.id or isinstance(m, (CommitQuery, CommitAnswer)):
            # (commit queries are answered beside the node, never by it:
            # L{suite.raft.commitproof})
            return
        if not self.role.received(m):
            return
        if isinstance(m, GroupMismatch):
            # (never answered; its term is not ours to take)
            if m.group and m.group != self.groupId:
                self._foreign(m.src, m.group, f"refused by {m.src}: {m.reason}")
            return
        if m.group != self.groupId and m.group and self.groupId:
            # Another group's node: never its term, vote or entries.
            self._refuseForeign(m)
            return
        if m.group and m.src in self._foreignSeen:
            del self._foreignSeen[m.src]  # (it speaks for this group now)
        if isinstance(m, RequestVote) and m.src not in self.configs.latest().voters:
            leading = self.leader
            if leading is not None and m.src not in self.configs.latest().members():
                # Perhaps removed by a configuration it never received (the
                # leader that removed it lost leadership first): tell it.
                leading.remindRemoved(m.src, m.term - 1 if m.preVote else m.term)
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
            # Granting a vote restarts the wait, as a heartbeat would.
            self.role.voteCast()
        reply = RequestVoteResponse(self.id, m.src, self.term, grant, False, self.votesIntact())
        self.whenDurable(lambda: self.send(reply))

    def _onRequestVoteResponse(self, m: RequestVoteResponse) -> None:
        if m.granted:
            self.role.voteGranted(m.src, m.term, m.preVote, m.intact)

    def _onLeaderMessage(self, m: Message) -> None:
        leader = self.leader
        if leader is not None:
            leader.receive(m)

    # -- commit, apply, snapshots -----------------------------------------

    def _commitTo(self, index: int) -> None:
        if index > self.commitIndex:
            if not self.groupId:
                self._bindCommitted(self.commitIndex + 1, index)
            self.commitIndex = index
            self._applyCommitted()

    def _applyCommitted(self) -> None:
        while self.lastApplied < self.commitIndex:
            entry = self.log.entry(self.lastApplied + 1)
            result = self.applier.apply(entry)
            self.lastApplied = entry.index
            leader = self.leader
            if leader is not None:
                leader.applied(entry, result)
        for hook in self.appliedHooks:
            hook(self.lastApplied)
        leader = self.leader
        if leader is not None:
            leader.appliedUpTo(self.lastApplied)
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
        self.compactTo(meta, data)

    def compactTo(self, meta: SnapshotMeta, data: bytes) -> None:
        """
        Drop the log up to C{meta.index} (applied, with C{meta.term}) and
        store C{data}, the state machine's snapshot at that index; a failed
        write stops the node as any storage failure does.
        """
        if self.groupId and meta.configuration.group != self.groupId:
            # The snapshot keeps the group id its compacted entries carried.
            meta = replace(meta, configuration=replace(meta.configuration, group=self.groupId))
        self.log.compact(meta.index, meta.term)
        self.configs.compact(meta.index, meta.configuration)
        self.storage.saveSnapshot(meta, data).addErrback(self._storageFailed)

    # -- client API -------------------------------------------------------

    def whyNotLeader(self) -> str:
        """
        A sentence explaining why this node does not accept writes.
        """
        if self.stopped:
            return "this node is stopped"
        if self.loading:
            return "this node is still loading its log"
        if self.leader is not None:
            return "this node is the leader"
        if self.id not in self.configs.latest().members():
            return "this node is not a member of the current configuration"
        if not self.isVoter():
            return "this node is a non-voting learner"
        if self.leaderId is not None:
            return f"this node is a {self.roleName}; {self.leaderId} leads term {self.term}"
        return f"no leader is known in term {self.term} (this node is a {self.roleName})"

    def propose(self, command: bytes, client: str = "", seq: int = 0) -> Deferred[Any]:
        """
        Replicate C{command}; fires with the state machine's result once it
        is committed and applied, or fails with L{NotLeader}.
        """
        d: Deferred[Any] = Deferred()
        self.role.propose(command, client, seq, firing(d))
        return d

    def submit(self, command: bytes, client: str, seq: int, done: Done) -> None:
        """
        L{propose} without a L{Deferred}, for hot paths: C{done(result,
        None)} once committed and applied, C{done(None, error)} on failure
        (called at once when this node is not the leader).
        """
        self.role.propose(command, client, seq, done)

    def readIndex(self) -> Deferred[int]:
        """
        Fires (with the read index) once the local state machine reflects
        every write committed before the call: a linearizable read point.
        """
        d: Deferred[int] = Deferred()
        self.role.read(d)
        return d

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
        d: Deferred[Any] = Deferred()
        self.role.changeMembership(action, nodeId, address, epoch, d)
        return d

    def transferLeadership(self, target: str | None = None) -> Deferred[Any]:
        """
        Hand leadership to C{target} (or the most up-to-date voter).
        """
        d: Deferred[Any] = Deferred()
        self.role.transferLeadership(target, d)
        return d

    def status(self) -> dict[str, Any]:
        """
        A snapshot of this node's indexes and role, for health and metrics.
        """
        config = self.configs.latest()
        leader = self.leader
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
            "group": formatGroup(self.groupId),
            "foreignPeers": {peer: formatGroup(g) for peer, g in sorted(self.foreignPeers.items())},
            "matchIndex": leader.matchIndexes() if leader is not None else {},
        }
