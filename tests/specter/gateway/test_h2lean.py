"""
The HTTP/2 front end's own HTTP/1.1 exchange over a tunnel stream: request
bytes, response framing (Content-Length, chunked, until close, no body),
pooling, errors and back-pressure.  StringTransport only.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from suite.specter.gateway.core import Metrics
from suite.specter.gateway.h2 import TunnelResource, requestBytes
from suite.specter.tunnel.frames import CLOSE, DATA, RESET, WINDOW, FrameDecoder
from suite.specter.tunnel.mux import Link


class _Request:
    """
    The parts of an HTTP/2 L{twisted.web.server.Request} the exchange uses.
    """

    def __init__(self, method: bytes = b"GET", uri: bytes = b"/x", headers: Any = ()) -> None:
        self.method = method
        self.uri = uri
        self.requestHeaders = Headers()
        for name, value in headers:
            self.requestHeaders.addRawHeader(name, value)
        self.responseHeaders = Headers()
        self._disconnected = False
        self.startedWriting = False
        self.finished = False
        self.lost = False
        self.code: int | None = None
        self.phrase = b""
        self.body = b""
        self.producer: Any = None

    def setResponseCode(self, code: int, phrase: bytes = b"") -> None:
        self.code, self.phrase = code, phrase

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.responseHeaders.setRawHeaders(name, [value])

    def write(self, data: bytes) -> None:
        self.startedWriting = True
        self.body += data

    def finish(self) -> None:
        self.finished = True

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def loseConnection(self) -> None:
        self.lost = True


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    FrameDecoder(lambda k, s, p: out.append((k, s, p))).feed(data)
    return out


class LeanExchangeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.link = Link(window=1000)
        self.wire = StringTransport()
        self.link.makeConnection(self.wire)
        self.resource = TunnelResource(SimpleNamespace(metrics=Metrics()))  # type: ignore[arg-type]
        self.resource.altSvc = b'h3=":443"'

    def exchange(self, request: _Request) -> Any:
        client = self.resource._leanConnection("10.0.0.1:5000", "a.example.test", self.link)
        client.send(request, requestBytes(request, "a.example.test", "10.0.0.1", b""))  # type: ignore[arg-type]
        return client

    def answer(self, client: Any, *pieces: bytes) -> None:
        for piece in pieces:
            client.stream.received(DATA, piece)

    def test_requestBytes(self) -> None:
        """
        Hop-by-hop headers and client-sent forwarding headers are dropped;
        Host, X-Forwarded-* and Content-Length are set.
        """
        request = _Request(
            b"POST",
            b"/p?q=1",
            [
                (b"connection", b"x"),
                (b"x-forwarded-for", b"1.2.3.4"),
                (b"content-length", b"99"),
                (b"accept", b"a\r\nb"),
                (b"host", b"evil"),
            ],
        )
        data = requestBytes(request, "a.example.test", "10.0.0.1", b"body")  # type: ignore[arg-type]
        self.assertEqual(
            data,
            b"POST /p?q=1 HTTP/1.1\r\nHost: a.example.test\r\nAccept: a b\r\n"
            b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
            b'Forwarded: for=10.0.0.1;proto=https;host="a.example.test"\r\nContent-Length: 4\r\n\r\nbody',
        )

    def test_contentLengthAndReuse(self) -> None:
        """
        A response split anywhere is delivered with its headers (hop-by-hop
        ones dropped, Alt-Svc added); the stream then serves the next request.
        """
        first = _Request()
        client = self.exchange(first)
        self.answer(
            client, b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\nConnection: keep-alive\r\n", b"\r\nhel"
        )
        self.assertEqual(first.code, 200)
        self.assertEqual(first.body, b"hel")
        self.assertIs(first.producer, client.outbound)
        self.assertFalse(first.finished)
        self.answer(client, b"lo")
        self.assertTrue(first.finished)
        self.assertIsNone(first.producer)
        self.assertEqual(first.body, b"hello")
        self.assertEqual(first.responseHeaders.getRawHeaders(b"content-length"), [b"5"])
        self.assertIsNone(first.responseHeaders.getRawHeaders(b"connection"))
        self.assertEqual(first.responseHeaders.getRawHeaders(b"alt-svc"), [b'h3=":443"'])
        second = _Request(b"GET", b"/y")
        again = self.exchange(second)
        self.assertIs(again, client)
        self.assertIn(b"GET /y HTTP/1.1\r\n", self.wire.value())
        self.answer(client, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual((second.code, second.phrase, second.finished), (404, b"Not Found", True))

    def test_chunkedByteByByte(self) -> None:
        """
        A chunked body fed one byte at a time comes out whole, trailers are
        skipped, and the stream is kept for reuse.
        """
        request = _Request()
        client = self.exchange(request)
        wire = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        for i in range(len(wire)):
            self.answer(client, wire[i : i + 1])
        self.assertEqual(request.body, b"hello" + b"z" * 26)
        self.assertTrue(request.finished)
        self.assertIsNone(request.responseHeaders.getRawHeaders(b"transfer-encoding"))
        self.assertEqual(self.resource.leanIdle[id(self.link)], [client])

    def test_noBodyAndInterim(self) -> None:
        """
        A 100 Continue is skipped; HEAD and 204 answers have no body.
        """
        request = _Request(b"HEAD")
        client = self.exchange(request)
        self.answer(client, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        self.assertEqual((request.code, request.body, request.finished), (200, b"", True))
        other = _Request()
        self.exchange(other)
        self.answer(client, b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual((other.code, other.finished), (204, True))
        self.assertFalse(client.lost)

    def test_untilClose(self) -> None:
        """
        A response without length ends with the stream, which is not reused.
        """
        request = _Request()
        client = self.exchange(request)
        self.answer(client, b"HTTP/1.0 200 OK\r\n\r\nsome", b" bytes")
        self.assertFalse(request.finished)
        client.stream.received(CLOSE, b"")
        self.assertEqual((request.body, request.finished), (b"some bytes", True))
        self.assertTrue(client.lost)
        self.assertNotIn(id(self.link), self.resource.leanIdle)
        self.assertEqual(_frames(self.wire.value())[-1][0], CLOSE)
        self.assertEqual(self.link.streams, {})

    def test_resetBeforeAnswer(self) -> None:
        """
        A stream reset before the response head is a 502 page.
        """
        request = _Request()
        client = self.exchange(request)
        client.stream.received(RESET, b"cannot connect to 127.0.0.1:1")
        self.assertEqual(request.code, 502)
        self.assertTrue(request.finished)
        self.assertTrue(client.lost)

    def test_truncatedBody(self) -> None:
        """
        A stream that ends inside a Content-Length body aborts the visitor's
        stream rather than finishing it.
        """
        request = _Request()
        client = self.exchange(request)
        self.answer(client, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        client.stream.received(CLOSE, b"")
        self.assertTrue(request.lost)
        self.assertFalse(request.finished)

    def test_malformedClosesStream(self) -> None:
        """
        A response that breaks HTTP/1.1 framing gets a 502 and the stream is
        closed, not reused.
        """
        for wire in (b"garbage\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"):
            request = _Request()
            client = self.exchange(request)
            self.answer(client, wire)
            self.assertEqual(request.code, 502, wire)
            self.assertTrue(client.lost)
        request = _Request()
        client = self.exchange(request)
        self.answer(client, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA")
        self.assertEqual((request.body, request.finished), (b"x", True))
        self.assertTrue(client.lost)

    def test_visitorBackPressure(self) -> None:
        """
        While the visitor's HTTP/2 stream pauses the exchange, no window is
        granted to the target; resuming grants what was consumed.
        """
        request = _Request()
        client = self.exchange(request)
        self.answer(client, b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n")
        request.producer.pauseProducing()
        self.wire.clear()
        self.answer(client, b"a" * 600)
        self.assertEqual([k for k, _, _ in _frames(self.wire.value())], [])
        request.producer.resumeProducing()
        self.assertEqual([k for k, _, _ in _frames(self.wire.value())], [WINDOW])

    def test_visitorGone(self) -> None:
        """
        A visitor that went away still has its response read to the end,
        so the stream can serve the next request.
        """
        request = _Request()
        client = self.exchange(request)
        request._disconnected = True
        self.answer(client, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual((request.code, request.body), (None, b""))
        self.assertEqual(self.resource.leanIdle[id(self.link)], [client])


class BatchingH2Tests(SynchronousTestCase):
    """
    L{BatchingH2Connection} sends the frames queued by many streams in one
    reactor turn, and still stops while its transport is paused.
    """

    def setUp(self) -> None:
        from h2.config import H2Configuration
        from h2.connection import H2Connection as ClientConnection
        from twisted.internet.task import Clock
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        from suite.specter.gateway.h2 import BatchingH2Connection, h2Channel

        class _Hello(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                return b"x" * 200000 if request.path == b"/big" else b"hello"

        self.clock = Clock()
        self.channel = h2Channel(Site(_Hello(), reactor=self.clock), None)
        self.assertIsInstance(self.channel, BatchingH2Connection)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        self.assertIs(self.transport.producer, self.channel)
        self.client = ClientConnection(H2Configuration(client_side=True))
        self.client.initiate_connection()
        self.ended: list[int] = []
        self.data: list[Any] = []
        self.writes = 0
        write = self.transport.write

        def counting(data: bytes) -> None:
            self.writes += 1
            write(data)

        self.transport.write = counting  # type: ignore[method-assign]

    def request(self, count: int, path: str = "/") -> None:
        headers = [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "a.test")]
        for i in range(count):
            self.client.send_headers(1 + 2 * i, headers, end_stream=True)
        self.channel.dataReceived(self.client.data_to_send())

    def turn(self) -> None:
        """
        One reactor turn: run the calls that were due when it started (not
        the ones they schedule, as C{Clock.advance} would).
        """
        from h2.events import DataReceived, StreamEnded

        due = [c for c in self.clock.calls if c.getTime() <= self.clock.seconds()]
        for call in due:
            if call in self.clock.calls:
                self.clock.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)
        events = self.client.receive_data(self.transport.value())
        self.transport.clear()
        self.ended += [e.stream_id for e in events if isinstance(e, StreamEnded)]
        received = [e for e in events if isinstance(e, DataReceived)]
        self.data += received
        for e in received:  # the visitor consumes what it got: windows reopen
            self.client.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        if received:
            self.channel.dataReceived(self.client.data_to_send())

    def test_manyResponsesOneTurn(self) -> None:
        """
        Twenty short responses go out within one reactor turn (Twisted's own
        loop sends one frame per turn: forty turns).
        """
        self.request(20)
        self.turn()
        self.assertEqual(sorted(self.ended), [1 + 2 * i for i in range(20)])

    def test_pausedTransportStopsSending(self) -> None:
        """
        While the transport has paused the connection nothing is sent; it
        carries on when resumed.
        """
        self.turn()
        self.channel.pauseProducing()
        self.request(5)
        self.turn()
        self.turn()
        self.assertEqual(self.ended, [])
        self.channel.resumeProducing()
        self.turn()
        self.assertEqual(sorted(self.ended), [1, 3, 5, 7, 9])

    def test_oneWritePerTurn(self) -> None:
        """
        The HEADERS and DATA of all responses ready in one turn reach the
        transport in one write, and a body's DATA frame carries END_STREAM
        (no separate empty frame per response).
        """
        self.turn()
        self.writes = 0
        self.request(10)
        self.writes = 0
        self.turn()
        self.assertEqual(sorted(self.ended), [1 + 2 * i for i in range(10)])
        self.assertEqual(self.writes, 1)
        self.assertEqual(len(self.data), 10)
        for event in self.data:
            self.assertEqual(event.data, b"hello")
            self.assertIsNotNone(event.stream_ended)

    def test_flowControlledBody(self) -> None:
        """
        A body larger than the visitor's windows is sent as the visitor
        opens them, whole and ended once.
        """
        self.turn()
        self.request(2, "/big")
        for _ in range(60):
            self.turn()
            if len(self.ended) == 2:
                break
        self.assertEqual(sorted(self.ended), [1, 3])
        for sid in (1, 3):
            self.assertEqual(sum(len(e.data) for e in self.data if e.stream_id == sid), 200000)
        self.assertEqual(len([e for e in self.data if e.stream_ended is not None]), 2)
