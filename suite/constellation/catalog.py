"""
The agent's catalog of nodes and services.

L{LocalCatalog} holds this node alone; L{suite.constellation.membership.GossipCatalog}
adds the gossip members.  Until Docker monitoring is built there are no
services, which renders as an empty but valid Traefik configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zope.interface import implementer

from suite.constellation.interfaces import IServiceCatalog
from suite.constellation.priority import nodePriority
from suite.constellation.state import ClusterState

__all__ = ["NodeEntry", "ServiceEntry", "LocalCatalog", "ClusterCatalog"]


@dataclass(frozen=True)
class NodeEntry:
    """
    A cluster member as seen by this agent.
    """

    name: str
    priority: int
    status: str = "alive"
    publicIP: str | None = None
    roles: tuple[str, ...] = ()

    def toJSON(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "priority": self.priority,
            "status": self.status,
            "publicIP": self.publicIP,
            "roles": list(self.roles),
        }


@dataclass(frozen=True)
class ServiceEntry:
    """
    One watched container on one node, as gossiped (see
    L{suite.constellation.labels.serviceRecord}).

    @ivar services: Traefik service name -> C{{"url": ..., "loadBalancer": {...}}}.
    @ivar routers: Traefik router name -> router (from labels).
    @ivar defaultRouters: services that get a default router under C{DOMAIN}.
    """

    name: str
    node: str
    healthy: bool = True
    health: str = "none"
    routers: Mapping[str, Any] = field(default_factory=dict)
    services: Mapping[str, Any] = field(default_factory=dict)
    defaultRouters: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    @classmethod
    def fromRecord(cls, node: str, record: Mapping[str, Any]) -> ServiceEntry | None:
        """
        From a gossiped record; None when it is malformed.
        """
        try:
            routers = record.get("routers") or {}
            services = record.get("services") or {}
            if not isinstance(routers, dict) or not isinstance(services, dict):
                return None
            return cls(
                name=str(record["container"]),
                node=node,
                healthy=bool(record.get("healthy")),
                health=str(record.get("health", "none")),
                routers={str(k): v for k, v in routers.items() if isinstance(v, dict)},
                services={
                    str(k): v
                    for k, v in services.items()
                    if isinstance(v, dict) and isinstance(v.get("url"), str)
                },
                defaultRouters=tuple(str(x) for x in record.get("defaultRouters") or ()),
                errors=tuple(str(x) for x in record.get("errors") or ()),
            )
        except (KeyError, TypeError, AttributeError):
            return None

    def toJSON(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": self.node,
            "healthy": self.healthy,
            "health": self.health,
            "urls": sorted(v["url"] for v in self.services.values()),
            "routers": sorted(self.routers) + [r for r in self.defaultRouters if r not in self.routers],
            "errors": list(self.errors),
        }


@implementer(IServiceCatalog)
class LocalCatalog:
    """
    The catalog of a single node: itself, plus the services put into it.
    """

    def __init__(self, nodeName: str, publicIP: str | None = None) -> None:
        self.nodeName = nodeName
        self._self = NodeEntry(nodeName, nodePriority(nodeName), "alive", publicIP)
        self._services: dict[tuple[str, str], ServiceEntry] = {}

    def services(self) -> list[ServiceEntry]:
        return [self._services[k] for k in sorted(self._services)]

    def nodes(self) -> list[NodeEntry]:
        return [self._self]

    def put(self, entry: ServiceEntry) -> None:
        """
        Add or replace C{entry} (keyed by name and node).
        """
        self._services[(entry.name, entry.node)] = entry

    def remove(self, name: str, node: str) -> None:
        """
        Forget the service C{name} on C{node} (no error if unknown).
        """
        self._services.pop((name, node), None)


@implementer(IServiceCatalog)
class ClusterCatalog:
    """
    The catalog read from the replicated L{ClusterState}: this node, then
    every gossip member with the meta it published (C{node} entry); the
    services (C{svc/*} entries) of this node and of members alive or suspect.
    """

    def __init__(self, nodeName: str, state: ClusterState, members: Callable[[], list[Any]]) -> None:
        self.nodeName = nodeName
        self.state = state
        self._members = members

    def _node(self, name: str, status: str, gossipMeta: Mapping[str, Any]) -> NodeEntry:
        meta = self.state.entries(name).get("node")
        if not isinstance(meta, dict):
            meta = dict(gossipMeta)
        try:
            priority = int(meta.get("priority", nodePriority(name)))
        except (TypeError, ValueError):
            priority = nodePriority(name)
        ip = meta.get("ip") or None
        roles = meta.get("roles") or ()
        return NodeEntry(
            name,
            priority,
            status,
            str(ip) if ip else None,
            tuple(str(r) for r in roles) if isinstance(roles, list | tuple) else (),
        )

    def _statuses(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        return {m.name: (m.status, m.meta) for m in self._members()}

    def nodes(self) -> list[NodeEntry]:
        statuses = self._statuses()
        out = [self._node(self.nodeName, "alive", {})]
        for name in sorted(statuses):
            if name != self.nodeName:
                out.append(self._node(name, *statuses[name]))
        return out

    def services(self) -> list[ServiceEntry]:
        statuses = self._statuses()
        out: list[ServiceEntry] = []
        for origin in self.state.origins():
            if origin != self.nodeName and statuses.get(origin, ("unknown", {}))[0] not in (
                "alive",
                "suspect",
            ):
                continue
            for key, value in self.state.entries(origin).items():
                if key.startswith("svc/") and isinstance(value, dict):
                    entry = ServiceEntry.fromRecord(origin, value)
                    if entry is not None:
                        out.append(entry)
        return sorted(out, key=lambda e: (e.name, e.node))
