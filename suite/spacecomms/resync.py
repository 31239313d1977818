"""
Re-synchronisation after a session comes up: each side re-announces what it
holds and ends with END_OF_SYNC; the receiver then drops entries it had
learned from that peer and that were not re-announced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from suite.spacecomms.envelope import Envelope
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.store import Record

if TYPE_CHECKING:
    from suite.spacecomms.node import SpaceNode

__all__ = ["sendSync", "endSync"]


def sendSync(node: SpaceNode, link: IPeerLink) -> None:
    """
    Re-announce this node's entries to a newly connected peer (except what
    the peer originated or taught us), then send END_OF_SYNC.
    """
    peer = link.peerId
    sent = 0
    for kind in ("cdm", "object"):
        for rec in node.store.records(kind):
            r: Record = rec
            if r.origin == peer or r.learnedFrom == peer:
                continue
            idKey = "cdm_id" if kind == "cdm" else "object_id"
            if r.active:
                mtype = "CDM_ANNOUNCE" if kind == "cdm" else "OBJECT_STATE_ANNOUNCE"
                payload = {
                    idKey: r.key,
                    "sequence": r.sequence,
                    ("cdm" if kind == "cdm" else "state"): r.body,
                    "sync": True,
                }
            else:
                if r.reason in ("SUPERSEDED", "TCA_PASSED"):
                    continue
                mtype = "CDM_WITHDRAW" if kind == "cdm" else "OBJECT_STATE_WITHDRAW"
                payload = {
                    idKey: r.key,
                    "sequence": r.sequence,
                    "reason": r.reason or "ERROR",
                    "sync": True,
                }
            env = Envelope(
                mtype,
                r.origin,
                payload,
                timestamp=node.now(),
                ttl=node.config.message_ttl_seconds,
                path=(node.nodeId,),
            )
            node.router.seen.seen(env.message_id)
            link.sendEnvelope(env)
            sent += 1
    link.sendEnvelope(
        Envelope("END_OF_SYNC", node.nodeId, {"count": sent}, timestamp=node.now(), path=(node.nodeId,))
    )
    node.log.info("re-sync to {peer}: sent {count} entries and END_OF_SYNC", peer=peer, count=sent)


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
