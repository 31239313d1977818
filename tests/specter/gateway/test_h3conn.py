"""
The HTTP/3 connection lifecycle machine (L{suite.specter.gateway.h3conn}):
every input in every state, and the going-away data it lends the
connection.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from suite.specter.gateway.h3conn import GoingAway, H3ConnectionInputs, H3ConnectionSide, newH3Connection

INPUTS = ["opened", "drainStarted", "streamsDone", "deadlineReached", "connectionLost"]
STATES = ["Connecting", "Open", "GoingAway", "Closed"]


class _Side(H3ConnectionSide):
    """
    Records the machine's outputs; the visitor opened streams 0 and 4.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.goingAway: GoingAway | None = None
        self.next = 8

    def nextRequestStreamId(self) -> int:
        return self.next

    def lendGoingAway(self, goingAway: GoingAway) -> None:
        self.events.append(f"lend {goingAway.streamId}")
        self.goingAway = goingAway

    def sendGoAway(self) -> None:
        assert self.goingAway is not None
        self.events.append(f"goAway {self.goingAway.streamId}")

    def closeConnection(self) -> None:
        self.events.append("close")
        self.goingAway = None

    def release(self) -> None:
        self.events.append("release")
        self.goingAway = None


def _inState(state: str) -> tuple[_Side, H3ConnectionInputs]:
    side = _Side()
    machine = newH3Connection(side)
    if state != "Connecting":
        machine.opened()
    if state in ("GoingAway", "Closed"):
        machine.drainStarted()
    if state == "Closed":
        machine.streamsDone()
    side.events.clear()
    return side, machine


#: (state, input) -> (state after, outputs)
TABLE: dict[tuple[str, str], tuple[str, list[str]]] = {
    ("Connecting", "opened"): ("Open", []),
    # the gateway does not know a connection before HTTP/3 is up
    ("Connecting", "drainStarted"): ("Connecting", []),
    ("Connecting", "streamsDone"): ("Connecting", []),
    ("Connecting", "deadlineReached"): ("Connecting", []),
    ("Connecting", "connectionLost"): ("Closed", []),
    ("Open", "opened"): ("Open", []),
    ("Open", "drainStarted"): ("GoingAway", ["lend 8", "goAway 8"]),
    # only checked while going away
    ("Open", "streamsDone"): ("Open", []),
    ("Open", "deadlineReached"): ("Closed", ["close", "release"]),
    ("Open", "connectionLost"): ("Closed", ["release"]),
    ("GoingAway", "opened"): ("GoingAway", []),
    ("GoingAway", "drainStarted"): ("GoingAway", []),
    ("GoingAway", "streamsDone"): ("Closed", ["close", "release"]),
    ("GoingAway", "deadlineReached"): ("Closed", ["close", "release"]),
    ("GoingAway", "connectionLost"): ("Closed", ["release"]),
    ("Closed", "opened"): ("Closed", []),
    ("Closed", "drainStarted"): ("Closed", []),
    ("Closed", "streamsDone"): ("Closed", []),
    ("Closed", "deadlineReached"): ("Closed", []),
    ("Closed", "connectionLost"): ("Closed", []),
}


class H3ConnectionMachineTests(SynchronousTestCase):
    def test_everyInputInEveryState(self) -> None:
        """
        Every state answers every input with the outputs the table names;
        the connection holds going away's data only while going away.
        """
        self.assertEqual(set(TABLE), {(s, i) for s in STATES for i in INPUTS})
        for (state, name), (after, events) in TABLE.items():
            side, machine = _inState(state)
            getattr(machine, name)()
            self.assertEqual(side.events, events, (state, name))
            self.assertEqual(side.goingAway is not None, after == "GoingAway", (state, name))

    def test_nextStateAnswers(self) -> None:
        """
        After each input, the machine is in the state the table names: it
        answers every further input as that state does.
        """
        for (state, name), (after, _) in TABLE.items():
            for probe in INPUTS:
                side, machine = _inState(state)
                getattr(machine, name)()
                side.events.clear()
                getattr(machine, probe)()
                self.assertEqual(side.events, TABLE[(after, probe)][1], (state, name, probe))

    def test_goingAwayData(self) -> None:
        """
        The GOAWAY names the first stream not opened when the drain began;
        streams the visitor opens later do not move it.
        """
        side = _Side()
        machine = newH3Connection(side)
        machine.opened()
        machine.drainStarted()
        lent = side.goingAway
        assert lent is not None
        side.next = 16
        machine.drainStarted()
        self.assertIs(side.goingAway, lent)
        self.assertEqual((lent.streamId, lent.refused), (8, set()))

    def test_reentrantStreamsDone(self) -> None:
        """
        A GOAWAY whose send finds no request left (the connection then
        reports C{streamsDone} from inside the output) closes the
        connection once the GOAWAY is out.
        """

        class Sending(_Side):
            machine: H3ConnectionInputs

            def sendGoAway(self) -> None:
                super().sendGoAway()
                self.machine.streamsDone()

        side = Sending()
        side.machine = newH3Connection(side)
        side.machine.opened()
        side.machine.drainStarted()
        self.assertEqual(side.events, ["lend 8", "goAway 8", "close", "release"])
        self.assertIsNone(side.goingAway)
