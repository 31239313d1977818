"""
The hub event-stream follower as a table (L{suite.goop.p2p.hubfollow}):
every input in every state, with the state after, the streams opened and
cancelled and the connections announced, in order, the answered-stream
count and the retry timers left; then the loop as the hub drives it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.goop.p2p.hubfollow import RETRY_SECONDS, FollowCore, FollowInputs, FollowMachine


def stateOf(inputs: FollowInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class Hub:
    """
    The streams as the machine sees them: each request is recorded
    (C{"open"}) and answered later by the test, unless the hub is down
    (the request fails at once); a cancelled stream records C{"cancel"}.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.streams: list[Deferred[Any]] = []
        self.opened: list[Callable[[], None]] = []
        self.down = False

    def openStream(self, opened: Callable[[], None]) -> Deferred[Any]:
        self.events.append("open")
        if self.down:
            return fail(ConnectionRefusedError())
        d: Deferred[Any] = Deferred(lambda d: self.events.append("cancel"))
        self.streams.append(d)
        self.opened.append(opened)
        return d

    def connected(self, again: bool) -> None:
        self.events.append("connected again" if again else "connected first")


def newFollower() -> tuple[FollowInputs, FollowCore, Hub, Clock]:
    clock = Clock()
    hub = Hub()
    core = FollowCore(clock, hub.openStream, hub.connected)
    return FollowMachine(core), core, hub, clock


#: One call of each input (the machine's whole alphabet).
CALLS: dict[str, Callable[[FollowInputs], None]] = {
    "start": lambda m: m.start(),
    "streamOpened": lambda m: m.streamOpened(),
    "streamEnded": lambda m: m.streamEnded(),
    "retryDue": lambda m: m.retryDue(),
    "stop": lambda m: m.stop(),
}


def _waiting(m: FollowInputs) -> None:
    m.start()
    m.streamEnded()


#: How to reach each state from a new machine.
PATHS: dict[str, Callable[[FollowInputs], None]] = {
    "Idle": lambda m: None,
    "Following": lambda m: m.start(),
    "Waiting": _waiting,
    "Stopped": lambda m: m.stop(),
}

#: (state, input) -> (state after, events, streams answered, retry timers).
#: Pairs not listed leave the state alone, say nothing, count nothing and
#: keep the timers (Waiting's one).  A retryDue fed in Waiting finds its
#: timer still pending (in service it is that timer firing): leaving
#: Waiting cancels it.
ANSWERS: dict[tuple[str, str], tuple[str, list[str], int, int]] = {
    ("Idle", "start"): ("Following", ["open"], 0, 0),
    ("Idle", "stop"): ("Stopped", [], 0, 0),
    ("Following", "streamOpened"): ("Following", ["connected first"], 1, 0),
    ("Following", "streamEnded"): ("Waiting", [], 0, 1),
    ("Following", "stop"): ("Stopped", ["cancel"], 0, 0),
    ("Waiting", "retryDue"): ("Following", ["open"], 0, 0),
    ("Waiting", "stop"): ("Stopped", [], 0, 0),
}


class FollowTableTests(SynchronousTestCase):
    """
    Every input in every state of the follower.
    """

    def test_alphabet(self) -> None:
        """
        The calls are the machine's whole input alphabet, the paths its
        states.
        """
        self.assertEqual(set(CALLS), {n for n in vars(FollowInputs) if not n.startswith("_")})
        reached = set()
        for path in PATHS.values():
            machine = newFollower()[0]
            path(machine)
            reached.add(stateOf(machine))
        self.assertEqual(reached, {"Idle", "Following", "Waiting", "Stopped"})

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state: the state after, the streams opened and
        cancelled and the connections announced in order, the count of
        answered streams, the retry timers pending.
        """
        for state, path in PATHS.items():
            for name, call in CALLS.items():
                machine, core, hub, clock = newFollower()
                path(machine)
                self.assertEqual(stateOf(machine), state)
                del hub.events[:]
                default: tuple[str, list[str], int, int] = (state, [], 0, 1 if state == "Waiting" else 0)
                self.assertIsNone(call(machine))
                self.assertEqual(
                    (stateOf(machine), hub.events, core.streams, len(clock.getDelayedCalls())),
                    ANSWERS.get((state, name), default),
                    f"{state} + {name}",
                )


class FollowLoopTests(SynchronousTestCase):
    """
    The loop as the streams drive it: the stream's own end and failure,
    the 2 s timer, a hub that refuses at once, stop.
    """

    def test_reconnectAfterTwoSeconds(self) -> None:
        """
        The first stream opens on start; when it ends the next is requested
        exactly 2 s later, and each stream answered after the first is
        announced as one that came back.
        """
        machine, core, hub, clock = newFollower()
        machine.start()
        hub.opened[0]()
        self.assertEqual(hub.events, ["open", "connected first"])
        clock.advance(100)
        hub.streams[0].callback(None)
        self.assertEqual(stateOf(machine), "Waiting")
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [100 + RETRY_SECONDS])
        clock.advance(RETRY_SECONDS - 0.001)
        self.assertEqual(len(hub.streams), 1)
        clock.advance(0.001)
        self.assertEqual((stateOf(machine), len(hub.streams)), ("Following", 2))
        hub.opened[1]()
        self.assertEqual(hub.events, ["open", "connected first", "open", "connected again"])
        self.assertEqual(core.streams, 2)
        # A stream that fails (a reset, a frame over the limit) is retried too.
        hub.streams[1].errback(ValueError("SSE frame too large"))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(RETRY_SECONDS)
        self.assertEqual(len(hub.streams), 3)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_hubDown(self) -> None:
        """
        A hub that refuses at once (the request fails while the machine is
        still entering Following) leaves one retry pending, every 2 s, and
        no stream is counted until one is answered.
        """
        machine, core, hub, clock = newFollower()
        hub.down = True
        machine.start()
        self.assertEqual((stateOf(machine), len(clock.getDelayedCalls())), ("Waiting", 1))
        clock.advance(RETRY_SECONDS)
        clock.advance(RETRY_SECONDS)
        self.assertEqual(hub.events, ["open"] * 3)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        hub.down = False
        clock.advance(RETRY_SECONDS)
        hub.opened[0]()
        self.assertEqual(hub.events, ["open"] * 4 + ["connected first"])
        self.assertEqual((stateOf(machine), clock.getDelayedCalls()), ("Following", []))

    def test_stopWhileFollowing(self) -> None:
        """
        Stop cancels the stream; its end (the cancellation) arrives in
        Stopped and schedules nothing.
        """
        machine, core, hub, clock = newFollower()
        machine.start()
        stream = hub.streams[0]
        machine.stop()
        self.assertEqual(hub.events, ["open", "cancel"])
        # The machine consumed the cancellation (no unhandled error left).
        self.assertIsNone(self.successResultOf(stream))
        self.assertEqual((stateOf(machine), clock.getDelayedCalls()), ("Stopped", []))
        machine.start()
        self.assertEqual(hub.events, ["open", "cancel"])

    def test_stopWhileWaiting(self) -> None:
        """
        Stop cancels the retry timer: no stream is requested after it.
        """
        machine, core, hub, clock = newFollower()
        machine.start()
        hub.streams[0].callback(None)
        machine.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertEqual((stateOf(machine), hub.events), ("Stopped", ["open"]))
