"""
Leader-side work: replication to each peer (driven by its progress machine,
L{suite.raft.progress}), the current-term commit rule, proposals and their
waiters, ReadIndex (and optional lease) reads, CheckQuorum, leadership
transfer and single-server membership changes.

A L{LeaderState} is the role machine's Leader state data: created by its
C{startLeading} output when the node wins an election and dropped (failing
every waiter) by C{stopLeading} when the machine leaves Leader.  Client
requests reach it as the role machine's inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from suite.raft.groupid import noopData
from suite.raft.membership import MembershipChanges
from suite.raft.messages import (
    CONFIG,
    NOOP,
    NORMAL,
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    TimeoutNow,
)
from suite.raft.progress import Progress, Snapshot, newProgress
from suite.raft.reads import ReadTracker
from suite.raft.roles import Done
from suite.raft.sessions import StaleRequest
from suite.raft.settings import NotLeader

if TYPE_CHECKING:
    from suite.raft.log import RaftLog
    from suite.raft.node import RaftNode

log = Logger()

__all__ = ["Done", "LeaderState", "Overloaded", "TransferFailed", "firing"]


def firing(d: Deferred[Any]) -> Done:
    """
    A L{Done} that fires C{d}.
    """

    def done(result: object, error: Exception | None) -> None:
        if error is None:
            d.callback(result)
        else:
            d.errback(error)

    return done


class Overloaded(Exception):
    """
    Too many proposals are waiting for commit; retry later.
    """


class TransferFailed(Exception):
    """
    Leadership transfer did not complete within an election timeout.
    """


class LeaderState:
    """
    The leader's bookkeeping for one term.
    """

    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self.term = node.term
        self.settings = node.settings
        self.progress: dict[str, Progress] = {}
        self.pending: dict[int, Done] = {}
        self.selfMatch = 0
        self.noopIndex = 0
        self.unwritten = 0
        self.committedInTerm = False
        self.abandoned = False
        self._flushCall: IDelayedCall | None = None
        self.reads = ReadTracker(self)
        self.transferTarget: str | None = None
        self.transferDone: Deferred[Any] | None = None
        self.transferTimer: IDelayedCall | None = None
        self.membership = MembershipChanges(self)
        #: peers a committed configuration removed -> the index of that
        #: configuration: still replicated to until they hold it, then told
        #: it is committed (L{_releaseDeparted})
        self.departing: dict[str, int] = {}
        self._loops: list[LoopingCall] = []

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> LeaderState:
        node = self.node
        for peer in sorted(node.configs.latest().members() - {node.id}):
            self.progress[peer] = self.newProgress(peer, node.log.lastIndex() + 1)
        self.selfMatch = node.log.lastIndex()
        self.noopIndex = self.unwritten = node.log.lastIndex() + 1
        # The no-op opening the term carries the group id (L{suite.raft.groupid}).
        self.appendLocal([Entry(self.term, self.noopIndex, NOOP, noopData(node.proposedGroup()))])
        for interval, fn in (
            (self.settings.heartbeatInterval, self.broadcastHeartbeat),
            (self.settings.electionTimeoutMax, self.checkQuorum),
        ):
            loop = LoopingCall(fn)
            loop.clock = node.clock
            loop.start(interval, now=False)
            self._loops.append(loop)
        return self

    def stop(self) -> None:
        """
        L{LeaderTimers}: cancel the periodic work.
        """
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []

    def abandon(self, error: Exception) -> None:
        """
        Leadership is over: fail every waiter.
        """
        self.writeLocal()
        self.abandoned = True
        self.stop()
        for call in (self._flushCall, self.transferTimer):
            if call is not None and call.active():
                call.cancel()
        proposals, self.pending = self.pending, {}
        for done in proposals.values():
            self._report(done, None, error)
        waiters: list[Deferred[Any]] = self.reads.abandon() + self.membership.abandon()
        if self.transferDone is not None:
            transferred, self.transferDone = self.transferDone, None
            if self.transferTarget is not None and self.node.term > self.term:
                transferred.callback(self.transferTarget)
            else:
                waiters.append(transferred)
        for d in waiters:
            d.errback(error)

    # -- appending ----------------------------------------------------------

    def appendLocal(self, entries: list[Entry]) -> None:
        """
        Append to the in-memory log now; the durable write and the
        replication of everything appended in this reactor turn happen
        together in L{flush} (one WAL record, one AppendEntries per peer).
        """
        node = self.node
        node.log.append(entries)
        if self._flushCall is None:
            self._flushCall = node.clock.callLater(0, self.flush)

    def writeLocal(self) -> None:
        """
        Hand the entries not yet given to storage to it.
        """
        node = self.node
        last = node.log.lastIndex()
        if self.unwritten > last:
            return
        entries = node.log.slice(self.unwritten, last + 1, 1 << 62)
        self.unwritten = last + 1

        def durable(_: object) -> None:
            if not self.abandoned and last > self.selfMatch:
                self.selfMatch = last
                self.maybeCommit()

        node.storage.appendEntries(None, entries).addCallback(durable).addErrback(node._storageFailed)

    def flush(self) -> None:
        self._flushCall = None
        self.writeLocal()
        for peer in list(self.progress):
            self.sendAppend(peer)

    def sendAppend(self, peer: str) -> None:
        """
        Let C{peer}'s progress machine send what its state allows.
        """
        pr = self.progress.get(peer)
        if pr is not None:
            pr.inputs.send()

    # -- Replicator (what the progress machines use) -------------------------

    @property
    def log(self) -> RaftLog:
        return self.node.log

    def sendEntries(self, pr: Progress, prevTerm: int, entries: list[Entry]) -> None:
        node = self.node
        node.send(
            AppendEntries(
                node.id,
                pr.peer,
                self.term,
                pr.next - 1,
                prevTerm,
                tuple(entries),
                node.commitIndex,
                pr.epoch,
            )
        )

    def sendChunk(self, peer: str, snapshot: Snapshot, offset: int) -> None:
        meta, data = snapshot
        chunk = data[offset : offset + self.settings.snapshotChunkBytes]
        done = offset + len(chunk) >= len(data)
        self.node.send(InstallSnapshot(self.node.id, peer, self.term, meta, offset, chunk, done, len(data)))

    def readSnapshot(self) -> Snapshot | None:
        return self.node.storage.readSnapshot()

    def progressed(self, pr: Progress) -> None:
        self.maybeCommit()
        self._afterProgress(pr.peer, pr)
        self.sendAppend(pr.peer)

    # -- responses ----------------------------------------------------------

    def receive(self, m: Message) -> None:
        if isinstance(m, AppendEntriesResponse):
            self.onAppendResponse(m)
        elif isinstance(m, HeartbeatResponse):
            self.onHeartbeatResponse(m)
        elif isinstance(m, InstallSnapshotResponse):
            self.onSnapshotResponse(m)

    def _heardFrom(
        self, m: AppendEntriesResponse | HeartbeatResponse | InstallSnapshotResponse
    ) -> Progress | None:
        """
        The progress of the follower that answered C{m}, marked active; or
        C{None} when C{m} is from no tracked follower or a stale incarnation.
        """
        pr = self.progress.get(m.src)
        if pr is None or not self.membership.heard(m.src, pr, m.incarnation):
            return None
        pr.active = True
        return pr

    def onAppendResponse(self, m: AppendEntriesResponse) -> None:
        pr = self._heardFrom(m)
        if pr is None:
            return
        if m.success:
            pr.inputs.appendAccepted(m.matchIndex)
        else:
            pr.inputs.appendRejected(m)

    def onHeartbeatResponse(self, m: HeartbeatResponse) -> None:
        pr = self._heardFrom(m)
        if pr is None:
            return
        self.reads.acknowledged(m.src, m.context)
        pr.inputs.heartbeatAnswered()

    def onSnapshotResponse(self, m: InstallSnapshotResponse) -> None:
        pr = self._heardFrom(m)
        if pr is None:
            return
        if m.done:
            pr.inputs.snapshotInstalled(m.index)
        else:
            pr.inputs.snapshotChunkAnswered(m.index, m.nextOffset)

    def _afterProgress(self, peer: str, pr: Progress) -> None:
        if self.transferTarget == peer and pr.match >= self.node.log.lastIndex():
            self.node.send(TimeoutNow(self.node.id, peer, self.term))
        self.membership.progressed(peer)
        if peer in self.departing:
            self._releaseDeparted(peer)

    # -- commit and apply ---------------------------------------------------

    def maybeCommit(self) -> None:
        node = self.node
        config = node.configs.latest()
        matches = sorted(
            (self.selfMatch if v == node.id else self.progress[v].match if v in self.progress else 0)
            for v in config.voters
        )
        if not matches:
            return
        n = matches[len(matches) - config.quorum()]
        if n > node.commitIndex and node.log.term(n) == self.term:
            node._commitTo(n)

    def applied(self, entry: Entry, result: object) -> None:
        done = self.pending.pop(entry.index, None)
        if done is not None:
            if isinstance(result, StaleRequest):
                self._report(done, None, result)
            else:
                self._report(done, result, None)
        if entry.kind == CONFIG and not self.abandoned:
            members = Configuration.decode(entry.data).members() | self.node.configs.latest().members()
            for peer in list(self.progress):
                if peer in members:
                    self.departing.pop(peer, None)
                else:
                    self.departing.setdefault(peer, entry.index)
                    self._releaseDeparted(peer)
            self.node._checkMembership()
            self.membership.configCommitted()

    def _releaseDeparted(self, peer: str) -> None:
        """
        Stop replicating to C{peer}, which a committed configuration
        removed, once it holds that configuration: a last heartbeat tells it
        the configuration is committed, so that it knows it may stop (a
        removed replica does not stop while the group may still need it).
        """
        index = self.departing.get(peer)
        pr = self.progress.get(peer)
        node = self.node
        if index is not None and peer in node.configs.latest().members():
            del self.departing[peer]  # added again
            return
        if index is None or pr is None or pr.match < index or node.commitIndex < index:
            return
        del self.departing[peer]
        del self.progress[peer]
        node.send(Heartbeat(node.id, peer, self.term, min(pr.match, node.commitIndex)))

    def remindRemoved(self, peer: str, term: int) -> None:
        """
        C{peer}, at C{term}, asked for votes, but the latest configuration
        does not count it as a member: a configuration removing it may
        have committed before it received it, under a leader that lost
        leadership before telling it (a new leader does not know it).
        Replicate to it until it holds the latest configuration, which
        excludes it, and that configuration is committed; then tell it
        (L{_releaseDeparted}).  A peer with a later term than ours is left
        alone: answering it would depose this leader.
        """
        node = self.node
        if self.abandoned or peer in self.progress or term > self.term:
            return
        log.info(
            "leader {node}: {peer}, not a member of the group's configuration, asks for votes; "
            "replicating to it until it holds the configuration without it",
            node=node.id,
            peer=peer,
        )
        # Probing from the last entry: there is something to send at once.
        self.progress[peer] = self.newProgress(peer, max(1, node.log.lastIndex()))
        self.departing[peer] = node.configs.latestIndex()
        self.sendAppend(peer)

    def appliedUpTo(self, index: int) -> None:
        if not self.committedInTerm and self.node.commitIndex >= self.noopIndex:
            self.committedInTerm = True
            self.reads.termCommitted()
            self.membership.termCommitted()
        self.reads.applied(index)

    # -- proposals (the role machine's inputs in Leader) -----------------------

    def submit(self, command: bytes, client: str, seq: int, done: Done) -> None:
        """
        Append C{command} for replication: C{done} is called exactly once
        (possibly before this returns, on refusal).
        """
        if self.transferTarget is not None:
            done(None, NotLeader(None, f"leadership is being transferred to {self.transferTarget}"))
            return
        if len(self.pending) >= self.settings.maxPendingProposals:
            done(None, Overloaded(f"{len(self.pending)} proposals already waiting"))
            return
        index = self.node.log.lastIndex() + 1
        self.pending[index] = done
        self.appendLocal([Entry(self.term, index, NORMAL, command, client, seq)])

    @staticmethod
    def _report(done: Done, result: object, error: Exception | None) -> None:
        # Runs inside the apply loop: a failing waiter must not stop it.
        try:
            done(result, error)
        except Exception:
            log.failure("a proposal's completion callback failed")

    # -- reads ------------------------------------------------------------

    def read(self, result: Deferred[int]) -> None:
        self.reads.request(result)

    def broadcastHeartbeat(self) -> None:
        node = self.node
        ctx = self.reads.heartbeatSent()
        for peer, pr in self.progress.items():
            node.send(Heartbeat(node.id, peer, self.term, min(pr.match, node.commitIndex), ctx))
        self.reads.confirm()

    def checkQuorum(self) -> None:
        config = self.node.configs.latest()
        active = {p for p, pr in self.progress.items() if pr.active} | {self.node.id}
        for pr in self.progress.values():
            pr.active = False
        if len(active & config.voters) < config.quorum():
            log.warn(
                "leader {node} lost contact with a quorum; stepping down in term {term}",
                node=self.node.id,
                term=self.term,
            )
            self.node.role.quorumLost()

    # -- transfer -----------------------------------------------------------

    def transfer(self, target: str | None, result: Deferred[Any]) -> None:
        """
        Hand leadership to C{target} (or the most up-to-date voter): fires
        C{result} with the new leader's id, or fails with L{TransferFailed}.
        """
        node = self.node
        voters = node.configs.latest().voters - {node.id}
        if self.transferTarget is not None:
            result.errback(TransferFailed(f"a transfer to {self.transferTarget} is in progress"))
            return
        if target is None:
            if not voters:
                result.errback(TransferFailed("there is no other voter"))
                return
            target = max(sorted(voters), key=lambda v: self.progress[v].match if v in self.progress else 0)
        if target not in voters:
            result.errback(TransferFailed(f"{target} is not a voter"))
            return
        self.transferTarget = target
        self.transferDone = result

        def giveUp() -> None:
            self.transferTimer = None
            done, self.transferDone, self.transferTarget = self.transferDone, None, None
            if done is not None:
                done.errback(TransferFailed(f"{target} did not take over within an election timeout"))

        self.transferTimer = node.clock.callLater(self.settings.electionTimeoutMax, giveUp)
        pr = self.progress[target]
        if pr.match >= node.log.lastIndex():
            node.send(TimeoutNow(node.id, target, self.term))
        else:
            self.sendAppend(target)

    # -- membership -------------------------------------------------------

    def changeMembership(
        self, action: str, nodeId: str, address: str, epoch: int | None, result: Deferred[Any]
    ) -> None:
        self.membership.change(action, nodeId, address, epoch).chainDeferred(result)

    def newProgress(self, peer: str, next: int) -> Progress:
        return newProgress(peer, self, next)

    def matchIndexes(self) -> dict[str, int]:
        out = {p: pr.match for p, pr in self.progress.items()}
        out[self.node.id] = self.selfMatch
        return out
