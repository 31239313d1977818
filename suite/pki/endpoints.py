"""
TLS stream endpoints: wrap a server endpoint (TCP, unix) in TLS with a
connection creator from L{suite.pki.tls}, or build server and client
endpoints from endpoint strings.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString, wrapClientTLS
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

__all__ = ["TLSServerEndpoint", "tlsServerEndpoint", "tlsClientEndpoint"]


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
        Listen with C{protocolFactory} wrapped in TLS.
        """
        return self.wrapped.listen(TLSMemoryBIOFactory(self.creator, False, protocolFactory, self.clock))


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
