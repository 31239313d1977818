"""
The plain HTTP listener on a real loopback socket refuses a request with
two Host headers (RFC 9112 3.2) with 400 and the reason.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from suite.specter.gateway.core import Gateway, GatewayConfig
from suite.specter.gateway.plain import PlainHTTPFactory
from suite.specter.gateway.routes import MemoryRouteStore


class _Raw(Protocol):
    """
    Sends raw bytes once connected; fires C{done} with all it received when
    the server closes.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.done.callback(self.received)


class PlainSocketTests(TestCase):
    timeout = 15

    async def test_twoHostsRefused(self) -> None:
        """
        Over a real socket: a single Host is redirected, two Hosts are a 400
        naming the reason, and the server closes the connection.
        """
        clock = Clock()
        gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443", maxHeaderBytes=4096),
            MemoryRouteStore(clock),
            clock,
        )
        tcp: Any = reactor
        port = tcp.listenTCP(0, PlainHTTPFactory(gateway, 443), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

        async def send(request: bytes) -> bytes:
            proto = _Raw(request)
            await connectProtocol(endpoint, proto)
            return await proto.done

        ok = await send(b"GET /a HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        self.assertTrue(ok.startswith(b"HTTP/1.1 308 "), ok)
        bad = await send(b"GET /a HTTP/1.1\r\nHost: app.example.test\r\nHost: evil.example\r\n\r\n")
        self.assertTrue(bad.startswith(b"HTTP/1.1 400 Bad Request\r\n"), bad)
        self.assertIn(b"more than one Host header", bad)
        self.assertNotIn(b"Location:", bad)
