"""
HTTP/1.1 exchanges over tunnel streams (and with an in-process site):
request bytes, response framing (Content-Length, chunked, until close, no
body), pooling, errors and back-pressure.  StringTransport only.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.specter.gateway.core import Metrics
from suite.specter.gateway.exchange import Exchange, ExchangePool, SiteExchange
from suite.specter.gateway.http1 import HeadCache, ResponseHead, buildRequestHead
from suite.specter.gateway.interfaces import IResponseSink
from suite.specter.tunnel.frames import CLOSE, DATA, RESET, WINDOW, FrameDecoder
from suite.specter.tunnel.mux import Link


@implementer(IResponseSink)
class _Sink:
    """
    Records what an exchange reports.
    """

    def __init__(self) -> None:
        self.head: ResponseHead | None = None
        self.body = b""
        self.ended = False
        self.failed: str | None = None
        self.bodyPaused = 0
        self.bodyResumed = 0

    def responseStarted(self, head: ResponseHead) -> None:
        self.head = head

    def responseData(self, data: bytes) -> None:
        self.body += data

    def responseEnded(self) -> None:
        self.ended = True

    def responseFailed(self, reason: str) -> None:
        self.failed = reason

    def requestBodyPaused(self) -> None:
        self.bodyPaused += 1

    def requestBodyResumed(self) -> None:
        self.bodyResumed += 1


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(data)
    return out


def _head(method: bytes = b"GET", path: bytes = b"/x", extra: Any = ()) -> Any:
    headers = [(b":method", method), (b":path", path), (b":authority", b"a.example.test"), *extra]
    return buildRequestHead(headers, "10.0.0.1")


class ExchangeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.link = Link(window=1000)
        self.wire = StringTransport()
        self.link.makeConnection(self.wire)
        self.gateway = SimpleNamespace(metrics=Metrics(), onLinkDraining=[])
        self.pool = ExchangePool(self.gateway)  # type: ignore[arg-type]

    def exchange(self, sink: _Sink, method: bytes = b"GET", body: bool = False, extra: Any = ()) -> Exchange:
        exchange = self.pool.exchangeFor(self.link, "10.0.0.1:5000", "a.example.test")
        exchange.start(_head(method, extra=extra), sink, body)
        return exchange

    def answer(self, exchange: Exchange, *pieces: bytes) -> None:
        for piece in pieces:
            exchange.stream.received(DATA, piece)

    def test_interfaces(self) -> None:
        """
        The recording sink is a faithful L{IResponseSink}; the pool drops
        idle exchanges of a draining link.
        """
        self.assertTrue(verifyObject(IResponseSink, _Sink()))
        self.assertEqual(self.gateway.onLinkDraining, [self.pool.dropIdle])

    def test_contentLengthAndReuse(self) -> None:
        """
        A response split anywhere reaches the sink with its headers; the
        stream then serves the next request.
        """
        first = _Sink()
        exchange = self.exchange(first)
        self.assertIn(b"GET /x HTTP/1.1\r\nHost: a.example.test\r\n", self.wire.value())
        self.answer(
            exchange, b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\nConnection: keep-alive\r\n", b"\r\nhel"
        )
        assert first.head is not None
        self.assertEqual((first.head.code, first.body, first.ended), (200, b"hel", False))
        self.assertEqual(first.head.headers, ((b"content-length", b"5"),))
        self.answer(exchange, b"lo")
        self.assertEqual((first.body, first.ended), (b"hello", True))
        second = _Sink()
        self.wire.clear()
        self.assertIs(self.exchange(second), exchange)
        self.assertIn(b"GET /x HTTP/1.1\r\n", self.wire.value())
        self.answer(exchange, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        assert second.head is not None
        self.assertEqual((second.head.code, second.head.phrase, second.ended), (404, b"Not Found", True))
        self.assertEqual(self.gateway.metrics.streamsOpened, 1)

    def test_chunkedByteByByte(self) -> None:
        """
        A chunked body fed one byte at a time comes out whole and the
        stream is kept for reuse.
        """
        sink = _Sink()
        exchange = self.exchange(sink)
        wire = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        for i in range(len(wire)):
            self.answer(exchange, wire[i : i + 1])
        self.assertEqual((sink.body, sink.ended), (b"hello" + b"z" * 26, True))
        self.assertEqual(self.pool.idle[id(self.link)], [exchange])

    def test_noBodyAndInterim(self) -> None:
        """
        A 100 Continue is skipped; HEAD, 204 and 304 answers have no body.
        """
        sink = _Sink()
        exchange = self.exchange(sink, b"HEAD")
        self.answer(exchange, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        assert sink.head is not None
        self.assertEqual((sink.head.code, sink.body, sink.ended), (200, b"", True))
        for code in (b"204 No Content", b"304 Not Modified"):
            other = _Sink()
            self.assertIs(self.exchange(other), exchange)
            self.answer(exchange, b"HTTP/1.1 " + code + b"\r\n\r\n")
            self.assertTrue(other.ended)
        self.assertFalse(exchange.lost)

    def test_untilClose(self) -> None:
        """
        A response without length ends with the stream, which is not reused.
        """
        sink = _Sink()
        exchange = self.exchange(sink)
        self.answer(exchange, b"HTTP/1.0 200 OK\r\n\r\nsome", b" bytes")
        self.assertFalse(sink.ended)
        exchange.stream.received(CLOSE, b"")
        self.assertEqual((sink.body, sink.ended, sink.failed), (b"some bytes", True, None))
        self.assertTrue(exchange.lost)
        self.assertNotIn(id(self.link), self.pool.idle)
        self.assertEqual(_frames(self.wire.value())[-1][0], CLOSE)

    def test_resetBeforeAnswer(self) -> None:
        """
        A stream reset before the response head fails the exchange.
        """
        sink = _Sink()
        exchange = self.exchange(sink)
        exchange.stream.received(RESET, b"cannot connect to 127.0.0.1:1")
        self.assertIn("cannot connect", sink.failed or "")
        self.assertTrue(exchange.lost)

    def test_resetUntilClose(self) -> None:
        """
        A reset ends a body read until close as a failure, not as complete.
        """
        sink = _Sink()
        exchange = self.exchange(sink)
        self.answer(exchange, b"HTTP/1.0 200 OK\r\n\r\nsome")
        exchange.stream.received(RESET, b"target lost")
        self.assertFalse(sink.ended)
        self.assertIsNotNone(sink.failed)

    def test_truncatedBody(self) -> None:
        """
        A stream that ends inside a Content-Length body fails the exchange.
        """
        sink = _Sink()
        exchange = self.exchange(sink)
        self.answer(exchange, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        exchange.stream.received(CLOSE, b"")
        self.assertFalse(sink.ended)
        self.assertIsNotNone(sink.failed)

    def test_malformedClosesStream(self) -> None:
        """
        A response that breaks HTTP/1.1 framing fails the exchange and the
        stream is closed; bytes past a response are not reused.
        """
        for wire in (b"garbage\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"):
            sink = _Sink()
            exchange = self.exchange(sink)
            self.answer(exchange, wire)
            self.assertIn("broke HTTP/1.1", sink.failed or "", wire)
            self.assertTrue(exchange.lost)
        sink = _Sink()
        exchange = self.exchange(sink)
        self.answer(exchange, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA")
        self.assertEqual((sink.body, sink.ended), (b"x", True))
        self.assertTrue(exchange.lost)

    def test_bytesWithoutRequest(self) -> None:
        """
        Bytes from the target while no request is outstanding close it.
        """
        sink = _Sink()
        exchange = self.exchange(sink)
        self.answer(exchange, b"HTTP/1.1 204 No Content\r\n\r\n")
        self.answer(exchange, b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertTrue(exchange.lost)

    def test_visitorBackPressure(self) -> None:
        """
        While the visitor pauses the exchange, no window is granted to the
        target; resuming grants what was consumed.
        """
        sink = _Sink()
        exchange = self.exchange(sink)
        self.answer(exchange, b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n")
        exchange.pauseResponse()
        self.wire.clear()
        self.answer(exchange, b"a" * 600)
        self.assertEqual([k for k, _, _ in _frames(self.wire.value())], [])
        exchange.resumeResponse()
        self.assertEqual([k for k, _, _ in _frames(self.wire.value())], [WINDOW])

    def test_pausedExchangeResumedForReuse(self) -> None:
        """
        An exchange paused by its visitor is resumed when it goes back to
        the pool, so the next request is not held.
        """
        sink = _Sink()
        exchange = self.exchange(sink)
        exchange.pauseResponse()
        self.answer(exchange, b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\n\r\n" + b"a" * 600)
        self.assertTrue(sink.ended)
        self.assertFalse(exchange.responsePaused)
        self.assertFalse(exchange.stream.localWritePaused)

    def test_cancel(self) -> None:
        """
        A visitor that gave up closes the stream: the sink hears nothing
        more and the exchange is not reused.
        """
        sink = _Sink()
        exchange = self.exchange(sink)
        exchange.cancel()
        self.answer(exchange, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual((sink.head, sink.failed, sink.ended), (None, None, False))
        self.assertTrue(exchange.lost)
        self.assertEqual(_frames(self.wire.value())[-1][0], CLOSE)
        self.assertIsNot(self.pool.exchangeFor(self.link, "p", "a.example.test"), exchange)

    def test_requestBody(self) -> None:
        """
        A declared body goes as it is, an undeclared one chunked; a body
        the tunnel cannot take pauses the sink, which resumes when the
        target grants window.
        """
        sink = _Sink()
        exchange = self.exchange(sink, b"POST", True, [(b"content-length", b"3")])
        exchange.sendBody(b"abc")
        exchange.endBody()
        data = b"".join(p for k, _, p in _frames(self.wire.value()) if k == DATA)
        self.assertTrue(data.endswith(b"Content-Length: 3\r\n\r\nabc"))
        self.answer(exchange, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(sink.ended)
        self.wire.clear()
        chunked = _Sink()
        self.assertIs(self.exchange(chunked, b"POST", True), exchange)
        exchange.sendBody(b"x" * 900)
        self.assertEqual(chunked.bodyPaused, 1)
        exchange.stream.received(WINDOW, (2000).to_bytes(4, "big"))
        self.assertEqual(chunked.bodyResumed, 1)
        exchange.endBody()
        data = b"".join(p for k, _, p in _frames(self.wire.value()) if k == DATA)
        self.assertTrue(
            data.endswith(b"Transfer-Encoding: chunked\r\n\r\n384\r\n" + b"x" * 900 + b"\r\n0\r\n\r\n")
        )

    def test_answerBeforeBodyEnds(self) -> None:
        """
        A target that answers before the request body ended is not reused.
        """
        sink = _Sink()
        exchange = self.exchange(sink, b"POST", True)
        exchange.sendBody(b"abc")
        self.answer(exchange, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(sink.ended)
        self.assertTrue(exchange.lost)


class _Echo(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        secure = b"secure" if request.isSecure() else b"plain"
        return b"%s %s %s %s" % (request.method, request.uri, secure, body)


class SiteExchangeTests(SynchronousTestCase):
    def test_answersFromSite(self) -> None:
        """
        A request to the in-process site gets the site's answer through the
        same sink calls, with the visitor's address and TLS.
        """
        from twisted.internet.address import IPv4Address

        clock = Clock()
        site = Site(_Echo(), reactor=clock)
        sink = _Sink()
        exchange = SiteExchange(site, IPv4Address("TCP", "10.0.0.1", 5000), HeadCache(), clock)
        exchange.start(_head(b"POST", b"/p?q", [(b"content-length", b"4")]), sink, True)
        exchange.sendBody(b"data")
        exchange.endBody()
        assert sink.head is not None
        self.assertEqual((sink.head.code, sink.body, sink.ended), (200, b"POST /p?q secure data", True))
        clock.advance(0)
        self.assertEqual(clock.getDelayedCalls(), [])
