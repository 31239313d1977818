"""
Re-synchronisation after a session comes up.

Each side re-announces every entry it holds except those the peer
originated (L{sendSync}), then sends END_OF_SYNC.  That includes entries
the peer taught it: a peer may have lost its copy (a restart on memory
storage, a store restored from an older backup), and an entry is only ever
withdrawn by an explicit withdrawal, never by a peer's silence.  An entry
the peer already holds is ignored there as not newer.

The receiving side of each session keeps its peer's re-sync in a
L{ResyncMachine}: open from the session's start until END_OF_SYNC arrives
or C{resync_grace_seconds} pass.  While it is open the peer's
re-announcements are not counted by the rate limit and no anti-entropy
round runs towards that peer.  Closing it drops nothing: what a node
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


def _candidates(node: SpaceNode, peer: str) -> list[tuple[str, str]]:
    out = []
    for kind in forwardedKinds(node, peer):
        for rec in node.store.records(kind):
            r: Record = rec
            if r.origin == peer:
                continue
            if not r.active and r.reason in DERIVED:
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


def sendSync(node: SpaceNode, link: IPeerLink) -> None:
    """
    Re-announce this node's entries to a newly connected peer (all that its
    forward policies let it send, except what the peer originated), then
    send END_OF_SYNC.  Entries go out in batches of L{SYNC_BATCH}, one
    batch per reactor turn, each read from the store as it is sent; the
    sync stops if the session goes away.
    """
    peer = link.peerId
    keys = _candidates(node, peer)
    sent = 0

    def step(start: int) -> None:
        nonlocal sent
        node.syncSends.pop(peer, None)
        if node.links.get(peer) is not link:
            node.log.info("re-sync to {peer} abandoned: session gone", peer=peer)
            return
        for kind, key in keys[start : start + SYNC_BATCH]:
            r: Record | None = node.store.get(kind, key)
            if r is None or (not r.active and r.reason in DERIVED):
                continue
            env = entryEnvelope(node, r)
            node.router.seen.seen(env.message_id)
            link.sendEnvelope(env)
            sent += 1
        if start + SYNC_BATCH < len(keys):
            node.syncSends[peer] = node.clock.callLater(0, step, start + SYNC_BATCH)
            return
        link.sendEnvelope(
            Envelope("END_OF_SYNC", node.nodeId, {"count": sent}, timestamp=node.now(), path=(node.nodeId,))
        )
        node.log.info("re-sync to {peer}: sent {count} entries and END_OF_SYNC", peer=peer, count=sent)

    step(0)


class ResyncInputs(Protocol):
    def started(self) -> None:
        "The session is established: the peer's re-sync begins."

    def syncing(self) -> bool:
        "Whether the peer's re-sync is still open."

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
    An open re-sync: the timer that closes it if END_OF_SYNC never comes.
    """

    timer: IDelayedCall


def _build() -> TypeMachine[ResyncInputs, ResyncCore]:
    b = TypeMachineBuilder(ResyncInputs, ResyncCore)

    def openFactory(inputs: ResyncInputs, core: ResyncCore) -> OpenData:
        return OpenData(core.node.clock.callLater(core.graceSeconds, inputs.graceExpired))

    new = b.state("New")
    opened = b.state("Open", openFactory)
    done = b.state("Done")
    gone = b.state("Gone")

    def complete(core: ResyncCore, why: str) -> None:
        log.info(
            "re-sync from {peer} complete ({why})",
            peer=core.link.peerId,
            why=why,
            node=core.node.nodeId,
        )

    new.upon(ResyncInputs.started).to(opened).returns(None)
    opened.upon(ResyncInputs.syncing).loop().returns(True)

    @opened.upon(ResyncInputs.endOfSync).to(done)
    def ended(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        data.timer.cancel()
        complete(core, "END_OF_SYNC")

    @opened.upon(ResyncInputs.graceExpired).to(done)
    def expired(inputs: ResyncInputs, core: ResyncCore, data: OpenData) -> None:
        if data.timer.active():
            data.timer.cancel()
        complete(core, "grace time")

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
    # it makes the machine), started again, and graceExpired outside Open
    # (leaving Open cancels its timer).
    return b.build()


ResyncMachine = _build()
