"""
Re-synchronisation after a session comes up: each side re-announces what it
holds and ends with END_OF_SYNC; the receiver then drops entries it had
learned from that peer and that were not re-announced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from suite.spacecomms.envelope import Envelope
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.store import Record

if TYPE_CHECKING:
    from suite.spacecomms.node import SpaceNode

__all__ = ["sendSync", "endSync", "entryEnvelope"]


SYNC_BATCH = 200


def _candidates(node: SpaceNode, peer: str) -> list[tuple[str, str]]:
    out = []
    for kind in ("cdm", "object"):
        for rec in node.store.records(kind):
            r: Record = rec
            if r.origin == peer or r.learnedFrom == peer:
                continue
            if not r.active and r.reason in ("SUPERSEDED", "TCA_PASSED"):
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
    Re-announce this node's entries to a newly connected peer (except what
    the peer originated or taught us), then send END_OF_SYNC.  Entries go
    out in batches of L{SYNC_BATCH}, one batch per reactor turn, each read
    from the store as it is sent; the sync stops if the session goes away.
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
            if r is None or (not r.active and r.reason in ("SUPERSEDED", "TCA_PASSED")):
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


def endSync(node: SpaceNode, peer: str, why: str) -> None:
    """
    The peer finished its re-sync (END_OF_SYNC or the grace time): drop the
    active entries learned from it that it did not re-announce.
    """
    entry = node.syncs.pop(peer, None)
    if entry is None:
        return
    refreshed, call = entry
    if call.active():
        call.cancel()
    dropped = 0
    for kind in ("cdm", "object"):
        for rec in node.store.records(kind):
            r: Record = rec
            if r.learnedFrom == peer and r.active and (kind, r.key) not in refreshed:
                node.store.remove(kind, r.key)
                dropped += 1
    node.log.info(
        "re-sync from {peer} complete ({why}): dropped {dropped} stale entries",
        peer=peer,
        why=why,
        dropped=dropped,
    )
