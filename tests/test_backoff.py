"""
L{suite.backoff.Backoff}: doubling ceilings with jitter, capped, reset.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from suite.backoff import Backoff


class BackoffTests(SynchronousTestCase):
    def test_doublesWithinJitterAndCaps(self) -> None:
        b = Backoff(1.0, 8.0, random.Random(3))
        delays = [b.next() for _ in range(6)]
        for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
            self.assertTrue(ceiling / 2 <= delay <= ceiling, (delay, ceiling))
        b.reset()
        self.assertLessEqual(b.next(), 1.0)

    def test_seeded(self) -> None:
        """
        The same seed gives the same delays (simulations replay).
        """
        one, two = Backoff(0.5, 30.0, random.Random(9)), Backoff(0.5, 30.0, random.Random(9))
        delays = [one.next() for _ in range(5)]
        self.assertEqual(delays, [two.next() for _ in range(5)])
        self.assertEqual(len(set(delays)), 5)
