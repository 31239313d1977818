"""
The re-sync machine alone (L{suite.spacecomms.resync.ResyncMachine}): every
input in every state, with its grace timer on a L{task.Clock}.  The inputs
a state does not answer are the ones it cannot receive, and the table says
why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from automat import NoTransition
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.resync import ResyncCore, ResyncInputs, ResyncMachine


def stateOf(inputs: ResyncInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class FakeNode:
    def __init__(self) -> None:
        self.clock = Clock()
        self.nodeId = "A"


class FakeLink:
    peerId = "B"


CALLS: dict[str, Callable[[ResyncInputs], object]] = {
    "started": lambda m: m.started(),
    "syncing": lambda m: m.syncing(),
    "endOfSync": lambda m: m.endOfSync(),
    "graceExpired": lambda m: m.graceExpired(),
    "sessionLost": lambda m: m.sessionLost(),
}

#: How to reach each state from a new machine.
PATHS: dict[str, tuple[str, ...]] = {
    "New": (),
    "Open": ("started",),
    "Done": ("started", "endOfSync"),
    "Gone": ("started", "sessionLost"),
}

#: (state, input) pairs the machine does not answer, and why they cannot
#: happen: the node feeds C{started} as it makes the machine, before any
#: other input, and never again; C{graceExpired} comes only from the
#: timer of Open, which leaving Open cancels.
IMPOSSIBLE = (
    {("New", name) for name in CALLS if name != "started"}
    | {(state, "started") for state in PATHS if state != "New"}
    | {("Done", "graceExpired"), ("Gone", "graceExpired")}
)

#: (state, input) -> (state after, answer, log lines, pending timers).  The
#: grace time is 5; a graceExpired fed by hand cancels the timer.
COMPLETE = "re-sync from {peer} complete ({why})"
TABLE: dict[tuple[str, str], tuple[str, object, list[tuple[str, str]], list[float]]] = {
    ("New", "started"): ("Open", None, [], [5.0]),
    ("Open", "syncing"): ("Open", True, [], [5.0]),
    ("Open", "endOfSync"): ("Done", None, [(COMPLETE, "END_OF_SYNC")], []),
    ("Open", "graceExpired"): ("Done", None, [(COMPLETE, "grace time")], []),
    ("Open", "sessionLost"): ("Gone", None, [], []),
    ("Done", "syncing"): ("Done", False, [], []),
    ("Done", "endOfSync"): ("Done", None, [], []),
    ("Done", "sessionLost"): ("Gone", None, [], []),
    ("Gone", "syncing"): ("Gone", False, [], []),
    ("Gone", "endOfSync"): ("Gone", None, [], []),
    ("Gone", "sessionLost"): ("Gone", None, [], []),
}


class ResyncMachineTests(SynchronousTestCase):
    """
    Every input in every state of the re-sync machine.
    """

    def setUp(self) -> None:
        self.lines: list[tuple[str, str]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_format") == COMPLETE:
                self.lines.append((COMPLETE, event["why"]))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def reach(self, state: str) -> tuple[ResyncInputs, Clock]:
        node = FakeNode()
        machine = ResyncMachine(ResyncCore(cast(SpaceNode, node), cast(IPeerLink, FakeLink()), 5.0))
        for step in PATHS[state]:
            CALLS[step](machine)
        self.assertEqual(stateOf(machine), state)
        del self.lines[:]
        return machine, node.clock

    def test_alphabet(self) -> None:
        """
        The calls are the machine's whole input alphabet, and the table
        with the impossible pairs covers every input in every state.
        """
        names = {n for n in vars(ResyncInputs) if not n.startswith("_")}
        self.assertEqual(set(CALLS), names)
        self.assertEqual(set(TABLE) | IMPOSSIBLE, {(s, n) for s in PATHS for n in CALLS})
        self.assertEqual(set(TABLE) & IMPOSSIBLE, set())

    def test_everyInputInEveryState(self) -> None:
        """
        Each answered input: the state after, the answer, the log line, the
        timers left.
        """
        for (state, name), (after, answer, lines, timers) in sorted(TABLE.items()):
            machine, clock = self.reach(state)
            self.assertEqual(CALLS[name](machine), answer, f"{state} + {name}")
            self.assertEqual(
                (stateOf(machine), self.lines, sorted(c.getTime() for c in clock.getDelayedCalls())),
                (after, lines, timers),
                f"{state} + {name}",
            )

    def test_impossibleInputsRefused(self) -> None:
        """
        The inputs a state cannot receive are not answered there: automat
        refuses them and the state stays.
        """
        for state, name in sorted(IMPOSSIBLE):
            machine, clock = self.reach(state)
            self.assertRaises(NoTransition, CALLS[name], machine)
            self.assertEqual((stateOf(machine), self.lines), (state, []), f"{state} + {name}")

    def test_graceTimerFeedsTheMachine(self) -> None:
        """
        The grace timer is the machine's: an open re-sync closes on its own
        after the grace time, and stays closed.
        """
        machine, clock = self.reach("Open")
        clock.advance(4.9)
        self.assertTrue(machine.syncing())
        clock.advance(0.1)
        self.assertEqual((stateOf(machine), self.lines), ("Done", [(COMPLETE, "grace time")]))
        self.assertFalse(machine.syncing())
        self.assertEqual(clock.getDelayedCalls(), [])
