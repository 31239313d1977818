"""
Re-synchronisation after a session comes up.

Each side re-announces every entry it holds except those the peer
originated (L{sendSync}, driven by a L{SendMachine} whose state data holds
the batch timer), then sends END_OF_SYNC.  That includes entries the peer
taught it: a peer may have lost its copy (a restart on memory storage, a
store restored from an older backup), and an entry is only ever withdrawn
by an explicit withdrawal, never by a peer's silence.  An entry the peer
already holds is ignored there as not newer.

Restore: a peer states in its HELLO (C{own_sequence}, with the C{restore}
capability) the highest sequence it held of its own entries when it
started, to each node until that node's re-sync to it has completed once.
The re-sync to it then also carries the entries it originated with a
newer sequence, marked C{"restore": true}, with their original sequence
and signature: a node that came back with an empty or older store gets its
own CDMs and object states back from every peer that holds them, and its
next sequence numbers follow theirs.

Summary: when both sides announce the C{sync_summary} capability, each
side's receiving machine starts by sending the peer a summary of what it
holds (L{summaryFrames}: one C{[kind, key, origin, sequence, active]} per
entry of the kinds it forwards to that peer, except those it originated at
or below the C{own_sequence} it states to that peer, in C{SYNC_SUMMARY}
frames of at most L{SYNC_SUMMARY_FRAME_BYTES}, the last marked
C{"more": false}).  The sending machine waits for the peer's summary
(state C{Comparing}) and then re-states only the entries the peer lacks or
holds in an older version: exactly those the peer would not ignore as
"not newer".  That holds for the peer's own entries too (of those above
its C{own_sequence}, which its summary lists): a restore from a second
peer sends only what the first one did not give back.  A summary that is
malformed or lists more than L{MAX_SYNC_SUMMARY_ENTRIES} entries closes
the session with the reason; one that is not complete within half the
grace time is given up and everything is re-stated, as with a peer
without the capability.

Forwarding meanwhile: an entry this node applies from another peer goes
on to this peer only if the sending machine says so (C{forwarding}): not
while it waits for the summary (the re-sync, listed once the summary is
in, carries the entry), nor when the summary lists that version or a
newer one; the summary is kept after the re-sync is sent until the peer's
own re-sync to this node is over (C{peerSynced}), after which this node
holds everything it listed.  So a restore from one peer reaches the
others that lack it once, and none that holds it.

The receiving side of each session keeps its peer's re-sync in a
L{ResyncMachine}: open from the session's start until END_OF_SYNC arrives
or C{resync_grace_seconds} pass.  While it is open the peer's
re-announcements are not counted by the rate limit and no anti-entropy
round runs towards that peer, and its restores of this node's own entries
are taken in (and counted).  Closing it drops nothing: what a node
accepted stays until it is withdrawn, superseded, past its TCA or past
retention.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from suite.spacecomms.envelope import (
    MAX_SYNC_SUMMARY_ENTRIES,
    SYNC_SUMMARY_FRAME_BYTES,
    Envelope,
    summaryEntryProblem,
)
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.store import Record

if TYPE_CHECKING:
    from suite.spacecomms.node import SpaceNode

__all__ = [
    "sendSync",
    "summaryFrames",
    "iterSummaryFrames",
    "Held",
    "SUMMARY",
    "SendInputs",
    "SendCore",
    "SendMachine",
    "entryEnvelope",
    "forwardedKinds",
    "DERIVED",
    "ResyncInputs",
    "ResyncCore",
    "ResyncMachine",
]

log = Logger(namespace="spacecomms.node")

#: Re-stated entries sent per reactor turn.
SYNC_BATCH = 200
#: A re-sync waits while more than this many bytes are queued to the peer
#: and not yet sent (a slow link): it goes out at the pace the peer reads
#: instead of buffering a copy of the store in memory.
SYNC_QUEUE_BYTES = 4 * 1024 * 1024
#: How long it waits before looking at the queue again.
SYNC_QUEUE_WAIT = 0.05

#: Entries of the store looked at per reactor turn of a re-sync (most may
#: be left out when the peer's summary shows it holds them).
SYNC_SCAN = 2000

#: SYNC_SUMMARY frames (each at most SYNC_SUMMARY_FRAME_BYTES) built and
#: sent per reactor turn.
SUMMARY_FRAMES_PER_TURN = 8

#: The HELLO capability of a node that sends, and waits for, a summary.
SUMMARY = "sync_summary"

#: A peer's summary: (kind, key) -> the version it holds, (sequence, origin).
Held = dict[tuple[str, str], tuple[int, str]]

#: Withdrawal reasons every node derives itself; such tombstones are never sent.
DERIVED = ("SUPERSEDED", "TCA_PASSED")


def forwardedKinds(node: SpaceNode, peer: str) -> tuple[str, ...]:
    """
    The kinds of entry C{node}'s policies let it send to C{peer}
    (C{forward_cdm}, C{forward_object_state}).
    """
    pol = node.policies(peer)
    return tuple(k for k, ok in (("cdm", pol.forward_cdm), ("object", pol.forward_object_state)) if ok)


def _wanted(r: Record, peer: str, restoreAfter: int | None, held: Held | None) -> bool:
    """
    Whether a re-sync to C{peer} re-states C{r}: not a tombstone this node
    derived itself (L{DERIVED}); of the peer's own entries only those newer
    than the sequence it stated when it asked for a restore; and, when the
    peer sent a summary (C{held}), only those it lacks or holds in an
    older version (a restoring peer lists its own entries above the
    sequence it stated, such as those another peer gave back already).
    """
    if not r.active and r.reason in DERIVED:
        return False
    if r.origin == peer and (restoreAfter is None or r.sequence <= restoreAfter):
        return False
    if held is not None:
        theirs = held.get((r.kind, r.key))
        if theirs is not None and theirs >= r.version():
            return False
    return True


def _candidates(node: SpaceNode, peer: str) -> list[Record]:
    """
    The entries a re-sync to C{peer} may re-state: all its forward policies
    let it send, as a snapshot of the store (a copy of its lists, no work
    per entry); each batch looks up the current version and asks
    L{_wanted} whether it goes.
    """
    out: list[Record] = []
    for kind in forwardedKinds(node, peer):
        out.extend(node.store.records(kind))
    return out


def summaryFrames(node: SpaceNode, peer: str) -> list[Envelope]:
    """
    All the frames of L{iterSummaryFrames} at once.
    """
    return list(iterSummaryFrames(node, peer))


def iterSummaryFrames(node: SpaceNode, peer: str) -> Iterator[Envelope]:
    """
    The SYNC_SUMMARY frames that tell C{peer} what this node holds: one
    C{[kind, key, origin, sequence, active]} per entry of the kinds it
    forwards to C{peer} (what its policies let the peer know of), except
    the entries this node originated at or below the C{own_sequence} it
    states to C{peer} (the peer re-states only those above it, and only
    for a restore: so of its own entries a node lists only those it took
    through its API or got back from other peers since it started, until
    this peer's restoring re-sync has completed, and none to a peer that
    does not restore), at most L{MAX_SYNC_SUMMARY_ENTRIES} (the entries
    left out are then re-stated in full).  Each frame is at most
    L{SYNC_SUMMARY_FRAME_BYTES}; the last is marked C{"more": false}, and
    there is always one.  Each frame is built only when it is asked for,
    so a large summary goes out over many reactor turns (over a snapshot
    of the store taken when its kind's turn comes).
    """

    def frame(entries: list[list[Any]], more: bool) -> Envelope:
        return Envelope(
            "SYNC_SUMMARY",
            node.nodeId,
            {"entries": entries, "more": more},
            timestamp=node.now(),
            path=(node.nodeId,),
        )

    # An empty frame's size, plus the two bytes a list of more than 15
    # entries adds to its header.
    budget = SYNC_SUMMARY_FRAME_BYTES - len(frame([], True).encode()) - 2
    entries: list[list[Any]] = []
    size = total = 0
    me = node.nodeId
    restoring = node.peerCapable(peer, "restore")
    for kind in forwardedKinds(node, peer):
        # Read as each kind's turn comes: a restore completed meanwhile
        # only raises it (the peer then re-states fewer of them anyway).
        mark = node.ledger.restoreMark(peer)
        for rec in node.store.records(kind):
            r: Record = rec
            if r.origin == me and (not restoring or r.sequence <= mark):
                continue
            if total >= MAX_SYNC_SUMMARY_ENTRIES:
                break
            entry = [kind, r.key, r.origin, r.sequence, r.active]
            n = len(msgpack.packb(entry, use_bin_type=True))
            if entries and size + n > budget:
                yield frame(entries, True)
                entries, size = [], 0
            entries.append(entry)
            size += n
            total += 1
    yield frame(entries, False)


def entryEnvelope(node: SpaceNode, r: Record, flag: str = "sync") -> Envelope:
    """
    The announce or withdrawal that re-states C{r} to a peer, marked with
    C{flag} (C{sync} during a re-sync, C{repair} for an anti-entropy pull).
    It keeps the entry's originator and sequence; its path is the
    originator then this node, so provenance checks hold.
    """
    cdm = r.kind == "cdm"
    idKey = "cdm_id" if cdm else "object_id"
    payload: dict[str, Any]
    if r.active:
        mtype = "CDM_ANNOUNCE" if cdm else "OBJECT_STATE_ANNOUNCE"
        payload = {idKey: r.key, "sequence": r.sequence, ("cdm" if cdm else "state"): r.body, flag: True}
    else:
        mtype = "CDM_WITHDRAW" if cdm else "OBJECT_STATE_WITHDRAW"
        payload = {idKey: r.key, "sequence": r.sequence, "reason": r.reason or "ERROR", flag: True}
    if r.override:
        payload["override"] = True
    if r.signature is not None and r.cert is not None:
        payload["signature"] = r.signature
        payload["cert"] = r.cert
    elif r.origin == node.nodeId and node.signer is not None:
        # Stored before this node signed its messages: sign it now.
        node.signer.sign(mtype, node.nodeId, payload)
    path = (node.nodeId,) if r.origin == node.nodeId else (r.origin, node.nodeId)
    return Envelope(
        mtype,
        r.origin,
        payload,
        timestamp=node.now(),
        hop_count=len(path) - 1,
        ttl=node.config.message_ttl_seconds,
        path=path,
    )


class SendInputs(Protocol):
    def awaitSummary(self) -> None:
        "The session is established with a peer that sends a summary: wait for it."

    def summaryReceived(self, payload: dict[str, Any]) -> None:
        "A SYNC_SUMMARY frame arrived from the peer."

    def summaryRefused(self, reason: str) -> None:
        "The peer's summary is malformed or too large: close the session."

    def summaryOverdue(self) -> None:
        "The peer's summary was not complete within half the grace time."

    def begin(self, held: Held | None) -> None:
        "Start re-stating this node's entries (all, or those the peer's summary C{held} lacks)."

    def batchDue(self) -> None:
        "Send the next batch (the first at once, each next one a reactor turn later)."

    def finished(self, held: Held | None) -> None:
        "Every entry was sent: send END_OF_SYNC (C{held}: the peer's summary, still needed)."

    def forwarding(self, kind: str, key: str, version: tuple[int, str]) -> bool:
        """
        An entry this node applied (from another peer) may go on to the
        peer at C{version}: whether it should.  Not while this node waits
        for the peer's summary (the re-sync, whose snapshot of the store
        is taken once the summary is in, carries it), nor when the peer's
        summary lists it at that version or newer; during the re-sync the
        peer counts as holding it from then on, so the re-sync does not
        re-state it.
        """

    def peerSynced(self) -> None:
        "The peer's re-sync to this node is over: its summary is no longer needed."

    def sending(self) -> bool:
        "Whether batches are still to go."

    def sessionLost(self) -> None:
        "The session is gone (lost, replaced, or the node stops)."


@dataclass
class SendCore:
    """
    What one re-sync to a peer talks to: the node, the session, and the
    sequence the peer stated in its HELLO for its own entries
    (C{own_sequence}; None when it did not ask for a restore).
    """

    node: SpaceNode
    link: IPeerLink
    restoreAfter: int | None = None


@dataclass
class ComparingData:
    """
    Waiting for the peer's summary: what it listed so far, in how many
    frames, and the timer that gives up waiting.
    """

    timer: IDelayedCall
    held: Held = field(default_factory=dict)
    listed: int = 0
    frames: int = 0


@dataclass
class SendingData:
    """
    A re-sync under way: the entries that may be re-stated (a snapshot;
    each is read again from the store as its turn comes), the peer's
    summary (None without one), how far it got, and the timer of the next
    batch.
    """

    keys: list[Record]
    held: Held | None = None
    position: int = 0
    sent: int = 0
    restored: int = 0
    timer: IDelayedCall | None = None
    #: The peer's re-sync to this node is over (its summary is then not
    #: kept once this one is sent).
    peerSynced: bool = False


@dataclass
class SentData:
    """
    The re-sync was sent: the peer's summary, kept until the peer's own
    re-sync to this node is over, to tell which entries this node applies
    meanwhile the peer holds already (None: no summary, or no longer
    needed).
    """

    held: Held | None = None


def _holds(held: Held | None, kind: str, key: str, version: tuple[int, str]) -> bool:
    """
    Whether the peer's summary C{held} lists C{kind}/C{key} at C{version}
    or newer.
    """
    if held is None:
        return False
    theirs = held.get((kind, key))
    return theirs is not None and theirs >= version


def _cancel(data: SendingData) -> None:
    """
    Cancel the pending batch, if any.
    """
    if data.timer is not None and data.timer.active():
        data.timer.cancel()
    data.timer = None


def _buildSend() -> TypeMachine[SendInputs, SendCore]:
    b = TypeMachineBuilder(SendInputs, SendCore)

    def comparingFactory(inputs: SendInputs, core: SendCore) -> ComparingData:
        wait = core.node.config.resync_grace_seconds / 2
        return ComparingData(core.node.clock.callLater(wait, inputs.summaryOverdue))

    def sendingFactory(inputs: SendInputs, core: SendCore, held: Held | None) -> SendingData:
        return SendingData(_candidates(core.node, core.link.peerId), held)

    def sentFactory(inputs: SendInputs, core: SendCore, held: Held | None) -> SentData:
        return SentData(held)

    idle = b.state("Idle")
    comparing = b.state("Comparing", comparingFactory)
    sendingState = b.state("Sending", sendingFactory)
    sent = b.state("Sent", sentFactory)
    abandoned = b.state("Abandoned")

    @idle.upon(SendInputs.begin).to(sendingState)
    def begin(inputs: SendInputs, core: SendCore, held: Held | None) -> None:
        # The first batch goes out at once, with the session's first messages.
        inputs.batchDue()

    idle.upon(SendInputs.awaitSummary).to(comparing).returns(None)

    @comparing.upon(SendInputs.summaryReceived).loop()
    def collect(inputs: SendInputs, core: SendCore, data: ComparingData, payload: dict[str, Any]) -> None:
        entries, more = payload.get("entries"), payload.get("more")
        if not isinstance(entries, list) or not isinstance(more, bool):
            inputs.summaryRefused("SYNC_SUMMARY: payload must hold entries (a list) and more (a boolean)")
            return
        if data.listed + len(entries) > MAX_SYNC_SUMMARY_ENTRIES:
            inputs.summaryRefused(f"SYNC_SUMMARY: a summary lists at most {MAX_SYNC_SUMMARY_ENTRIES} entries")
            return
        for i, e in enumerate(entries):
            problem = summaryEntryProblem(e)
            if problem is not None:
                inputs.summaryRefused(f"SYNC_SUMMARY: payload.entries[{i}]: {problem}")
                return
        for kind, key, origin, sequence, _active in entries:
            data.held[(kind, key)] = (sequence, origin)
        data.listed += len(entries)
        data.frames += 1
        if not more:
            inputs.begin(data.held)

    @comparing.upon(SendInputs.begin).to(sendingState)
    def compared(inputs: SendInputs, core: SendCore, data: ComparingData, held: Held | None) -> None:
        if data.timer.active():
            data.timer.cancel()
        if held is not None:
            log.info(
                "re-sync to {peer}: its summary lists {count} entries in {frames} frames",
                peer=core.link.peerId,
                count=data.listed,
                frames=data.frames,
                node=core.node.nodeId,
            )
        inputs.batchDue()

    @comparing.upon(SendInputs.summaryOverdue).loop()
    def overdue(inputs: SendInputs, core: SendCore, data: ComparingData) -> None:
        log.warn(
            "re-sync to {peer}: no complete summary within {seconds}s; re-stating every entry",
            peer=core.link.peerId,
            seconds=core.node.config.resync_grace_seconds / 2,
            node=core.node.nodeId,
        )
        inputs.begin(None)

    @comparing.upon(SendInputs.summaryRefused).to(abandoned)
    def refuse(inputs: SendInputs, core: SendCore, data: ComparingData, reason: str) -> None:
        if data.timer.active():
            data.timer.cancel()
        log.warn(
            "re-sync to {peer} abandoned: {reason}; closing the session",
            peer=core.link.peerId,
            reason=reason,
            node=core.node.nodeId,
        )
        core.node.forwarder.error(core.link, "INVALID_MESSAGE", reason)
        core.link.close(reason)

    @comparing.upon(SendInputs.sessionLost).to(abandoned)
    def abandonWait(inputs: SendInputs, core: SendCore, data: ComparingData) -> None:
        if data.timer.active():
            data.timer.cancel()
        log.info("re-sync to {peer} abandoned: session gone", peer=core.link.peerId, node=core.node.nodeId)

    comparing.upon(SendInputs.sending).loop().returns(True)

    @sendingState.upon(SendInputs.batchDue).loop()
    def batch(inputs: SendInputs, core: SendCore, data: SendingData) -> None:
        node, link = core.node, core.link
        _cancel(data)
        queued = getattr(link, "queueDepth", None)
        if queued is not None and queued() > SYNC_QUEUE_BYTES:
            data.timer = node.clock.callLater(SYNC_QUEUE_WAIT, inputs.batchDue)
            return
        # At most SYNC_BATCH entries sent and SYNC_SCAN looked at per turn.
        end, stop, sentBefore = data.position, min(data.position + SYNC_SCAN, len(data.keys)), data.sent
        while end < stop and data.sent - sentBefore < SYNC_BATCH:
            snap = data.keys[end]
            end += 1
            r: Record | None = node.store.get(snap.kind, snap.key)
            if r is None or not _wanted(r, link.peerId, core.restoreAfter, data.held):
                continue
            env = entryEnvelope(node, r)
            if r.origin == link.peerId:
                # The peer's own entry, which it lacks: marked so it accepts it.
                env.payload["restore"] = True
                data.restored += 1
            node.router.seen.seen(env.message_id)
            link.sendEnvelope(env)
            data.sent += 1
        data.position = end
        if end < len(data.keys):
            data.timer = node.clock.callLater(0, inputs.batchDue)
        else:
            inputs.finished(None if data.peerSynced else data.held)

    @sendingState.upon(SendInputs.finished).to(sent)
    def finish(inputs: SendInputs, core: SendCore, data: SendingData, held: Held | None) -> None:
        _cancel(data)
        node, peer = core.node, core.link.peerId
        core.link.sendEnvelope(
            Envelope(
                "END_OF_SYNC", node.nodeId, {"count": data.sent}, timestamp=node.now(), path=(node.nodeId,)
            )
        )
        log.info(
            "re-sync to {peer}: sent {count} entries and END_OF_SYNC ({restored} of them its own, restored)",
            peer=peer,
            count=data.sent,
            restored=data.restored,
            node=node.nodeId,
        )

    @sendingState.upon(SendInputs.sessionLost).to(abandoned)
    def abandon(inputs: SendInputs, core: SendCore, data: SendingData) -> None:
        _cancel(data)
        log.info("re-sync to {peer} abandoned: session gone", peer=core.link.peerId, node=core.node.nodeId)

    sendingState.upon(SendInputs.sending).loop().returns(True)
    for final in (sent, abandoned):
        final.upon(SendInputs.sending).loop().returns(False)

    # The re-sync's snapshot, taken once the summary is in, carries it.
    comparing.upon(SendInputs.forwarding).loop().returns(False)

    @sendingState.upon(SendInputs.forwarding).loop()
    def forwardDuring(
        inputs: SendInputs, core: SendCore, data: SendingData, kind: str, key: str, version: tuple[int, str]
    ) -> bool:
        if _holds(data.held, kind, key, version):
            return False
        if data.held is not None:
            # Sent now: the batches leave it out when its turn comes.
            data.held[(kind, key)] = version
        return True

    @sent.upon(SendInputs.forwarding).loop()
    def forwardAfter(
        inputs: SendInputs, core: SendCore, data: SentData, kind: str, key: str, version: tuple[int, str]
    ) -> bool:
        return not _holds(data.held, kind, key, version)

    # The session is gone: nothing goes through it anyway.
    abandoned.upon(SendInputs.forwarding).loop().returns(True)

    # The peer ended its re-sync before its summary was complete (a large
    # summary, a small store here): the summary is still this re-sync's
    # filter, and is then kept while the session lasts (what it lists
    # stays true: a peer's versions only grow).
    comparing.upon(SendInputs.peerSynced).loop().returns(None)

    @sendingState.upon(SendInputs.peerSynced).loop()
    def syncedDuring(inputs: SendInputs, core: SendCore, data: SendingData) -> None:
        data.peerSynced = True

    @sent.upon(SendInputs.peerSynced).loop()
    def syncedAfter(inputs: SendInputs, core: SendCore, data: SentData) -> None:
        data.held = None

    abandoned.upon(SendInputs.peerSynced).loop().returns(None)
    # A summary frame after the summary (or from a peer this node does not
    # wait for) changes nothing.
    for later in (sendingState, sent, abandoned):
        later.upon(SendInputs.summaryReceived).loop().returns(None)
    sent.upon(SendInputs.sessionLost).to(abandoned).returns(None)
    abandoned.upon(SendInputs.sessionLost).loop().returns(None)
    # Not answered: anything but begin or awaitSummary in Idle (the node
    # feeds one of them as it makes the machine), either again later
    # (begin in Comparing is the machine's own, once the summary is in),
    # summaryRefused and summaryOverdue outside Comparing (only Comparing
    # feeds them; leaving it cancels the timer), batchDue and finished
    # outside Sending (only Sending schedules them; leaving it cancels the
    # timer).
    return b.build()


SendMachine = _buildSend()


def sendSync(node: SpaceNode, link: IPeerLink, restoreAfter: int | None = None) -> SendInputs:
    """
    Start re-stating this node's entries to a newly connected peer (all
    that its forward policies let it send, except what the peer originated
    unless it asked for a restore), then END_OF_SYNC: a L{SendMachine},
    returned so the node can feed it the peer's summary and
    C{sessionLost}.  With a peer that sends a summary (the
    C{sync_summary} capability) it first waits for that summary.
    """
    machine = SendMachine(SendCore(node, link, restoreAfter))
    if node.peerCapable(link.peerId, SUMMARY):
        machine.awaitSummary()
    else:
        machine.begin(None)
    return machine


class ResyncInputs(Protocol):
    def started(self) -> None:
        "The session is established: the peer's re-sync begins."

    def summaryDue(self) -> None:
        "Send the next frames of this node's summary (the first at once, each next a reactor turn later)."

    def syncing(self) -> bool:
        "Whether the peer's re-sync is still open."

    def restored(self) -> None:
        "One of this node's own entries, re-stated by the peer, was applied."

    def endOfSync(self) -> None:
        "The peer's END_OF_SYNC arrived."

    def graceExpired(self) -> None:
        "resync_grace_seconds passed since the session started, without END_OF_SYNC."

    def sessionLost(self) -> None:
        "The session is gone (lost, replaced, or the node stops)."


@dataclass
class ResyncCore:
    """
    What one peer's re-sync talks to: the session and the grace time.
    """

    node: SpaceNode
    link: IPeerLink
    graceSeconds: float


@dataclass
class SummaryProgress:
    """
    This node's summary to the peer, under way: the frames still to build
    and send, how many went out (frames, entries), and the timer of the
    next turn's frames.
    """

    frames: Iterator[Envelope]
    sentFrames: int = 0
    sentEntries: int = 0
    timer: IDelayedCall | None = None

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


@dataclass
class OpenData:
    """
    An open re-sync: the timer that closes it if END_OF_SYNC never comes,
    how many of this node's own entries it restored so far, and this
    node's summary to the peer while it is being sent (None when the peer
    is sent none, or once it is all sent).
    """

    timer: IDelayedCall
    restored: int = 0
    summary: SummaryProgress | None = None


def _leaveOpen(data: OpenData) -> None:
    """
    Cancel the grace timer and stop a summary still under way (nothing is
    written to a session that is gone or a re-sync that is over).
    """
    if data.timer.active():
        data.timer.cancel()
    if data.summary is not None:
        data.summary.cancel()
        data.summary = None


def _build() -> TypeMachine[ResyncInputs, ResyncCore]:
    b = TypeMachineBuilder(ResyncInputs, ResyncCore)

    def openFactory(inputs: ResyncInputs, core: ResyncCore) -> OpenData:
        node, peer = core.node, core.link.peerId
        summary = None
        if node.peerCapable(peer, SUMMARY):
            # Tell the peer what this node holds, so it re-states only the rest.
            summary = SummaryProgress(iterSummaryFrames(node, peer))
        return OpenData(node.clock.callLater(core.graceSeconds, inputs.graceExpired), summary=summary)

    new = b.state("New")
    opened = b.state("Open", openFactory)
    done = b.state("Done")
    gone = b.state("Gone")

    def complete(core: ResyncCore, data: OpenData, why: str) -> None:
        core.node.peerSynced(core.link.peerId)
        log.info(
            "re-sync from {peer} complete ({why})",
            peer=core.link.peerId,
            why=why,
            node=core.node.nodeId,
        )
        if data.restored:
            log.info(
                "re-sync from {peer} restored {count} entries this node originated",
                peer=core.link.peerId,
                count=data.restored,
                node=core.node.nodeId,
            )

    @new.upon(ResyncInputs.started).to(opened)
    def start(inputs: ResyncInputs, core: ResyncCore) -> None:
        # The summary's first frames go out at once (fed once Open holds its data).
        inputs.summaryDue()

    @opened.upon(ResyncInputs.summaryDue).loop()
    def summarise(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        progress = data.summary
        if progress is None:
            return
        progress.cancel()
        for _ in range(SUMMARY_FRAMES_PER_TURN):
            env = next(progress.frames, None)
            if env is None:
                break
            core.link.sendEnvelope(env)
            progress.sentFrames += 1
            progress.sentEntries += len(env.payload["entries"])
            if not env.payload["more"]:
                data.summary = None
                log.info(
                    "re-sync from {peer}: sent a summary of {count} entries in {frames} frames",
                    peer=core.link.peerId,
                    count=progress.sentEntries,
                    frames=progress.sentFrames,
                    node=core.node.nodeId,
                )
                return
        progress.timer = core.node.clock.callLater(0, inputs.summaryDue)

    opened.upon(ResyncInputs.syncing).loop().returns(True)

    @opened.upon(ResyncInputs.restored).loop()
    def count(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        data.restored += 1

    @opened.upon(ResyncInputs.endOfSync).to(done)
    def ended(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        _leaveOpen(data)
        complete(core, data, "END_OF_SYNC")
        if core.node.peerCapable(core.link.peerId, "restore"):
            # The peer gave back all it held of this node's own entries.
            core.node.ledger.rejoined(core.link.peerId)

    @opened.upon(ResyncInputs.graceExpired).to(done)
    def expired(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        _leaveOpen(data)
        complete(core, data, "grace time")

    @opened.upon(ResyncInputs.sessionLost).to(gone)
    def abandoned(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        _leaveOpen(data)

    for final in (done, gone):
        final.upon(ResyncInputs.syncing).loop().returns(False)
        # A second END_OF_SYNC on one session is ignored.
        final.upon(ResyncInputs.endOfSync).loop().returns(None)
    done.upon(ResyncInputs.sessionLost).to(gone).returns(None)
    gone.upon(ResyncInputs.sessionLost).loop().returns(None)
    # Not answered: anything but started in New (the node feeds started as
    # it makes the machine), started again, graceExpired and summaryDue
    # outside Open (leaving Open cancels their timers), and restored outside Open (a node
    # takes its own entries back only while the peer's re-sync is open).
    return b.build()


ResyncMachine = _build()
