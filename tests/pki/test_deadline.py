"""
The TLS handshake deadline of every TLS listener (L{HandshakeDeadlineFactory}):
a connection that does not complete its handshake is closed; one that does
is left alone.  In memory, with a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from suite.pki.endpoints import HANDSHAKE_TIMEOUT, HandshakeDeadlineFactory, TLSServerEndpoint
from suite.pki.tls import clientContextFactory, serverContextFactory
from suite.web.listen import listenService

from . import helpers

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


def _silent(factory: Any) -> tuple[Any, StringTransport]:
    """
    A connection accepted by C{factory} whose client never speaks.
    """
    protocol = factory.buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    protocol.makeConnection(transport)
    return protocol, transport


class HandshakeDeadlineTests(SynchronousTestCase):
    def server(self, clock: Clock) -> HandshakeDeadlineFactory:
        return HandshakeDeadlineFactory(
            serverContextFactory(helpers.serverBundle(), requireClientCert=True),
            Factory.forProtocol(Protocol),
            clock,
        )

    def test_silentClosed(self) -> None:
        """
        A client that connects and sends nothing (or a byte now and then)
        is closed once the deadline passes.
        """
        clock = Clock()
        protocol, transport = _silent(self.server(clock))
        clock.advance(HANDSHAKE_TIMEOUT - 1)
        protocol.dataReceived(b"\x16")
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_handshakeDoneKept(self) -> None:
        """
        A client that completes the mTLS handshake is not closed by the
        deadline, and the timer is gone once the connection ends.
        """
        clock = Clock()
        server = self.server(clock)
        client = TLSMemoryBIOFactory(
            clientContextFactory(helpers.clientBundle(), hostname="server.example"),
            True,
            Factory.forProtocol(Protocol),
        )
        c: Any
        s: Any
        c, s, pump = iosim.connectedServerAndClient(
            lambda: server.buildProtocol(ADDRESS), lambda: client.buildProtocol(ADDRESS), greet=False
        )
        pump.flush()
        self.assertIsNotNone(s.getPeerCertificate())
        clock.advance(HANDSHAKE_TIMEOUT * 2)
        self.assertFalse(s.transport.disconnecting)
        c.transport.loseConnection()
        pump.flush()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_listenersUseIt(self) -> None:
        """
        The TLS listeners of L{listenService} (CEPtra's Raft and admin,
        clustor-cp) and L{TLSServerEndpoint} (Constellation's Raft) close
        a connection that never completes its handshake.
        """
        reactor = MemoryReactorClock()
        creator = serverContextFactory(helpers.serverBundle(), requireClientCert=True)
        service = listenService(
            "tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol), reactor, creator, flag="--x"
        )
        service.startService()
        self.addCleanup(service.stopService)
        endpoint = TLSServerEndpoint(service.endpoint, creator, reactor)
        endpoint.listen(Factory.forProtocol(Protocol))
        self.assertEqual(len(reactor.tcpServers), 2)
        for _, factory, _, _ in reactor.tcpServers:
            _, transport = _silent(factory)
            reactor.advance(HANDSHAKE_TIMEOUT)
            self.assertTrue(transport.disconnecting)
