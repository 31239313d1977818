"""
Tests for L{suite.web.http2}: HTTP/2 header-block limits end the connection
with GOAWAY and one log line, 431 below them, and no traceback for any
hostile or racing client (a GOAWAY or RST_STREAM in the same read as the
request, a stream hyper-h2 reset itself, a header block that never ends).
"""

from __future__ import annotations

import json
from typing import Any

import h2.errors
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from suite.web.http2 import HeaderBlockScanner, LimitedH2Connection
from suite.web.limits import LimitedSite

from .support import Connection

BASE = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "t")]


class Hello(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        #: The Host each request carried (all of its values).
        self.hosts: list[bytes] = []

    def render_GET(self, request: Request) -> bytes:
        self.calls += 1
        self.hosts += request.requestHeaders.getRawHeaders(b"host", [])
        return b"ok"


def headerFrames(
    block: bytes, streamID: int, chunk: int = 16384, endStream: bool = True, endHeaders: bool = True
) -> bytes:
    pieces = [block[i : i + chunk] for i in range(0, len(block), chunk)] or [b""]
    out = []
    for i, piece in enumerate(pieces):
        frame: Any = HeadersFrame(streamID) if i == 0 else ContinuationFrame(streamID)
        frame.data = piece
        if i == 0 and endStream:
            frame.flags.add("END_STREAM")
        if i == len(pieces) - 1 and endHeaders:
            frame.flags.add("END_HEADERS")
        out.append(frame.serialize())
    return b"".join(out)


class H2Client:
    """
    A TLS-less HTTP/2 client of raw frames (to misbehave as it likes) talking to a L{LimitedSite} in memory, on a L{Clock}.
    """

    def __init__(self, case: SynchronousTestCase, **limits: Any) -> None:
        self.clock = Clock()
        self.resource = Hello()
        limits.setdefault("timeout", 60)
        self.site = LimitedSite(self.resource, reactor=self.clock, **limits)
        self.protocol: Any = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        self.protocol.makeConnection(self.transport)
        case.addCleanup(self.close)
        self.encoder = hpack.Encoder()
        self.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
        self.buffer = b""
        self.frames: list[Any] = []
        self.logged: list[dict[str, Any]] = []
        observer: Any = self.logged.append
        globalLogPublisher.addObserver(observer)
        case.addCleanup(globalLogPublisher.removeObserver, observer)

    def close(self) -> None:
        if not self.transport.disconnected:
            self.protocol.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(120)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def block(self, extra: list[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(BASE + extra))

    def run(self) -> None:
        for _ in range(50):
            self.clock.advance(0)
        self.buffer += self.transport.value()
        self.transport.clear()
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                break
            frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
            self.buffer = self.buffer[9 + length :]
            self.frames.append(frame)

    def responses(self) -> dict[int, tuple[bytes, bytes]]:
        decoder = hpack.Decoder()
        status: dict[int, bytes] = {}
        bodies: dict[int, bytes] = {}
        for frame in self.frames:
            if isinstance(frame, HeadersFrame):
                status[frame.stream_id] = dict(decoder.decode(frame.data, raw=True))[b":status"]
            elif isinstance(frame, DataFrame):
                bodies[frame.stream_id] = bodies.get(frame.stream_id, b"") + frame.data
        return {k: (v, bodies.get(k, b"")) for k, v in status.items()}

    def goaway(self) -> GoAwayFrame | None:
        for frame in self.frames:
            if isinstance(frame, GoAwayFrame):
                return frame
        return None

    def lines(self, text: str) -> list[dict[str, Any]]:
        return [e for e in self.logged if text in str(e.get("log_format", ""))]

    def failures(self) -> list[dict[str, Any]]:
        return [e for e in self.logged if "log_failure" in e or e.get("log_level") == LogLevel.critical]


class GoAwayLimitTests(SynchronousTestCase):
    """
    Header blocks over C{maxHeaderBlockBytes} end the connection with GOAWAY
    ENHANCE_YOUR_CALM, a reason and one log line.
    """

    def assertRefused(self, client: H2Client, reason: str | None = None) -> None:
        client.run()
        goaway = client.goaway()
        self.assertIsNotNone(goaway)
        assert goaway is not None
        self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        if reason is not None:
            self.assertEqual(goaway.additional_data, reason.encode())
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(len(client.lines("refused HTTP/2 connection")), 1)
        self.assertEqual(client.failures(), [])
        self.assertEqual(client.resource.calls, 0)

    def test_defaultBlockLimit(self) -> None:
        """
        The block limit defaults to four times C{maxHeaderBytes}, and may be
        set; a negative one is refused.
        """
        self.assertEqual(LimitedSite(Hello(), maxHeaderBytes=1000).maxHeaderBlockBytes, 4000)
        self.assertEqual(LimitedSite(Hello(), maxHeaderBlockBytes=123).maxHeaderBlockBytes, 123)
        self.assertRaises(ValueError, LimitedSite, Hello(), maxHeaderBlockBytes=-1)

    def test_hugeCompressedBlock(self) -> None:
        """
        300 KB of headers, in HEADERS and CONTINUATION frames: GOAWAY as soon
        as the frames passed the limit, before any decoding.
        """
        client = H2Client(self)
        client.send(headerFrames(client.block([("x-big", "a" * 300_000)]), 1))
        self.assertRefused(client, "request header block larger than 65536 bytes")

    def test_manySmallContinuations(self) -> None:
        """
        The block size counts every CONTINUATION frame, however small.
        """
        client = H2Client(self, maxHeaderBlockBytes=3000)
        client.send(headerFrames(client.block([("x-big", "a" * 5000)]), 1, chunk=100))
        self.assertRefused(client, "request header block larger than 3000 bytes")

    def test_neverEndingBlock(self) -> None:
        """
        A header block that never ends is refused once it passes the limit,
        whatever the frames it comes in.
        """
        client = H2Client(self, maxHeaderBlockBytes=3000)
        client.send(headerFrames(b"\x00" * 2000, 1, endHeaders=False))
        client.run()
        self.assertIsNone(client.goaway())
        frame = ContinuationFrame(1)
        frame.data = b"\x00" * 1500
        client.send(frame.serialize())
        self.assertRefused(client)

    def test_neverEndingBlockTimesOut(self) -> None:
        """
        A header block under the limit that never ends: the idle timeout ends
        the connection.
        """
        client = H2Client(self, timeout=10)
        client.send(headerFrames(client.block([("x", "y")]), 1, endHeaders=False))
        client.clock.advance(11)
        client.run()
        self.assertIsNotNone(client.goaway())
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(client.failures(), [])

    def test_decodedTooLarge(self) -> None:
        """
        ~70 KB of decoded headers (the audit's case) in a block under the
        compressed limit: hyper-h2's decoder refuses it, GOAWAY and one log
        line, no traceback.
        """
        client = H2Client(self, maxHeaderBlockBytes=65536)
        # 100 values of 700 bytes, Huffman-coded below 64 KiB as sent.
        client.send(headerFrames(client.block([(f"x-h{i}", "a" * 700) for i in range(100)]), 1))
        self.assertRefused(client)

    def test_hpackBomb(self) -> None:
        """
        One large header in the dynamic table referenced thousands of times:
        a few bytes on the wire, refused as decoded.
        """
        client = H2Client(self)
        client.send(headerFrames(client.block([("x-bomb", "b" * 4000)]), 1))
        client.run()
        self.assertEqual(client.responses()[1][0], b"200")
        client.send(headerFrames(client.block([]) + b"\xbe" * 5000, 3))
        client.run()
        goaway = client.goaway()
        assert goaway is not None
        self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertEqual(len(client.lines("refused HTTP/2 connection")), 1)
        self.assertEqual(client.failures(), [])

    def test_tableSizeUpdate(self) -> None:
        """
        A dynamic table size update past what was allowed: GOAWAY
        PROTOCOL_ERROR (as hyper-h2 chose) and one log line.
        """
        client = H2Client(self)
        client.send(headerFrames(b"\x3f\xe1\xff\xff\x0f" + client.block([]), 1))
        client.run()
        goaway = client.goaway()
        assert goaway is not None
        self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        self.assertEqual(len(client.lines("refused HTTP/2 connection")), 1)
        self.assertEqual(client.failures(), [])

    def test_dataAfterRefusalIgnored(self) -> None:
        """
        What the client still sends after the GOAWAY (TLS hands it over in
        the same read) is dropped without a second log line.
        """
        client = H2Client(self, maxHeaderBlockBytes=3000)
        client.send(headerFrames(client.block([("x-big", "a" * 5000)]), 1, chunk=1000))
        client.send(headerFrames(client.block([]), 3))
        self.assertRefused(client)


class AnswerTests(SynchronousTestCase):
    """
    Requests under the block limit: 431 with a reason and one log line, and
    no traceback when the client closes the stream or the connection before
    the answer goes out.
    """

    def test_431(self) -> None:
        """
        Decoded headers over C{maxHeaderBytes}, or more than
        C{maxHeaderCount} of them: JSON 431 and one log line each.
        """
        client = H2Client(self)
        client.send(headerFrames(client.block([("x-big", "a" * 20000)]), 1))
        client.send(headerFrames(client.block([(f"x-{i}", "v") for i in range(150)]), 3))
        client.run()
        responses = client.responses()
        self.assertEqual(responses[1][0], b"431")
        self.assertEqual(json.loads(responses[1][1]), {"error": "request headers larger than 16384 bytes"})
        self.assertEqual(json.loads(responses[3][1]), {"error": "more than 100 request headers"})
        self.assertEqual(len(client.lines("rejected request from {peer}")), 2)
        self.assertIsNone(client.goaway())
        self.assertEqual(client.failures(), [])

    def test_goawayInSameRead(self) -> None:
        """
        The audit's traceback: a request and the client's GOAWAY in one read.
        hyper-h2 has closed the connection before the resource answers; the
        answer is dropped with the connection, nothing raises.
        """
        for extra in ([("x-big", "a" * 20000)], []):
            client = H2Client(self)
            client.send(headerFrames(client.block(extra), 1) + GoAwayFrame(0, last_stream_id=0).serialize())
            client.run()
            self.assertTrue(client.transport.disconnecting)
            self.assertEqual(client.failures(), [])

    def test_resetInSameRead(self) -> None:
        """
        A request reset by the client in the same read, with or without a
        body: nothing raises, the stream is forgotten.
        """
        client = H2Client(self)
        client.send(
            headerFrames(client.block([("x-big", "a" * 20000)]), 1)
            + RstStreamFrame(1, error_code=8).serialize()
        )
        client.send(
            headerFrames(client.block([("x-big", "a" * 20000)]), 3, endStream=False)
            + DataFrame(3, data=b"x", flags=["END_STREAM"]).serialize()
            + RstStreamFrame(3, error_code=8).serialize()
        )
        client.send(
            headerFrames(client.block([]), 5, endStream=False) + RstStreamFrame(5, error_code=8).serialize()
        )
        client.run()
        self.assertEqual(client.failures(), [])
        self.assertEqual(client.protocol._channel.streams, {})
        # The connection still serves.
        client.send(headerFrames(client.block([]), 7))
        client.run()
        self.assertEqual(client.responses()[7], (b"200", b"ok"))

    def test_streamResetByServer(self) -> None:
        """
        DATA after the client ended its stream: hyper-h2 resets the stream
        itself; the answer already queued for it is dropped, not raised from
        the sending loop.
        """
        client = H2Client(self)
        client.send(
            headerFrames(client.block([("x-big", "a" * 20000)]), 1) + DataFrame(1, data=b"x").serialize()
        )
        client.run()
        self.assertEqual(client.failures(), [])
        self.assertEqual(client.protocol._channel.streams, {})

    def test_zeroWindowNoBusyLoop(self) -> None:
        """
        A client keeping its flow-control window at zero: the answer waits
        for its WINDOW_UPDATE without the sending loop running meanwhile
        (it used to reschedule itself on every reactor turn), then goes out.
        """
        client = H2Client(self)
        settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        client.send(settings.serialize() + headerFrames(client.block([]), 1))
        turns = 0
        while turns < 100:
            due = [c for c in client.clock.getDelayedCalls() if c.getTime() <= client.clock.seconds()]
            if not due:
                break
            call: Any = due[0]
            client.clock.calls.remove(call)
            call.func(*call.args, **call.kw)
            turns += 1
        self.assertLess(turns, 100)
        client.run()
        self.assertEqual(client.responses()[1], (b"200", b""))
        client.send(WindowUpdateFrame(1, window_increment=100).serialize())
        client.run()
        self.assertEqual(client.responses()[1], (b"200", b"ok"))
        self.assertEqual(client.failures(), [])


class ScannerTests(SynchronousTestCase):
    """
    L{HeaderBlockScanner} follows frames split anywhere.
    """

    def test_byteByByte(self) -> None:
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        data = preface + headerFrames(b"a" * 500, 1, chunk=100) + DataFrame(1, data=b"x" * 5000).serialize()
        scanner = HeaderBlockScanner(500)
        self.assertEqual([r for r in (scanner.feed(data[i : i + 1]) for i in range(len(data))) if r], [])
        scanner = HeaderBlockScanner(499)
        results = [r for r in (scanner.feed(data[i : i + 1]) for i in range(len(data))) if r]
        self.assertEqual(results, ["request header block larger than 499 bytes"])

    def test_blocksCountedApart(self) -> None:
        """
        Each header block is counted from zero; DATA is never counted.
        """
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        scanner = HeaderBlockScanner(1000)
        self.assertIsNone(scanner.feed(preface))
        for streamID in range(1, 41, 2):
            self.assertIsNone(scanner.feed(headerFrames(b"a" * 900, streamID, chunk=300)))
            self.assertIsNone(scanner.feed(DataFrame(streamID, data=b"x" * 5000).serialize()))

    def test_connectionClass(self) -> None:
        """
        A site's HTTP/2 connections are L{LimitedH2Connection}s with its
        block limit and reactor.
        """
        client = H2Client(self, maxHeaderBlockBytes=1234)
        channel = client.protocol._channel
        self.assertIsInstance(channel, LimitedH2Connection)
        self.assertEqual(channel.maxHeaderBlockBytes, 1234)
        self.assertIs(channel._reactor, client.clock)


class HTTP11Tests(SynchronousTestCase):
    """
    The same hostile inputs over HTTP/1.1: 431 with a reason, no traceback.
    """

    def test_neverEndingHeaders(self) -> None:
        """
        Header lines that never end with a blank line: 431 once past the
        limit.
        """
        logged: list[dict[str, Any]] = []
        observer: Any = logged.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        site = LimitedSite(Hello(), reactor=Clock())
        connection = Connection(site)
        self.addCleanup(connection.close)
        connection.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        for i in range(2000):
            connection.send(b"X-%d: %s\r\n" % (i, b"v" * 10))
        self.assertTrue(connection.received().startswith(b"HTTP/1.1 431 "))
        self.assertEqual([e for e in logged if "log_failure" in e], [])
        self.assertEqual(len([e for e in logged if "rejected request" in str(e.get("log_format"))]), 1)

    def test_rejectOverTLSKeepsSession(self) -> None:
        """
        Over TLS the 431 does not half-close the TCP connection under the
        TLS session (its close would then fail with a traceback at the
        client's close_notify); the drain timer closes the connection.
        """
        from twisted.internet.interfaces import ISSLTransport
        from zope.interface import directlyProvides

        clock = Clock()
        site = LimitedSite(Hello(), reactor=clock)
        connection = Connection(site)
        halfClosed: list[bool] = []
        connection.transport.loseWriteConnection = lambda: halfClosed.append(True)  # type: ignore[attr-defined]
        directlyProvides(connection.transport, ISSLTransport)
        connection.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        self.assertTrue(connection.received().startswith(b"HTTP/1.1 431 "))
        self.assertEqual(halfClosed, [])
        clock.advance(5)
        self.assertTrue(connection.transport.disconnecting)


class AuthorityTests(SynchronousTestCase):
    """
    RFC 9113 8.3.1 on the shared HTTP/2 server: a request's C{Host} must
    equal its C{:authority}, so a surface that accepts only its own C{Host}
    (a guard against DNS rebinding) sees the one authority the request
    names.  hyper-h2's header validation (left on) refuses the others:
    the connection ends with GOAWAY C{PROTOCOL_ERROR} before any resource
    runs.
    """

    def request(self, headers: list[tuple[str, str]]) -> H2Client:
        client = H2Client(self)
        client.send(headerFrames(bytes(client.encoder.encode(headers)), 1))
        client.run()
        return client

    def test_mismatchRefused(self) -> None:
        """
        Host naming another host than :authority, a second Host, or
        neither: GOAWAY PROTOCOL_ERROR, one log line, no resource called.
        """
        for headers in [
            [*BASE, ("host", "evil.example")],
            [*BASE, ("host", "t"), ("host", "evil.example")],
            [(":method", "GET"), (":scheme", "https"), (":path", "/")],
        ]:
            client = self.request(headers)
            goaway = client.goaway()
            assert goaway is not None, headers
            self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            self.assertEqual(client.responses(), {})
            self.assertEqual(client.resource.calls, 0)
            self.assertEqual(len(client.lines("refused HTTP/2 connection")), 1)
            self.assertEqual(client.failures(), [])

    def test_agreeingHostServed(self) -> None:
        """
        A Host equal to :authority, or :authority alone, is served; every
        Host value the resource sees (Twisted adds :authority as one) is
        that one authority.
        """
        for headers in ([*BASE, ("host", "t")], BASE):
            client = self.request(headers)
            self.assertEqual(client.responses()[1][0], b"200")
            self.assertEqual(set(client.resource.hosts), {b"t"})
