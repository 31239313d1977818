"""
Tests for L{suite.cred.limits.FailureLimiter} and its use by the wrappers.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest

from suite.cred.basic import StaticPasswordChecker
from suite.cred.limits import FailureLimiter
from suite.cred.web import requireBasicAuth
from tests.cred.test_web import Protected, basic, request


class FailureLimiterTests(SynchronousTestCase):
    """
    The sliding window of failures per key.
    """

    def test_blocksAfterMaxFailures(self) -> None:
        """
        The Nth failure within the window blocks until the oldest of the
        last N leaves it.
        """
        clock = Clock()
        limiter = FailureLimiter(clock, maxFailures=3, windowSeconds=60)
        for _ in range(2):
            limiter.failed("a")
            clock.advance(10)
        self.assertEqual(limiter.blockedFor("a"), 0)
        limiter.failed("a")  # at t=20; failures at 0, 10, 20
        self.assertEqual(limiter.blockedFor("a"), 40)
        self.assertEqual(limiter.blockedFor("b"), 0)
        clock.advance(40)
        self.assertEqual(limiter.blockedFor("a"), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_expiry(self) -> None:
        """
        Failures older than the window are forgotten with their key.
        """
        clock = Clock()
        limiter = FailureLimiter(clock, maxFailures=2, windowSeconds=5)
        limiter.failed("a")
        clock.advance(6)
        limiter.failed("a")
        self.assertEqual(limiter.blockedFor("a"), 0)
        clock.advance(6)
        self.assertEqual(limiter.blockedFor("a"), 0)
        self.assertEqual(limiter.trackedCount, 0)

    def test_boundedMemory(self) -> None:
        """
        At most maxTracked keys are remembered; the oldest go first.
        """
        clock = Clock()
        limiter = FailureLimiter(clock, maxFailures=1, windowSeconds=60, maxTracked=100)
        for i in range(1000):
            limiter.failed(f"10.0.{i // 256}.{i % 256}")
        self.assertEqual(limiter.trackedCount, 100)
        self.assertGreater(limiter.blockedFor("10.0.3.231"), 0)
        self.assertEqual(limiter.blockedFor("10.0.0.0"), 0)

    def test_badParameters(self) -> None:
        """
        Non-positive limits are refused.
        """
        self.assertRaises(ValueError, FailureLimiter, Clock(), maxFailures=0)
        self.assertRaises(ValueError, FailureLimiter, Clock(), windowSeconds=0)


class WrapperLimitTests(SynchronousTestCase):
    """
    requireBasicAuth with a limiter.
    """

    def test_tooManyFailures(self) -> None:
        """
        After maxFailures wrong passwords the client gets 429 with
        Retry-After even with the right password; requests without
        credentials neither count nor are blocked; the window passing
        lets it in again.
        """
        clock = Clock()
        limiter = FailureLimiter(clock, maxFailures=2, windowSeconds=30)
        guard = requireBasicAuth(Protected(), StaticPasswordChecker({"ops": "right"}), limiter=limiter)

        def get(auth: bytes | None) -> tuple[int, bytes, Any]:
            req = request([], auth)
            req.render(getChildForRequest(guard, req))
            return (
                req.responseCode or 200,
                b"".join(req.written),
                req.responseHeaders.getRawHeaders(b"retry-after"),
            )

        for _ in range(5):
            self.assertEqual(get(None)[0], 401)
        self.assertEqual(get(basic(b"ops", b"wrong"))[0], 401)
        self.assertEqual(get(basic(b"ops", b"wrong"))[0], 401)
        code, body, retry = get(basic(b"ops", b"right"))
        self.assertEqual(
            (code, json.loads(body), retry), (429, {"error": "too many failed attempts"}, [b"30"])
        )
        self.assertEqual(get(None)[0], 401)
        clock.advance(30)
        self.assertEqual(get(basic(b"ops", b"right"))[:2], (200, b"root:ops"))

    def test_perClient(self) -> None:
        """
        One client's failures do not block another client.
        """
        clock = Clock()
        limiter = FailureLimiter(clock, maxFailures=1, windowSeconds=30)
        guard = requireBasicAuth(Protected(), StaticPasswordChecker({"ops": "right"}), limiter=limiter)

        def get(host: str, auth: bytes) -> int:
            req = request([], auth)
            req.client = IPv4Address("TCP", host, 40000)
            req.render(getChildForRequest(guard, req))
            return req.responseCode or 200

        self.assertEqual(get("10.0.0.1", basic(b"ops", b"wrong")), 401)
        self.assertEqual(get("10.0.0.1", basic(b"ops", b"right")), 429)
        self.assertEqual(get("10.0.0.2", basic(b"ops", b"right")), 200)
