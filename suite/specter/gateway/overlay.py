"""
Forwarding between gateways over the mTLS overlay.

A visitor arriving at gateway X for a tunnel linked only to gateway Y is
sent down an overlay link X -> Y (ALPN C{specter-overlay/1}, node
certificates on both ends, one multiplexed link per peer, the same frames as
tunnel links).  Y opens a stream on its tunnel link and splices the two
streams with a L{StreamBridge}; bytes are not parsed on either hop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.specter.tunnel.mux import Link, LocalSide, Stream

if TYPE_CHECKING:
    from suite.specter.gateway.core import Gateway

__all__ = ["OVERLAY_ALPN", "OverlayLink", "OverlayPool", "StreamBridge"]

log = Logger()
OVERLAY_ALPN = b"specter-overlay/1"


class _BridgeEnd:
    """
    Makes stream C{other} look like the local transport of stream C{mine}.
    """

    def __init__(self, other: Stream, mine: Stream) -> None:
        self.other = other
        self.mine = mine

    def write(self, data: bytes) -> None:
        self.other.send(data)

    def loseConnection(self) -> None:
        # closing this "connection" ends it at once: both streams end
        self.other.localLost()
        self.mine.localLost()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        self.other.pauseProducing()

    def resumeProducing(self) -> None:
        self.other.resumeProducing()


class StreamBridge:
    """
    Splice two streams on two links: each is the other's local side.
    """

    def __init__(self, a: Stream, b: Stream) -> None:
        sideA, sideB = LocalSide(), LocalSide()
        sideA.transport = _BridgeEnd(b, a)
        sideB.transport = _BridgeEnd(a, b)
        a.attach(sideA)
        b.attach(sideB)


class OverlayLink(Link):
    """
    One end of an overlay link.  The dialling gateway opens streams (odd
    ids); the accepting one bridges each to a local tunnel link.
    """

    def __init__(self, gateway: Gateway, dialler: bool) -> None:
        super().__init__(gateway.config.window, gateway.config.chunk)
        self.streamParity = 1 if dialler else 2
        self._nextId = self.streamParity
        self.gateway = gateway

    def acceptsStreams(self) -> bool:
        """
        Whether streams may be opened on this link.
        """
        return not self.closed

    def connectionMade(self) -> None:
        super().connectionMade()
        self.gateway.overlayLinks.add(self)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        super().connectionLost(reason)
        self.gateway.overlayLinks.discard(self)

    def streamOpened(self, stream: Stream, meta: dict[str, Any]) -> None:
        host = str(meta.get("host", ""))
        link = self.gateway.registry.pick(host)
        if link is None:
            stream.reset(f"no tunnel link for {host} on {self.gateway.config.advertise}")
            return
        inner = link.openStream(
            {
                "kind": meta.get("kind", "http"),
                "peer": meta.get("peer", "?"),
                "host": host,
                "via": self._peerName(),
            }
        )
        inner.onReset = lambda reason: stream.reset(reason)
        stream.onReset = lambda reason: inner.reset(reason)
        StreamBridge(stream, inner)
        self.gateway.metrics.streamsOpened += 1

    def _peerName(self) -> str:
        try:
            peer: Any = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:  # only names the peer in log lines
            return "?"


class OverlayPool:
    """
    One outgoing overlay link per peer gateway, dialled on demand.
    """

    def __init__(self, gateway: Gateway, bundle: Any, reactor: Any) -> None:
        self.gateway = gateway
        self.bundle = bundle
        self.reactor = reactor
        self.links: dict[str, OverlayLink] = {}
        self.dialling: dict[str, list[Deferred[OverlayLink]]] = {}
        self.failedAt: dict[str, float] = {}

    def order(self, peers: list[str], quarantine: float = 30.0) -> list[str]:
        """
        C{peers} with those that failed to answer lately moved to the end.
        """
        now = self.reactor.seconds()
        return sorted(peers, key=lambda p: self.failedAt.get(p, -quarantine) > now - quarantine)

    def linkTo(self, peer: str) -> Deferred[OverlayLink]:
        """
        Fire with a live overlay link to gateway C{peer} (HOST:PORT).
        """
        link = self.links.get(peer)
        if link is not None and not link.closed:
            return succeed(link)
        d: Deferred[OverlayLink] = Deferred()
        waiting = self.dialling.get(peer)
        if waiting is not None:
            waiting.append(d)
            return d
        self.dialling[peer] = [d]
        self._dial(peer)
        return d

    def _dial(self, peer: str) -> None:
        from suite.pki.tls import clientContextFactory
        from suite.specter.client.link import splitHostPort

        host, port = splitHostPort(peer)
        creator = clientContextFactory(self.bundle, acceptableProtocols=[OVERLAY_ALPN])
        endpoint = wrapClientTLS(creator, HostnameEndpoint(self.reactor, host, port, timeout=5))
        factory = Factory.forProtocol(lambda: OverlayLink(self.gateway, True))
        factory.noisy = False

        def connected(proto: Any) -> None:
            link = proto.wrappedProtocol if hasattr(proto, "wrappedProtocol") else proto
            self.links[peer] = link
            self.failedAt.pop(peer, None)
            for w in self.dialling.pop(peer, []):
                w.callback(link)

        def failed(f: Failure) -> None:
            log.warn("overlay link to {peer} failed: {error}", peer=peer, error=f.getErrorMessage())
            self.failedAt[peer] = self.reactor.seconds()
            for w in self.dialling.pop(peer, []):
                w.errback(f)

        endpoint.connect(factory).addCallbacks(connected, failed)

    def close(self) -> None:
        """
        Close every outgoing overlay link.
        """
        for link in self.links.values():
            link.close()
        self.links.clear()
