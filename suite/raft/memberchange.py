"""
The membership change a group's owner has in flight: one at a time.

A daemon that drives a Raft group's membership (constellation's agent
following gossip, CEPtra's partitions following placements) proposes one
change, waits for it to commit or fail, then decides the next.  The
change in flight is this machine's state, not a Deferred kept beside the
daemon's own state.

States: C{Idle}; C{Changing} (data: L{Changing}, the description of the
change in flight).  Inputs (L{ChangeInputs}): C{begin(what, start)} in
C{Idle} calls C{start()} (which proposes the change on the node and
returns its Deferred) and goes to C{Changing}, in C{Changing} it is
ignored; C{finished(failure)} (fired by that Deferred) goes back to
C{Idle}, in C{Idle} it is ignored; the questions C{busy()} and C{last()}
are answered in both states.  Outputs: the owner's C{started} and C{ended}
callbacks (L{ChangeCore}), where it logs in its own words.

What a change is (a node's C{changeMembership(...)}, with or without a
placement epoch, or a leadership transfer before leaving) is the owner's:
the machine only keeps one in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = ["ChangeCore", "ChangeInputs", "Changing", "MembershipChange", "newMembershipChange"]


class ChangeInputs(Protocol):
    def begin(self, what: str, start: Callable[[], Deferred[Any]]) -> None:
        """
        Propose the change described by C{what}: C{start()} proposes it and
        returns a Deferred that fires when it committed or failed.  Ignored
        while a change is in flight (callers ask L{busy} first).
        """

    def finished(self, failure: Failure | None) -> None:
        """
        The change in flight committed (C{failure} None) or failed.
        """

    def busy(self) -> bool:
        """
        Whether a change is in flight.
        """

    def last(self) -> str:
        """
        The description of the change begun last (in flight or ended), or
        C{""} if none was.
        """


def _nothing(what: str) -> None:
    pass


@dataclass
class ChangeCore:
    """
    What the machine reports to its owner, and the last change begun.

    @ivar started: called with the description once a change is proposed.
    @ivar ended: called with the description and C{None} (committed) or the
        failure once it ends.
    @ivar lastChange: the description of the change begun last (written by
        the machine only).
    """

    ended: Callable[[str, Failure | None], None]
    started: Callable[[str], None] = _nothing
    lastChange: str = ""


@dataclass
class Changing:
    """
    The state data of C{Changing}: what is being changed.
    """

    what: str


def _build() -> TypeMachine[ChangeInputs, ChangeCore]:
    b = TypeMachineBuilder(ChangeInputs, ChangeCore)
    idle = b.state("Idle")

    def changing_(
        inputs: ChangeInputs, core: ChangeCore, what: str, start: Callable[[], Deferred[Any]]
    ) -> Changing:
        return Changing(what)

    changing = b.state("Changing", changing_)

    @idle.upon(ChangeInputs.begin).to(changing)
    def propose(
        inputs: ChangeInputs, core: ChangeCore, what: str, start: Callable[[], Deferred[Any]]
    ) -> None:
        core.lastChange = what
        d = start()
        core.started(what)
        # A Deferred that already fired delivers finished after this
        # transition (automat queues inputs made during one).
        d.addCallbacks(lambda _: inputs.finished(None), inputs.finished)

    @changing.upon(ChangeInputs.finished).to(idle)
    def done(inputs: ChangeInputs, core: ChangeCore, data: Changing, failure: Failure | None) -> None:
        core.ended(data.what, failure)

    # One change at a time.
    changing.upon(ChangeInputs.begin).loop().returns(None)
    # Nothing in flight: a finished has nothing to end.
    idle.upon(ChangeInputs.finished).loop().returns(None)

    idle.upon(ChangeInputs.busy).loop().returns(False)
    changing.upon(ChangeInputs.busy).loop().returns(True)

    @idle.upon(ChangeInputs.last).loop()
    def idleLast(inputs: ChangeInputs, core: ChangeCore) -> str:
        return core.lastChange

    @changing.upon(ChangeInputs.last).loop()
    def changingLast(inputs: ChangeInputs, core: ChangeCore, data: Changing) -> str:
        return data.what

    return b.build()


#: The machine: C{MembershipChange(ChangeCore(...))} -> L{ChangeInputs}.
MembershipChange = _build()


def newMembershipChange(
    ended: Callable[[str, Failure | None], None], started: Callable[[str], None] = _nothing
) -> ChangeInputs:
    """
    A membership change machine, C{Idle}, reporting to C{started} and C{ended}.
    """
    return MembershipChange(ChangeCore(ended, started))
