"""
L{suite.specter.gateway.forwarded}: request heads rewritten on a spliced
HTTP/1.1 connection, whatever the framing and however the bytes are cut.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.forwarded import (
    RequestError,
    RequestRewriter,
    forwardedValue,
    forwardingLines,
    hostConflict,
)

FWD = forwardingLines("10.0.0.1", "h.test")


def _feed(data: bytes, step: int, limit: int = 4096) -> bytes:
    rewriter = RequestRewriter("10.0.0.1", limit)
    return b"".join(rewriter.feed(data[i : i + step]) for i in range(0, len(data), step))


class RewriterTests(SynchronousTestCase):
    def test_pipelinedFramings(self) -> None:
        """
        Pipelined requests with no body, a Content-Length body and a
        chunked body (with trailers) each get the forwarding headers, and
        bodies pass unchanged, at every cut of the input.
        """
        body = b"Host: h.test\r\nX-Forwarded-Proto: http\r\nForwarded: for=evil\r\n"
        stream = (
            b"GET /a HTTP/1.1\r\n" + body + b"\r\n"
            b"POST /b HTTP/1.1\r\nHost: h.test\r\nContent-Length: 28\r\n\r\n"
            b"GET /fake HTTP/1.1\r\n\r\n12345"
            b"POST /c HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;x=y\r\nGET /\r\n0\r\nT: 1\r\n\r\n"
            b"GET /d HTTP/1.1\r\nHost: h.test\r\n\r\n"
        )
        expected = (
            b"GET /a HTTP/1.1\r\nHost: h.test\r\n" + FWD + b"\r\n"
            b"POST /b HTTP/1.1\r\nHost: h.test\r\nContent-Length: 28\r\n" + FWD + b"\r\n"
            b"GET /fake HTTP/1.1\r\n\r\n12345"
            b"POST /c HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n" + FWD + b"\r\n"
            b"5;x=y\r\nGET /\r\n0\r\nT: 1\r\n\r\n"
            b"GET /d HTTP/1.1\r\nHost: h.test\r\n" + FWD + b"\r\n"
        )
        for step in (1, 2, 3, 7, 64, len(stream)):
            self.assertEqual(_feed(stream, step), expected, step)

    def test_repeatedHeadsRemembered(self) -> None:
        """
        A head the visitor sends again is rewritten the same way from what
        was remembered (the first rewrite is not redone); a different head
        is rewritten on its own; the memory is bounded.
        """
        import suite.specter.gateway.forwarded as forwarded

        rewriter = RequestRewriter("10.0.0.1", 8192)
        head = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok"
        first = rewriter.feed(head)
        calls: list[bytes] = []
        original = forwarded._rewriteHead

        def rewriteHead(
            h: bytes, ip: str, cache: dict[bytes, bytes], bound: bytes | None
        ) -> tuple[bytes, int, bool]:
            calls.append(h)
            return original(h, ip, cache, bound)

        self.patch(forwarded, "_rewriteHead", rewriteHead)
        self.assertEqual(rewriter.feed(head), first)
        self.assertEqual(calls, [])
        other = rewriter.feed(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(other.startswith(b"GET /b HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1"))
        self.assertEqual(len(calls), 1)
        for i in range(40):
            rewriter.feed(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
        self.assertLessEqual(len(rewriter.heads), 32)

    def test_oneRequestPerRead(self) -> None:
        """
        Reads that each hold one whole request (the keep-alive visitor's
        usual read) are rewritten the same way every time, whether the
        head was seen before or not, and a known head that announces a
        body still has its body followed.
        """
        rewriter = RequestRewriter("10.0.0.1", 8192)
        get = b"GET / HTTP/1.1\r\nHost: h.test\r\n\r\n"
        post = b"POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 4\r\n\r\n"
        rewrittenGet = b"GET / HTTP/1.1\r\nHost: h.test\r\n" + FWD + b"\r\n"
        rewrittenPost = post[:-2] + FWD + b"\r\n"
        for _ in range(3):
            self.assertEqual(rewriter.feed(get), rewrittenGet)
            self.assertEqual(rewriter.feed(post), rewrittenPost)
            # the body ends with a blank line and looks like a known head
            self.assertEqual(rewriter.feed(b"\r\n\r\n"), b"\r\n\r\n")
        self.assertEqual(rewriter.feed(get[:5]), b"")
        self.assertEqual(rewriter.feed(get[5:]), rewrittenGet)

    def test_upgradeIsOpaque(self) -> None:
        """
        After an Upgrade (or CONNECT) request the rest passes unchanged.
        """
        stream = b"GET /ws HTTP/1.1\r\nHost: h.test\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        out = _feed(stream, 5)
        self.assertTrue(out.endswith(FWD + b"\r\nGET / HTTP/1.1\r\n\r\n"))

    def test_errors(self) -> None:
        """
        Oversized heads, bad lengths and bad chunk sizes are refused.
        """
        for bad in (
            b"GET / HTTP/1.1\r\nX: " + b"a" * 100,
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n",
            b"GET / HTTP/1.1\r\nForwarded: x\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a.test\r\nX: 1\r\nHOST: a.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost\t: a.test\r\n\r\n",
            b"GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            b"GET https://user@[::1]:8443/x HTTP/1.1\r\nHost: [::2]:8443\r\n\r\n",
        ):
            self.assertRaises(RequestError, _feed, bad, 1000, 64)

    def test_hostConflict(self) -> None:
        """
        L{hostConflict} passes one Host, absolute-form targets naming it
        (whatever port or user information), and none; it names what is
        wrong otherwise.
        """
        for fine in (
            b"get / http/1.1\r\nhost: a.test",
            b"get / http/1.1",
            b"get http://a.test:80/x http/1.1\r\nhost: a.test",
            b"get https://u@[::1]:8443?q http/1.1\r\nhost: [::1]",
            b"get http://b.test/ http/1.1",
            b"get / http/1.1\r\nhostname: b.test\r\nhost: a.test\r\nx-host: c.test",
        ):
            self.assertIsNone(hostConflict(fine), fine)
        self.assertIn("more than one", hostConflict(b"get / http/1.1\r\nhost: a\r\nhost: a") or "")
        self.assertIn("disagrees", hostConflict(b"get http://b.test/ http/1.1\r\nhost: a.test") or "")

    def test_forwardedValue(self) -> None:
        """
        IPv6 nodes are quoted and bracketed; quotes cannot break out.
        """
        self.assertEqual(forwardedValue("::1", 'h"x'), b'for="[::1]";proto=https;host="hx"')
