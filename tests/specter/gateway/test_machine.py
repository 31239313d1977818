"""
The client's tunnel link lifecycle machine, driven by a Clock: every input
in every state, and the paths a link takes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import Any

from automat import NoTransition
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.tunnel.machine import CLOSE_TIMEOUT, Backoff, TunnelLifecycle, newLifecycle
from suite.specter.tunnel.mux import Link, Stream


class _Actions:
    """
    Records every output; the attempt and the idle wait are Deferreds the
    test fires.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.attempt: Deferred[Any] = Deferred()
        self.idle: Deferred[None] = Deferred()

    def connect(self) -> Deferred[Any]:
        self.events.append("connect")
        self.attempt = Deferred(lambda d: self.events.append("cancelAttempt"))
        return self.attempt

    def register(self) -> None:
        self.events.append("register")

    def announce(self, hostname: str) -> None:
        self.events.append(f"announce {hostname}")

    def reportRefusal(self, reason: str) -> None:
        self.events.append(f"refusal {reason}")

    def noteMove(self) -> None:
        self.events.append("move")

    def reportLoss(self, reason: Failure) -> None:
        self.events.append("loss")

    def acceptStream(self, stream: Stream, meta: dict[str, Any]) -> None:
        self.events.append("accept")

    def refuseStream(self, stream: Stream) -> None:
        self.events.append("refuse")

    def whenIdle(self) -> Deferred[None]:
        self.events.append("whenIdle")
        self.idle = Deferred(lambda d: self.events.append("cancelIdle"))
        return self.idle

    def finishStreams(self) -> None:
        self.events.append("finish")

    def abortStreams(self) -> None:
        self.events.append("abortStreams")

    def disconnect(self) -> None:
        self.events.append("disconnect")

    def abortConnection(self) -> None:
        self.events.append("abortConnection")

    def reportClosed(self) -> None:
        self.events.append("closed")


_STREAM = Stream(Link(), 2, 1000)
_LOST = Failure(ConnectionDone())

#: How to reach each state from a new machine ("_..." steps fire the
#: Deferreds the actions handed out).
_PATHS: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    "Idle": [],
    "Dialing": [("start", ())],
    "Registering": [("start", ()), ("connected", ())],
    "BackingOff": [("start", ()), ("_dialFails", ())],
    "Closed": [("stop", ())],
}
_PATHS["Refused"] = _PATHS["Registering"] + [("errorReceived", ("no",))]
_PATHS["Registered"] = _PATHS["Registering"] + [("registered", ("h.example",))]
_PATHS["Moving"] = _PATHS["Registered"] + [("moveRequested", ())]
_PATHS["Leaving"] = _PATHS["Moving"] + [("_idleFires", ())]
_PATHS["Stopping"] = _PATHS["Registered"] + [("shutdown", ())]
_PATHS["Closing"] = _PATHS["Registered"] + [("stop", ())]

_INPUTS: list[tuple[str, tuple[Any, ...]]] = [
    ("start", ()),
    ("connected", ()),
    ("dialFailed", (Failure(ConnectionRefusedError()),)),
    ("registered", ("h.example",)),
    ("errorReceived", ("no",)),
    ("moveRequested", ()),
    ("streamOpened", (_STREAM, {})),
    ("drained", ()),
    ("connectionLost", (_LOST,)),
    ("reconnectDue", ()),
    ("closeTimedOut", ()),
    ("shutdown", ()),
    ("stop", ()),
]

