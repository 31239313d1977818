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

    def finishStreams(self) -> None:
        self.calls.append("finishStreams")

    def abortStreams(self) -> None:
        self.calls.append("abortStreams")

    def disconnect(self) -> None:
        self.calls.append("disconnect")


#: How to reach each state from a new machine.
_PATHS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "Idle": [],
    "Connecting": [("start", ())],
    "Registered": [("start", ()), ("connected", ()), ("registered", ("h.example",))],
    "Published": [("start", ()), ("connected", ()), ("registered", ("h.example",)), ("published", ())],
}
_PATHS["Draining"] = _PATHS["Published"] + [("moveRequested", ())]
_PATHS["Stopping"] = _PATHS["Published"] + [("shutdown", ())]
_PATHS["Closed"] = [("stop", ())]
_INPUTS: list[tuple[str, tuple[str, ...]]] = [
    ("start", ()),
    ("connected", ()),
    ("registered", ("h.example",)),
    ("published", ()),
    ("moveRequested", ()),
    ("drained", ()),
    ("connectionLost", ()),
    ("reconnectDue", ()),
    ("shutdown", ()),
    ("stop", ()),
]


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


class EveryInputTests(SynchronousTestCase):
    """
    Every input in every state is either a transition or ignored; the
    shutdown inputs do what draining needs.
    """

    def machineIn(self, state: str) -> tuple[_Actions, Clock, object]:
        clock, actions = Clock(), _Actions()
        machine = newLifecycle(actions, clock, Backoff(initial=1.0, maximum=8.0, rng=random.Random(1)))
        for name, args in _PATHS[state]:
            getattr(machine, name)(*args)
        actions.calls.clear()
        return actions, clock, machine

    def test_everyInputInEveryState(self) -> None:
        for state in _PATHS:
            for name, args in _INPUTS:
                actions, clock, machine = self.machineIn(state)
                getattr(machine, name)(*args)  # never raises NoTransition

    def test_shutdownOutputs(self) -> None:
        expected = {
            "Idle": ["disconnect"],
            "Connecting": ["disconnect"],
            "Registered": ["finishStreams"],
            "Published": ["finishStreams"],
            "Draining": ["finishStreams"],
            "Stopping": [],
            "Closed": [],
        }
        for state, calls in expected.items():
            actions, clock, machine = self.machineIn(state)
            machine.shutdown()  # type: ignore[attr-defined]
            self.assertEqual(actions.calls, calls, state)

    def test_stoppingEnds(self) -> None:
        """
        From Stopping: drained closes cleanly, stop (grace over) resets the
        streams first, a lost link just ends; nothing is redialled.
        """
        for name, calls in (
            ("drained", ["disconnect"]),
            ("stop", ["abortStreams", "disconnect"]),
            ("connectionLost", []),
        ):
            actions, clock, machine = self.machineIn("Stopping")
            getattr(machine, name)()
            self.assertEqual(actions.calls, calls, name)
            machine.reconnectDue()  # type: ignore[attr-defined]
            machine.connectionLost()  # type: ignore[attr-defined]
            clock.advance(60)
            self.assertEqual(actions.calls, calls, name)
            self.assertEqual(clock.getDelayedCalls(), [])
