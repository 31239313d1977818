"""
The per-lease hold machine alone: every input in every state, with the
expiry timer on a L{task.Clock} and the outputs recorded as events.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.constellation.leases import DNS_WRITER, HoldCore, HoldInputs, newLeaseHold


class HoldMachineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[str] = []
        self.hold: HoldInputs = newLeaseHold(
            HoldCore(DNS_WRITER, self.clock, self.clock.seconds, lambda: self.events.append("notify"))
        )

    def holding(self, token: int = 3, until: float = 5.0) -> None:
        self.hold.confirmed(token, until)
        self.assertEqual(self.events, ["notify"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        del self.events[:]

    def test_freeAnswersEveryInput(self) -> None:
        """
        Free: nothing held; expired, moved and released change nothing and
        tell no one; confirmed enters Holding, arms the expiry timer and
        notifies once.
        """
        self.assertIsNone(self.hold.token())
        self.assertIsNone(self.hold.until())
        self.hold.expired()
        self.hold.moved("the lease moved")
        self.assertIsNone(self.hold.released())
        self.assertEqual(self.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.holding(3, 5.0)
        self.assertEqual((self.hold.token(), self.hold.until()), (3, 5.0))

    def test_holdingRenewed(self) -> None:
        """
        Holding + confirmed: the new token and end, the timer re-armed (not
        a second one), no notification.
        """
        self.holding(3, 5.0)
        self.clock.advance(4)
        self.hold.confirmed(3, 9.0)
        self.assertEqual(self.events, [])
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [9.0])
        self.clock.advance(4.5)
        self.assertEqual((self.hold.token(), self.hold.until()), (3, 9.0))

    def test_holdingExpires(self) -> None:
        """
        Holding: the timer fires at the end of acting -> Free, notified.
        """
        self.holding(3, 5.0)
        self.clock.advance(4.9)
        self.assertEqual(self.hold.token(), 3)
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["notify"])
        self.assertIsNone(self.hold.token())
        self.assertIsNone(self.hold.until())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_earlyTimerWaits(self) -> None:
        """
        A timer that fires before the monotonic end (clocks differ) waits
        for the rest instead of giving the lease up early.
        """
        now = [0.0]
        hold = newLeaseHold(
            HoldCore(DNS_WRITER, self.clock, lambda: now[0], lambda: self.events.append("notify"))
        )
        hold.confirmed(1, 5.0)
        now[0] = 4.0
        self.clock.advance(5)
        self.assertEqual(hold.token(), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        now[0] = 5.0
        self.clock.advance(1)
        self.assertIsNone(hold.token())

    def test_holdingExpiredInput(self) -> None:
        """
        Holding + expired -> Free: timer cancelled, notified.
        """
        self.holding()
        self.hold.expired()
        self.assertEqual(self.events, ["notify"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.hold.token())

    def test_holdingMoved(self) -> None:
        """
        Holding + moved -> Free: timer cancelled, notified; a second moved
        does nothing.
        """
        self.holding()
        self.hold.moved("the lease moved")
        self.hold.moved("the lease moved")
        self.assertEqual(self.events, ["notify"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.hold.until())

    def test_holdingReleased(self) -> None:
        """
        Holding + released -> Free: the token to release, timer cancelled,
        no notification (the keeper notifies once for all leases).
        """
        self.holding(7)
        self.assertEqual(self.hold.released(), 7)
        self.assertIsNone(self.hold.released())
        self.assertEqual(self.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.hold.token())
        self.holding(8)
        self.assertEqual(self.hold.token(), 8)
