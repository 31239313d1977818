"""
The tunnel link lifecycle machine, driven by a Clock.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.tunnel.machine import Backoff, newLifecycle


class _Actions:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def connect(self) -> None:
        self.calls.append("connect")

    def register(self) -> None:
        self.calls.append("register")

    def announce(self, hostname: str) -> None:
        self.calls.append(f"announce {hostname}")

    def waitForStreams(self) -> None:
        self.calls.append("waitForStreams")

    def disconnect(self) -> None:
        self.calls.append("disconnect")


class LifecycleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.actions = _Actions()
        self.machine = newLifecycle(
            self.actions, self.clock, Backoff(initial=1.0, maximum=8.0, rng=random.Random(1))
        )

    def test_happyPath(self) -> None:
        """
        Connecting -> Registered -> Published: connect, register, announce.
        """
        m = self.machine
        m.start()
        m.connected()
        m.registered("a.example.test")
        m.published()
        self.assertEqual(self.actions.calls, ["connect", "register", "announce a.example.test"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reconnectWithBackoff(self) -> None:
        """
        Failed attempts are retried after growing, jittered delays; success
        resets the backoff.
        """
        m = self.machine
        m.start()
        delays = []
        for _ in range(4):
            m.connectionLost()
            (call,) = self.clock.getDelayedCalls()
            delays.append(call.getTime() - self.clock.seconds())
            self.clock.advance(delays[-1])
        self.assertEqual(self.actions.calls, ["connect"] * 5)
        self.assertTrue(0.5 <= delays[0] <= 1.0)
        self.assertTrue(4.0 <= delays[3] <= 8.0)
        m.connected()
        m.registered("h")
        m.connectionLost()
        (call,) = self.clock.getDelayedCalls()
        self.assertLessEqual(call.getTime() - self.clock.seconds(), 1.0)

    def test_lostWhilePublishedReconnects(self) -> None:
        """
        A published link that drops goes back to Connecting and redials.
        """
        m = self.machine
        m.start()
        m.connected()
        m.registered("h")
        m.published()
        m.connectionLost()
        self.clock.advance(10)
        m.connected()
        self.assertEqual(self.actions.calls[-2:], ["connect", "register"])

    def test_drain(self) -> None:
        """
        A move request waits for streams, then disconnects; the lost link is
        redialled later (the gateway may come back).
        """
        m = self.machine
        m.start()
        m.connected()
        m.registered("h")
        m.published()
        m.moveRequested()
        self.assertEqual(self.actions.calls[-1], "waitForStreams")
        m.drained()
        self.assertEqual(self.actions.calls[-1], "disconnect")
        m.connectionLost()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_stopCancelsTimer(self) -> None:
        """
        Stopping while waiting to reconnect cancels the timer; later events
        are ignored.
        """
        m = self.machine
        m.start()
        m.connectionLost()
        m.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        m.connectionLost()
        m.start()
        self.assertEqual(self.actions.calls, ["connect", "disconnect"])
