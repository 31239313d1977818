"""
Tests for L{tests.support.process.pollUntil}, on a fake clock (nothing
sleeps).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support import process
from tests.support.process import WaitTimeout, pollUntil, waitUntil


class _FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class PollUntilTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.time = _FakeTime()
        self.patch(process, "time", self.time)

    def test_returnsFirstTrueValue(self) -> None:
        """
        The first true value C{check} returns is returned, after one
        C{interval} between calls.
        """
        answers = iter([None, [], ["peer"]])
        self.assertEqual(pollUntil(lambda: next(answers), "a peer", 10, 0.5), ["peer"])
        self.assertEqual(self.time.slept, [0.5, 0.5])

    def test_timeout(self) -> None:
        """
        Past the deadline L{WaitTimeout} names what was awaited, described
        when the wait ends; no sleep goes past the deadline.
        """
        seen = [0]

        def check() -> bool:
            seen[0] += 1
            return False

        e = self.assertRaises(WaitTimeout, pollUntil, check, lambda: f"done ({seen[0]} looks)", 1.0, 0.3)
        self.assertEqual(str(e), "timed out after 1 s waiting for done (5 looks)")
        self.assertEqual(self.time.now, 101.0)
        self.assertAlmostEqual(sum(self.time.slept), 1.0)

    def test_errorsPropagate(self) -> None:
        """
        An exception from C{check} is not taken for "not yet".
        """

        def check() -> bool:
            raise OSError("no such container")

        self.assertRaises(OSError, pollUntil, check, "anything", 5)
        self.assertEqual(self.time.slept, [])


class WaitUntilTests(SynchronousTestCase):
    """
    L{tests.support.process.waitUntil} polls on the reactor (here a fake
    clock and a fake sleep) with a deadline.
    """

    def setUp(self) -> None:
        self.time = _FakeTime()
        self.patch(process, "time", self.time)

        async def fakeSleep(seconds: float) -> None:
            self.time.sleep(seconds)

        self.patch(process, "sleep", fakeSleep)

    def test_awaitsDeferredAnswers(self) -> None:
        """
        A predicate returning Deferreds is awaited; errors count as "not
        yet"; the first true value is returned.
        """
        from twisted.internet.defer import Deferred, fail, succeed

        answers = iter([fail(OSError("refused")), succeed(0), succeed("up")])
        d = Deferred.fromCoroutine(waitUntil(lambda: next(answers), "the port", 5, 0.1))
        self.assertEqual(self.successResultOf(d), "up")
        self.assertEqual(self.time.slept, [0.1, 0.1])

    def test_timeoutNamesLastError(self) -> None:
        """
        The timeout names what was awaited and the last error seen.
        """
        from twisted.internet.defer import Deferred

        def refused() -> None:
            raise ConnectionRefusedError("refused")

        d = Deferred.fromCoroutine(waitUntil(refused, lambda: "the port", 1, 0.25))
        failure = self.failureResultOf(d, WaitTimeout)
        self.assertEqual(
            failure.getErrorMessage(),
            "timed out after 1 s waiting for the port (last error: ConnectionRefusedError: refused)",
        )
