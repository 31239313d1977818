"""
The HTTP/1.1 pieces the HTTP/2 and HTTP/3 front ends use towards tunnel
targets: request heads from a visitor's header list, response heads, the
chunked body decoder.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.http1 import (
    BadMessage,
    ChunkedDecoder,
    HeadCache,
    buildRequestHead,
    parseResponseHead,
)

_PSEUDO = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/p?q=1"),
    (b":authority", b"A.example.test:8443"),
]
_FORWARDING = (
    b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
    b'Forwarded: for=10.0.0.1;proto=https;host="A.example.test:8443"\r\n'
)


class RequestHeadTests(SynchronousTestCase):
    def test_head(self) -> None:
        """
        Host is the :authority as asked; hop-by-hop, Host, Content-Length
        and the visitor's forwarding headers are dropped, cookies joined,
        the forwarding lines added; the routing key is the host in lower
        case without the port.
        """
        head = buildRequestHead(
            [
                *_PSEUDO,
                (b"accept", b" text/html "),
                (b"connection", b"x"),
                (b"x-forwarded-for", b"1.2.3.4"),
                (b"forwarded", b"for=evil"),
                (b"host", b"a.EXAMPLE.test:8443"),
                (b"cookie", b"a=1"),
                (b"te", b"trailers"),
                (b"cookie", b"b=2"),
            ],
            "10.0.0.1",
        )
        self.assertEqual(head.host, "a.example.test")
        self.assertEqual(head.authority, "A.example.test:8443")
        self.assertEqual(
            head.encode(False),
            b"GET /p?q=1 HTTP/1.1\r\nHost: A.example.test:8443\r\naccept: text/html\r\n"
            b"cookie: a=1; b=2\r\n" + _FORWARDING + b"\r\n",
        )

    def test_bodyFraming(self) -> None:
        """
        A declared length is passed on, an undeclared body is chunked, an
        empty body of a method that carries one says so.
        """
        declared = buildRequestHead(
            [
                *_PSEUDO[:0],
                (b":method", b"POST"),
                (b":path", b"/"),
                (b":authority", b"a"),
                (b"content-length", b"4"),
            ],
            "::1",
        )
        self.assertEqual(declared.length, 4)
        self.assertTrue(declared.encode(True).endswith(b"\r\nContent-Length: 4\r\n\r\n"))
        self.assertIn(b'for="[::1]"', declared.head)
        undeclared = buildRequestHead(
            [(b":method", b"POST"), (b":path", b"/"), (b":authority", b"a")], "10.0.0.1"
        )
        self.assertTrue(undeclared.encode(True).endswith(b"\r\nTransfer-Encoding: chunked\r\n\r\n"))
        self.assertTrue(undeclared.encode(False).endswith(b"\r\nContent-Length: 0\r\n\r\n"))
        self.assertNotIn(b"Content-Length", buildRequestHead(_PSEUDO, "10.0.0.1").encode(False))

    def test_hostHeaderWithoutAuthority(self) -> None:
        """
        Without :authority the Host header names the host; IPv6 literals
        keep their brackets.
        """
        head = buildRequestHead([(b":method", b"GET"), (b":path", b"/"), (b"host", b"[::1]:80")], "10.0.0.1")
        self.assertEqual((head.host, head.authority), ("[::1]", "[::1]:80"))

    def test_authorityAndHost(self) -> None:
        """
        A Host header beside :authority must name the same host and port
        (RFC 9113 8.3.1, RFC 9114 4.3.1): case and the scheme's default port
        written out aside; the target's Host and the routing key are the
        :authority.
        """
        pseudo = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":path", b"/"),
            (b":authority", b"App.example"),
        ]
        for host in [b"App.example", b"app.EXAMPLE", b"app.example:443"]:
            head = buildRequestHead([*pseudo, (b"host", host)], "10.0.0.1")
            self.assertEqual((head.host, head.authority), ("app.example", "App.example"), host)
            self.assertIn(b"\r\nHost: App.example\r\n", head.head)
        plain = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a:80")]
        self.assertEqual(buildRequestHead([*plain, (b"host", b"a")], "10.0.0.1").host, "a")

    def test_authorityRefused(self) -> None:
        """
        A request whose Host and :authority name different hosts or ports,
        with two Host headers or two :authority, with neither, with an
        empty one, or whose authority carries user information is
        malformed: it never picks a route.
        """
        base = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")]
        for headers, reason in [
            ([*base, (b":authority", b"a.example"), (b"host", b"b.example")], "disagrees"),
            ([*base, (b":authority", b"a.example"), (b"host", b"a.example:8443")], "disagrees"),
            ([*base, (b":authority", b"a.example:8443"), (b"host", b"a.example")], "disagrees"),
            ([*base, (b":authority", b"a.example"), (b"host", b"a.example:80")], "disagrees"),
            ([*base, (b":authority", b"a.example"), (b"host", b"")], "disagrees"),
            ([*base, (b":authority", b""), (b"host", b"a.example")], "disagrees"),
            ([*base, (b":authority", b"a.example"), (b"host", b" a.example")], "disagrees"),
            (
                [*base, (b":authority", b"a.example"), (b"host", b"a.example"), (b"host", b"b.example")],
                "more than one Host",
            ),
            ([*base, (b"host", b"a.example"), (b"host", b"b.example")], "more than one Host"),
            (
                [*base, (b":authority", b"a.example"), (b":authority", b"b.example")],
                "more than one :authority",
            ),
            (base, "no :authority or Host"),
            ([*base, (b":authority", b"")], "malformed :authority"),
            ([*base, (b"host", b"")], "malformed :authority"),
            ([*base, (b":authority", b"a example")], "malformed :authority"),
            ([*base, (b":authority", b"a\texample")], "malformed :authority"),
            ([*base, (b":authority", b"user@a.example")], "user information"),
            (
                [*base, (b":authority", b"user:pw@a.example"), (b"host", b"user:pw@a.example")],
                "user information",
            ),
            ([*base, (b"host", b"b.example@a.example")], "user information"),
        ]:
            with self.assertRaises(BadMessage, msg=repr(headers)) as caught:
                buildRequestHead(headers, "10.0.0.1")
            self.assertIn(reason, str(caught.exception), repr(headers))

    def test_malformed(self) -> None:
        """
        What could not be written as a safe HTTP/1.1 head is refused with a
        reason.
        """
        base = [(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a")]
        for headers, reason in [
            ([*base, (b"x-a", b"1\r\nInjected: yes")], "CR, LF or NUL"),
            ([*base, (b"x-a", b"a\x00")], "CR, LF or NUL"),
            ([*base, (b"X-Upper", b"1")], "lower-case token"),
            ([*base, (b"bad name", b"1")], "lower-case token"),
            ([*base, (b"x-a", b"1"), (b":scheme", b"https")], "pseudo-header after"),
            ([*base, (b":protocol", b"websocket")], "unknown pseudo-header"),
            ([(b":method", b"CONNECT"), (b":authority", b"a:443")], "CONNECT"),
            ([(b":path", b"/"), (b":authority", b"a")], ":method"),
            ([(b":method", b"G T"), (b":path", b"/"), (b":authority", b"a")], ":method"),
            ([(b":method", b"GET"), (b":authority", b"a")], ":path"),
            ([(b":method", b"GET"), (b":path", b"/a b"), (b":authority", b"a")], ":path"),
            ([(b":method", b"GET"), (b":path", b"x"), (b":authority", b"a")], ":path"),
            ([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a\r\nb")], ":authority"),
            ([*base, (b"content-length", b"-1")], "content-length"),
            ([*base, (b"te", b"gzip")], "te"),
        ]:
            with self.assertRaises(BadMessage, msg=repr(headers)) as caught:
                buildRequestHead(headers, "10.0.0.1")
            self.assertIn(reason, str(caught.exception))


class ResponseHeadTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        Names are lower-cased, hop-by-hop headers dropped (their framing
        kept), HTTP/1.0 and Connection: close are not kept alive.
        """
        head = parseResponseHead(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2"
        )
        self.assertEqual(
            (head.code, head.phrase, head.chunked, head.keepAlive, head.length), (200, b"OK", True, True, -1)
        )
        self.assertEqual(
            head.headers, ((b"content-type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"))
        )
        self.assertFalse(parseResponseHead(b"HTTP/1.0 200 OK\r\nContent-Length: 3").keepAlive)
        self.assertFalse(parseResponseHead(b"HTTP/1.1 200 OK\r\nConnection: Close").keepAlive)
        self.assertEqual(parseResponseHead(b"HTTP/1.1 404\r\nContent-Length: 0").length, 0)
        self.assertTrue(parseResponseHead(b"HTTP/1.1 100 Continue").interim)
        self.assertFalse(parseResponseHead(b"HTTP/1.1 101 Switching").interim)

    def test_malformed(self) -> None:
        """
        Broken status lines and header lines are refused.
        """
        for block in (
            b"garbage",
            b"HTTP/1.1 abc OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/2 200 OK",
            b"HTTP/1.1 200 OK\r\nno colon",
            b"HTTP/1.1 200 OK\r\nContent-Length: x",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
            b"HTTP/1.1 200 OK\r\nBad Name: 1",
        ):
            with self.assertRaises(BadMessage, msg=repr(block)):
                parseResponseHead(block)

    def test_cache(self) -> None:
        """
        The same head bytes give the same parsed head; the cache is bounded.
        """
        cache = HeadCache(entries=2)
        first = cache.parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1")
        self.assertIs(cache.parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1"), first)
        cache.parse(b"HTTP/1.1 204 No Content")
        cache.parse(b"HTTP/1.1 304 Not Modified")
        self.assertLessEqual(len(cache._heads), 2)


class ChunkedTests(SynchronousTestCase):
    WIRE = b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n"

    def test_whole(self) -> None:
        """
        Chunk data comes out, trailers are skipped, and the end is found;
        bytes after it are not part of the body.
        """
        out: list[bytes] = []
        decoder = ChunkedDecoder(out.append)
        self.assertEqual(decoder.feed(self.WIRE + b"NEXT"), len(self.WIRE))
        self.assertEqual(b"".join(out), b"hello" + b"z" * 26)

    def test_byteByByte(self) -> None:
        """
        Fed one byte at a time, the same body and the same end.
        """
        out: list[bytes] = []
        decoder = ChunkedDecoder(out.append)
        ends = [decoder.feed(self.WIRE[i : i + 1]) for i in range(len(self.WIRE))]
        self.assertEqual(ends, [-1] * (len(self.WIRE) - 1) + [1])
        self.assertEqual(b"".join(out), b"hello" + b"z" * 26)

    def test_broken(self) -> None:
        """
        A bad size, data longer than its size or an endless size line are
        refused.
        """
        for wire in (b"zz\r\n", b"-5\r\n", b"+5\r\n", b"2\r\nabc\r\n", b"1" * 70000):
            with self.assertRaises(BadMessage, msg=repr(wire[:20])):
                ChunkedDecoder(lambda data: None).feed(wire)
