"""
Tests for L{suite.fsm}: an indexed machine behaves exactly as automat's own
lookup, in every state for every input.  It relies on automat internals
(the automaton attribute, C{allTransitions}, C{outputForInput}); these tests
fail when an automat upgrade changes them.
"""

from __future__ import annotations

from typing import Protocol

from automat import NoTransition, TypeMachineBuilder
from twisted.trial.unittest import SynchronousTestCase

from suite.fsm import indexed


class Door(Protocol):
    def open(self) -> str: ...
    def close(self) -> str: ...
    def lock(self) -> str: ...


class Core:
    def __init__(self) -> None:
        self.log: list[str] = []


def build(withIndex: bool) -> object:
    b = TypeMachineBuilder(Door, Core)
    closed = b.state("closed")
    opened = b.state("opened")
    locked = b.state("locked")

    @closed.upon(Door.open).to(opened)
    def opening(door: Door, core: Core) -> str:
        core.log.append("opening")
        return "opened"

    @opened.upon(Door.close).to(closed)
    def closing(door: Door, core: Core) -> str:
        core.log.append("closing")
        return "closed"

    @closed.upon(Door.lock).to(locked)
    def locking(door: Door, core: Core) -> str:
        core.log.append("locking")
        return "locked"

    @locked.upon(Door.open).to(locked)
    def refusing(door: Door, core: Core) -> str:
        core.log.append("refusing")
        return "still locked"

    machine = b.build()
    return indexed(machine) if withIndex else machine


PATHS = [
    [],
    ["open"],
    ["lock"],
    ["open", "close"],
    ["lock", "open"],
]
INPUTS = ["open", "close", "lock"]


def drive(withIndex: bool, path: list[str], last: str) -> tuple[list[str], str, list[str]]:
    """
    Follow C{path} then send C{last}: the answers, how C{last} went, the
    outputs run.
    """
    factory = build(withIndex)
    core = Core()
    door = factory(core)  # type: ignore[operator]  # a built TypeMachine is callable
    answers = [getattr(door, name)() for name in path]
    try:
        outcome = getattr(door, last)()
    except NoTransition:
        outcome = "NoTransition"
    return answers, outcome, core.log


class IndexedTests(SynchronousTestCase):
    def test_sameAsAutomat(self) -> None:
        """
        Every input in every state: same answers, same outputs, and
        C{NoTransition} where automat raises it.
        """
        seen = set()
        for path in PATHS:
            for last in INPUTS:
                expected = drive(False, path, last)
                self.assertEqual(drive(True, path, last), expected, (path, last))
                seen.add(expected[1])
        self.assertIn("NoTransition", seen)
        self.assertIn("still locked", seen)

    def test_tableInstalled(self) -> None:
        """
        L{indexed} replaces the automaton's lookup (and only the indexed
        machine's).
        """
        plain = build(False).__automat_automaton__  # type: ignore[attr-defined]
        table = build(True).__automat_automaton__  # type: ignore[attr-defined]
        self.assertNotIn("outputForInput", vars(plain))
        self.assertIn("outputForInput", vars(table))
