"""
An HTTP/1.1 visitor connection is bound to its first request's host: a
later request (keep-alive or pipelined) naming another host never reaches
the first host's tunnel, nor another's.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.core import GatewayLink
from suite.specter.gateway.forwarded import HostChanged, RequestRewriter, normalHost
from suite.specter.gateway.visitor import HTTPVisitor
from suite.specter.tunnel.frames import DATA, OPEN, RESET, FrameDecoder

from .support import linkedGateway

A = "app.example.test"
B = "shop.example.test"


def _frames(wire: StringTransport) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(wire.value())
    return out


def _data(wire: StringTransport) -> bytes:
    """
    The bytes sent down the tunnel to its target (every stream's DATA).
    """
    return b"".join(p for k, _, p in _frames(wire) if k == DATA)


def _get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


class HostBindingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.gateway, self.link, self.wire = linkedGateway(A)
        # another tenant on the same gateway
        self.other = GatewayLink(self.gateway, "other")
        self.otherWire = StringTransport()
        self.other.makeConnection(self.otherWire)
        self.gateway.registry.add(B, self.other)

    def visit(self) -> tuple[HTTPVisitor, StringTransport]:
        visitor = HTTPVisitor(self.gateway)
        transport = StringTransport()
        visitor.makeConnection(transport)
        return visitor, transport

    def test_sameHostOtherForms(self) -> None:
        """
        Later requests naming the bound host in another case, with a port
        or a trailing dot, or as an absolute-form target, are forwarded
        down the one stream, their Host as sent.
        """
        visitor, transport = self.visit()
        visitor.dataReceived(_get("/1", A))
        forms = ["APP.Example.Test", "app.example.test:8443", "app.example.test.", "App.example.test.:443"]
        for i, form in enumerate(forms):
            visitor.dataReceived(_get(f"/{i + 2}", form))
        visitor.dataReceived(b"GET https://app.example.test:443/abs HTTP/1.0\r\n\r\n")
        self.assertFalse(transport.disconnecting)
        sent = _data(self.wire)
        for i, form in enumerate(forms):
            self.assertIn(f"GET /{i + 2} HTTP/1.1\r\nHost: {form}\r\n".encode(), sent)
        self.assertIn(b"GET https://app.example.test:443/abs HTTP/1.0\r\n", sent)
        self.assertEqual([k for k, _, _ in _frames(self.wire)].count(RESET), 0)
        self.assertEqual(self.gateway.metrics.errors, {})

    def test_laterOtherHostNotForwarded(self) -> None:
        """
        A keep-alive request for another tenant's host after the first was
        spliced: nothing of it reaches the first tunnel (nor the other),
        the stream is reset, the connection aborted, a 421 counted.
        """
        visitor, transport = self.visit()
        visitor.dataReceived(_get("/mine", A))
        visitor.dataReceived(_get("/theirs", B) + _get("/mine-again", A))
        self.assertTrue(transport.disconnecting)
        frames = _frames(self.wire)
        self.assertEqual(frames[-1][0], RESET)
        self.assertIn(b"another host", frames[-1][2])
        sent = _data(self.wire)
        self.assertTrue(sent.startswith(b"GET /mine HTTP/1.1\r\nHost: app.example.test\r\n"), sent)
        self.assertEqual(sent.count(b"GET "), 1)
        self.assertNotIn(B.encode(), _data(self.wire))
        self.assertNotIn(b"/theirs", _data(self.wire))
        self.assertNotIn(b"/mine-again", _data(self.wire))
        self.assertEqual(self.otherWire.value(), b"")
        self.assertEqual(transport.value(), b"")  # no page among the target's answers
        self.assertEqual(self.gateway.metrics.errors, {421: 1})
        visitor.dataReceived(_get("/late", A))  # late bytes are dropped
        self.assertNotIn(b"/late", _data(self.wire))

    def test_laterUncoveredOrAbsoluteHost(self) -> None:
        """
        A host no tenant serves, or another host as an absolute-form target
        without a Host line, is refused the same way.
        """
        for later in (
            _get("/x", "evil.example"),
            b"GET http://shop.example.test/x HTTP/1.0\r\n\r\n",
            b"GET /ok HTTP/1.0\r\n\r\nGET http://shop.example.test/x HTTP/1.0\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: shop.example.test:443\r\nContent-Length: 3\r\n\r\nabc",
        ):
            self.setUp()
            visitor, transport = self.visit()
            visitor.dataReceived(_get("/mine", A))
            visitor.dataReceived(later)
            self.assertTrue(transport.disconnecting, later)
            self.assertNotIn(b"/x", _data(self.wire))
            self.assertEqual(_frames(self.wire)[-1][0], RESET)
            self.assertEqual(self.otherWire.value(), b"")

    def test_pipelinedWithTheFirst(self) -> None:
        """
        A pipelined request for another host in the first read: nothing is
        spliced yet, so the connection gets one 421 naming both hosts and
        is closed; no stream is opened anywhere.
        """
        visitor, transport = self.visit()
        visitor.dataReceived(_get("/mine", A) + _get("/theirs", B))
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), out)
        self.assertIn(b"Cache-Control: no-store", out)
        self.assertIn(b"names shop.example.test, this connection is bound to app.example.test", out)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.wire.value(), b"")
        self.assertEqual(self.otherWire.value(), b"")
        self.assertEqual(self.gateway.metrics.errors, {421: 1})

    def test_pipelinedLater(self) -> None:
        """
        Pipelined requests in a later read, the second for another host:
        neither is forwarded (their answers could not be told apart from
        the reset's), the connection is aborted.
        """
        visitor, transport = self.visit()
        visitor.dataReceived(_get("/first", A))
        visitor.dataReceived(_get("/second", A) + _get("/third", B))
        self.assertTrue(transport.disconnecting)
        sent = _data(self.wire)
        self.assertIn(b"/first", sent)
        self.assertNotIn(b"/second", sent)
        self.assertNotIn(b"/third", sent)
        self.assertEqual(self.otherWire.value(), b"")

    def test_whileRouting(self) -> None:
        """
        A request for another host that comes while the first one's route
        is looked up: 421, no stream opened.
        """
        clock, gateway, link, wire = linkedGateway("elsewhere.example.test")
        lookup: Deferred[object] = Deferred()
        self.patch(gateway, "resolve", lambda host: lookup)
        self.gateway = gateway
        visitor, transport = self.visit()
        visitor.dataReceived(_get("/mine", A))  # not local: a lookup, visitor paused
        visitor.dataReceived(_get("/theirs", B))
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), out)
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(OPEN, [k for k, _, _ in _frames(wire)])
        self.assertEqual(gateway.metrics.errors, {421: 1})
        lookup.callback(link)  # a late answer opens nothing
        self.assertNotIn(OPEN, [k for k, _, _ in _frames(wire)])

    def test_verdictRemembered(self) -> None:
        """
        A head is checked once: a repeated head comes from the connection's
        cache, and a refused head is never cached.
        """
        rewriter = RequestRewriter("10.0.0.1", 4096, normalHost(b"App.Example.Test.:443"))
        self.assertEqual(rewriter.bound, b"app.example.test")
        head = b"GET / HTTP/1.1\r\nHost: app.example.test:8443"
        rewriter.feed(head + b"\r\n\r\n")
        self.assertIn(head, rewriter.heads)
        rewriter.bound = b"changed.example.test"  # never done: shows the cache is used
        rewriter.feed(head + b"\r\n\r\n")
        other = b"GET / HTTP/1.1\r\nHost: shop.example.test"
        error = self.assertRaises(HostChanged, rewriter.feed, other + b"\r\n\r\n")
        self.assertEqual((error.host, error.bound), ("shop.example.test", "changed.example.test"))
        self.assertNotIn(other, rewriter.heads)

    def test_normalHost(self) -> None:
        """
        L{normalHost}: case, port, user information and a trailing dot aside.
        """
        for form in (b"A.Test", b"a.test:80", b"a.test.", b"u@A.TEST.:8443", b" a.test "):
            self.assertEqual(normalHost(form), b"a.test", form)
        self.assertEqual(normalHost(b"[::1]:443"), b"[::1]")
        self.assertNotEqual(normalHost(b"a.test.evil"), b"a.test")