#: (state, input) -> (outputs, next state); None: deliberately impossible.
_TABLE: dict[str, dict[str, tuple[list[str], str] | None]] = {
    "Idle": {
        "start": (["connect"], "Dialing"),
        "shutdown": (["closed"], "Closed"),
        "stop": (["closed"], "Closed"),
    },
    "Dialing": {
        "connected": (["register"], "Registering"),
        "dialFailed": ([], "BackingOff"),
        "shutdown": (["cancelAttempt", "closed"], "Closed"),
        "stop": (["cancelAttempt", "closed"], "Closed"),
    },
    "Registering": {
        "registered": (["announce h.example"], "Registered"),
        "errorReceived": (["refusal no"], "Refused"),
        "moveRequested": (["whenIdle", "move"], "Moving"),
        "streamOpened": (["accept"], "Registering"),
        "connectionLost": (["loss"], "BackingOff"),
        "shutdown": (["disconnect"], "Closing"),
        "stop": (["disconnect"], "Closing"),
    },
    "Refused": {
        "registered": (["announce h.example"], "Registered"),
        "errorReceived": (["refusal no"], "Refused"),
        "moveRequested": (["whenIdle", "move"], "Moving"),
        "streamOpened": (["accept"], "Refused"),
        "connectionLost": ([], "BackingOff"),
        "shutdown": (["disconnect"], "Closing"),
        "stop": (["disconnect"], "Closing"),
    },
    "Registered": {
        "registered": ([], "Registered"),
        "errorReceived": (["refusal no"], "Registered"),
        "moveRequested": (["whenIdle", "move"], "Moving"),
        "streamOpened": (["accept"], "Registered"),
        "connectionLost": ([], "BackingOff"),
        "shutdown": (["whenIdle", "finish"], "Stopping"),
        "stop": (["disconnect"], "Closing"),
    },
    "Moving": {
        "registered": ([], "Moving"),
        "errorReceived": (["refusal no"], "Moving"),
        "moveRequested": ([], "Moving"),
        "streamOpened": (["accept"], "Moving"),
        "drained": (["cancelIdle", "disconnect"], "Leaving"),
        "connectionLost": (["cancelIdle"], "BackingOff"),
        "shutdown": (["whenIdle", "cancelIdle", "finish"], "Stopping"),
        "stop": (["cancelIdle", "disconnect"], "Closing"),
    },
    "Leaving": {
        "registered": ([], "Leaving"),
        "errorReceived": (["refusal no"], "Leaving"),
        "moveRequested": ([], "Leaving"),
        "streamOpened": (["accept"], "Leaving"),
        "connectionLost": ([], "BackingOff"),
        "shutdown": ([], "Closing"),
        "stop": ([], "Closing"),
    },
    "BackingOff": {
        "reconnectDue": (["connect"], "Dialing"),
        "shutdown": (["closed"], "Closed"),
        "stop": (["closed"], "Closed"),
    },
    "Stopping": {
        "registered": ([], "Stopping"),
        "errorReceived": ([], "Stopping"),
        "moveRequested": ([], "Stopping"),
        "streamOpened": (["refuse"], "Stopping"),
        "drained": (["cancelIdle", "disconnect"], "Closing"),
        "connectionLost": (["cancelIdle", "closed"], "Closed"),
        "shutdown": ([], "Stopping"),
        "stop": (["cancelIdle", "abortStreams", "disconnect"], "Closing"),
    },
    "Closing": {
        "registered": ([], "Closing"),
        "errorReceived": ([], "Closing"),
        "moveRequested": ([], "Closing"),
        "streamOpened": (["refuse"], "Closing"),
        "connectionLost": (["closed"], "Closed"),
        "closeTimedOut": (["abortConnection"], "Closing"),
        "shutdown": ([], "Closing"),
        "stop": ([], "Closing"),
    },
    "Closed": {
        "dialFailed": ([], "Closed"),
        "shutdown": ([], "Closed"),
        "stop": ([], "Closed"),
    },
}


class _Machine:
    def __init__(self) -> None:
        self.clock = Clock()
        self.actions = _Actions()
        self.machine = newLifecycle(
            self.actions, self.clock, Backoff(initial=1.0, maximum=8.0, rng=random.Random(1))
        )

    def feed(self, name: str, args: tuple[Any, ...] = ()) -> Any:
        if name == "_dialFails":
            return self.actions.attempt.errback(Failure(ConnectionRefusedError()))
        if name == "_idleFires":
            return self.actions.idle.callback(None)
        return getattr(self.machine, name)(*args)

    def drive(self, path: list[tuple[str, tuple[Any, ...]]]) -> None:
        for name, args in path:
            self.feed(name, args)
        del self.actions.events[:]


def _inputArgs(name: str) -> tuple[Any, ...]:
    return dict(_INPUTS)[name]


