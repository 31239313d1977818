"""
Tests for L{LimitedSite}: 413 for large bodies, 431 for large headers, over
real loopback connections.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from suite.web.limits import LimitedSite

from .support import Connection, RawClient, parseResponse


class Echo(Resource):
    """
    Answers with the length of the body it was given.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def render_POST(self, request: Request) -> bytes:
        self.calls += 1
        assert request.content is not None
        return b"%d" % (len(request.content.read()),)

    def render_GET(self, request: Request) -> bytes:
        self.calls += 1
        return b"ok"


class LoopbackLimitTests(TestCase):
    """
    The limits, enforced on real sockets.
    """

    async def serve(self, **limits: Any) -> int:
        self.echo = Echo()
        site = LimitedSite(self.echo, reactor=reactor, **limits)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def exchange(self, port: int, payload: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        client = RawClient(payload)
        protocol = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.addCleanup(lambda: protocol.transport and protocol.transport.loseConnection())
        raw = await client.done
        return parseResponse(raw)

    async def test_underLimit(self) -> None:
        """
        A body within the limit reaches the resource.
        """
        port = await self.serve(maxBodyBytes=100)
        body = b"x" * 100
        code, _, answer = await self.exchange(
            port,
            b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 100\r\n\r\n" + body,
        )
        self.assertEqual((code, answer), (200, b"100"))

    async def test_declaredTooLarge(self) -> None:
        """
        A Content-Length over the limit is answered 413 with a JSON reason
        before the body is sent at all; the resource never runs.
        """
        port = await self.serve(maxBodyBytes=1000)
        code, headers, body = await self.exchange(
            port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n\r\n"
        )
        self.assertEqual(code, 413)
        self.assertEqual(headers[b"content-type"], b"application/json; charset=utf-8")
        self.assertEqual(json.loads(body), {"error": "request body larger than 1000 bytes"})
        self.assertEqual(self.echo.calls, 0)

    async def test_declaredTooLargeWithBody(self) -> None:
        """
        A client that sends the oversized body anyway still reads the 413.
        """
        port = await self.serve(maxBodyBytes=1000)
        code, _, _ = await self.exchange(
            port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n" + b"y" * 200000
        )
        self.assertEqual(code, 413)
        self.assertEqual(self.echo.calls, 0)

    async def test_chunkedTooLarge(self) -> None:
        """
        A chunked body is counted as it arrives: 413 once it passes the limit.
        """
        port = await self.serve(maxBodyBytes=1000)
        chunks = b"".join(b"200\r\n" + b"z" * 0x200 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
        code, _, body = await self.exchange(
            port, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
        )
        self.assertEqual(code, 413)
        self.assertIn("larger than 1000 bytes", json.loads(body)["error"])
        self.assertEqual(self.echo.calls, 0)

    async def test_headersTooLarge(self) -> None:
        """
        Headers over C{maxHeaderBytes} get 431 with a JSON reason.
        """
        port = await self.serve(maxHeaderBytes=2048)
        code, _, body = await self.exchange(
            port,
            b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: "
            + b"a" * 1500
            + b"\r\nX-Big2: "
            + b"b" * 1500
            + b"\r\n\r\n",
        )
        self.assertEqual(code, 431)
        self.assertEqual(json.loads(body), {"error": "request headers larger than 2048 bytes"})
        self.assertEqual(self.echo.calls, 0)

    async def test_oneHugeHeaderLine(self) -> None:
        """
        A single header line longer than the limit also gets 431.
        """
        port = await self.serve(maxHeaderBytes=1024)
        code, _, _ = await self.exchange(port, b"GET / HTTP/1.1\r\nX-Huge: " + b"h" * 5000 + b"\r\n\r\n")
        self.assertEqual(code, 431)

    async def test_tooManyHeaders(self) -> None:
        """
        More header lines than C{maxHeaderCount} get 431.
        """
        port = await self.serve(maxHeaderCount=10)
        headers = b"".join(b"X-H%d: v\r\n" % (i,) for i in range(11))
        code, _, body = await self.exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
        self.assertEqual(code, 431)
        self.assertEqual(json.loads(body), {"error": "more than 10 request headers"})

    async def test_headerCountResetsPerRequest(self) -> None:
        """
        Limits count per request: many small requests on one persistent
        connection are all served.
        """
        port = await self.serve(maxHeaderCount=3, maxHeaderBytes=200)
        one = b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\r\n"
        last = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        client = RawClient(one * 20 + last)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        raw = await client.done
        self.assertEqual(raw.count(b"HTTP/1.1 200 OK"), 21)
        self.assertEqual(self.echo.calls, 21)


class LimitedSiteUnitTests(SynchronousTestCase):
    """
    Configuration and in-memory behaviour.
    """

    def test_badConfig(self) -> None:
        """
        Negative or non-integer limits are refused, naming the parameter.
        """
        e = self.assertRaises(ValueError, LimitedSite, Echo(), maxBodyBytes=-1)
        self.assertIn("maxBodyBytes", str(e))
        self.assertRaises(ValueError, LimitedSite, Echo(), maxHeaderCount="10")

    def test_notBuffered(self) -> None:
        """
        After the 413, further body bytes are discarded, not kept anywhere,
        and the connection closes after the drain period.
        """
        clock = Clock()
        site = LimitedSite(Echo(), maxBodyBytes=10, reactor=clock)
        conn = Connection(site)
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        self.assertEqual(parseResponse(conn.take())[0], 413)
        for _ in range(10):
            conn.send(b"q" * 10000)
        channel = conn.protocol._channel
        self.assertEqual(channel._dataBuffer, [])
        self.assertEqual(conn.received(), b"")
        self.assertFalse(conn.transport.disconnecting)
        clock.advance(5)
        self.assertTrue(conn.transport.disconnecting)

    def test_defaultTimeout(self) -> None:
        """
        Idle connections time out after a minute unless told otherwise.
        """
        self.assertEqual(LimitedSite(Echo()).timeOut, 60)
        self.assertEqual(LimitedSite(Echo(), timeout=5).timeOut, 5)


class SlowClientTests(SynchronousTestCase):
    """
    A request must arrive in time: the idle timeout restarts on every byte,
    so without a deadline a client trickling bytes would keep its
    connection (and its memory) forever.
    """

    def connect(self, **options: Any) -> tuple[Clock, Connection, Echo]:
        clock = Clock()
        echo = Echo()
        return clock, Connection(LimitedSite(echo, reactor=clock, **options)), echo

    def test_headerTrickle(self) -> None:
        """
        Request headers trickled a byte every 20 s (never idle for the 60 s
        timeout) are answered 408 once 30 s have passed since the first
        byte, and the connection closes.
        """
        clock, conn, echo = self.connect()
        head = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
        conn.send(head[:1])
        for byte in head[1:4]:
            clock.advance(20)
            conn.send(bytes([byte]))
        code, _, body = parseResponse(conn.take())
        self.assertEqual(code, 408)
        self.assertIn("within 30 seconds", json.loads(body)["error"])
        clock.advance(5)
        self.assertTrue(conn.transport.disconnecting)
        self.assertEqual(echo.calls, 0)

    def test_deadlinePerRequest(self) -> None:
        """
        The deadline counts from each request's first byte: a keep-alive
        connection idle between requests, and a request sent slowly but
        within 30 s, are served.
        """
        clock, conn, echo = self.connect()
        conn.get(b"/")
        self.assertEqual(parseResponse(conn.take())[0], 200)
        clock.advance(50)
        head = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
        for i in range(0, len(head), 4):
            conn.send(head[i : i + 4])
            clock.advance(3)
        self.assertEqual(parseResponse(conn.take())[0], 200)
        clock.advance(100)
        self.assertEqual(echo.calls, 2)
        self.assertEqual(conn.received(), b"")

    def test_bodyTrickle(self) -> None:
        """
        A body sent a byte every 20 s is answered 408 once its average
        falls under 1 KiB/s after the 30 s grace period.
        """
        clock, conn, echo = self.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(3):
            clock.advance(20)
            conn.send(b"x")
        code, _, body = parseResponse(conn.take())
        self.assertEqual(code, 408)
        self.assertIn("1024 bytes a second", json.loads(body)["error"])
        self.assertEqual(echo.calls, 0)

    def test_steadyBody(self) -> None:
        """
        A large body arriving steadily above the rate is served, however
        long it takes.
        """
        clock, conn, echo = self.connect()
        size = 2048 * 90
        conn.send(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % (size,))
        for _ in range(90):
            clock.advance(1)
            conn.send(b"x" * 2048)
        code, _, body = parseResponse(conn.take())
        self.assertEqual((code, body), (200, b"%d" % (size,)))

    def test_off(self) -> None:
        """
        C{headerTimeout=0} turns the deadline off; a negative one is refused.
        """
        clock, conn, _ = self.connect(headerTimeout=0)
        conn.send(b"G")
        clock.advance(59)
        conn.send(b"E")
        clock.advance(59)
        self.assertEqual(conn.received(), b"")
        self.assertRaises(ValueError, LimitedSite, Echo(), headerTimeout=-1)


class LocalHostsOnlyTests(SynchronousTestCase):
    """
    C{localHostsOnly}: on a loopback connection, requests from web pages
    (DNS rebinding, cross-site posts) are refused; other clients are served.
    """

    def request(
        self, method: bytes, headers: list[bytes], local: str = "127.0.0.1", **options: Any
    ) -> tuple[int, str, Echo]:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        echo = Echo()
        site = LimitedSite(echo, reactor=Clock(), **options)
        peer = IPv4Address("TCP", local, 40000)
        protocol: Any = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", local, 8080))
        protocol.makeConnection(transport)
        body = b"{}" if method == b"POST" else b""
        lines = [method + b" / HTTP/1.1", *headers, b"Content-Length: %d" % (len(body),)]
        protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        code, _, answer = parseResponse(transport.value())
        return code, answer.decode(), echo

    def test_rebindingHostRefused(self) -> None:
        """
        A C{Host} naming another site (what a DNS-rebinding page sends) is
        answered 421 with a reason, for every method; the resource never runs.
        """
        for method in (b"GET", b"POST"):
            code, answer, echo = self.request(method, [b"Host: evil.example:8080"], localHostsOnly=True)
            self.assertEqual(code, 421)
            self.assertIn("not this loopback listener", json.loads(answer)["error"])
            self.assertEqual(echo.calls, 0)

    def test_crossSitePostRefused(self) -> None:
        """
        A POST with a foreign C{Origin} (or C{null}) is answered 403 even
        with a local C{Host} (a page posting to http://127.0.0.1:PORT/).
        """
        for origin in (b"https://evil.example", b"null", b"http://127.0.0.1.evil.example:8080"):
            code, answer, echo = self.request(
                b"POST", [b"Host: 127.0.0.1:8080", b"Origin: " + origin], localHostsOnly=True
            )
            self.assertEqual(code, 403, origin)
            self.assertIn("from a web page", json.loads(answer)["error"])
            self.assertEqual(echo.calls, 0)

    def test_localClientsServed(self) -> None:
        """
        Loopback and C{localhost} Hosts (with or without a port), no Host at
        all, a local Origin, and GETs with any Origin are served.
        """
        for headers in (
            [b"Host: 127.0.0.1:8080"],
            [b"Host: localhost"],
            [b"Host: LOCALHOST:8080"],
            [b"Host: [::1]:8080"],
            [b"Host: app.localhost:8080"],
            [],
            [b"Host: localhost:8080", b"Origin: http://localhost:8080"],
        ):
            self.assertEqual(self.request(b"POST", headers, localHostsOnly=True)[0], 200, headers)
        self.assertEqual(
            self.request(b"GET", [b"Host: 127.0.0.1", b"Origin: https://evil.example"], localHostsOnly=True)[
                0
            ],
            200,
        )

    def test_onlyLoopbackConnectionsChecked(self) -> None:
        """
        A connection that arrived on another address (a remote listener,
        reached by name) and a site without C{localHostsOnly} are not checked.
        """
        self.assertEqual(
            self.request(b"GET", [b"Host: node.example"], local="192.0.2.7", localHostsOnly=True)[0], 200
        )
        self.assertEqual(self.request(b"POST", [b"Host: evil.example", b"Origin: null"])[0], 200)


class AccessLogTests(SynchronousTestCase):
    """
    Requests are logged through twisted.logger, without query strings.
    """

    def test_structured(self) -> None:
        """
        One event per request with method, path, code and peer; the query
        string (which may hold a token) is left out.
        """
        from twisted.logger import LogLevel, globalLogPublisher

        events: list[Any] = []
        observe: Any = events.append
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        site = LimitedSite(Echo(), reactor=Clock(), accessLogLevel=LogLevel.info)
        conn = Connection(site)
        conn.get(b"/thing?token=abc123")
        [event] = [e for e in events if e.get("log_namespace") == "suite.web.access"]
        self.assertEqual(
            (event["method"], event["path"], event["code"], event["peer"], event["log_level"]),
            ("GET", "/thing", 200, "127.0.0.1", LogLevel.info),
        )
        self.assertNotIn("abc123", repr(event))


class HTTP2LimitTests(TestCase):
    """
    Over HTTP/2 the request object enforces the body and header limits.
    """

    async def test_h2BodyLimit(self) -> None:
        """
        HTTP/2 streams with a declared or undeclared body over the limit get
        413 and never reach the resource; a small body does.
        """
        import h2.config
        import h2.connection
        import h2.events
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import deferLater
        from twisted.internet.testing import StringTransport

        echo = Echo()
        site = LimitedSite(echo, maxBodyBytes=1000, reactor=reactor, timeout=None)
        protocol: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, Failure(ConnectionDone()))
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        for streamID, size, declare in ((1, 5000, True), (3, 5000, False), (5, 10, True)):
            headers = [(":method", "POST"), (":path", "/"), (":scheme", "https"), (":authority", "t")]
            if declare:
                headers.append(("content-length", str(size)))
            client.send_headers(streamID, headers)
            client.send_data(streamID, b"a" * size, end_stream=True)
        protocol.dataReceived(client.data_to_send())
        for _ in range(5):
            await deferLater(reactor, 0)
        status: dict[int, bytes] = {}
        bodies: dict[int, bytes] = {}
        for event in client.receive_data(transport.value()):
            if isinstance(event, h2.events.ResponseReceived):
                status[event.stream_id] = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
        self.assertEqual(status, {1: b"413", 3: b"413", 5: b"200"})
        self.assertEqual(json.loads(bodies[1]), {"error": "request body larger than 1000 bytes"})
        self.assertEqual(bodies[5], b"10")
        self.assertEqual(echo.calls, 1)

    async def test_h2HeaderLimit(self) -> None:
        """
        HTTP/2 requests whose decoded headers pass the site's byte or count
        limit get a JSON 431, as over HTTP/1.1, and never reach the resource.
        """
        import h2.config
        import h2.connection
        import h2.events
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import deferLater
        from twisted.internet.testing import StringTransport

        echo = Echo()
        site = LimitedSite(echo, maxHeaderBytes=4096, maxHeaderCount=20, reactor=reactor, timeout=None)
        protocol: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, Failure(ConnectionDone()))
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        base = [(":method", "POST"), (":path", "/"), (":scheme", "https"), (":authority", "t")]
        for streamID, extra in (
            (1, [("x-big", "a" * 5000)]),
            (3, [(f"x-{i}", "1") for i in range(25)]),
            (5, [("x-small", "a" * 100)]),
        ):
            client.send_headers(streamID, base + extra)
            client.send_data(streamID, b"hi", end_stream=True)
        protocol.dataReceived(client.data_to_send())
        for _ in range(5):
            await deferLater(reactor, 0)
        status: dict[int, bytes] = {}
        bodies: dict[int, bytes] = {}
        for event in client.receive_data(transport.value()):
            if isinstance(event, h2.events.ResponseReceived):
                status[event.stream_id] = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
        self.assertEqual(status, {1: b"431", 3: b"431", 5: b"200"})
        self.assertEqual(json.loads(bodies[1]), {"error": "request headers larger than 4096 bytes"})
        self.assertEqual(json.loads(bodies[3]), {"error": "more than 20 request headers"})
        self.assertEqual(echo.calls, 1)
