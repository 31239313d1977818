"""
Leader-side work: per-peer replication progress (probe / pipelined
replicate / snapshot), the current-term commit rule, proposals and their
waiters, ReadIndex (and optional lease) reads, CheckQuorum, leadership
transfer and single-server membership changes.

A L{LeaderState} exists only while its node leads one term; it is created
by the role machine's C{startLeading} output and dropped (failing every
waiter) by C{stopLeading}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from suite.raft.membership import MembershipChanges
from suite.raft.messages import (
    CONFIG,
    NOOP,
    NORMAL,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    SnapshotMeta,
    TimeoutNow,
)
from suite.raft.reads import ReadTracker
from suite.raft.sessions import StaleRequest

if TYPE_CHECKING:
    from suite.raft.node import RaftNode

log = Logger()

Done = Callable[[object, "Exception | None"], None]
"""
How a proposal's outcome is reported: C{done(result, None)} once the entry
is committed and applied, C{done(None, error)} when it failed.
"""


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


@dataclass
class Progress:
    """
    What the leader knows about one follower's log.
    """

    next: int
    match: int = 0
    state: str = "probe"
    paused: bool = False
    inflight: deque[int] = field(default_factory=deque)
    active: bool = True
    matchAtHeartbeat: int = -1
    snapshot: tuple[SnapshotMeta, bytes] | None = None
    snapshotOffset: int = 0
    offsetAtHeartbeat: int = -1
    epoch: int = 0

    def becomeProbe(self, next: int) -> None:
        self.epoch += 1
        self.state, self.next, self.paused, self.snapshot = "probe", next, False, None
        self.inflight.clear()


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
        self.transferDone: Deferred[str] | None = None
        self.transferTimer: IDelayedCall | None = None
        self.membership = MembershipChanges(self)
        self._loops: list[LoopingCall] = []

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> LeaderState:
        node = self.node
        for peer in sorted(node.configs.latest().members() - {node.id}):
            self.progress[peer] = Progress(next=node.log.lastIndex() + 1)
        self.selfMatch = node.log.lastIndex()
        self.noopIndex = self.unwritten = node.log.lastIndex() + 1
        self.appendLocal([Entry(self.term, self.noopIndex, NOOP)])
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

    def sendAppend(self, peer: str, allowEmpty: bool = False) -> None:
        pr = self.progress.get(peer)
        if pr is None or pr.state == "snapshot" or (pr.state == "probe" and pr.paused):
            return
        node = self.node
        last = node.log.lastIndex()
        while True:
            if pr.state == "replicate" and len(pr.inflight) >= self.settings.maxInflight:
                return
            prevTerm = node.log.term(pr.next - 1)
            if prevTerm is None:
                self.startSnapshot(peer, pr)
                return
            if pr.next > last and not allowEmpty:
                return
            entries = (
                node.log.slice(pr.next, last + 1, self.settings.maxAppendBytes) if pr.next <= last else []
            )
            node.send(
                AppendEntries(
                    node.id,
                    peer,
                    self.term,
                    pr.next - 1,
                    prevTerm,
                    tuple(entries),
                    node.commitIndex,
                    pr.epoch,
                )
            )
            if pr.state == "probe":
                pr.paused = True
                return
            if not entries:
                return
            pr.next = entries[-1].index + 1
            pr.inflight.append(pr.next - 1)
            allowEmpty = False

    def sendTail(self, peer: str, pr: Progress) -> None:
        """
        An empty AppendEntries at the end of what was sent.
        """
        node = self.node
        prevTerm = node.log.term(pr.next - 1)
        if prevTerm is None:
            self.startSnapshot(peer, pr)
        else:
            node.send(
                AppendEntries(node.id, peer, self.term, pr.next - 1, prevTerm, (), node.commitIndex, pr.epoch)
            )

    def startSnapshot(self, peer: str, pr: Progress) -> None:
        snap = self.node.storage.readSnapshot()
        if snap is None:
            log.error("leader {node} has no snapshot to send to {peer}", node=self.node.id, peer=peer)
            return
        log.info("leader sends snapshot at {index} to {peer}", index=snap[0].index, peer=peer)
        pr.state, pr.snapshot, pr.snapshotOffset = "snapshot", snap, 0
        pr.inflight.clear()
        self.sendChunk(peer, pr)

    def sendChunk(self, peer: str, pr: Progress) -> None:
        assert pr.snapshot is not None
        meta, data = pr.snapshot
        chunk = data[pr.snapshotOffset : pr.snapshotOffset + self.settings.snapshotChunkBytes]
        done = pr.snapshotOffset + len(chunk) >= len(data)
        self.node.send(
            InstallSnapshot(self.node.id, peer, self.term, meta, pr.snapshotOffset, chunk, done, len(data))
        )

    # -- responses ----------------------------------------------------------

    def receive(self, m: Message) -> None:
        if isinstance(m, AppendEntriesResponse):
            self.onAppendResponse(m)
        elif isinstance(m, HeartbeatResponse):
            self.onHeartbeatResponse(m)
        elif isinstance(m, InstallSnapshotResponse):
            self.onSnapshotResponse(m)

    def onAppendResponse(self, m: AppendEntriesResponse) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        if not self.membership.heard(m.src, pr, m.incarnation):
            return
        pr.active = True
        if m.success:
            if m.matchIndex > pr.match:
                pr.match = m.matchIndex
            while pr.inflight and pr.inflight[0] <= m.matchIndex:
                pr.inflight.popleft()
            if pr.state == "probe":
                pr.state, pr.paused = "replicate", False
                pr.next = pr.match + 1
                pr.inflight.clear()
            pr.next = max(pr.next, pr.match + 1)
            self.maybeCommit()
            self._afterProgress(m.src, pr)
            self.sendAppend(m.src)
            return
        if m.rejectIndex <= pr.match or pr.state == "snapshot" or m.epoch != pr.epoch:
            # Stale: answers a message sent before the last fall-back to probing.
            return
        if pr.state == "probe" and m.rejectIndex != pr.next - 1:
            return
        next = m.conflictIndex
        if m.conflictTerm:
            i = min(m.rejectIndex, self.node.log.lastIndex())
            while True:
                t = self.node.log.term(i)
                if t is None or t <= m.conflictTerm:
                    break
                i -= 1
            if t == m.conflictTerm:
                next = i + 1
        pr.becomeProbe(max(pr.match + 1, min(next, m.rejectIndex)))
        self.sendAppend(m.src)

    def onHeartbeatResponse(self, m: HeartbeatResponse) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        if not self.membership.heard(m.src, pr, m.incarnation):
            return
        pr.active = True
        self.reads.acknowledged(m.src, m.context)
        if pr.state == "snapshot":
            if pr.snapshotOffset == pr.offsetAtHeartbeat:
                self.sendChunk(m.src, pr)
            pr.offsetAtHeartbeat = pr.snapshotOffset
            return
        if pr.match < self.node.log.lastIndex():
            if pr.state == "probe":
                pr.paused = False
            elif pr.inflight and pr.match == pr.matchAtHeartbeat:
                # No acknowledgement since the last heartbeat: if a message
                # was lost the follower rejects this one (gap) and we probe;
                # if it is merely slow, it acknowledges later.
                self.sendTail(m.src, pr)
            self.sendAppend(m.src)
        pr.matchAtHeartbeat = pr.match

    def onSnapshotResponse(self, m: InstallSnapshotResponse) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        if not self.membership.heard(m.src, pr, m.incarnation):
            return
        pr.active = True
        if m.done:
            if pr.state == "snapshot" or m.index > pr.match:
                pr.match = max(pr.match, m.index)
                pr.becomeProbe(pr.match + 1)
                self.maybeCommit()
                self._afterProgress(m.src, pr)
                self.sendAppend(m.src)
        elif pr.state == "snapshot" and pr.snapshot is not None and pr.snapshot[0].index == m.index:
            if m.nextOffset != pr.snapshotOffset or m.nextOffset == 0:
                pr.snapshotOffset = m.nextOffset
                self.sendChunk(m.src, pr)

    def _afterProgress(self, peer: str, pr: Progress) -> None:
        if self.transferTarget == peer and pr.match >= self.node.log.lastIndex():
            self.node.send(TimeoutNow(self.node.id, peer, self.term))
        self.membership.progressed(peer)

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
            members = self.node.configs.latest().members()
            for peer in [p for p in self.progress if p not in members]:
                del self.progress[peer]
            self.node._checkMembership()

    def appliedUpTo(self, index: int) -> None:
        if not self.committedInTerm and self.node.commitIndex >= self.noopIndex:
            self.committedInTerm = True
            self.reads.termCommitted()
            self.membership.termCommitted()
        self.reads.applied(index)

    # -- proposals ----------------------------------------------------------

    def propose(self, command: bytes, client: str, seq: int) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.submit(command, client, seq, firing(d))
        return d

    def submit(self, command: bytes, client: str, seq: int, done: Done) -> None:
        """
        L{propose} without a L{Deferred}: C{done} is called exactly once
        (possibly before this returns, on refusal).
        """
        from suite.raft.node import NotLeader

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

    def readIndex(self) -> Deferred[int]:
        return self.reads.request()

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

    def transfer(self, target: str | None) -> Deferred[str]:
        node = self.node
        voters = node.configs.latest().voters - {node.id}
        if self.transferTarget is not None:
            return fail(TransferFailed(f"a transfer to {self.transferTarget} is in progress"))
        if target is None:
            if not voters:
                return fail(TransferFailed("there is no other voter"))
            target = max(sorted(voters), key=lambda v: self.progress[v].match if v in self.progress else 0)
        if target not in voters:
            return fail(TransferFailed(f"{target} is not a voter"))
        self.transferTarget = target
        d: Deferred[str] = Deferred()
        self.transferDone = d

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
        return d

    # -- membership -------------------------------------------------------

    def changeMembership(
        self, action: str, nodeId: str, address: str, epoch: int | None = None
    ) -> Deferred[Any]:
        return self.membership.change(action, nodeId, address, epoch)

    def newProgress(self, next: int) -> Progress:
        return Progress(next=next)

    def matchIndexes(self) -> dict[str, int]:
        out = {p: pr.match for p, pr in self.progress.items()}
        out[self.node.id] = self.selfMatch
        return out
