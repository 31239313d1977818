"""
A node's view of the control plane's feeds: which partitions it hosts,
whether they are warm, and which activation barriers still hold them.

The feeds arrive over the network, so every field is checked for its type
and anything malformed is ignored rather than trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodePlacement", "placementFor"]


@dataclass(frozen=True)
class NodePlacement:
    """
    @ivar nodeId: this node's id in the routing table (matched by SPIFFE
        ID), or C{None} when the table does not list it.
    @ivar partitions: ids of the partitions this node replicates.
    @ivar warm: partition id -> warmup readiness (C{False} when unknown).
    @ivar pendingBarriers: ids of activation barriers not yet ready that
        involve one of this node's partitions.
    """

    nodeId: str | None = None
    partitions: tuple[str, ...] = ()
    warm: Mapping[str, bool] = field(default_factory=dict)
    pendingBarriers: tuple[str, ...] = ()

    def toJSON(self) -> dict[str, Any]:
        """
        The shape shown in C{/readyz} details.
        """
        return {
            "nodeId": self.nodeId,
            "partitions": list(self.partitions),
            "warm": dict(self.warm),
            "pendingBarriers": list(self.pendingBarriers),
        }


def _nodeId(routing: Mapping[str, Any], spiffe: str) -> str | None:
    nodes = routing.get("nodes")
    if not isinstance(nodes, Mapping):
        return None
    for name, spec in sorted(nodes.items()):
        if isinstance(spec, Mapping) and spec.get("spiffe") == spiffe and isinstance(name, str):
            return name
    return None


def placementFor(
    spiffe: str,
    routing: Mapping[str, Any] | None,
    warmup: Mapping[str, Any] | None = None,
    activation: Mapping[str, Any] | None = None,
) -> NodePlacement:
    """
    Work out the placement of the node whose SPIFFE ID is C{spiffe} from
    the latest routing, warmup and activation documents (any may be missing).
    """
    if not isinstance(routing, Mapping):
        return NodePlacement()
    nodeId = _nodeId(routing, spiffe)
    if nodeId is None:
        return NodePlacement()
    hosted: list[str] = []
    partitions = routing.get("partitions")
    for entry in partitions if isinstance(partitions, list) else ():
        if not isinstance(entry, Mapping):
            continue
        pid, replicas = entry.get("id"), entry.get("replicas")
        if isinstance(pid, str) and isinstance(replicas, list) and nodeId in replicas:
            hosted.append(pid)
    warmParts = warmup.get("partitions") if isinstance(warmup, Mapping) else None
    warm: dict[str, bool] = {}
    for pid in hosted:
        spec = warmParts.get(pid) if isinstance(warmParts, Mapping) else None
        warm[pid] = bool(isinstance(spec, Mapping) and spec.get("ready") is True)
    pending: list[str] = []
    barriers = activation.get("barriers") if isinstance(activation, Mapping) else None
    for barrier in barriers if isinstance(barriers, list) else ():
        if not isinstance(barrier, Mapping) or barrier.get("ready") is True:
            continue
        members = barrier.get("partitions")
        bid = barrier.get("id")
        if (
            isinstance(bid, str)
            and isinstance(members, list)
            and set(hosted) & {m for m in members if isinstance(m, str)}
        ):
            pending.append(bid)
    return NodePlacement(nodeId, tuple(hosted), warm, tuple(pending))
