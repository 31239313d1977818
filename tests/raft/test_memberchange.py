"""
The membership change machine alone (L{suite.raft.memberchange}): every
input in every state, over a recording owner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.raft.memberchange import ChangeCore, ChangeInputs, MembershipChange, newMembershipChange
from suite.raft.settings import NotLeader


def stateOf(inputs: ChangeInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class Owner:
    """
    Records what the machine reports and the changes it starts; each
    change's Deferred waits in C{pending}.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.pending: list[Deferred[Any]] = []
        self.change = newMembershipChange(self.ended, self.started)

    def started(self, what: str) -> None:
        self.events.append(f"started {what}")

    def ended(self, what: str, failure: Failure | None) -> None:
        why = "ok" if failure is None else failure.getErrorMessage()
        self.events.append(f"ended {what}: {why}")

    def start(self, what: str) -> Callable[[], Deferred[Any]]:
        def go() -> Deferred[Any]:
            self.events.append(f"propose {what}")
            d: Deferred[Any] = Deferred()
            self.pending.append(d)
            return d

        return go


#: How to reach each state from a new machine.
PATHS: dict[str, tuple[Callable[[Owner], None], ...]] = {
    "Idle": (),
    "Changing": (lambda o: o.change.begin("add b", o.start("add b")),),
}

#: One call of each input (the machine's whole alphabet), returning what it
#: answered.
CALLS: dict[str, Callable[[Owner], object]] = {
    "begin": lambda o: o.change.begin("remove c", o.start("remove c")),
    "finished": lambda o: o.change.finished(None),
    "busy": lambda o: o.change.busy(),
    "last": lambda o: o.change.last(),
}

#: (state, input) -> (answer, events, new state).
EXPECTED: dict[str, dict[str, tuple[object, list[str], str]]] = {
    # nothing begun yet
    "Idle": {
        "begin": (None, ["propose remove c", "started remove c"], "Changing"),
        "finished": (None, [], "Idle"),
        "busy": (False, [], "Idle"),
        "last": ("", [], "Idle"),
    },
    # "add b" in flight
    "Changing": {
        "begin": (None, [], "Changing"),
        "finished": (None, ["ended add b: ok"], "Idle"),
        "busy": (True, [], "Changing"),
        "last": ("add b", [], "Changing"),
    },
}


def ownerIn(state: str) -> Owner:
    owner = Owner()
    for step in PATHS[state]:
        step(owner)
    assert stateOf(owner.change) == state, (state, stateOf(owner.change))
    del owner.events[:]
    return owner


class MembershipChangeTests(SynchronousTestCase):
    """
    Idle and Changing answer every input.
    """

    def test_everyInputInEveryState(self) -> None:
        """
        Every state answers every input as the table says.
        """
        self.assertEqual(set(CALLS), {n for n in dir(ChangeInputs) if not n.startswith("_")})
        self.assertEqual(set(PATHS), set(EXPECTED))
        for state in PATHS:
            for name, call in CALLS.items():
                owner = ownerIn(state)
                answer = call(owner)
                self.assertEqual(
                    (answer, owner.events, stateOf(owner.change)), EXPECTED[state][name], f"{name} in {state}"
                )

    def test_outcomeEndsTheChange(self) -> None:
        """
        The Deferred C{start} returned ends the change: committed or
        failed, the owner hears which, and the next change can begin; the
        last change begun stays known.
        """
        owner = ownerIn("Changing")
        owner.pending.pop().callback(None)
        self.assertEqual((owner.events, owner.change.busy()), (["ended add b: ok"], False))
        self.assertEqual(owner.change.last(), "add b")
        owner.change.begin("remove c", owner.start("remove c"))
        self.assertTrue(owner.change.busy())
        owner.pending.pop().errback(NotLeader(None, "no longer leader"))
        self.assertEqual(owner.events[-1], "ended remove c: not leader: no longer leader")
        self.assertEqual((stateOf(owner.change), owner.change.last()), ("Idle", "remove c"))

    def test_answeredAtOnce(self) -> None:
        """
        A change whose Deferred already fired (a node that is not the
        leader fails at once) starts, ends, and leaves the machine Idle.
        """
        owner = Owner()
        owner.change.begin("remove b", lambda: fail(NotLeader(None, "no")))
        self.assertEqual(owner.events, ["started remove b", "ended remove b: not leader: no"])
        self.assertFalse(owner.change.busy())
        owner.change.begin("add c", lambda: succeed(None))
        self.assertEqual(owner.events[2:], ["started add c", "ended add c: ok"])
        self.assertEqual((stateOf(owner.change), owner.change.last()), ("Idle", "add c"))

    def test_startedDefaults(self) -> None:
        """
        An owner that only wants the outcome gives only C{ended}.
        """
        ended: list[str] = []
        change = newMembershipChange(lambda what, f: ended.append(what))
        change.begin("x", lambda: succeed(None))
        self.assertEqual(ended, ["x"])
        self.assertEqual(stateOf(MembershipChange(ChangeCore(lambda what, f: None))), "Idle")
