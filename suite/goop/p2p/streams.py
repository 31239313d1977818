"""
Peer-to-peer streams: newline-delimited JSON over mutually authenticated TLS.

A stream starts with one line naming its protocol (C{/goop/site/1.0.0},
C{/goop/data/1.0.0}, C{/goop/group/1.0.0}); after that each line is one JSON
object.  Request/response protocols answer each request with one line, in
order.  Lines are size-limited (64 KiB towards a server, 8 MiB towards a
client), requests are processed one at a time with a bounded backlog, and an
idle stream is closed.  Open streams are capped overall (512) and per
authenticated peer (16).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IHandshakeListener, IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from suite.goop.jsonutil import parseJSON
from suite.goop.p2p.tls import PeerTLS, remotePeerId

__all__ = [
    "SITE_PROTOCOL",
    "DATA_PROTOCOL",
    "GROUP_PROTOCOL",
    "StreamServerFactory",
    "openStream",
    "StreamClient",
    "RequestHandler",
    "listenStreams",
    "streamsDescription",
    "streamsEndpoint",
]

log = Logger()
SITE_PROTOCOL = "/goop/site/1.0.0"
DATA_PROTOCOL = "/goop/data/1.0.0"
GROUP_PROTOCOL = "/goop/group/1.0.0"
MAX_REQUEST_LINE = 64 * 1024
MAX_RESPONSE_LINE = 8 * 1024 * 1024
MAX_BACKLOG = 32
IDLE_SECONDS = 120


class Session(Protocol):
    """A server-side handler of one stream after its protocol line."""

    def received(self, message: dict[str, Any]) -> None: ...

    def lost(self) -> None: ...


RequestHandler = Callable[[str, dict[str, Any]], "Deferred[dict[str, Any]] | dict[str, Any]"]
SessionFactory = Callable[[str, Callable[[dict[str, Any]], None], Callable[[], None], Any], Session]


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


class RequestResponse:
    """Answer each request with one response, in order, one at a time."""

    def __init__(
        self,
        handler: RequestHandler,
        peerId: str,
        send: Callable[[dict[str, Any]], None],
        close: Callable[[], None],
    ) -> None:
        self.handler = handler
        self.peerId = peerId
        self.send = send
        self.close = close
        self.queue: deque[dict[str, Any]] = deque()
        self.busy = False
        self.gone = False

    def received(self, message: dict[str, Any]) -> None:
        if len(self.queue) >= MAX_BACKLOG:
            self.send({"ok": False, "error": "too many pending requests"})
            self.close()
            return
        self.queue.append(message)
        self._next()

    def _next(self) -> None:
        if self.busy or not self.queue or self.gone:
            return
        self.busy = True
        message = self.queue.popleft()

        def handle() -> Deferred[dict[str, Any]]:
            result = self.handler(self.peerId, message)
            return result if isinstance(result, Deferred) else succeed(result)

        d = maybeDeferred(handle)

        def failed(f: Any) -> dict[str, Any]:
            log.failure("stream request failed", f)
            return {"ok": False, "error": "internal error"}

        def reply(response: dict[str, Any]) -> None:
            self.busy = False
            if not self.gone:
                self.send(response)
                self._next()

        d.addErrback(failed).addCallback(reply)

    def lost(self) -> None:
        self.gone = True
        self.queue.clear()


@implementer(IHandshakeListener)
class StreamServerProtocol(LineReceiver, TimeoutMixin):
    transport: Any
    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST_LINE

    def __init__(self, factory: StreamServerFactory) -> None:
        self.factory = factory
        self.peerId: str | None = None
        self.session: Session | None = None

    def connectionMade(self) -> None:
        self.setTimeout(IDLE_SECONDS)

    def handshakeCompleted(self) -> None:
        try:
            peerId = remotePeerId(self.transport)
        except ValueError:
            self.transport.abortConnection()
            return
        if not self.factory.admit(peerId):
            self.transport.abortConnection()
            return
        self.peerId = peerId

    def _send(self, obj: dict[str, Any]) -> None:
        self.sendLine(encode(obj))

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        if self.peerId is None:
            self.transport.abortConnection()
            return
        if self.session is None:
            proto = line.decode("utf-8", "replace").strip()
            make = self.factory.protocols.get(proto)
            if make is None:
                self._send({"ok": False, "error": f"unsupported protocol: {proto[:64]}"})
                self.transport.loseConnection()
                return
            self.session = make(self.peerId, self._send, self.transport.loseConnection, self.transport)
            return
        try:
            message = parseJSON(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self._send({"ok": False, "error": "each line must be one JSON object"})
            return
        self.session.received(message)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._send({"ok": False, "error": f"line longer than {self.MAX_LENGTH} bytes"})
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        if self.peerId is not None:
            self.factory.release(self.peerId)
        if self.session is not None:
            self.session.lost()


class StreamServerFactory(Factory):
    """Dispatches streams to sessions by protocol id."""

    noisy = False

    def __init__(self, maxStreams: int = 512, maxPerPeer: int = 16) -> None:
        self.protocols: dict[str, SessionFactory] = {}
        self.maxStreams = maxStreams
        self.maxPerPeer = maxPerPeer
        self.perPeer: dict[str, int] = {}

    def admit(self, peerId: str) -> bool:
        """Count an authenticated stream; refuse one over the caps."""
        if sum(self.perPeer.values()) >= self.maxStreams or self.perPeer.get(peerId, 0) >= self.maxPerPeer:
            log.info("refusing stream from {peer}: too many open streams", peer=peerId[:16])
            return False
        self.perPeer[peerId] = self.perPeer.get(peerId, 0) + 1
        return True

    def release(self, peerId: str) -> None:
        n = self.perPeer.get(peerId, 1) - 1
        if n <= 0:
            self.perPeer.pop(peerId, None)
        else:
            self.perPeer[peerId] = n

    def addRequestHandler(self, protocolId: str, handler: RequestHandler) -> None:
        self.protocols[protocolId] = lambda peer, send, close, transport: RequestResponse(
            handler, peer, send, close
        )

    def addSessionFactory(self, protocolId: str, factory: SessionFactory) -> None:
        self.protocols[protocolId] = factory

    def buildProtocol(self, addr: Any) -> StreamServerProtocol:
        return StreamServerProtocol(self)


def listenStreams(
    reactor: Any, tls: PeerTLS, port: int, factory: StreamServerFactory, interface: str = ""
) -> Deferred[IListeningPort]:
    """
    Listen for TLS streams on C{port} at the IP address C{interface} (IPv4
    or IPv6); C{""} is every IPv4 interface.
    """
    return streamsEndpoint(reactor, port, interface).listen(TLSMemoryBIOFactory(tls, False, factory))


def streamsEndpoint(reactor: Any, port: int, interface: str = "") -> IStreamServerEndpoint:
    """The TCP endpoint of L{listenStreams}."""
    if ":" in interface:
        return TCP6ServerEndpoint(reactor, port, interface=interface)
    return TCP4ServerEndpoint(reactor, port, interface=interface)


def streamsDescription(port: int, interface: str = "") -> str:
    """
    How start-up messages name the P2P listener: C{tcp:4001} on every
    interface, else C{127.0.0.1:4001} or C{[::1]:4001}.
    """
    if not interface:
        return f"tcp:{port}"
    return f"[{interface}]:{port}" if ":" in interface else f"{interface}:{port}"


class PeerMismatch(Exception):
    """The peer at the address is not the peer we meant to reach."""


@implementer(IHandshakeListener)
class StreamClient(LineReceiver):
    """The client end of one stream."""

    transport: Any
    delimiter = b"\n"
    MAX_LENGTH = MAX_RESPONSE_LINE

    def __init__(self, expectedPeerId: str | None, protocolId: str) -> None:
        self.expected = expectedPeerId
        self.protocolId = protocolId
        self.ready: Deferred[StreamClient] = Deferred()
        self.pending: deque[Deferred[dict[str, Any]]] = deque()
        self.onMessage: Callable[[dict[str, Any]], None] | None = None
        self.onLost: Callable[[], None] | None = None
        self.peerId: str | None = None
        self.closed = False
        self._closedWaiters: list[Deferred[None]] = []

    def whenClosed(self) -> Deferred[None]:
        """Fire once the connection is gone."""
        d: Deferred[None] = Deferred()
        if self.closed:
            d.callback(None)
        else:
            self._closedWaiters.append(d)
        return d

    def handshakeCompleted(self) -> None:
        try:
            self.peerId = remotePeerId(self.transport)
        except ValueError as e:
            self._abort(PeerMismatch(str(e)))
            return
        if self.expected is not None and self.peerId != self.expected:
            self._abort(PeerMismatch(f"expected peer {self.expected[:16]}, reached {self.peerId[:16]}"))
            return
        self.sendLine(self.protocolId.encode())
        self.ready.callback(self)

    def _abort(self, e: Exception) -> None:
        self.transport.abortConnection()
        if not self.ready.called:
            self.ready.errback(e)

    def send(self, obj: dict[str, Any]) -> None:
        self.sendLine(encode(obj))

    def request(self, obj: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """Send one request; fire with its response."""
        d: Deferred[dict[str, Any]] = Deferred()
        if self.closed:
            d.errback(ConnectionError("stream closed"))
            return d
        self.pending.append(d)
        self.send(obj)
        return d

    def lineReceived(self, line: bytes) -> None:
        try:
            message = parseJSON(line)
        except ValueError:
            self.transport.loseConnection()
            return
        if not isinstance(message, dict):
            # not the protocol: the pending requests fail when it closes
            self.transport.loseConnection()
            return
        if self.pending:
            self.pending.popleft().callback(message)
        elif self.onMessage is not None:
            self.onMessage(message)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.abortConnection()

    def close(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        for d in self._closedWaiters:
            d.callback(None)
        self._closedWaiters = []
        if not self.ready.called:
            self.ready.errback(ConnectionError("connection closed during the handshake"))
        while self.pending:
            self.pending.popleft().errback(ConnectionError("stream closed"))
        if self.onLost is not None:
            self.onLost()


class _ClientFactory(Factory):
    noisy = False

    def __init__(self, proto: StreamClient) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> StreamClient:
        return self.proto


def openStream(
    reactor: Any,
    tls: PeerTLS,
    address: str,
    expectedPeerId: str | None,
    protocolId: str,
    timeout: float = 10.0,
) -> Deferred[StreamClient]:
    """Connect to C{address} (host:port), verify the peer id, open C{protocolId}."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    proto = StreamClient(expectedPeerId, protocolId)
    # Built directly: an IPv6 literal in an endpoint string needs its colons escaped.
    tcp = (
        TCP6ClientEndpoint(reactor, host, int(port), timeout=timeout)
        if ":" in host
        else TCP4ClientEndpoint(reactor, host, int(port), timeout=timeout)
    )
    ep = wrapClientTLS(tls, tcp)
    connected = ep.connect(_ClientFactory(proto))
    ready: Deferred[StreamClient] = connected.addCallback(lambda _: proto.ready)
    ready.addTimeout(timeout, reactor, onTimeoutCancel=lambda r, t: _timedOut(proto, t))
    return ready


def _timedOut(proto: StreamClient, timeout: float) -> Any:
    t: Any = proto.transport
    if t is not None:
        t.abortConnection()
    raise TimeoutError(f"stream not ready within {timeout} s")
