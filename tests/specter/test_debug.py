"""
L{suite.specter.debug}: the profile page is bounded and one at a time,
driven by a Clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from suite.specter.debug import _Profile


def _request(**args: str) -> DummyRequest:
    request = DummyRequest([b""])
    request.args = {k.encode(): [v.encode()] for k, v in args.items()}
    return request


class ProfileTests(SynchronousTestCase):
    def test_profileAfterSeconds(self) -> None:
        clock = Clock()
        page = _Profile(clock)
        request = _request(seconds="2")
        page.render_GET(request)
        self.assertEqual(request.written, [])
        busy = _request(seconds="1")
        page.render_GET(busy)
        self.assertEqual(busy.responseCode, 409)
        clock.advance(2)
        self.assertEqual(request.finished, 1)
        self.assertIn(b"cProfile", b"".join(request.written))
        again = _request(seconds="1", format="pstats")
        page.render_GET(again)
        clock.advance(1)
        self.assertEqual(again.finished, 1)

    def test_bounds(self) -> None:
        page = _Profile(Clock())
        for args in ({"seconds": "0"}, {"seconds": "61"}, {"seconds": "x"}, {"format": "svg"}):
            request = _request(**args)
            page.render_GET(request)
            self.assertEqual(request.responseCode, 400, args)
        self.assertFalse(page.running)


class IndexTests(SynchronousTestCase):
    def _get(self, path: bytes) -> DummyRequest:
        import json

        from twisted.web.resource import Resource, getChildForRequest

        from suite.specter.debug import mountDebug

        internal = Resource()
        mountDebug(internal, None, None, Clock())
        request = DummyRequest(path.split(b"/"))
        page = getChildForRequest(internal, request)
        body = page.render(request)
        request.written.append(body)
        request.parsed = json.loads(body)  # type: ignore[attr-defined]
        return request

    def test_pprofIndex(self) -> None:
        """
        GET /_internal/debug/pprof (with or without a trailing slash) is a
        JSON index naming the profile page, not a 405.
        """
        for path in (b"debug/pprof", b"debug/pprof/"):
            request = self._get(path)
            self.assertEqual(request.responseCode or 200, 200, path)
            self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])
            paths = [e["path"] for e in request.parsed["endpoints"]]  # type: ignore[attr-defined]
            self.assertEqual(paths, ["/_internal/debug/pprof/profile"], path)

    def test_debugIndex(self) -> None:
        """
        GET /_internal/debug lists every debug page.
        """
        request = self._get(b"debug")
        paths = [e["path"] for e in request.parsed["endpoints"]]  # type: ignore[attr-defined]
        self.assertEqual(paths, ["/_internal/debug/vars", "/_internal/debug/pprof/profile"])

    def test_unknownDebugPage(self) -> None:
        """
        An unknown page under /_internal/debug is a JSON 404 naming it.
        """
        request = self._get(b"debug/nope")
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(request.parsed["error"], "no debug page /_internal/debug/nope")  # type: ignore[attr-defined]
