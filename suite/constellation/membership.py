"""
The agent's cluster membership: a L{suite.gossip} node on C{--bind-addr}:
C{--bind-port} (7946), joined through C{--join}, whose members become the
catalog's nodes.

Each agent announces its priority (and public IP when known) as gossip
metadata; every agent therefore sees every node's priority without
computing it from names it may spell differently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from suite.constellation.catalog import LocalCatalog, NodeEntry
from suite.constellation.priority import nodePriority
from suite.daemon import ConfigError
from suite.gossip.__main__ import advertisable, parseAddress
from suite.gossip.interfaces import IMembershipListener
from suite.gossip.node import GossipNode
from suite.gossip.security import Keyring, readKeyFile
from suite.gossip.settings import GossipSettings
from suite.gossip.udp import NetworkTransport

__all__ = ["GossipCatalog", "GossipService", "readGossipKey"]

log = Logger(namespace="constellation.gossip")


def readGossipKey(path: str | None) -> Keyring | None:
    """
    The cluster's gossip keyring from C{path} (base64 AES keys as
    C{serf keygen} prints and C{serf agent -encrypt} takes, one a line, the
    primary first), or None when no file is configured.

    @raise ConfigError: naming the flag and the file.
    """
    if not path:
        return None
    try:
        return readKeyFile(path)
    except ValueError as e:
        raise ConfigError(f"--gossip-key-file (CONSTELLATION_GOSSIP_KEY_FILE): {e}") from None


class GossipCatalog(LocalCatalog):
    """
    The catalog of a gossiping agent: this node first, then every member
    the gossip node knows (alive, suspect, dead or left).
    """

    def __init__(self, nodeName: str, publicIP: str | None, members: Callable[[], list[Any]]) -> None:
        super().__init__(nodeName, publicIP)
        self._members = members

    def nodes(self) -> list[NodeEntry]:
        out = super().nodes()
        for m in self._members():
            if m.name == self.nodeName:
                continue
            try:
                priority = int(m.meta.get("priority", nodePriority(m.name)))
            except (TypeError, ValueError):
                priority = nodePriority(m.name)
            ip = m.meta.get("ip") or None
            out.append(NodeEntry(m.name, priority, m.status, str(ip) if ip else None))
        return out


@implementer(IMembershipListener)
class _MembershipLog:
    """
    One log line per change of another member's state.
    """

    def memberJoined(self, member: Any) -> None:
        log.info("node {node} joined the cluster", node=member.name)

    def memberUpdated(self, member: Any) -> None:
        log.debug("node {node} updated its state", node=member.name)

    def memberSuspected(self, member: Any) -> None:
        log.warn("node {node} is suspected of failure", node=member.name)

    def memberDied(self, member: Any) -> None:
        log.warn("node {node} failed (declared dead)", node=member.name)

    def memberLeft(self, member: Any) -> None:
        log.info("node {node} left the cluster", node=member.name)


class GossipService(Service):
    """
    Run the gossip node while the agent runs; leave gracefully on stop.

    A port that cannot be bound is one critical line and the reactor stops,
    so the agent never runs outside its cluster.
    """

    name = "gossip"

    def __init__(self, options: Mapping[str, Any], reactor: Any) -> None:
        self.reactor = reactor
        settings = GossipSettings.local() if options.get("gossip-profile") == "local" else GossipSettings()
        host, port = options["bind-addr"], int(options["bind-port"])
        try:
            self.seeds = [parseAddress(p) for p in options.get("join") or []]
            address = advertisable((host, port), self.seeds[0] if self.seeds else None)
        except usage.UsageError as e:
            raise ConfigError(f"--join / --bind-addr: {e}") from None
        self.key = readGossipKey(options.get("gossip-key-file"))
        meta: dict[str, Any] = {"priority": nodePriority(options["ts-hostname"])}
        if options.get("public-ip"):
            meta["ip"] = options["public-ip"]
        transport = NetworkTransport(
            reactor, host, port, settings.maxPacketBytes, settings.maxStateBytes, settings.pushPullTimeout
        )
        self.node = GossipNode(
            options["ts-hostname"],
            address,
            transport,
            reactor,
            settings,
            key=self.key,
            listener=_MembershipLog(),
            meta=meta,
        )
        self.bind = f"{host}:{port}"
        self.remoteWithoutKey = self.key is None and host not in ("127.0.0.1", "::1")

    def startService(self) -> None:
        super().startService()
        log.info("Initializing gossip cluster...")
        if self.remoteWithoutKey:
            log.warn(
                "gossip on {bind} has no shared key: anyone who can reach the port can join or "
                "impersonate members; set --gossip-key-file or keep the port on a private network",
                bind=self.bind,
            )
        try:
            joined = self.node.start(self.seeds)
        except Exception as e:
            log.critical(
                "--bind-port: cannot listen for gossip on {bind}: {error}", bind=self.bind, error=str(e)
            )
            if self.reactor.running:
                self.reactor.stop()
            else:
                self.reactor.callWhenRunning(self.reactor.stop)
            return
        if self.seeds:
            joined.addCallback(self._joined)

    def _joined(self, count: int) -> None:
        if count:
            log.info(
                "joined the cluster through {count} of {total} peers", count=count, total=len(self.seeds)
            )
        else:
            log.warn(
                "no peer of --join answered ({total} tried); running alone until one does",
                total=len(self.seeds),
            )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.node.leave()

    def summary(self) -> dict[str, Any]:
        return self.node.summary()
