"""
Visitor protocols over StringTransport: routing once, error pages, limits.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.core import Gateway, GatewayConfig
from suite.specter.gateway.forwarded import forwardingLines
from suite.specter.gateway.plain import PlainHTTPVisitor
from suite.specter.gateway.routes import MemoryRouteStore
from suite.specter.gateway.visitor import HTTPVisitor
from suite.specter.tunnel.frames import DATA, OPEN, FrameDecoder, decodeControl
from suite.specter.tunnel.mux import Link


class _Link(Link):
    def acceptsStreams(self) -> bool:
        return True


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(data)
    return out


class VisitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443", maxHeaderBytes=1024),
            MemoryRouteStore(self.clock),
            self.clock,
        )
        self.link = _Link()
        self.wire = StringTransport()
        self.link.makeConnection(self.wire)
        self.gateway.registry.add("app.example.test", self.link)

    def visit(self, proto: Any) -> StringTransport:
        transport = StringTransport()
        proto.makeConnection(transport)
        return transport

    def test_routedOnceThenSpliced(self) -> None:
        """
        The first request head picks the tunnel by Host; it and every later
        request for that host (in any case, port or trailing-dot form) go
        down one stream, each head with the forwarding headers (a visitor's
        own ones dropped), Host untouched.
        """
        visitor = HTTPVisitor(self.gateway)
        self.visit(visitor)
        head = b"GET / HTTP/1.1\r\nHost: app.example.test:8443\r\n\r\n"
        visitor.dataReceived(head[:10])
        self.assertEqual(self.wire.value(), b"")
        visitor.dataReceived(head[10:])
        visitor.dataReceived(
            b"GET /next HTTP/1.1\r\nHost: APP.example.test.:443\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
        )
        frames = _frames(self.wire.value())
        self.assertEqual(frames[0][0], OPEN)
        self.assertEqual(decodeControl(frames[0][2])["host"], "app.example.test")
        data = b"".join(p for k, _, p in frames if k == DATA)
        fwd = b"X-Forwarded-For: 192.168.1.1\r\nX-Forwarded-Proto: https\r\nForwarded: for=192.168.1.1;proto=https;"
        self.assertEqual(
            data,
            b"GET / HTTP/1.1\r\nHost: app.example.test:8443\r\n"
            + fwd
            + b'host="app.example.test:8443"\r\n\r\n'
            + b"GET /next HTTP/1.1\r\nHost: APP.example.test.:443\r\n"
            + fwd
            + b'host="APP.example.test.:443"\r\n\r\n',
        )

    def test_laterFramingError(self) -> None:
        """
        A later request head over the limit resets the stream and aborts
        the visitor's connection.
        """
        visitor = HTTPVisitor(self.gateway)
        transport = self.visit(visitor)
        visitor.dataReceived(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        visitor.dataReceived(b"GET /x HTTP/1.1\r\nX: " + b"a" * 2000)
        self.assertTrue(transport.disconnecting)
        frames = _frames(self.wire.value())
        from suite.specter.tunnel.frames import RESET

        self.assertEqual(frames[-1][0], RESET)

    def test_unknownHost404(self) -> None:
        """
        A hostname nobody serves gets a 404 page and the connection closes.
        """
        visitor = HTTPVisitor(self.gateway)
        transport = self.visit(visitor)
        visitor.dataReceived(b"GET / HTTP/1.1\r\nHost: nobody.example.test\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 Not Found\r\n"))
        self.assertIn(b"no tunnel is serving nobody.example.test", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_oversizedHeaders431(self) -> None:
        """
        Headers over the limit get 431, even before they are complete.
        """
        visitor = HTTPVisitor(self.gateway)
        transport = self.visit(visitor)
        visitor.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))
        self.assertEqual(self.wire.value(), b"")

    def test_malformed400(self) -> None:
        """
        A request line that is not HTTP/1.x gets 400.
        """
        visitor = HTTPVisitor(self.gateway)
        transport = self.visit(visitor)
        visitor.dataReceived(b"HELLO\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))

    def test_redirect(self) -> None:
        """
        The plain listener redirects to HTTPS on the gateway's port.
        """
        visitor = PlainHTTPVisitor(self.gateway, 8443)
        transport = self.visit(visitor)
        visitor.dataReceived(b"GET /a?b=c HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        self.assertIn(b"Location: https://app.example.test:8443/a?b=c\r\n", transport.value())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 308 "))

    def test_redirectAbsoluteForm(self) -> None:
        """
        An absolute-form target (a proxy-style request) is redirected to its
        own host and path (RFC 9112 3.2.2), whether a Host header naming the
        same host (any case, any port) comes with it or none does.
        """
        for host in (b"Host: APP.example.test:80\r\n", b""):
            visitor = PlainHTTPVisitor(self.gateway, 8443)
            transport = self.visit(visitor)
            visitor.dataReceived(b"GET http://App.example.test/x/y?q=1 HTTP/1.1\r\n" + host + b"\r\n")
            self.assertIn(b"Location: https://app.example.test:8443/x/y?q=1\r\n", transport.value())
        visitor = PlainHTTPVisitor(self.gateway, 8443)
        transport = self.visit(visitor)
        visitor.dataReceived(b"GET http://internal.corp/x HTTP/1.1\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))
        self.assertIn(b"internal.corp is not served here", transport.value())

    def test_plainHostConflict400(self) -> None:
        """
        The plain listener refuses, with 400 and the reason, a request with
        two Host headers, a Host with whitespace before its colon, or a
        Host naming another host than an absolute-form or CONNECT target; it neither
        redirects by the first Host nor opens a CONNECT tunnel.
        """
        cases = [
            (
                b"GET / HTTP/1.1\r\nHost: app.example.test\r\nhost: evil.example\r\n\r\n",
                b"more than one Host",
            ),
            (b"GET / HTTP/1.1\r\nHost : app.example.test\r\n\r\n", b"whitespace"),
            (b"GET http://app.example.test/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", b"disagrees"),
            (b"GET http://evil.example/ HTTP/1.1\r\nHost: app.example.test\r\n\r\n", b"disagrees"),
            (b"CONNECT app.example.test:443 HTTP/1.1\r\nHost: evil.example\r\n\r\n", b"disagrees"),
            (
                b"CONNECT app.example.test:443 HTTP/1.1\r\nHost: app.example.test\r\nHost: x\r\n\r\n",
                b"more than one Host",
            ),
        ]
        for request, reason in cases:
            visitor = PlainHTTPVisitor(self.gateway, 8443)
            transport = self.visit(visitor)
            visitor.dataReceived(request)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"), request)
            self.assertIn(reason, transport.value())
            self.assertNotIn(b"Location:", transport.value())
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.wire.value(), b"")

    def test_tlsHostConflict400(self) -> None:
        """
        On the TLS listener a first request with two Host headers (or a Host
        naming another host than its absolute-form target) is a 400 with the
        reason, not routed by its first Host, for tunnel hostnames and the
        apex alike; nothing reaches a tunnel.
        """
        cases = [
            (
                b"GET / HTTP/1.1\r\nHost: app.example.test\r\nHost: evil.example\r\n\r\n",
                b"more than one Host",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: example.test\r\nHOST: app.example.test\r\n\r\n",
                b"more than one Host",
            ),
            (b"GET http://evil.example/ HTTP/1.1\r\nHost: app.example.test\r\n\r\n", b"disagrees"),
            (b"GET https://app.example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n", b"disagrees"),
        ]
        for request, reason in cases:
            visitor = HTTPVisitor(self.gateway)
            transport = self.visit(visitor)
            visitor.dataReceived(request)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"), request)
            self.assertIn(reason, transport.value())
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.wire.value(), b"")

    def test_laterHostConflictResets(self) -> None:
        """
        A later request on a spliced connection with two Host headers is not
        passed to the tunnel: the stream is reset and the visitor cut off
        (a 400 cannot be slipped into the target's responses).
        """
        visitor = HTTPVisitor(self.gateway)
        transport = self.visit(visitor)
        visitor.dataReceived(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        visitor.dataReceived(b"GET /x HTTP/1.1\r\nHost: app.example.test\r\nHost: evil.example\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        from suite.specter.tunnel.frames import RESET

        frames = _frames(self.wire.value())
        self.assertEqual(frames[-1][0], RESET)
        self.assertNotIn(b"evil.example", b"".join(p for k, _, p in frames if k == DATA))

    def test_connectWithoutPort400(self) -> None:
        """
        A CONNECT target without a valid port is a 400 saying so.
        """
        for target in (b"app.example.test", b"app.example.test:0", b"app.example.test:99999", b":443"):
            visitor = PlainHTTPVisitor(self.gateway, 443)
            transport = self.visit(visitor)
            visitor.dataReceived(b"CONNECT " + target + b" HTTP/1.1\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), target)
            self.assertIn(b"CONNECT needs HOST:PORT", transport.value())

    def test_connect(self) -> None:
        """
        CONNECT to a tunnel hostname answers 200 and splices what follows.
        """
        visitor = PlainHTTPVisitor(self.gateway, 443)
        transport = self.visit(visitor)
        visitor.dataReceived(
            b"CONNECT app.example.test:80 HTTP/1.1\r\nHost: app.example.test:80\r\n\r\nraw bytes"
        )
        self.assertEqual(transport.value(), b"HTTP/1.1 200 Connection Established\r\n\r\n")
        frames = _frames(self.wire.value())
        self.assertEqual(decodeControl(frames[0][2])["kind"], "tcp")
        self.assertEqual(b"".join(p for k, _, p in frames if k == DATA), b"raw bytes")

    def test_connectElsewhereRefused(self) -> None:
        """
        CONNECT is only for names under an apex.
        """
        visitor = PlainHTTPVisitor(self.gateway, 443)
        transport = self.visit(visitor)
        visitor.dataReceived(b"CONNECT internal.corp:22 HTTP/1.1\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))

    def test_slowHeadClosed(self) -> None:
        """
        A visitor that never finishes its request head is closed after the
        head timeout; one that does keeps no timer.
        """
        visitor = HTTPVisitor(self.gateway)
        transport = self.visit(visitor)
        visitor.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnected)
        visitor = HTTPVisitor(self.gateway)
        self.visit(visitor)
        visitor.dataReceived(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_apexServesTheApexSite(self) -> None:
        """
        A request for the apex itself goes to the apex site (the /_internal
        tree); without one it is a 404 page.
        """
        from twisted.web.resource import Resource
        from twisted.web.static import Data

        visitor = HTTPVisitor(self.gateway)
        transport = self.visit(visitor)
        visitor.dataReceived(b"GET /_internal/x HTTP/1.1\r\nHost: example.test\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))
        root = Resource()
        internal = Resource()
        internal.putChild(b"x", Data(b"internal page", "text/plain"))
        root.putChild(b"_internal", internal)
        self.gateway.setApexResource(root)
        visitor = HTTPVisitor(self.gateway)
        transport = self.visit(visitor)
        visitor.dataReceived(b"GET /_internal/x HTTP/1.1\r\nHost: example.test\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value())
        self.assertTrue(transport.value().endswith(b"internal page"))
        self.assertEqual(self.wire.value(), b"")


class RetryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443"),
            MemoryRouteStore(self.clock),
            self.clock,
        )
        self.links, self.wires = [], []
        for _ in range(2):
            link, wire = _Link(), StringTransport()
            link.makeConnection(wire)
            self.gateway.registry.add("app.example.test", link)
            self.links.append(link)
            self.wires.append(wire)

    def test_retriedOnAnotherLink(self) -> None:
        """
        A stream reset before any answer because the target could not be
        reached is replayed once on another link.
        """
        from suite.specter.tunnel.frames import RESET, encodeFrame

        visitor = HTTPVisitor(self.gateway)
        transport = StringTransport()
        visitor.makeConnection(transport)
        head = b"POST /x HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 4\r\n\r\n"
        visitor.dataReceived(head)
        visitor.dataReceived(b"body")
        first = 0 if self.wires[0].value() else 1
        sid = _frames(self.wires[first].value())[0][1]
        self.links[first].dataReceived(encodeFrame(RESET, sid, b"cannot connect to 127.0.0.1:1: refused"))
        other = self.wires[1 - first].value()
        forwarded = head[:-2] + forwardingLines("192.168.1.1", "app.example.test") + b"\r\n"
        self.assertEqual(b"".join(p for k, _, p in _frames(other) if k == DATA), forwarded + b"body")
        self.assertEqual(transport.value(), b"")

    def test_unsafeNotRetried(self) -> None:
        """
        A POST whose link died may have reached the target: 502, no replay.
        """
        visitor = HTTPVisitor(self.gateway)
        transport = StringTransport()
        visitor.makeConnection(transport)
        visitor.dataReceived(b"POST /x HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        first = 0 if self.wires[0].value() else 1
        self.wires[1 - first].clear()
        self.links[first].connectionLost()
        self.assertEqual(self.wires[1 - first].value(), b"")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "))

    def test_idempotentRetriedAfterLinkLoss(self) -> None:
        """
        A GET whose link died before any answer is replayed on another link.
        """
        visitor = HTTPVisitor(self.gateway)
        transport = StringTransport()
        visitor.makeConnection(transport)
        visitor.dataReceived(b"GET /x HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        first = 0 if self.wires[0].value() else 1
        self.links[first].connectionLost()
        self.assertIn(b"GET /x", self.wires[1 - first].value())
        self.assertEqual(transport.value(), b"")
