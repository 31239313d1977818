"""
The peer manager: the mTLS listener for inbound sessions and one
reconnecting client (ClientService with exponential backoff) per peer this
node dials.  Of two configured peers, the one whose id sorts first dials,
so a pair keeps a single session.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.application.internet import ClientService
from twisted.application.service import MultiService
from twisted.internet.endpoints import clientFromString, serverFromString, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from suite.daemon import watchListening
from suite.spacecomms.config import Config, PeerConfig
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.session import PeerProtocol

__all__ = ["PeerManager", "reconnectDelay"]


def reconnectDelay(attempt: int, initial: float, maximum: float, jitter: float) -> float:
    """
    Seconds before reconnect attempt C{attempt} (1 after the first failure):
    C{initial}, doubling each time, never above C{maximum}.  C{jitter} in
    [0, 1) shortens the delay by up to a fifth, so peers that lost each other
    at once do not redial in step.
    """
    delay = min(initial * 2.0 ** min(max(attempt - 1, 0), 64), maximum)
    return delay * (1.0 - 0.2 * jitter)


class _PeerFactory(Factory):
    noisy = False

    def __init__(self, manager: PeerManager, expectedPeer: str | None) -> None:
        self.manager = manager
        self.expectedPeer = expectedPeer

    def buildProtocol(self, addr: Any) -> PeerProtocol:
        node = self.manager.node
        cfg = node.config
        p = PeerProtocol(
            node,
            node.nodeId,
            self.manager.reactor,
            self.expectedPeer,
            cfg.heartbeat_interval_seconds,
            cfg.session_timeout_seconds,
            cfg.max_frame_bytes,
            node.helloPayload,
        )
        p.factory = self
        return p


class PeerManager(MultiService):
    """
    Owns the peer listener and the outbound clients; follows the node's
    peer table as it changes (API, SIGHUP).
    """

    log = Logger(namespace="spacecomms.peers")

    def __init__(self, node: SpaceNode, reactor: Any, tls: Any = None) -> None:
        super().__init__()
        self.node = node
        self.reactor = reactor
        self.tls = tls
        self.clients: dict[str, tuple[PeerConfig, ClientService]] = {}
        self.port: Any = None
        node.onPeersChanged.append(self.reconcile)

    @property
    def config(self) -> Config:
        return self.node.config

    def listenDescription(self) -> str:
        host = self.config.peer_host
        iface = f":interface={host}" if host else ""
        if ":" in host:
            iface = ":interface=" + host.replace(":", "\\:")
        return f"tcp:{self.config.peer_port}{iface}"

    def startService(self) -> None:
        super().startService()
        factory: Any = _PeerFactory(self, None)
        if self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls.server(), False, factory)
        endpoint = serverFromString(self.reactor, self.listenDescription())
        d = endpoint.listen(factory)

        def listening(port: Any) -> None:
            self.port = port
            self.log.info(
                "peer listener on {address} ({mode})",
                address=f"{port.getHost().host}:{port.getHost().port}",
                mode="mTLS" if self.tls is not None else "plain TCP, no TLS",
            )

        d.addCallback(listening)
        watchListening(self, "server.peer_port", self.listenDescription(), d, self.reactor)
        self.reconcile()

    def stopService(self) -> Any:
        d = super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            port.stopListening()
        return d

    def dials(self, peer: PeerConfig) -> bool:
        return self.node.nodeId < peer.id

    def reconcile(self) -> None:
        """
        Start clients for new or changed dialed peers; stop removed ones.
        """
        if not self.running:
            return
        wanted = {p.id: p for p in self.node.peerConfigs.values() if self.dials(p)}
        for pid in list(self.clients):
            cfg, svc = self.clients[pid]
            if pid not in wanted or (wanted[pid].host, wanted[pid].port) != (cfg.host, cfg.port):
                del self.clients[pid]
                svc.disownServiceParent()
        for pid, cfg in wanted.items():
            if pid in self.clients:
                continue
            svc = ClientService(
                self._endpoint(cfg),
                _PeerFactory(self, pid),
                retryPolicy=self._retryDelay,
                clock=self.reactor,
            )
            svc.setServiceParent(self)
            self.clients[pid] = (cfg, svc)
            self.log.info("dialing peer {peer} at {host}:{port}", peer=pid, host=cfg.host, port=cfg.port)

    def _retryDelay(self, attempt: int) -> float:
        # Read at every retry, so a SIGHUP's new timings apply to running clients.
        cfg = self.config
        return reconnectDelay(
            attempt, cfg.reconnect_initial_seconds, cfg.reconnect_max_seconds, random.random()
        )

    def _endpoint(self, cfg: PeerConfig) -> Any:
        host = cfg.host.replace(":", "\\:")
        ep = clientFromString(self.reactor, f"tcp:host={host}:port={cfg.port}:timeout=10")
        if self.tls is None:
            return ep
        return wrapClientTLS(self.tls.client(cfg.host), ep)

    def status(self, peerId: str) -> str:
        if peerId in self.node.links:
            return "connected"
        if peerId in self.clients:
            return "connecting"
        return "disconnected" if peerId in self.node.peerConfigs else "unknown"
