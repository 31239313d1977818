"""
The agent's catalog of nodes and services.

L{LocalCatalog} holds this node alone; L{suite.constellation.membership.GossipCatalog}
adds the gossip members.  Until Docker monitoring is built there are no
services, which renders as an empty but valid Traefik configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zope.interface import implementer

from suite.constellation.interfaces import IServiceCatalog
from suite.constellation.priority import nodePriority

__all__ = ["NodeEntry", "ServiceEntry", "LocalCatalog"]


@dataclass(frozen=True)
class NodeEntry:
    """
    A cluster member as seen by this agent.
    """

    name: str
    priority: int
    status: str = "alive"
    publicIP: str | None = None

    def toJSON(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "priority": self.priority,
            "status": self.status,
            "publicIP": self.publicIP,
        }


@dataclass(frozen=True)
class ServiceEntry:
    """
    One container service on one node.

    @ivar urls: backend URLs Traefik should balance over
        (C{http://10.0.0.5:8080}).
    @ivar rule: a Traefik router rule; default C{Host(`NAME.DOMAIN`)}.
    """

    name: str
    node: str
    urls: tuple[str, ...] = ()
    healthy: bool = True
    rule: str | None = None
    entryPoints: tuple[str, ...] = ("websecure",)
    certResolver: str | None = "letsencrypt"
    networks: tuple[str, ...] = field(default_factory=tuple)

    def toJSON(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": self.node,
            "urls": list(self.urls),
            "healthy": self.healthy,
            "rule": self.rule,
            "entryPoints": list(self.entryPoints),
            "networks": list(self.networks),
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
