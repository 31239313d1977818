"""
HTTP/1.x requests without a Host line on the gateway's TLS port: an
HTTP/1.1 one is refused (RFC 9112 3.2), an HTTP/1.0 one is routed by its
absolute-form target's authority (else the SNI) and that authority checked
against the certificate presented like a Host; a CONNECT naming another
host than the connection's binding is refused like other host changes.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.core import GatewayLink
from suite.specter.gateway.forwarded import (
    HostChanged,
    RequestError,
    RequestRewriter,
    missingHost,
    targetAuthority,
)
from suite.specter.gateway.visitor import HTTPVisitor
from suite.specter.tunnel.frames import DATA, OPEN, RESET, FrameDecoder, decodeControl

from .support import linkedGateway
from .test_misdirected import _SHOP, _WILDCARD, _handle

A = "app.example.test"
B = "shop.example.test"


class _SNIHandle:
    """
    A TLS handle presenting a certificate, with the SNI name a visitor sent.
    """

    def __init__(self, certificate: tuple[Any, Any], sni: str) -> None:
        self.connection: SSL.Connection = _handle(certificate)
        self.sni = sni

    def get_servername(self) -> bytes:
        return self.sni.encode()

    def get_context(self) -> SSL.Context:
        return self.connection.get_context()

    def get_certificate(self, as_cryptography: bool = True) -> Any:
        assert as_cryptography
        return self.connection.get_certificate(as_cryptography=True)


def _frames(wire: StringTransport) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(wire.value())
    return out


def _data(wire: StringTransport) -> bytes:
    return b"".join(p for k, _, p in _frames(wire) if k == DATA)


class WithoutHostTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.gateway, self.link, self.wire = linkedGateway(A)
        self.other = GatewayLink(self.gateway, "other")
        self.otherWire = StringTransport()
        self.other.makeConnection(self.otherWire)
        self.gateway.registry.add(B, self.other)

    def visit(self, data: bytes, sni: str = A, certificate: tuple[Any, Any] = _WILDCARD) -> StringTransport:
        transport = StringTransport()
        handle = _SNIHandle(certificate, sni)
        transport.getHandle = lambda: handle  # type: ignore[attr-defined]
        visitor = HTTPVisitor(self.gateway)
        visitor.makeConnection(transport)
        visitor.dataReceived(data)
        self._lastVisitor = visitor
        return transport

    def test_http11FirstWithoutHost400(self) -> None:
        """
        A first HTTP/1.1 request without a Host line, absolute-form or not,
        is a 400 giving the reason, not routed by its SNI nor its target.
        """
        for head in (
            b"GET https://shop.example.test/ HTTP/1.1\r\n\r\n",
            b"GET https://app.example.test/ HTTP/1.1\r\nAccept: */*\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"CONNECT shop.example.test:443 HTTP/1.1\r\n\r\n",
        ):
            transport = self.visit(head)
            out = transport.value()
            self.assertTrue(out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head)
            self.assertIn(b"no Host header in an HTTP/1.1 request", out)
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.wire.value(), b"")
        self.assertEqual(self.otherWire.value(), b"")

    def test_http11LaterWithoutHostResets(self) -> None:
        """
        A later HTTP/1.1 head without Host on a spliced connection: not
        forwarded, the stream reset and the connection closed.
        """
        transport = self.visit(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        self._lastVisitor.dataReceived(b"GET https://app.example.test/later HTTP/1.1\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(_frames(self.wire)[-1][0], RESET)
        self.assertNotIn(b"/later", _data(self.wire))

    def test_http10RoutedByAuthority(self) -> None:
        """
        An HTTP/1.0 absolute-form request without Host goes to the tunnel
        its target names, not the one its SNI names; the target sees the
        authority as the Forwarded host.
        """
        transport = self.visit(b"GET https://shop.example.test/x HTTP/1.0\r\n\r\n", sni=A)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.wire.value(), b"")
        frames = _frames(self.otherWire)
        self.assertEqual(frames[0][0], OPEN)
        self.assertEqual(decodeControl(frames[0][2])["host"], B)
        sent = _data(self.otherWire)
        self.assertTrue(sent.startswith(b"GET https://shop.example.test/x HTTP/1.0\r\n"), sent)
        self.assertIn(b'host="shop.example.test"', sent)

    def test_http10WithoutAuthorityBySNI(self) -> None:
        """
        An HTTP/1.0 origin-form request without Host is routed by the SNI.
        """
        transport = self.visit(b"GET /x HTTP/1.0\r\n\r\n", sni=B)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.wire.value(), b"")
        self.assertEqual(_frames(self.otherWire)[0][0], OPEN)

    def test_http10AuthorityNotCovered421(self) -> None:
        """
        An HTTP/1.0 absolute-form target the certificate presented does not
        cover is answered 421 like a Host would be, even when the SNI is
        covered; nothing is routed.
        """
        transport = self.visit(
            b"GET https://app.example.test/ HTTP/1.0\r\n\r\n", sni="shop.customer.test", certificate=_SHOP
        )
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), out)
        self.assertIn(b"does not cover app.example.test", out)
        self.assertEqual(self.wire.value(), b"")
        self.assertEqual(self.gateway.metrics.errors, {421: 1})

    def test_laterConnectElsewhereRefused(self) -> None:
        """
        A later CONNECT naming another host than the connection's binding is
        a host change, whatever its Host line: not forwarded, stream reset,
        connection aborted, a 421 counted; one naming the bound host passes.
        """
        for later in (
            b"CONNECT shop.example.test:443 HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
            b"CONNECT shop.example.test:443 HTTP/1.1\r\nHost: shop.example.test:443\r\n\r\n",
            b"CONNECT shop.example.test:443 HTTP/1.0\r\n\r\n",
        ):
            self.setUp()
            transport = self.visit(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
            self._lastVisitor.dataReceived(later)
            self.assertTrue(transport.disconnecting, later)
            frames = _frames(self.wire)
            self.assertEqual(frames[-1][0], RESET)
            self.assertIn(b"another host", frames[-1][2])
            self.assertNotIn(b"CONNECT", _data(self.wire))
            self.assertEqual(self.otherWire.value(), b"")
            self.assertEqual(self.gateway.metrics.errors, {421: 1})
        self.setUp()
        transport = self.visit(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        self._lastVisitor.dataReceived(
            b"CONNECT App.example.test:443 HTTP/1.1\r\nHost: app.example.test:443\r\n\r\n"
        )
        self.assertFalse(transport.disconnecting)
        self.assertIn(b"CONNECT App.example.test:443 HTTP/1.1\r\n", _data(self.wire))

    def test_firstConnectDisagreeing400(self) -> None:
        """
        A first CONNECT whose Host names another host than its target is a
        400 giving the reason.
        """
        transport = self.visit(b"CONNECT shop.example.test:443 HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertIn(b"disagrees", transport.value())
        self.assertEqual(self.wire.value() + self.otherWire.value(), b"")

    def test_rewriter(self) -> None:
        """
        The rewriter refuses a later HTTP/1.1 head without Host and binds an
        HTTP/1.0 one by its absolute-form target; L{missingHost} and
        L{targetAuthority} say why.
        """
        rewriter = RequestRewriter("10.0.0.1", 4096, b"app.example.test")
        rewriter.feed(b"GET http://App.example.test:80/ HTTP/1.0\r\n\r\n")
        self.assertRaises(HostChanged, rewriter.feed, b"GET http://shop.example.test/ HTTP/1.0\r\n\r\n")
        error = self.assertRaises(RequestError, rewriter.feed, b"GET / HTTP/1.1\r\n\r\n")
        self.assertIn("no Host header", str(error))
        self.assertIsNone(missingHost(b"get / http/1.0"))
        self.assertIsNone(missingHost(b"get / http/1.1\r\nhost: a"))
        self.assertIsNotNone(missingHost(b"get / http/1.1\r\naccept: *"))
        self.assertEqual(targetAuthority(b"connect a.test:443 http/1.1"), b"a.test:443")
        self.assertEqual(targetAuthority(b"get https://u@a.test:8443/x?y http/1.1"), b"u@a.test:8443")
        self.assertIsNone(targetAuthority(b"get /x http/1.1"))
