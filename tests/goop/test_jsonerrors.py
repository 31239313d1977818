"""
Every Goop2 HTTP surface answers errors in JSON, whatever resource answers:
an unsupported method is a JSON 405 with C{Allow}; a resource that falls
back on Twisted's HTML error pages is answered with a JSON body instead.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyChannel

from suite.goop.rendezvous.hub import RendezvousHub
from suite.goop.webutil import JSONErrorsRequest, JSONErrorsSite


class _Page(Resource):
    def render_GET(self, request: Any) -> bytes:
        return b"<p>page</p>"


def answer(root: Resource, method: bytes, path: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one request through a L{JSONErrorsSite} over C{root}: status, headers, body."""
    channel = DummyChannel()
    channel.site = JSONErrorsSite(root)
    request = JSONErrorsRequest(channel, False)
    request.gotLength(0)
    request.requestReceived(method, path, b"HTTP/1.1")
    raw = channel.transport.written.getvalue()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        chunks, rest = [], body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            chunks.append(rest[:n])
            rest = rest[n + 2 :]
        body = b"".join(chunks)
    return int(lines[0].split()[1]), headers, body


class JSONErrorsTests(SynchronousTestCase):
    def test_unsupportedMethod(self) -> None:
        """
        A method a resource does not render is a JSON 405 naming it, with
        the allowed methods in C{Allow} and in the body.
        """
        hub = RendezvousHub(MemoryReactorClock(), templatesDir=self.mktemp())
        for method, path in ((b"PUT", b"/publish"), (b"DELETE", b"/peers.json"), (b"POST", b"/")):
            code, headers, body = answer(hub.resource(), method, path)
            self.assertEqual(code, 405, path)
            self.assertTrue(headers[b"content-type"].startswith(b"application/json"), path)
            doc = json.loads(body)
            self.assertEqual(doc["error"], f"method {method.decode()} not allowed")
            self.assertIn(b"GET" if path != b"/publish" else b"POST", headers[b"allow"])

    def test_twistedErrorPages(self) -> None:
        """
        Twisted's own HTML 404 (a resource with no C{getChild} of its own)
        becomes a JSON 404.
        """
        root = Resource()
        root.putChild(b"dir", Resource())
        code, headers, body = answer(root, b"GET", b"/dir/missing")
        self.assertEqual(code, 404)
        self.assertTrue(headers[b"content-type"].startswith(b"application/json"))
        self.assertEqual(json.loads(body), {"error": "not found"})
        self.flushWarnings()  # Twisted deprecates the page it still falls back on

    def test_pagesAndHead(self) -> None:
        """
        A page is served as it is; HEAD on a GET resource is still answered
        by Twisted from the GET (headers, no body).
        """
        root = Resource()
        root.putChild(b"page", _Page())
        code, headers, body = answer(root, b"GET", b"/page")
        self.assertEqual((code, body), (200, b"<p>page</p>"))
        code, headers, body = answer(root, b"HEAD", b"/page")
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(headers[b"content-length"], b"11")


class SubpathTests(SynchronousTestCase):
    def test_leafSubpathsAre404(self) -> None:
        """
        A path below a leaf that does not read sub-paths (C{/peers.json/x},
        C{/healthz/x}) is a JSON 404, not the leaf's answer; a leaf that
        reads them (templates) and an error page (its own code) are
        unchanged.
        """
        from suite.goop.webutil import JSONErrorPage

        hub = RendezvousHub(MemoryReactorClock(), templatesDir=self.mktemp())
        for path in (b"/peers.json/x", b"/logs.json/x", b"/publish/x", b"/healthz/x", b"/events/x"):
            code, headers, body = answer(hub.resource(), b"GET", path)
            self.assertEqual((code, json.loads(body)), (404, {"error": "no such resource"}), path)
        code, _, body = answer(hub.resource(), b"GET", b"/peers.json")
        self.assertEqual((code, json.loads(body)), (200, []))
        code, _, body = answer(hub.resource(), b"GET", b"/api/templates/nope/manifest.json")
        self.assertEqual((code, json.loads(body)), (404, {"error": "no template named nope"}))
        root = Resource()
        root.putChild(b"gone", JSONErrorPage(421, "wrong host"))
        code, _, body = answer(root, b"GET", b"/gone/a/b")
        self.assertEqual((code, json.loads(body)), (421, {"error": "wrong host"}))
