"""
The HTTP/2 connection lifecycle machine (L{suite.specter.gateway.h2conn}):
every input in every state, and the state it lends the connection.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.h2conn import CLOSED, OPEN, ConnectionInputs, ConnectionSide, newConnection

INPUTS = ["drainStarted", "drained", "deadlineReached", "hungUp", "connectionLost"]


class _Side(ConnectionSide):
    """
    Records the machine's outputs.
    """

    def __init__(self, highest: int = 7) -> None:
        self.highest = highest
        self.events: list[str] = []

    def highestStreamId(self) -> int:
        return self.highest

    def sendGoAway(self, lastStreamId: int) -> None:
        self.events.append(f"goAway {lastStreamId} {self.phase.name}")

    def hangUp(self) -> None:
        self.events.append(f"hangUp {self.phase.name}")

    def release(self) -> None:
        self.events.append(f"release {self.phase.name}")


def _inState(state: str) -> tuple[_Side, ConnectionInputs]:
    side = _Side()
    machine = newConnection(side)
    if state != "Open":
        machine.drainStarted()
    if state == "Closed":
        machine.hungUp()
    side.events.clear()
    return side, machine


#: (state, input) -> (state after, outputs, last stream id lent after)
TABLE: dict[tuple[str, str], tuple[str, list[str], int | None]] = {
    ("Open", "drainStarted"): ("GoingAway", ["goAway 7 GoingAway"], 7),
    ("Open", "drained"): ("Open", [], None),
    # the GOAWAY goes out while the connection can still send it
    ("Open", "deadlineReached"): ("Closed", ["goAway 7 Open", "hangUp Closed"], None),
    ("Open", "hungUp"): ("Closed", ["hangUp Closed"], None),
    ("Open", "connectionLost"): ("Closed", ["release Closed"], None),
    ("GoingAway", "drainStarted"): ("GoingAway", [], 7),
    ("GoingAway", "drained"): ("Closed", ["hangUp Closed"], None),
    ("GoingAway", "deadlineReached"): ("Closed", ["hangUp Closed"], None),
    ("GoingAway", "hungUp"): ("Closed", ["hangUp Closed"], None),
    ("GoingAway", "connectionLost"): ("Closed", ["release Closed"], None),
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
        Every state answers every input: the outputs, the next state, and
        the state lent to the connection are as the table says.
        """
        self.assertEqual(len(TABLE), 3 * len(INPUTS))
        for (state, name), (after, events, lastStreamId) in TABLE.items():
            side, machine = _inState(state)
            getattr(machine, name)()
            self.assertEqual(side.events, events, (state, name))
            self.assertEqual(side.phase.name, after, (state, name))
            self.assertEqual(side.phase.lastStreamId, lastStreamId, (state, name))
            self.assertIs(side.phase is CLOSED, after == "Closed")
            self.assertIs(side.phase is OPEN, after == "Open")

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

    def test_lentPhases(self) -> None:
        """
        Open and Closed are shared constants; GoingAway's data is the
        connection's own, naming the highest stream at the GOAWAY.
        """
        one = _Side(highest=3)
        two = _Side(highest=9)
        oneMachine = newConnection(one)
        twoMachine = newConnection(two)
        self.assertIs(one.phase, OPEN)
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
                if self.phase is not OPEN:
                    self.machine.drained()

        side = Flushing()
        side.machine = newConnection(side)
        side.machine.drainStarted()
        self.assertEqual(side.events, ["goAway 7 GoingAway", "hangUp Closed"])
        self.assertIs(side.phase, CLOSED)
