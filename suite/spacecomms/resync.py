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
started.  The re-sync to it then also carries the entries it originated
with a newer sequence, marked C{"restore": true}, with their original
sequence and signature: a node that came back with an empty or older store
gets its own CDMs and object states back, and its next sequence numbers
follow theirs.

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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from suite.spacecomms.envelope import Envelope
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.store import Record

if TYPE_CHECKING:
    from suite.spacecomms.node import SpaceNode

__all__ = [
    "sendSync",
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

SYNC_BATCH = 200

#: Withdrawal reasons every node derives itself; such tombstones are never sent.
DERIVED = ("SUPERSEDED", "TCA_PASSED")


def forwardedKinds(node: SpaceNode, peer: str) -> tuple[str, ...]:
    """
    The kinds of entry C{node}'s policies let it send to C{peer}
    (C{forward_cdm}, C{forward_object_state}).
    """
    pol = node.policies(peer)
    return tuple(k for k, ok in (("cdm", pol.forward_cdm), ("object", pol.forward_object_state)) if ok)


def _candidates(node: SpaceNode, peer: str, restoreAfter: int | None) -> list[tuple[str, str]]:
    """
    The entries a re-sync to C{peer} re-states: all its forward policies
    let it send except what the peer originated, and, when the peer asked
    for a restore (L{SendCore.restoreAfter}), the peer's own entries newer
    than the sequence it stated.  Tombstones this node derived itself
    (L{DERIVED}) are never sent.
    """
    out = []
    for kind in forwardedKinds(node, peer):
        for rec in node.store.records(kind):
            r: Record = rec
            if not r.active and r.reason in DERIVED:
                continue
            if r.origin == peer and (restoreAfter is None or r.sequence <= restoreAfter):
                continue
            out.append((kind, r.key))
    return out


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
    def begin(self) -> None:
        "The session is established: start re-stating this node's entries."

    def batchDue(self) -> None:
        "Send the next batch (the first at once, each next one a reactor turn later)."

    def finished(self) -> None:
        "Every entry was sent: send END_OF_SYNC."

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
class SendingData:
    """
    A re-sync under way: the entries to re-state (read from the store as
    each is sent), how far it got, and the timer of the next batch.
    """

    keys: list[tuple[str, str]]
    position: int = 0
    sent: int = 0
    restored: int = 0
    timer: IDelayedCall | None = None


def _cancel(data: SendingData) -> None:
    """
    Cancel the pending batch, if any.
    """
    if data.timer is not None and data.timer.active():
        data.timer.cancel()
    data.timer = None


def _buildSend() -> TypeMachine[SendInputs, SendCore]:
    b = TypeMachineBuilder(SendInputs, SendCore)

    def sendingFactory(inputs: SendInputs, core: SendCore) -> SendingData:
        return SendingData(_candidates(core.node, core.link.peerId, core.restoreAfter))

    idle = b.state("Idle")
    sendingState = b.state("Sending", sendingFactory)
    sent = b.state("Sent")
    abandoned = b.state("Abandoned")

    @idle.upon(SendInputs.begin).to(sendingState)
    def begin(inputs: SendInputs, core: SendCore) -> None:
        # The first batch goes out at once, with the session's first messages.
        inputs.batchDue()

    @sendingState.upon(SendInputs.batchDue).loop()
    def batch(inputs: SendInputs, core: SendCore, data: SendingData) -> None:
        node, link = core.node, core.link
        _cancel(data)
        end = data.position + SYNC_BATCH
        for kind, key in data.keys[data.position : end]:
            r: Record | None = node.store.get(kind, key)
            if r is None or (not r.active and r.reason in DERIVED):
                continue
            env = entryEnvelope(node, r)
            if r.origin == link.peerId:
                if core.restoreAfter is None or r.sequence <= core.restoreAfter:
                    continue
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
            inputs.finished()

    @sendingState.upon(SendInputs.finished).to(sent)
    def finish(inputs: SendInputs, core: SendCore, data: SendingData) -> None:
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
    sent.upon(SendInputs.sessionLost).to(abandoned).returns(None)
    abandoned.upon(SendInputs.sessionLost).loop().returns(None)
    # Not answered: anything but begin in Idle (the node feeds begin as it
    # makes the machine), begin again, batchDue and finished outside
    # Sending (only Sending schedules them; leaving it cancels the timer).
    return b.build()


SendMachine = _buildSend()


def sendSync(node: SpaceNode, link: IPeerLink, restoreAfter: int | None = None) -> SendInputs:
    """
    Start re-stating this node's entries to a newly connected peer (all
    that its forward policies let it send, except what the peer originated
    unless it asked for a restore), then END_OF_SYNC: a L{SendMachine},
    returned so the node can feed it C{sessionLost}.
    """
    machine = SendMachine(SendCore(node, link, restoreAfter))
    machine.begin()
    return machine


class ResyncInputs(Protocol):
    def started(self) -> None:
        "The session is established: the peer's re-sync begins."

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
class OpenData:
    """
    An open re-sync: the timer that closes it if END_OF_SYNC never comes,
    and how many of this node's own entries it restored so far.
    """

    timer: IDelayedCall
    restored: int = 0


def _build() -> TypeMachine[ResyncInputs, ResyncCore]:
    b = TypeMachineBuilder(ResyncInputs, ResyncCore)

    def openFactory(inputs: ResyncInputs, core: ResyncCore) -> OpenData:
        return OpenData(core.node.clock.callLater(core.graceSeconds, inputs.graceExpired))

    new = b.state("New")
    opened = b.state("Open", openFactory)
    done = b.state("Done")
    gone = b.state("Gone")

    def complete(core: ResyncCore, data: OpenData, why: str) -> None:
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

    new.upon(ResyncInputs.started).to(opened).returns(None)
    opened.upon(ResyncInputs.syncing).loop().returns(True)

    @opened.upon(ResyncInputs.restored).loop()
    def count(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        data.restored += 1

    @opened.upon(ResyncInputs.endOfSync).to(done)
    def ended(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        data.timer.cancel()
        complete(core, data, "END_OF_SYNC")
        if core.node.peerCapable(core.link.peerId, "restore"):
            # The peer gave back all it held of this node's own entries.
            core.node.ledger.rejoined()

    @opened.upon(ResyncInputs.graceExpired).to(done)
    def expired(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        if data.timer.active():
            data.timer.cancel()
        complete(core, data, "grace time")

    @opened.upon(ResyncInputs.sessionLost).to(gone)
    def abandoned(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        data.timer.cancel()

    for final in (done, gone):
        final.upon(ResyncInputs.syncing).loop().returns(False)
        # A second END_OF_SYNC on one session is ignored.
        final.upon(ResyncInputs.endOfSync).loop().returns(None)
    done.upon(ResyncInputs.sessionLost).to(gone).returns(None)
    gone.upon(ResyncInputs.sessionLost).loop().returns(None)
    # Not answered: anything but started in New (the node feeds started as
    # it makes the machine), started again, graceExpired outside Open
    # (leaving Open cancels its timer), and restored outside Open (a node
    # takes its own entries back only while the peer's re-sync is open).
    return b.build()


ResyncMachine = _build()
