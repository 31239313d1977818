"""
The maintenance-round machine of a vnode: one round (stabilize,
check-predecessor, fix-fingers, now and then replica repair) at a time, the
next one timed after the last ended.

Inputs (L{Rounds}): C{start}, C{due}, C{finished}, C{stop}.
States: Idle -> Waiting (its timer as state data) -> Running -> Waiting ...;
any state -> Stopped, for good.  Every state answers every input
(tests/specter/test_chord_units.py drives each input in each state): a
C{due} outside Waiting or a C{finished} outside Running is a late notice
and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

__all__ = ["Rounds", "RoundsCore", "buildRounds"]


class Rounds(Protocol):
    def start(self) -> None:
        """
        The vnode serves: time the first round.
        """

    def due(self) -> None:
        """
        The round timer fired.
        """

    def finished(self) -> None:
        """
        The running round ended (whatever its outcome).
        """

    def stop(self) -> None:
        """
        No more rounds: the vnode leaves or the process stops.
        """


@dataclass
class RoundsCore:
    """
    Collaborators: the clock, the jittered interval before the next round,
    and the round itself.
    """

    clock: Any
    interval: Callable[[], float]
    runRound: Callable[[], Deferred[Any]]


@dataclass
class Waiting:
    timer: IDelayedCall


def _waiting(r: Rounds, core: RoundsCore) -> Waiting:
    return Waiting(core.clock.callLater(core.interval(), r.due))


def _build() -> TypeMachine[Rounds, RoundsCore]:
    b = TypeMachineBuilder(Rounds, RoundsCore)
    idle = b.state("Idle")
    waiting = b.state("Waiting", _waiting)
    running = b.state("Running")
    stopped = b.state("Stopped")

    idle.upon(Rounds.start).to(waiting).returns(None)

    @waiting.upon(Rounds.due).to(running)
    def _run(r: Rounds, core: RoundsCore, data: Waiting) -> None:
        if data.timer.active():  # (due early: the timer is not needed any more)
            data.timer.cancel()
        core.runRound().addBoth(lambda _: r.finished())

    running.upon(Rounds.finished).to(waiting).returns(None)

    @waiting.upon(Rounds.stop).to(stopped)
    def _cancel(r: Rounds, core: RoundsCore, data: Waiting) -> None:
        if data.timer.active():
            data.timer.cancel()

    for s in (idle, running):
        s.upon(Rounds.stop).to(stopped).returns(None)

    # late or repeated notices: already timed, no timer, no round running
    def _ignore(r: Rounds, core: RoundsCore, data: Waiting) -> None:
        pass

    waiting.upon(Rounds.start).loop()(_ignore)
    waiting.upon(Rounds.finished).loop()(_ignore)
    for s in (running, stopped):
        s.upon(Rounds.start).loop().returns(None)
    for s in (idle, running, stopped):
        s.upon(Rounds.due).loop().returns(None)
    for s in (idle, stopped):
        s.upon(Rounds.finished).loop().returns(None)
    stopped.upon(Rounds.stop).loop().returns(None)
    return b.build()


buildRounds = _build()
"""
Factory: C{buildRounds(core)} returns a L{Rounds} in state Idle.
"""
