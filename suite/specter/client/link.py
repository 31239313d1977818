"""
The client end of tunnel links: one L{LinkHandle} (lifecycle machine +
connection) per gateway, coordinated by L{TunnelClient}, which keeps up to
C{maxLinks} redundant links for one hostname.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import ClientFactory, Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.netutil import isIPAddress, noDelay
from suite.specter.tunnel.machine import Backoff, TunnelLifecycle, newLifecycle
from suite.specter.tunnel.mux import (
    DEFAULT_CHUNK,
    DEFAULT_WINDOW,
    Link,
    LocalSide,
    Stream,
    eagerWrites,
)
from suite.specter.tunnel.twistedio import LeanClientTLSEndpoint

__all__ = [
    "ClientLink",
    "TargetSide",
    "LinkHandle",
    "TunnelClient",
    "TUNNEL_ALPN",
    "splitHostPort",
    "tunnelCreator",
]

log = Logger()
TUNNEL_ALPN = b"specter-tunnel/1"


def splitHostPort(text: str, default: int = 443) -> tuple[str, int]:
    """
    C{HOST:PORT} or C{[V6]:PORT} -> (host, port).
    """
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default


def tunnelCreator(identity: Any, host: str) -> Any:
    """
    The mTLS connection creator for a link to gateway C{host}: the client
    certificate, the gateway's node certificate checked against C{ca.crt}
    and C{host}; no SNI, so the gateway presents its node certificate.
    """
    from suite.pki.tls import clientContextFactory
    from suite.pki.verify import PeerPolicy

    policy = PeerPolicy(ipAddress=host) if isIPAddress(host) else PeerPolicy(hostname=host)
    return clientContextFactory(identity, peerVerifier=policy, acceptableProtocols=[TUNNEL_ALPN])


class TargetSide(LocalSide):
    """
    The client's connection to its local target, spliced with a stream.
    """

    def __init__(self, stream: Stream, header: bytes = b"") -> None:
        self.pendingStream = stream
        self.header = header

    def connectionMade(self) -> None:
        noDelay(self.transport)
        eagerWrites(self.transport)
        if self.header:
            self.transport.write(self.header)
        self.pendingStream.attach(self)

    def dataReceived(self, data: bytes) -> None:
        if self.stream is not None:
            self.stream.send(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        if self.stream is not None:
            self.stream.localLost()
            self.stream = None


def proxyHeader(peer: str, target: tuple[str, int]) -> bytes:
    """
    A PROXY protocol v1 line naming visitor C{peer} (HOST:PORT) as the source.
    """
    import ipaddress

    try:
        host, port = splitHostPort(peer, 0)
        source = ipaddress.ip_address(host)
        dest = ipaddress.ip_address(target[0])
    except ValueError:
        return b"PROXY UNKNOWN\r\n"
    if source.version != dest.version:
        return b"PROXY UNKNOWN\r\n"
    family = "TCP4" if source.version == 4 else "TCP6"
    return f"PROXY {family} {source} {dest} {port} {target[1]}\r\n".encode()


class _TargetFactory(ClientFactory):
    noisy = False

    def __init__(self, stream: Stream, where: str, header: bytes = b"") -> None:
        self.stream = stream
        self.where = where
        self.header = header

    def buildProtocol(self, addr: Any) -> TargetSide:
        return TargetSide(self.stream, self.header)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.stream.reset(f"cannot connect to {self.where}: {reason.getErrorMessage()}")


class ClientLink(Link):
    """
    The client end of one link.
    """

    streamParity = 2

    def __init__(self, handle: LinkHandle) -> None:
        super().__init__(handle.client.window, handle.client.chunk)
        self.handle = handle
        self._idleWaiters: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        super().connectionMade()
        self.handle.linkUp(self)

    def streamOpened(self, stream: Stream, meta: dict[str, Any]) -> None:
        self.handle.streamOpened(self, stream, meta)

    def controlReceived(self, message: dict[str, Any]) -> None:
        self.handle.controlReceived(self, message)

    def whenIdle(self) -> Deferred[None]:
        """
        Fire when the link carries no stream: at once if it carries none,
        otherwise when its last stream ends.  Cancellable.
        """
        if not self.streams:
            return succeed(None)
        d: Deferred[None] = Deferred(lambda d: self._idleWaiters.remove(d))
        self._idleWaiters.append(d)
        return d

    def forget(self, sid: int) -> None:
        super().forget(sid)
        if not self.streams and self._idleWaiters:
            waiters, self._idleWaiters = self._idleWaiters, []
            for d in waiters:
                d.callback(None)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        super().connectionLost(reason)
        self.handle.linkDown(self, reason)


class LinkHandle:
    """
    One gateway link: its lifecycle machine (L{suite.specter.tunnel.machine}),
    whose outputs it carries out, and its current connection.
    """

    def __init__(self, client: TunnelClient, gateway: str) -> None:
        self.client = client
        self.gateway = gateway
        #: The link's connection while it is up.
        self.link: ClientLink | None = None
        #: Who waits for the link to close for good (None: it has).
        self._closedWaiters: list[Deferred[None]] | None = []
        self.machine: TunnelLifecycle = newLifecycle(self, client.reactor, Backoff(rng=client.rng))

    # -- ILinkActions ---------------------------------------------------------------------
    def connect(self) -> Deferred[Any]:
        host, port = splitHostPort(self.gateway)
        endpoint = LeanClientTLSEndpoint(
            tunnelCreator(self.client.identity, host),
            HostnameEndpoint(self.client.reactor, host, port, timeout=10),
            self.client.reactor,
        )
        factory = Factory.forProtocol(lambda: ClientLink(self))
        factory.noisy = False
        attempt: Deferred[Any] = endpoint.connect(factory)

        def failed(f: Failure) -> Failure:
            if not f.check(CancelledError):
                log.warn(
                    "cannot link to gateway {gateway}: {error}",
                    gateway=self.gateway,
                    error=f.getErrorMessage(),
                )
            return f

        return attempt.addErrback(failed)

    def register(self) -> None:
        assert self.link is not None
        self.link.sendControl(
            {"t": "register", "id": 1, "hostname": self.client.hostname, "kind": self.client.kind}
        )

    def announce(self, hostname: str) -> None:
        self.client.registeredOn(self, hostname)

    def reportRefusal(self, reason: str) -> None:
        self.client.refused(self, reason)

    def noteMove(self) -> None:
        log.info("gateway {gateway} asked us to move; finishing its streams", gateway=self.gateway)

    def reportLoss(self, reason: Failure) -> None:
        failure = tlsFailure(reason)
        if failure is not None:
            self.client.tlsFailed(self, *failure)

    def acceptStream(self, stream: Stream, meta: dict[str, Any]) -> None:
        self.client.openTarget(stream, meta)

    def refuseStream(self, stream: Stream) -> None:
        # "no tunnel link" lets the gateway try the visitor elsewhere
        stream.reset("no tunnel link: the client is shutting down")

    def whenIdle(self) -> Deferred[None]:
        assert self.link is not None
        return self.link.whenIdle()

    def finishStreams(self) -> None:
        if self.link is not None:
            self.link.sendControl({"t": "drain", "id": 2})

    def abortStreams(self) -> None:
        link = self.link
        if link is None:
            return
        for stream in list(link.streams.values()):
            stream.reset("the tunnel client stopped before the response ended")

    def disconnect(self) -> None:
        if self.link is not None:
            self.link.close()

    def abortConnection(self) -> None:
        if self.link is not None:
            self.link.transport.abortConnection()

    def reportClosed(self) -> None:
        waiters, self._closedWaiters = self._closedWaiters or [], None
        for d in waiters:
            d.callback(None)

    # -- for the client -------------------------------------------------------------------
    def whenClosed(self) -> Deferred[None]:
        """
        Fires once the link is closed for good (as the machine announced).
        """
        if self._closedWaiters is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closedWaiters.append(d)
        return d

    def streamCount(self) -> int:
        """
        How many streams the link carries now.
        """
        return len(self.link.streams) if self.link is not None else 0

    # -- events from the connection -------------------------------------------------------
    def linkUp(self, link: ClientLink) -> None:
        self.link = link
        self.machine.connected()

    def linkDown(self, link: ClientLink, reason: Failure) -> None:
        if self.link is link:
            self.link = None
            self.machine.connectionLost(reason)

    def streamOpened(self, link: ClientLink, stream: Stream, meta: dict[str, Any]) -> None:
        if self.link is link:
            self.machine.streamOpened(stream, meta)

    def controlReceived(self, link: ClientLink, message: dict[str, Any]) -> None:
        if self.link is not link:
            return
        kind = message.get("t")
        if kind == "registered":
            self.client.learnGateways([str(g) for g in message.get("gateways", [])])
            self.machine.registered(str(message["hostname"]))
        elif kind == "move":
            self.machine.moveRequested()
        elif kind == "error":
            self.machine.errorReceived(str(message.get("reason")))


#: OpenSSL alert reasons by which a gateway refuses our client certificate.
_REFUSAL_ALERTS = (
    "alert unknown ca",
    "alert bad certificate",
    "alert certificate required",
    "alert certificate unknown",
    "alert certificate expired",
    "alert certificate revoked",
    "alert unsupported certificate",
    "alert access denied",
    "alert decrypt error",
    "alert handshake failure",
)


def tlsFailure(reason: Failure) -> tuple[str, bool] | None:
    """
    Describe a link lost to TLS: C{(text, refusedByGateway)}, or L{None}
    when C{reason} is not a TLS error.  C{text} names the TLS alert and
    what it means (our certificate refused, or the gateway's not trusted).
    """
    from OpenSSL import SSL

    error = reason.value
    if not isinstance(error, SSL.Error):
        return None
    parts: list[str] = []
    for entry in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(entry, tuple) and entry:
            parts.append(str(entry[-1]))
    detail = "; ".join(parts) or str(error)
    lower = detail.lower()
    if any(alert in lower for alert in _REFUSAL_ALERTS):
        return f"TLS alert '{detail}': certificate not trusted by the gateway", True
    if "certificate verify failed" in lower:
        return f"TLS error '{detail}': the gateway's certificate is not trusted by ca.crt", False
    return f"TLS error '{detail}'", False


#: Links refused at the TLS handshake before a tunnel is up, before the
#: client gives up (with the backoff, about 4 s).
TLS_FAILURE_BUDGET = 4


class TunnelClient:
    """
    Keeps a tunnel for one target alive over up to C{maxLinks} gateways.
    """

    def __init__(
        self,
        reactor: Any,
        identity: Any,
        servers: list[str],
        target: tuple[str, int],
        kind: str,
        hostname: str | None = None,
        maxLinks: int = 3,
        window: int = DEFAULT_WINDOW,
        chunk: int = DEFAULT_CHUNK,
        rng: Any = None,
        onRegistered: Callable[[str], None] | None = None,
        onFatal: Callable[[str], None] | None = None,
        proxyProtocol: bool = False,
    ) -> None:
        import random

        self.reactor = reactor
        self.identity = identity
        self.gateways = list(servers)
        self.target = target
        self.kind = kind
        self.hostname = hostname
        self.maxLinks = maxLinks
        self.window = window
        self.chunk = chunk
        self.rng = rng or random.Random()
        self.handles: dict[str, LinkHandle] = {}
        self.onRegistered = onRegistered
        self.onFatal = onFatal
        self.announced = False
        self.proxyProtocol = proxyProtocol
        self.tlsFailures = 0

    def start(self) -> None:
        """
        Link to the first gateway; more follow once a hostname is known.
        """
        self._add(self.gateways[0])

    def _add(self, gateway: str) -> None:
        if gateway in self.handles or len(self.handles) >= self.maxLinks:
            return
        handle = LinkHandle(self, gateway)
        self.handles[gateway] = handle
        handle.machine.start()

    def learnGateways(self, gateways: list[str]) -> None:
        """
        A gateway told us its peers; remember them.
        """
        for g in gateways:
            if g not in self.gateways:
                self.gateways.append(g)

    def registeredOn(self, handle: LinkHandle, hostname: str) -> None:
        """
        A link is registered: fix the hostname and open the other links.
        """
        self.hostname = hostname
        log.info("tunnel {hostname} linked through {gateway}", hostname=hostname, gateway=handle.gateway)
        if not self.announced:
            self.announced = True
            if self.onRegistered is not None:
                self.onRegistered(hostname)
        for g in self.gateways:
            self._add(g)

    def refused(self, handle: LinkHandle, reason: str) -> None:
        """
        A gateway refused the registration.
        """
        log.error("gateway {gateway} refused the tunnel: {reason}", gateway=handle.gateway, reason=reason)
        if not self.announced and self.onFatal is not None:
            self.onFatal(reason)

    def tlsFailed(self, handle: LinkHandle, text: str, refused: bool) -> None:
        """
        A link was lost in its TLS handshake (C{refused}: the gateway
        refused our certificate).  Logged every time; before any tunnel is
        up, the client gives up after L{TLS_FAILURE_BUDGET} of them.
        """
        self.tlsFailures += 1
        log.error(
            "gateway {gateway} {what}: {text} (attempt {n})",
            gateway=handle.gateway,
            what="refused our client certificate" if refused else "link failed in the TLS handshake",
            text=text,
            n=self.tlsFailures,
        )
        if not self.announced and self.tlsFailures >= TLS_FAILURE_BUDGET and self.onFatal is not None:
            what = "refused the client certificate" if refused else "TLS handshake failed"
            self.onFatal(
                f"gateway {handle.gateway}: {what} after {self.tlsFailures} attempts: {text} (--cert-dir)"
            )

    def drain(self, grace: float) -> Deferred[None]:
        """
        Shut down gracefully: every link stops taking new streams (the
        gateways are told), the open ones get up to C{grace} seconds to
        finish, then whatever is left is reset (never closed as if
        complete) and the links close.  Fires once every link is closed
        (a link slow to close is aborted after
        L{suite.specter.tunnel.machine.CLOSE_TIMEOUT} seconds).
        """
        handles = list(self.handles.values())
        if any(h.link is not None for h in handles):
            log.info("draining tunnel links (grace {grace} s)", grace=grace)
        closed = DeferredList([h.whenClosed() for h in handles])
        for handle in handles:
            handle.machine.shutdown()

        def graceOver() -> None:
            left = sum(h.streamCount() for h in handles)
            if left:
                log.warn(
                    "{count} tunnel streams still open after the {grace} s grace period: resetting them",
                    count=left,
                    grace=grace,
                )
            for handle in handles:
                handle.machine.stop()

        timer = self.reactor.callLater(grace, graceOver)

        def allClosed(_: object) -> None:
            if timer.active():
                timer.cancel()

        return closed.addCallback(allClosed)

    def openTarget(self, stream: Stream, meta: dict[str, Any] | None = None) -> None:
        """
        A visitor arrived: connect to the target and splice (after a PROXY
        protocol line naming the visitor, with C{proxyProtocol}).
        """
        host, port = self.target
        header = proxyHeader(str((meta or {}).get("peer", "")), self.target) if self.proxyProtocol else b""
        self.reactor.connectTCP(host, port, _TargetFactory(stream, f"{host}:{port}", header), timeout=10)

    def stop(self) -> Deferred[None]:
        """
        Close every link; fires once they are all closed.
        """
        handles = list(self.handles.values())
        closed = DeferredList([h.whenClosed() for h in handles])
        for handle in handles:
            handle.machine.stop()
        return closed.addCallback(lambda _: None)
