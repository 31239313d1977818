"""
Per-follower replication progress on the leader, as a machine.

States (the names etcd/raft uses):

 - Probe: the leader does not know where the follower's log ends; it sends
   one AppendEntries at the guessed C{next} and then waits (ProbeSent) for
   the answer or the next heartbeat answer before sending another;
 - ProbeSent: the probe is out;
 - Replicate (data: L{Pipeline}, the last index of each AppendEntries in
   flight): the follower is known to match; entries stream out, at most
   C{maxInflight} messages ahead of the acknowledgements;
 - Snapshot (data: L{SnapshotTransfer}, the snapshot and the offset of the
   chunk in flight): the log no longer holds what the follower needs.

Inputs (L{ProgressInputs}), answered in every state: send (new entries to
replicate), appendAccepted, appendRejected, heartbeatAnswered,
snapshotInstalled, snapshotChunkAnswered from the follower's answers; and
probeSent, resumed, snapshotStarted, becomeProbe, which an output feeds back
when what it found (the log, the answer) decides the next state: automat
runs them once the current transition is over, in the order fed.

What every state shares (C{next}, C{match}, the epoch tagging messages sent
since the last fall-back to probing, the heartbeat marks) is the core,
L{Progress}; the leader's log, messages and commit rule are reached
through L{Replicator} (L{suite.raft.leader.LeaderState}).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.logger import Logger

from suite.fsm import indexed
from suite.raft.log import RaftLog
from suite.raft.messages import AppendEntriesResponse, Entry, SnapshotMeta
from suite.raft.settings import RaftSettings

log = Logger()

Snapshot = tuple[SnapshotMeta, bytes]


class ProgressInputs(Protocol):
    def send(self) -> None:
        """
        Entries may be waiting for this follower: send what the state allows.
        """

    def appendAccepted(self, matchIndex: int) -> None:
        """
        The follower's log matches ours up to C{matchIndex}.
        """

    def appendRejected(self, response: AppendEntriesResponse) -> None:
        """
        The follower's log did not match at C{response.rejectIndex}.
        """

    def heartbeatAnswered(self) -> None:
        """
        The follower answered a heartbeat.
        """

    def snapshotInstalled(self, index: int) -> None:
        """
        The follower holds a snapshot at C{index}.
        """

    def snapshotChunkAnswered(self, index: int, nextOffset: int) -> None:
        """
        The follower has the snapshot at C{index} up to C{nextOffset}.
        """

    def probeSent(self) -> None:
        """
        (Fed back.) A probe went out: wait for its answer.
        """

    def resumed(self) -> None:
        """
        (Fed back.) The probe's answer is overdue: another may go out.
        """

    def snapshotStarted(self, snapshot: Snapshot) -> None:
        """
        (Fed back.) The log lacks what the follower needs: send C{snapshot}.
        """

    def becomeProbe(self, next: int) -> None:
        """
        (Fed back.) Find the follower's log end again, starting at C{next}.
        """


class Replicator(Protocol):
    """
    The leader's side of replication (L{suite.raft.leader.LeaderState}).
    """

    settings: RaftSettings

    @property
    def log(self) -> RaftLog: ...

    def sendEntries(self, pr: Progress, prevTerm: int, entries: list[Entry]) -> None:
        """
        Send AppendEntries after C{pr.next - 1} (term C{prevTerm}).
        """

    def sendChunk(self, peer: str, snapshot: Snapshot, offset: int) -> None:
        """
        Send the chunk of C{snapshot} at C{offset}.
        """

    def readSnapshot(self) -> Snapshot | None: ...

    def progressed(self, pr: Progress) -> None:
        """
        C{pr.match} advanced: commit what a quorum holds, then send more.
        """


@dataclass(eq=False)
class Progress:
    """
    What the leader knows about one follower's log, in every state.
    """

    peer: str
    replicator: Replicator
    next: int
    match: int = 0
    active: bool = True
    matchAtHeartbeat: int = -1
    offsetAtHeartbeat: int = -1
    epoch: int = 0
    inputs: ProgressInputs = field(init=False, repr=False)


@dataclass
class Pipeline:
    """
    Replicate's data: the last index of each AppendEntries in flight.
    """

    inflight: deque[int] = field(default_factory=deque)


@dataclass
class SnapshotTransfer:
    """
    Snapshot's data: the snapshot being sent and the offset of the chunk
    in flight.
    """

    snapshot: Snapshot
    offset: int = 0


def _startSnapshot(inputs: ProgressInputs, pr: Progress) -> None:
    snap = pr.replicator.readSnapshot()
    if snap is None:
        log.error("leader has no snapshot to send to {peer}", peer=pr.peer)
        return
    inputs.snapshotStarted(snap)


def _probe(inputs: ProgressInputs, pr: Progress) -> None:
    r = pr.replicator
    last = r.log.lastIndex()
    prevTerm = r.log.term(pr.next - 1)
    if prevTerm is None:
        _startSnapshot(inputs, pr)
        return
    if pr.next > last:
        return
    r.sendEntries(pr, prevTerm, r.log.slice(pr.next, last + 1, r.settings.maxAppendBytes))
    inputs.probeSent()


def _stream(inputs: ProgressInputs, pr: Progress, pipeline: Pipeline) -> None:
    r = pr.replicator
    log_ = r.log
    last = log_.lastIndex()
    maxInflight, maxBytes = r.settings.maxInflight, r.settings.maxAppendBytes
    inflight = pipeline.inflight
    while True:
        if len(inflight) >= maxInflight:
            return
        prevTerm = log_.term(pr.next - 1)
        if prevTerm is None:
            _startSnapshot(inputs, pr)
            return
        if pr.next > last:
            return
        entries = log_.slice(pr.next, last + 1, maxBytes)
        r.sendEntries(pr, prevTerm, entries)
        if not entries:
            return
        pr.next = entries[-1].index + 1
        inflight.append(pr.next - 1)


def _fallBack(inputs: ProgressInputs, pr: Progress, m: AppendEntriesResponse) -> None:
    """
    A genuine rejection: probe again from where the follower's log and ours
    may agree (skipping the conflicting term when the follower named it).
    """
    next = m.conflictIndex
    if m.conflictTerm:
        log_ = pr.replicator.log
        i = min(m.rejectIndex, log_.lastIndex())
        while True:
            t = log_.term(i)
            if t is None or t <= m.conflictTerm:
                break
            i -= 1
        if t == m.conflictTerm:
            next = i + 1
    inputs.becomeProbe(max(pr.match + 1, min(next, m.rejectIndex)))
    inputs.send()


def _sendChunk(pr: Progress, transfer: SnapshotTransfer) -> None:
    pr.replicator.sendChunk(pr.peer, transfer.snapshot, transfer.offset)


def _build() -> TypeMachine[ProgressInputs, Progress]:
    b = TypeMachineBuilder(ProgressInputs, Progress)
    probe = b.state("Probe")
    probeSent = b.state("ProbeSent")

    def pipeline(inputs: ProgressInputs, pr: Progress, matchIndex: int) -> Pipeline:
        return Pipeline()

    replicate = b.state("Replicate", pipeline)

    def transfer(inputs: ProgressInputs, pr: Progress, snapshot: Snapshot) -> SnapshotTransfer:
        log.info("leader sends snapshot at {index} to {peer}", index=snapshot[0].index, peer=pr.peer)
        started = SnapshotTransfer(snapshot)
        _sendChunk(pr, started)
        return started

    snapshotting = b.state("Snapshot", transfer)

    # -- send ---------------------------------------------------------------

    @probe.upon(ProgressInputs.send).loop()
    def sendProbe(inputs: ProgressInputs, pr: Progress) -> None:
        _probe(inputs, pr)

    probeSent.upon(ProgressInputs.send).loop().returns(None)

    @replicate.upon(ProgressInputs.send).loop()
    def stream(inputs: ProgressInputs, pr: Progress, pipeline: Pipeline) -> None:
        _stream(inputs, pr, pipeline)

    @snapshotting.upon(ProgressInputs.send).loop()
    def holdWhileSnapshotting(inputs: ProgressInputs, pr: Progress, transfer: SnapshotTransfer) -> None:
        pass

    # -- appendAccepted -------------------------------------------------------

    def matched(pr: Progress, matchIndex: int) -> None:
        if matchIndex > pr.match:
            pr.match = matchIndex

    def found(inputs: ProgressInputs, pr: Progress, matchIndex: int) -> None:
        matched(pr, matchIndex)
        pr.next = pr.match + 1
        pr.replicator.progressed(pr)

    probe.upon(ProgressInputs.appendAccepted).to(replicate)(found)
    probeSent.upon(ProgressInputs.appendAccepted).to(replicate)(found)

    @replicate.upon(ProgressInputs.appendAccepted).loop()
    def acknowledged(inputs: ProgressInputs, pr: Progress, pipeline: Pipeline, matchIndex: int) -> None:
        matched(pr, matchIndex)
        inflight = pipeline.inflight
        while inflight and inflight[0] <= matchIndex:
            inflight.popleft()
        pr.next = max(pr.next, pr.match + 1)
        pr.replicator.progressed(pr)

    @snapshotting.upon(ProgressInputs.appendAccepted).loop()
    def acceptedWhileSnapshotting(
        inputs: ProgressInputs, pr: Progress, transfer: SnapshotTransfer, matchIndex: int
    ) -> None:
        matched(pr, matchIndex)
        pr.next = max(pr.next, pr.match + 1)
        pr.replicator.progressed(pr)

    # -- appendRejected -------------------------------------------------------

    def probeRejected(inputs: ProgressInputs, pr: Progress, response: AppendEntriesResponse) -> None:
        # Only the answer to the probe in flight counts; older ones are stale.
        m = response
        if m.rejectIndex <= pr.match or m.epoch != pr.epoch or m.rejectIndex != pr.next - 1:
            return
        _fallBack(inputs, pr, m)

    probe.upon(ProgressInputs.appendRejected).loop()(probeRejected)
    probeSent.upon(ProgressInputs.appendRejected).loop()(probeRejected)

    @replicate.upon(ProgressInputs.appendRejected).loop()
    def streamRejected(
        inputs: ProgressInputs, pr: Progress, pipeline: Pipeline, response: AppendEntriesResponse
    ) -> None:
        # Stale: answers a message sent before the last fall-back to probing.
        if response.rejectIndex <= pr.match or response.epoch != pr.epoch:
            return
        _fallBack(inputs, pr, response)

    @snapshotting.upon(ProgressInputs.appendRejected).loop()
    def rejectedWhileSnapshotting(
        inputs: ProgressInputs, pr: Progress, transfer: SnapshotTransfer, response: AppendEntriesResponse
    ) -> None:
        pass

    # -- heartbeatAnswered ----------------------------------------------------

    @probe.upon(ProgressInputs.heartbeatAnswered).loop()
    def heartbeatWhileProbing(inputs: ProgressInputs, pr: Progress) -> None:
        if pr.match < pr.replicator.log.lastIndex():
            inputs.send()
        pr.matchAtHeartbeat = pr.match

    @probeSent.upon(ProgressInputs.heartbeatAnswered).loop()
    def heartbeatWhileProbeOut(inputs: ProgressInputs, pr: Progress) -> None:
        if pr.match < pr.replicator.log.lastIndex():
            inputs.resumed()
            inputs.send()
        pr.matchAtHeartbeat = pr.match

    @replicate.upon(ProgressInputs.heartbeatAnswered).loop()
    def heartbeatWhileStreaming(inputs: ProgressInputs, pr: Progress, pipeline: Pipeline) -> None:
        r = pr.replicator
        if pr.match < r.log.lastIndex():
            if pipeline.inflight and pr.match == pr.matchAtHeartbeat:
                # No acknowledgement since the last heartbeat: if a message
                # was lost the follower rejects this one (gap) and we probe;
                # if it is merely slow, it acknowledges later.
                prevTerm = r.log.term(pr.next - 1)
                if prevTerm is None:
                    _startSnapshot(inputs, pr)
                else:
                    r.sendEntries(pr, prevTerm, [])
            inputs.send()
        pr.matchAtHeartbeat = pr.match

    @snapshotting.upon(ProgressInputs.heartbeatAnswered).loop()
    def heartbeatWhileSnapshotting(inputs: ProgressInputs, pr: Progress, transfer: SnapshotTransfer) -> None:
        # A chunk not acknowledged since the last heartbeat is sent again.
        if transfer.offset == pr.offsetAtHeartbeat:
            _sendChunk(pr, transfer)
        pr.offsetAtHeartbeat = transfer.offset

    # -- snapshotInstalled ----------------------------------------------------

    def installedElsewhere(inputs: ProgressInputs, pr: Progress, index: int) -> None:
        # A snapshot sent in an earlier episode arrived after all.
        if index > pr.match:
            pr.match = index
            inputs.becomeProbe(pr.match + 1)
            pr.replicator.progressed(pr)

    probe.upon(ProgressInputs.snapshotInstalled).loop()(installedElsewhere)
    probeSent.upon(ProgressInputs.snapshotInstalled).loop()(installedElsewhere)

    @replicate.upon(ProgressInputs.snapshotInstalled).loop()
    def installedWhileStreaming(inputs: ProgressInputs, pr: Progress, pipeline: Pipeline, index: int) -> None:
        installedElsewhere(inputs, pr, index)

    @snapshotting.upon(ProgressInputs.snapshotInstalled).to(probe)
    def installed(inputs: ProgressInputs, pr: Progress, transfer: SnapshotTransfer, index: int) -> None:
        pr.match = max(pr.match, index)
        pr.epoch += 1
        pr.next = pr.match + 1
        pr.replicator.progressed(pr)

    # -- snapshotChunkAnswered ------------------------------------------------

    @snapshotting.upon(ProgressInputs.snapshotChunkAnswered).loop()
    def chunkAnswered(
        inputs: ProgressInputs, pr: Progress, transfer: SnapshotTransfer, index: int, nextOffset: int
    ) -> None:
        if transfer.snapshot[0].index == index and (nextOffset != transfer.offset or nextOffset == 0):
            transfer.offset = nextOffset
            _sendChunk(pr, transfer)

    def chunkIgnored(inputs: ProgressInputs, pr: Progress, index: int, nextOffset: int) -> None:
        pass

    probe.upon(ProgressInputs.snapshotChunkAnswered).loop()(chunkIgnored)
    probeSent.upon(ProgressInputs.snapshotChunkAnswered).loop()(chunkIgnored)

    @replicate.upon(ProgressInputs.snapshotChunkAnswered).loop()
    def chunkIgnoredWhileStreaming(
        inputs: ProgressInputs, pr: Progress, pipeline: Pipeline, index: int, nextOffset: int
    ) -> None:
        pass

    # -- fed back -------------------------------------------------------------

    probe.upon(ProgressInputs.probeSent).to(probeSent).returns(None)
    probeSent.upon(ProgressInputs.probeSent).loop().returns(None)
    replicate.upon(ProgressInputs.probeSent, nodata=True).loop().returns(None)
    snapshotting.upon(ProgressInputs.probeSent, nodata=True).loop().returns(None)

    probeSent.upon(ProgressInputs.resumed).to(probe).returns(None)
    probe.upon(ProgressInputs.resumed).loop().returns(None)
    replicate.upon(ProgressInputs.resumed, nodata=True).loop().returns(None)
    snapshotting.upon(ProgressInputs.resumed, nodata=True).loop().returns(None)

    def snapshotFrom(inputs: ProgressInputs, pr: Progress, snapshot: Snapshot) -> None:
        pass

    probe.upon(ProgressInputs.snapshotStarted).to(snapshotting)(snapshotFrom)
    probeSent.upon(ProgressInputs.snapshotStarted).to(snapshotting)(snapshotFrom)

    @replicate.upon(ProgressInputs.snapshotStarted).to(snapshotting)
    def snapshotFromStreaming(
        inputs: ProgressInputs, pr: Progress, pipeline: Pipeline, snapshot: Snapshot
    ) -> None:
        pass

    @snapshotting.upon(ProgressInputs.snapshotStarted).loop()
    def alreadySnapshotting(
        inputs: ProgressInputs, pr: Progress, transfer: SnapshotTransfer, snapshot: Snapshot
    ) -> None:
        pass

    def reprobe(pr: Progress, next: int) -> None:
        pr.epoch += 1
        pr.next = next

    @probe.upon(ProgressInputs.becomeProbe).loop()
    def probeAgain(inputs: ProgressInputs, pr: Progress, next: int) -> None:
        reprobe(pr, next)

    @probeSent.upon(ProgressInputs.becomeProbe).to(probe)
    def probeAfresh(inputs: ProgressInputs, pr: Progress, next: int) -> None:
        reprobe(pr, next)

    @replicate.upon(ProgressInputs.becomeProbe).to(probe)
    def streamToProbe(inputs: ProgressInputs, pr: Progress, pipeline: Pipeline, next: int) -> None:
        reprobe(pr, next)

    @snapshotting.upon(ProgressInputs.becomeProbe).to(probe)
    def snapshotToProbe(inputs: ProgressInputs, pr: Progress, transfer: SnapshotTransfer, next: int) -> None:
        reprobe(pr, next)

    return b.build()


ProgressMachine = indexed(_build())
"""
Factory: C{ProgressMachine(progress)} returns the L{ProgressInputs} of a
follower known as C{progress}, starting in Probe.
"""


def newProgress(peer: str, replicator: Replicator, next: int) -> Progress:
    """
    The progress of C{peer}, probing from C{next}; its machine is
    C{progress.inputs}.
    """
    pr = Progress(peer, replicator, next)
    pr.inputs = ProgressMachine(pr)
    return pr
