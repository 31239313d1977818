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
