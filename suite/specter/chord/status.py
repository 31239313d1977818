"""
What one process tells about its share of the ring: the C{hello} and
C{status} calls other processes make, the counters and per-vnode view of
the debug pages and metrics, and where a key lives (for operators).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from suite.specter.chord.ids import VnodeRef, ref, ringId
from suite.specter.chord.ringview import MAX_PEERS

if TYPE_CHECKING:
    from suite.specter.chord.node import ChordNode

__all__ = ["hello", "holders", "lookupVersions", "stats", "status"]


def hello(node: ChordNode) -> list[Any]:
    """
    The C{hello} call: the serving vnodes.
    """
    return [list(v.ref) for v in node.vnodes if v.serving]


def status(node: ChordNode) -> dict[str, Any]:
    """
    The C{status} call: serving vnodes, and whether this process has a
    ring history (so restarting processes can agree who re-forms it).
    """
    return {
        "serving": hello(node),
        "history": bool(node.knownPeers),
        "founding": node.founding,
        "peers": node.knownPeers[:MAX_PEERS],
    }


def stats(node: ChordNode) -> dict[str, Any]:
    """
    Lookup counters and each vnode's neighbours, replicas and store.
    """
    return {
        "addr": node.addr,
        "lookups": node.lookups,
        "hops": node.hops,
        "retries": node.retries,
        "rerouted": node.rerouted,
        "vnodes": [
            {
                "index": v.ref.index,
                "id": f"{v.ref.id:016x}",
                "serving": v.serving,
                "predecessor": v.pred.short() if v.pred else None,
                "successors": [s.short() for s in v.succs],
                "replicas": [s.short() for s in v.replicator.replicas()],
                "store": v.store.stats(),
                **v.replicator.stats(),
            }
            for v in node.vnodes
        ],
    }


async def lookupVersions(node: ChordNode, key: bytes) -> tuple[VnodeRef, list[VnodeRef], int, list[Any]]:
    """
    The owner of C{key}, its replicas (the next distinct processes), the
    hops the lookup took, and the versions of the key's records at the
    owner: C{[kind, hlc, origin, live]} each.
    """
    owner, hops = await node.findSuccessor(ringId(key))
    versions = await node.call(owner, "recordVersions", key)
    state = await node.call(owner, "state")
    succs = [r for r in (ref(s) for s in state[1]) if r is not None]
    want = node.config.replicas - 1
    replicas: list[VnodeRef] = []
    seen = {owner.addr}
    for s in succs:
        if len(replicas) >= want:
            break
        if s.addr not in seen:
            seen.add(s.addr)
            replicas.append(s)
    return owner, replicas, hops, versions


async def holders(node: ChordNode, key: bytes) -> list[int]:
    """
    Indexes of C{node}'s vnodes whose store holds a value for C{key}.
    """
    out = []
    for v in node.vnodes:
        if not v.gone and await v.store.get(key) is not None:
            out.append(v.ref.index)
    return out