def _fingerprint(make: Callable[[], _Machine]) -> list[Any]:
    """
    How a machine made by C{make} answers each input, each tried on a fresh
    one (an input it cannot take shows as "!"), and how many timers it
    holds: different states answer differently.
    """
    out: list[Any] = [len(make().clock.getDelayedCalls())]
    for name, args in _INPUTS:
        m = make()
        try:
            m.feed(name, args)
        except NoTransition:
            out.append("!")
        else:
            out.append(list(m.actions.events))
    return out


class EveryInputTests(SynchronousTestCase):
    """
    Every input in every state: the outputs it produces and the state it
    leads to, or a deliberate NoTransition.
    """

    def machineIn(self, state: str, then: tuple[str, tuple[Any, ...]] | None = None) -> _Machine:
        m = _Machine()
        m.drive(_PATHS[state] + ([then] if then else []))
        return m

    def test_tableIsComplete(self) -> None:
        """
        The table covers every state of the paths; inputs it leaves out are
        the impossible ones.
        """
        self.assertEqual(set(_TABLE), set(_PATHS))
        names = {n for n, _ in _INPUTS}
        declared = {k for k, v in vars(TunnelLifecycle).items() if callable(v) and not k.startswith("_")}
        self.assertEqual(names, declared)
        for state, row in _TABLE.items():
            self.assertLessEqual(set(row), names, state)

    def test_fingerprintsTellStatesApart(self) -> None:
        """
        Each state's fingerprint is its own (so the next test can tell
        where a transition led).
        """
        prints = {state: repr(_fingerprint(partial(self.machineIn, state))) for state in _PATHS}
        self.assertEqual(len(set(prints.values())), len(prints), prints)

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state gives the table's outputs and leads to
        its state; the others raise NoTransition and change nothing.
        """
        prints = {state: _fingerprint(partial(self.machineIn, state)) for state in _PATHS}
        for state in _PATHS:
            for name, args in _INPUTS:
                m = self.machineIn(state)
                expected = _TABLE[state].get(name)
                if expected is None:
                    self.assertRaises(NoTransition, m.feed, name, args)
                    self.assertEqual(m.actions.events, [], (state, name))
                    continue
                outputs, after = expected
                self.assertIsNone(m.feed(name, args))
                self.assertEqual(m.actions.events, outputs, (state, name))
                now = _fingerprint(partial(self.machineIn, state, (name, args)))
                self.assertEqual(now, prints[after], (state, name, after))


class LifecycleTests(SynchronousTestCase):
    """
    The paths a link takes.
    """

    def setUp(self) -> None:
        self.m = _Machine()
        self.machine = self.m.machine
        self.clock = self.m.clock
        self.actions = self.m.actions

    def test_happyPath(self) -> None:
        """
        Dial, register on connection, announce the hostname: no timer left.
        """
        self.machine.start()
        self.machine.connected()
        self.machine.registered("a.example.test")
        self.assertEqual(self.actions.events, ["connect", "register", "announce a.example.test"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reconnectWithBackoff(self) -> None:
        """
        Failed attempts are retried after growing, jittered delays (the
        reconnect timer is BackingOff's data); registration resets them.
        """
        self.machine.start()
        delays = []
        for _ in range(4):
            self.m.feed("_dialFails")
            (call,) = self.clock.getDelayedCalls()
            delays.append(call.getTime() - self.clock.seconds())
            self.clock.advance(delays[-1])
        self.assertEqual(self.actions.events, ["connect"] * 5)
        self.assertTrue(0.5 <= delays[0] <= 1.0)
        self.assertTrue(4.0 <= delays[3] <= 8.0)
        self.machine.connected()
        self.machine.registered("h")
        self.machine.connectionLost(_LOST)
        (call,) = self.clock.getDelayedCalls()
        self.assertLessEqual(call.getTime() - self.clock.seconds(), 1.0)

    def test_moveFinishesStreamsThenRedials(self) -> None:
        """
        A move waits for the last stream (a Deferred, not a poll), then
        closes; the lost link is redialled later (the gateway may return).
        """
        self.m.drive(_PATHS["Registered"])
        self.machine.moveRequested()
        self.assertEqual(self.actions.events, ["whenIdle", "move"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.actions.idle.callback(None)
        self.assertEqual(self.actions.events[-1], "disconnect")
        self.machine.connectionLost(_LOST)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_moveWithoutStreams(self) -> None:
        """
        A link that carries no stream when asked to move closes at once.
        """
        self.m.drive(_PATHS["Registered"])
        self.actions.whenIdle = lambda: succeed(None)  # type: ignore[method-assign]
        self.machine.moveRequested()
        self.assertEqual(self.actions.events, ["move", "disconnect"])

    def test_tlsLossReportedOnlyBeforeAnAnswer(self) -> None:
        """
        A link lost before the gateway said anything is reported (a TLS
        refusal shows this way); one lost after an answer is not.
        """
        self.m.drive(_PATHS["Registering"])
        self.machine.connectionLost(_LOST)
        self.assertEqual(self.actions.events, ["loss"])
        m = _Machine()
        m.drive(_PATHS["Refused"])
        m.machine.connectionLost(_LOST)
        self.assertEqual(m.actions.events, [])

    def test_shutdownFinishesStreams(self) -> None:
        """
        On shutdown a registered link tells the gateway, refuses new
        streams, and closes once its last stream ends; then it is closed
        for good (no redial).
        """
        self.m.drive(_PATHS["Registered"])
        self.machine.shutdown()
        self.machine.streamOpened(_STREAM, {})
        self.assertEqual(self.actions.events, ["whenIdle", "finish", "refuse"])
        self.actions.idle.callback(None)
        self.assertEqual(self.actions.events[-1], "disconnect")
        self.machine.connectionLost(_LOST)
        self.assertEqual(self.actions.events[-1], "closed")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopAfterGrace(self) -> None:
        """
        Streams still open when the grace period ends are reset before the
        link closes.
        """
        self.m.drive(_PATHS["Stopping"])
        self.machine.stop()
        self.assertEqual(self.actions.events, ["cancelIdle", "abortStreams", "disconnect"])

    def test_slowCloseAborted(self) -> None:
        """
        A closing link that does not close within CLOSE_TIMEOUT seconds is
        aborted; its loss ends the machine with no timer left.
        """
        self.m.drive(_PATHS["Closing"])
        self.clock.advance(CLOSE_TIMEOUT - 0.1)
        self.assertEqual(self.actions.events, [])
        self.clock.advance(0.1)
        self.assertEqual(self.actions.events, ["abortConnection"])
        self.machine.connectionLost(_LOST)
        self.assertEqual(self.actions.events, ["abortConnection", "closed"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWhileBackingOff(self) -> None:
        """
        Stopping while waiting to redial cancels the timer.
        """
        self.m.drive(_PATHS["BackingOff"])
        self.machine.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.actions.events, ["closed"])


class WhenIdleTests(SynchronousTestCase):
    """
    L{suite.specter.client.link.ClientLink.whenIdle}: the event a draining
    link waits for.
    """

    def link(self) -> Any:
        from suite.specter.client.link import ClientLink

        class Handle:
            class client:
                window = 1000
                chunk = 100

            def linkUp(self, link: Any) -> None:
                pass

            def streamOpened(self, link: Any, stream: Stream, meta: dict[str, Any]) -> None:
                pass

        link = ClientLink(Handle())  # type: ignore[arg-type]
        link.makeConnection(StringTransport())
        return link

    def test_firesWithTheLastStream(self) -> None:
        """
        Fires when the last stream ends, at once when there is none; a
        cancelled wait is forgotten.
        """
        from suite.specter.tunnel.frames import OPEN, encodeFrame

        link = self.link()
        self.successResultOf(link.whenIdle())
        link.dataReceived(encodeFrame(OPEN, 1, b"\x80") + encodeFrame(OPEN, 3, b"\x80"))
        waiting, cancelled = link.whenIdle(), link.whenIdle()
        cancelled.cancel()
        self.failureResultOf(cancelled)
        link.streams[1].reset("done")
        self.assertNoResult(waiting)
        link.streams[3].reset("done")
        self.successResultOf(waiting)
