"""
The routing table of a CEPtra cluster, read from the control plane's
routing (placement) feed, and how events find their partition.

An event goes to partition C{ids[h % len(ids)]}, where C{ids} are the
partition ids sorted and C{h} is the 64-bit hash of its C{key}: the first
8 bytes (big-endian) of BLAKE2b of the key's UTF-8 bytes.  Every node and
client computes the same partition from the same table.

The feed arrives over the network: malformed entries are skipped, never
trusted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

__all__ = ["NodeInfo", "Routing", "keyHash", "parseRouting"]

_MAX_CACHED_KEYS = 65536


def keyHash(key: str) -> int:
    """
    The 64-bit routing hash of an event key.
    """
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class NodeInfo:
    """
    Where a node listens and who it is.
    """

    name: str
    raft: str = ""
    admin: str = ""
    spiffe: str = ""


@dataclass(frozen=True)
class Routing:
    """
    One revision of the routing table.
    """

    revision: int | None = None
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    partitions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    leaders: Mapping[str, str] = field(default_factory=dict)
    #: partition -> placement epoch (0 when the feed gives none)
    epochs: Mapping[str, int] = field(default_factory=dict)

    #: Partition of each key seen with this revision (bounded).
    _byKey: dict[str, str] = field(default_factory=dict, compare=False, repr=False, init=False)

    @cached_property
    def partitionIds(self) -> list[str]:
        return sorted(self.partitions)

    def partitionFor(self, key: str) -> str | None:
        """
        The partition an event with C{key} belongs to (None without partitions).
        """
        ids = self.partitionIds
        if len(ids) < 2:
            return ids[0] if ids else None
        byKey = self._byKey
        pid = byKey.get(key)
        if pid is None:
            if len(byKey) >= _MAX_CACHED_KEYS:
                byKey.clear()
            pid = byKey[key] = ids[keyHash(key) % len(ids)]
        return pid

    def nodeBySpiffe(self, spiffe: str) -> str | None:
        for name in sorted(self.nodes):
            if self.nodes[name].spiffe == spiffe:
                return name
        return None

    def nodeByRaftAddress(self, address: str) -> NodeInfo | None:
        for name in sorted(self.nodes):
            if self.nodes[name].raft == address:
                return self.nodes[name]
        return None

    def hosted(self, node: str) -> list[str]:
        """
        The partitions whose replicas include C{node}.
        """
        return [p for p in self.partitionIds if node in self.partitions[p]]

    def raftAddresses(self) -> dict[str, str]:
        return {n: info.raft for n, info in self.nodes.items() if info.raft}

    def spiffeIds(self) -> set[str]:
        return {info.spiffe for info in self.nodes.values() if info.spiffe}

    def toJSON(self) -> dict[str, Any]:
        """
        What C{GET /routing} shows clients: how to hash, and where to send.
        """
        return {
            "revision": self.revision,
            "hash": "blake2b-64 of the UTF-8 key, big-endian; partition = sorted(ids)[hash % len(ids)]",
            "partitions": [
                {
                    "id": p,
                    "index": i,
                    "replicas": list(self.partitions[p]),
                    "epoch": self.epochs.get(p, 0),
                    "leader": self.leaders.get(p),
                }
                for i, p in enumerate(self.partitionIds)
            ],
            "nodes": {
                n: {"admin": info.admin, "raft": info.raft, "spiffe": info.spiffe}
                for n, info in sorted(self.nodes.items())
            },
        }


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parseRouting(doc: Mapping[str, Any] | None) -> Routing:
    """
    Read a routing feed document (C{{"revision", "nodes", "partitions"}}).
    """
    if not isinstance(doc, Mapping):
        return Routing()
    nodes: dict[str, NodeInfo] = {}
    rawNodes = doc.get("nodes")
    for name, spec in rawNodes.items() if isinstance(rawNodes, Mapping) else ():
        if isinstance(name, str) and isinstance(spec, Mapping):
            nodes[name] = NodeInfo(
                name, _str(spec.get("raft")), _str(spec.get("admin")), _str(spec.get("spiffe"))
            )
    partitions: dict[str, tuple[str, ...]] = {}
    leaders: dict[str, str] = {}
    epochs: dict[str, int] = {}
    rawParts = doc.get("partitions")
    for entry in rawParts if isinstance(rawParts, list) else ():
        if not isinstance(entry, Mapping):
            continue
        pid, replicas = entry.get("id"), entry.get("replicas")
        if isinstance(pid, str) and pid and isinstance(replicas, list):
            partitions[pid] = tuple(r for r in replicas if isinstance(r, str))
            if isinstance(entry.get("leader"), str):
                leaders[pid] = entry["leader"]
            epoch = entry.get("epoch")
            epochs[pid] = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 0 else 0
    revision = doc.get("revision")
    return Routing(revision if isinstance(revision, int) else None, nodes, partitions, leaders, epochs)
