"""
The HTTP/2 connection lifecycle machine (L{suite.specter.gateway.h2conn}):
every input in every state, the state it lends the connection, and the
idle check's timer kept as state data.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.h2conn import CLOSED, CONNECTING, ConnectionInputs, ConnectionSide, newConnection

INPUTS = [
    "opened",
    "idleTimerFired",
    "idleExpired",
    "drainStarted",
    "drained",
    "deadlineReached",
    "hungUp",
    "connectionLost",
]
STATES = ["Connecting", "Open", "GoingAway", "Closed"]


class _Side(ConnectionSide):
    """
    Records the machine's outputs; C{wait} is what C{idleWait} answers.
    """

    def __init__(self, highest: int = 7) -> None:
        self.highest = highest
        self.events: list[str] = []
        self.clock = Clock()
        self.wait: float | None = 60.0

    def highestStreamId(self) -> int:
        return self.highest

    def idleWait(self) -> float | None:
        return self.wait

    def callLater(self, delay: float, call: Callable[[], None]) -> IDelayedCall:
        self.events.append(f"idleTimer {delay:g}")
        delayed: IDelayedCall = self.clock.callLater(delay, call)
        return delayed

    def sendGoAway(self, lastStreamId: int) -> None:
        self.events.append(f"goAway {lastStreamId} {self.phase.name}")

    def terminate(self) -> None:
        self.events.append(f"terminate {self.phase.name}")

    def hangUp(self) -> None:
        self.events.append(f"hangUp {self.phase.name}")

    def release(self) -> None:
        self.events.append(f"release {self.phase.name}")


def _inState(state: str) -> tuple[_Side, ConnectionInputs]:
    side = _Side()
    machine = newConnection(side)
    if state != "Connecting":
        machine.opened()
    if state in ("GoingAway", "Closed"):
        machine.drainStarted()
    if state == "Closed":
        machine.hungUp()
    side.events.clear()
    return side, machine


_IDLE_BUSY = ["idleTimer 60"]  # idleTimerFired while the connection is busy: re-armed

#: (state, input) -> (state after, outputs, last stream id lent after)
TABLE: dict[tuple[str, str], tuple[str, list[str], int | None]] = {
    ("Connecting", "opened"): ("Open", ["idleTimer 60"], None),
    ("Connecting", "idleTimerFired"): ("Connecting", [], None),
    ("Connecting", "idleExpired"): ("Connecting", [], None),
    ("Connecting", "drainStarted"): ("Connecting", [], None),
    ("Connecting", "drained"): ("Connecting", [], None),
    ("Connecting", "deadlineReached"): ("Connecting", [], None),
    ("Connecting", "hungUp"): ("Connecting", [], None),
    ("Connecting", "connectionLost"): ("Closed", ["release Closed"], None),
    ("Open", "opened"): ("Open", [], None),
    ("Open", "idleTimerFired"): ("Open", _IDLE_BUSY, None),
    ("Open", "idleExpired"): ("Closed", ["terminate Open", "hangUp Closed"], None),
    ("Open", "drainStarted"): ("GoingAway", ["goAway 7 GoingAway"], 7),
    ("Open", "drained"): ("Open", [], None),
    # the GOAWAY goes out while the connection can still send it
    ("Open", "deadlineReached"): ("Closed", ["goAway 7 Open", "hangUp Closed"], None),
    ("Open", "hungUp"): ("Closed", ["hangUp Closed"], None),
    ("Open", "connectionLost"): ("Closed", ["release Closed"], None),
    ("GoingAway", "opened"): ("GoingAway", [], 7),
    ("GoingAway", "idleTimerFired"): ("GoingAway", _IDLE_BUSY, 7),
    ("GoingAway", "idleExpired"): ("Closed", ["terminate GoingAway", "hangUp Closed"], None),
    ("GoingAway", "drainStarted"): ("GoingAway", [], 7),
    ("GoingAway", "drained"): ("Closed", ["hangUp Closed"], None),
    ("GoingAway", "deadlineReached"): ("Closed", ["hangUp Closed"], None),
    ("GoingAway", "hungUp"): ("Closed", ["hangUp Closed"], None),
    ("GoingAway", "connectionLost"): ("Closed", ["release Closed"], None),
    ("Closed", "opened"): ("Closed", [], None),
    ("Closed", "idleTimerFired"): ("Closed", [], None),
    ("Closed", "idleExpired"): ("Closed", [], None),
    ("Closed", "drainStarted"): ("Closed", [], None),
    ("Closed", "drained"): ("Closed", [], None),
    ("Closed", "deadlineReached"): ("Closed", [], None),
    ("Closed", "hungUp"): ("Closed", [], None),
    # a connection closed here is still released when its transport goes
    ("Closed", "connectionLost"): ("Closed", ["release Closed"], None),
}


class ConnectionMachineTests(SynchronousTestCase):
    def test_everyInputInEveryState(self) -> None:
        """
        Every state answers every input: the outputs, the next state lent
        to the connection, and the idle timer (pending only while open or
        going away) are as the table says.
        """
        self.assertEqual(set(TABLE), {(s, i) for s in STATES for i in INPUTS})
        for (state, name), (after, events, lastStreamId) in TABLE.items():
            side, machine = _inState(state)
            getattr(machine, name)()
            self.assertEqual(side.events, events, (state, name))
            self.assertEqual(side.phase.name, after, (state, name))
            self.assertEqual(side.phase.lastStreamId, lastStreamId, (state, name))
            self.assertEqual(len(side.clock.getDelayedCalls()), after in ("Open", "GoingAway"), (state, name))
            self.assertIs(side.phase is CLOSED, after == "Closed")
            self.assertIs(side.phase is CONNECTING, after == "Connecting")

    def test_nextStateAnswers(self) -> None:
        """
        After each input, the machine is in the state the table names: it
        answers every further input as that state does.
        """
        for (state, name), (after, _, _) in TABLE.items():
            for probe in INPUTS:
                side, machine = _inState(state)
                getattr(machine, name)()
                side.events.clear()
                getattr(machine, probe)()
                self.assertEqual(side.events, TABLE[(after, probe)][1], (state, name, probe))

    def test_idleCheck(self) -> None:
        """
        The idle timer re-arms while the connection is busy and, once it
        is idle, closes it with GOAWAY; going away keeps the timer.
        """
        side = _Side()
        machine = newConnection(side)
        machine.opened()
        side.wait = 5.0
        side.clock.advance(60)
        machine.drainStarted()
        side.wait = None
        side.clock.advance(5)
        self.assertEqual(
            side.events,
            ["idleTimer 60", "idleTimer 5", "goAway 7 GoingAway", "terminate GoingAway", "hangUp Closed"],
        )
        self.assertIs(side.phase, CLOSED)
        self.assertEqual(side.clock.getDelayedCalls(), [])

    def test_lentPhases(self) -> None:
        """
        Each connection gets its own Open and GoingAway data, GoingAway
        naming the highest stream at the GOAWAY.
        """
        one = _Side(highest=3)
        two = _Side(highest=9)
        oneMachine = newConnection(one)
        twoMachine = newConnection(two)
        oneMachine.opened()
        twoMachine.opened()
        self.assertIsNot(one.phase, two.phase)
        oneMachine.drainStarted()
        twoMachine.drainStarted()
        self.assertEqual((one.phase.lastStreamId, two.phase.lastStreamId), (3, 9))
        two.highest = 11
        twoMachine.drainStarted()
        self.assertEqual(two.phase.lastStreamId, 9)
        oneMachine.drained()
        self.assertIs(one.phase, CLOSED)

    def test_reentrantDrained(self) -> None:
        """
        A GOAWAY whose flush finds no stream left (the connection then
        reports C{drained} from inside the output) closes the connection
        once the GOAWAY is out.
        """

        class Flushing(_Side):
            machine: ConnectionInputs

            def sendGoAway(self, lastStreamId: int) -> None:
                super().sendGoAway(lastStreamId)
                if self.phase.lastStreamId is not None:
                    self.machine.drained()

        side = Flushing()
        side.machine = newConnection(side)
        side.machine.opened()
        side.machine.drainStarted()
        self.assertEqual(side.events, ["idleTimer 60", "goAway 7 GoingAway", "hangUp Closed"])
        self.assertIs(side.phase, CLOSED)
        self.assertEqual(side.clock.getDelayedCalls(), [])
