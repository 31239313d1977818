"""
TLS stream endpoints: wrap a server endpoint (TCP, unix) in TLS with a
connection creator from L{suite.pki.tls}, or build server and client
endpoints from endpoint strings.

Every TLS listener built here (and every one built with
L{HandshakeDeadlineFactory}) closes a connection whose handshake has not
completed L{HANDSHAKE_TIMEOUT} seconds after it was accepted: a client that
connects and sends nothing, or a byte now and then, holds no descriptor
beyond that.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "TLSServerEndpoint",
    "tlsServerEndpoint",
    "tlsClientEndpoint",
    "HandshakeDeadlineFactory",
    "HANDSHAKE_TIMEOUT",
]

log = Logger()

#: Seconds an accepted connection has to complete its TLS handshake.
HANDSHAKE_TIMEOUT = 10.0


class _DeadlineTLSProtocol(TLSMemoryBIOProtocol):
    """
    The server side of one TLS connection, closed if its handshake is not
    complete (the peer's Finished message received) in time.
    """

    factory: HandshakeDeadlineFactory
    _deadline: IDelayedCall | None = None

    def makeConnection(self, transport: ITransport) -> None:
        factory = self.factory
        self._deadline = factory.deadlineClock.callLater(factory.handshakeTimeout, self._handshakeLate)
        super().makeConnection(transport)

    def _handshakeLate(self) -> None:
        self._deadline = None
        if self.getHandle().get_peer_finished() is not None:
            return
        transport = self.transport
        if transport is None:
            return
        peer = transport.getPeer()
        log.info(
            "closing connection from {peer}: no TLS handshake within {seconds:g} s",
            peer=str(getattr(peer, "host", peer)),
            seconds=self.factory.handshakeTimeout,
        )
        if ITCPTransport.providedBy(transport):
            transport.abortConnection()
        else:
            transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        super().connectionLost(reason)


class HandshakeDeadlineFactory(TLSMemoryBIOFactory):
    """
    A server-side L{TLSMemoryBIOFactory} whose connections must complete
    the TLS handshake within C{handshakeTimeout} seconds, or are closed
    (one info line naming the peer).

    @param clock: times the deadline (and Twisted's write aggregation);
        the global reactor when L{None}.
    """

    protocol = _DeadlineTLSProtocol

    def __init__(
        self,
        contextFactory: IOpenSSLServerConnectionCreator,
        wrappedFactory: IProtocolFactory,
        clock: IReactorTime | None = None,
        handshakeTimeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(contextFactory, False, wrappedFactory, clock)
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        assert clock is not None
        self.deadlineClock: IReactorTime = clock
        self.handshakeTimeout = handshakeTimeout


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    Wrap any stream server endpoint (TCP, unix) in TLS with a server
    connection creator.
    """

    def __init__(
        self,
        wrapped: IStreamServerEndpoint,
        creator: IOpenSSLServerConnectionCreator,
        clock: IReactorTime | None = None,
    ) -> None:
        self.wrapped = wrapped
        self.creator = creator
        self.clock = clock

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with C{protocolFactory} wrapped in TLS (with the handshake
        deadline of L{HandshakeDeadlineFactory}).
        """
        return self.wrapped.listen(HandshakeDeadlineFactory(self.creator, protocolFactory, self.clock))


def tlsServerEndpoint(
    reactor: Any, description: str, creator: IOpenSSLServerConnectionCreator
) -> TLSServerEndpoint:
    """
    A TLS server endpoint from an endpoint string (C{tcp:8443:interface=::1},
    C{unix:/run/x.sock}) and a creator from L{suite.pki.tls.serverContextFactory}.
    """
    return TLSServerEndpoint(serverFromString(reactor, description), creator, reactor)


def tlsClientEndpoint(
    reactor: Any, description: str, creator: IOpenSSLClientConnectionCreator
) -> IStreamClientEndpoint:
    """
    A TLS client endpoint from an endpoint string (C{tcp:host=...:port=...})
    and a creator from L{suite.pki.tls.clientContextFactory}.
    """
    return wrapClientTLS(creator, clientFromString(reactor, description))
