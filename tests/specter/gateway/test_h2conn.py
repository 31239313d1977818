"""
The HTTP/2 connection lifecycle machine (L{suite.specter.gateway.h2conn}):
every input in every state, the state it lends the connection, and the
idle check's and the grace's timers kept as state data.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.h2conn import (
    CLOSED,
    CONNECTING,
    GRACE,
    MAX_STREAM_ID,
    ConnectionInputs,
    ConnectionSide,
    newConnection,
)

INPUTS = [
    "opened",
    "idleTimerFired",
    "idleExpired",
    "drainStarted",
    "pingAcked",
    "graceElapsed",
    "drained",
    "deadlineReached",
    "hungUp",
    "connectionLost",
]
STATES = ["Connecting", "Open", "Announced", "GoingAway", "Closed"]
#: Timers pending in each state (the idle check; and the grace in Announced).
TIMERS = {"Open": 1, "Announced": 2, "GoingAway": 1}
MAX = MAX_STREAM_ID


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
        self.events.append(f"timer {delay:g}")
        delayed: IDelayedCall = self.clock.callLater(delay, call)
        return delayed

    def announceGoAway(self) -> None:
        self.events.append(f"announce {self.phase.lastStreamId} {self.phase.name}")

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
    if state in ("Announced", "GoingAway", "Closed"):
        machine.drainStarted()
    if state in ("GoingAway", "Closed"):
        machine.pingAcked()
    if state == "Closed":
        machine.hungUp()
    side.events.clear()
    return side, machine


_IDLE_BUSY = ["timer 60"]  # idleTimerFired while the connection is busy: re-armed

#: (state, input) -> (state after, outputs, last stream id lent after)
TABLE: dict[tuple[str, str], tuple[str, list[str], int | None]] = {
    ("Connecting", "opened"): ("Open", ["timer 60"], None),
    ("Connecting", "idleTimerFired"): ("Connecting", [], None),
    ("Connecting", "idleExpired"): ("Connecting", [], None),
    ("Connecting", "drainStarted"): ("Connecting", [], None),
    ("Connecting", "pingAcked"): ("Connecting", [], None),
    ("Connecting", "graceElapsed"): ("Connecting", [], None),
    ("Connecting", "drained"): ("Connecting", [], None),
    ("Connecting", "deadlineReached"): ("Connecting", [], None),
    ("Connecting", "hungUp"): ("Connecting", [], None),
    ("Connecting", "connectionLost"): ("Closed", ["release Closed"], None),
    ("Open", "opened"): ("Open", [], None),
    ("Open", "idleTimerFired"): ("Open", _IDLE_BUSY, None),
    ("Open", "idleExpired"): ("Closed", ["terminate Open", "hangUp Closed"], None),
    # the first GOAWAY (2^31-1) and the PING, the grace's timer started
    ("Open", "drainStarted"): ("Announced", ["timer 1", f"announce {MAX} Announced"], MAX),
    ("Open", "pingAcked"): ("Open", [], None),
    ("Open", "graceElapsed"): ("Open", [], None),
    ("Open", "drained"): ("Open", [], None),
    # the GOAWAY goes out while the connection can still send it
    ("Open", "deadlineReached"): ("Closed", ["goAway 7 Open", "hangUp Closed"], None),
    ("Open", "hungUp"): ("Closed", ["hangUp Closed"], None),
    ("Open", "connectionLost"): ("Closed", ["release Closed"], None),
    ("Announced", "opened"): ("Announced", [], MAX),
    ("Announced", "idleTimerFired"): ("Announced", _IDLE_BUSY, MAX),
    ("Announced", "idleExpired"): ("Closed", ["terminate Announced", "hangUp Closed"], None),
    ("Announced", "drainStarted"): ("Announced", [], MAX),
    # the final GOAWAY names the last stream taken
    ("Announced", "pingAcked"): ("GoingAway", ["goAway 7 GoingAway"], 7),
    ("Announced", "graceElapsed"): ("GoingAway", ["goAway 7 GoingAway"], 7),
    # streams may still be on their way: no close before the final GOAWAY
    ("Announced", "drained"): ("Announced", [], MAX),
    ("Announced", "deadlineReached"): ("Closed", ["goAway 7 Announced", "hangUp Closed"], None),
    ("Announced", "hungUp"): ("Closed", ["hangUp Closed"], None),
    ("Announced", "connectionLost"): ("Closed", ["release Closed"], None),
    ("GoingAway", "opened"): ("GoingAway", [], 7),
    ("GoingAway", "idleTimerFired"): ("GoingAway", _IDLE_BUSY, 7),
    ("GoingAway", "idleExpired"): ("Closed", ["terminate GoingAway", "hangUp Closed"], None),
    ("GoingAway", "drainStarted"): ("GoingAway", [], 7),
    ("GoingAway", "pingAcked"): ("GoingAway", [], 7),
    ("GoingAway", "graceElapsed"): ("GoingAway", [], 7),
    ("GoingAway", "drained"): ("Closed", ["hangUp Closed"], None),
    ("GoingAway", "deadlineReached"): ("Closed", ["hangUp Closed"], None),
    ("GoingAway", "hungUp"): ("Closed", ["hangUp Closed"], None),
    ("GoingAway", "connectionLost"): ("Closed", ["release Closed"], None),
    ("Closed", "opened"): ("Closed", [], None),
    ("Closed", "idleTimerFired"): ("Closed", [], None),
    ("Closed", "idleExpired"): ("Closed", [], None),
    ("Closed", "drainStarted"): ("Closed", [], None),
    ("Closed", "pingAcked"): ("Closed", [], None),
    ("Closed", "graceElapsed"): ("Closed", [], None),
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
        to the connection, and the timers (the idle check's while open,
        announced or going away, the grace's only while announced) are as
        the table says.
        """
        self.assertEqual(set(TABLE), {(s, i) for s in STATES for i in INPUTS})
        for (state, name), (after, events, lastStreamId) in TABLE.items():
            side, machine = _inState(state)
            getattr(machine, name)()
            self.assertEqual(side.events, events, (state, name))
            self.assertEqual(side.phase.name, after, (state, name))
            self.assertEqual(side.phase.lastStreamId, lastStreamId, (state, name))
            self.assertEqual(len(side.clock.getDelayedCalls()), TIMERS.get(after, 0), (state, name))
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
        is idle, closes it with GOAWAY; announcing and going away keep the
        timer.
        """
        side = _Side()
        machine = newConnection(side)
        machine.opened()
        side.wait = 5.0
        side.clock.advance(60)
        machine.drainStarted()
        machine.pingAcked()
        side.wait = None
        side.clock.advance(5)
        self.assertEqual(
            side.events,
            [
                "timer 60",
                "timer 5",
                "timer 1",
                f"announce {MAX} Announced",
                "goAway 7 GoingAway",
                "terminate GoingAway",
                "hangUp Closed",
            ],
        )
        self.assertIs(side.phase, CLOSED)
        self.assertEqual(side.clock.getDelayedCalls(), [])

    def test_graceBoundsTheWait(self) -> None:
        """
        Without the PING's acknowledgement, the final GOAWAY goes out
        L{GRACE} seconds after the first, naming the streams opened
        meanwhile; an acknowledgement arriving later changes nothing.
        """
        side = _Side(highest=3)
        machine = newConnection(side)
        machine.opened()
        machine.drainStarted()
        side.highest = 5  # a stream opened between the two GOAWAYs
        side.clock.advance(GRACE - 0.01)
        self.assertEqual(side.phase.name, "Announced")
        side.clock.advance(0.01)
        self.assertEqual((side.phase.name, side.phase.lastStreamId), ("GoingAway", 5))
        self.assertEqual(side.events[-1], "goAway 5 GoingAway")
        machine.pingAcked()
        self.assertEqual(side.events[-1], "goAway 5 GoingAway")
        self.assertEqual(len(side.clock.getDelayedCalls()), 1)  # the idle check only

    def test_ackCancelsGrace(self) -> None:
        """
        The PING's acknowledgement sends the final GOAWAY at once and
        cancels the grace's timer.
        """
        side = _Side()
        machine = newConnection(side)
        machine.opened()
        idle = side.phase.idleCall
        machine.drainStarted()
        grace = side.phase.graceCall
        assert grace is not None
        machine.pingAcked()
        self.assertFalse(grace.active())
        self.assertEqual(side.clock.getDelayedCalls(), [idle])
        self.assertIsNone(side.phase.graceCall)

    def test_lentPhases(self) -> None:
        """
        Each connection gets its own Open, Announced and GoingAway data,
        GoingAway naming the highest stream at the final GOAWAY.
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
        self.assertIsNot(one.phase, two.phase)
        self.assertEqual((one.phase.lastStreamId, two.phase.lastStreamId), (MAX, MAX))
        two.highest = 11
        oneMachine.pingAcked()
        twoMachine.pingAcked()
        self.assertEqual((one.phase.lastStreamId, two.phase.lastStreamId), (3, 11))
        two.highest = 13
        twoMachine.drainStarted()
        self.assertEqual(two.phase.lastStreamId, 11)
        oneMachine.drained()
        self.assertIs(one.phase, CLOSED)

    def test_reentrantDrained(self) -> None:
        """
        A GOAWAY whose flush finds no stream left (the connection then
        reports C{drained} from inside the output) keeps the connection
        while announced and closes it once the final GOAWAY is out.
        """

        class Flushing(_Side):
            machine: ConnectionInputs

            def announceGoAway(self) -> None:
                super().announceGoAway()
                self.machine.drained()

            def sendGoAway(self, lastStreamId: int) -> None:
                super().sendGoAway(lastStreamId)
                if self.phase.lastStreamId is not None:
                    self.machine.drained()

        side = Flushing()
        side.machine = newConnection(side)
        side.machine.opened()
        side.machine.drainStarted()
        self.assertEqual(side.phase.name, "Announced")
        side.machine.pingAcked()
        self.assertEqual(
            side.events,
            ["timer 60", "timer 1", f"announce {MAX} Announced", "goAway 7 GoingAway", "hangUp Closed"],
        )
        self.assertIs(side.phase, CLOSED)
        self.assertEqual(side.clock.getDelayedCalls(), [])
