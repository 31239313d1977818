"""
The state machine of one remote member, as this node sees it.

Inputs (L{MemberInputs}; the node feeds one only when the message's
incarnation qualifies, a comparison of data, never of state):
aliveNewer (an alive with a higher incarnation), suspected (at the known
incarnation), suspectedAgain (at a higher one), declaredDead,
departed (at an incarnation at least the known one), suspicionTimedOut,
removed.

Outputs (L{MemberActions} on the node, reached through L{MemberCore}):
notify (the member's new L{Member} snapshot, whose status each state's
behaviours name: the node's roster and listener learn status only from
it), rebroadcast (queue an update for gossip), newSuspicion (start a
suspicion timer).

States: Alive, Suspect (data: its L{Suspicion}), Dead, Left, Removed.

Nothing asks this machine its state: automat refuses a question asked from
inside a transition, and a listener told of one may well ask the node for
its members.  Every change of status is announced instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from suite.gossip.fields import Address
from suite.gossip.messages import Alive, Dead, Left, Suspect, Update

__all__ = [
    "Member",
    "MemberCore",
    "MemberInputs",
    "MemberActions",
    "Standing",
    "Status",
    "Suspicion",
    "newMemberMachine",
]


class Status(StrEnum):
    """
    A member's status as memberlist names it on the wire and to observers.
    """

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True)
class Standing:
    """
    A member's last announced status and the clock time it was announced.
    """

    status: Status
    since: float


@dataclass(frozen=True)
class Member:
    """
    A snapshot of one member: C{status} is C{alive}, C{suspect}, C{dead} or
    C{left}.
    """

    name: str
    address: Address
    status: str
    incarnation: int
    meta: Mapping[str, Any]


class MemberInputs(Protocol):
    def aliveNewer(self, incarnation: int, address: Address, meta: Mapping[str, Any]) -> None:
        """
        The member is alive at an incarnation higher than the known one.
        """

    def suspected(self, incarnation: int, source: str) -> None:
        """
        C{source} suspects the member at an incarnation >= the known one.
        """

    def declaredDead(self, incarnation: int, source: str) -> None:
        """
        C{source} declared the member dead at an incarnation >= the known one.
        """

    def suspectedAgain(self, incarnation: int, source: str) -> None:
        """
        C{source} suspects the member at an incarnation higher than the known
        one (it refuted an earlier suspicion and is suspected anew).
        """

    def departed(self, incarnation: int) -> None:
        """
        The member left gracefully at an incarnation >= the known one.
        """

    def suspicionTimedOut(self) -> None:
        """
        The suspicion timer ran out without a refutation.
        """

    def removed(self) -> None:
        """
        The node stops or forgets the member.
        """


class MemberActions(Protocol):
    def notify(self, event: str, member: Member) -> None: ...
    def rebroadcast(self, message: Update) -> None: ...
    def newSuspicion(self, core: MemberCore, source: str, expire: Callable[[], None]) -> Suspicion: ...


@dataclass
class MemberCore:
    """
    What the node knows about one member (its status is the machine's
    state, announced through L{MemberActions.notify}).
    """

    name: str
    address: Address
    incarnation: int
    meta: Mapping[str, Any]
    actions: MemberActions
    clock: IReactorTime | None = field(default=None, repr=False)

    def snapshot(self, status: Status) -> Member:
        """
        This member as a frozen L{Member} in C{status}.
        """
        return Member(self.name, self.address, status, self.incarnation, dict(self.meta))


class Suspicion:
    """
    Lifeguard's dynamic suspicion timeout: it starts at C{high} and falls
    towards C{low} as independent confirmations arrive (logarithmically, all
    the way once C{expected} have been seen); C{expire} runs when it ends.
    """

    def __init__(
        self,
        clock: IReactorTime,
        low: float,
        high: float,
        expected: int,
        source: str,
        expire: Callable[[], None],
        localName: str = "",
    ) -> None:
        self.clock = clock
        self.localName = localName
        self.low, self.high, self.expected = low, max(low, high), expected
        self.start = clock.seconds()
        self.confirmations: set[str] = {source}
        self._expire = expire
        self._call: IDelayedCall | None = clock.callLater(self.timeout(), self._fire)

    def timeout(self) -> float:
        """
        The whole timeout for the confirmations seen so far.
        """
        if self.expected < 1:
            return self.low
        seen = len(self.confirmations) - 1
        frac = math.log(seen + 1) / math.log(self.expected + 1)
        return max(self.low, self.high - (self.high - self.low) * frac)

    def confirm(self, source: str) -> bool:
        """
        Count C{source}'s suspicion; True if it was new (worth regossiping).
        """
        if source in self.confirmations or self._call is None:
            return False
        self.confirmations.add(source)
        remaining = max(0.0, self.start + self.timeout() - self.clock.seconds())
        self._call.cancel()
        self._call = self.clock.callLater(remaining, self._fire)
        return True

    def restart(self, source: str) -> None:
        """
        Start over: a new suspicion (at a newer incarnation) by C{source}.
        """
        self.cancel()
        self.start = self.clock.seconds()
        self.confirmations = {source}
        self._call = self.clock.callLater(self.timeout(), self._fire)

    def _fire(self) -> None:
        self._call = None
        self._expire()

    def cancel(self) -> None:
        """
        Stop the timer (the member refuted, died, left or was removed).
        """
        if self._call is not None:
            self._call.cancel()
            self._call = None


def _build() -> TypeMachine[MemberInputs, MemberCore]:
    b = TypeMachineBuilder(MemberInputs, MemberCore)
    alive = b.state("Alive")

    def suspicionData(inputs: MemberInputs, core: MemberCore, incarnation: int, source: str) -> Suspicion:
        return core.actions.newSuspicion(core, source, inputs.suspicionTimedOut)

    suspect = b.state("Suspect", suspicionData)
    dead = b.state("Dead")
    left = b.state("Left")
    removedState = b.state("Removed")

    def _alive(core: MemberCore, incarnation: int, address: Address, meta: Mapping[str, Any]) -> bool:
        changed = address != core.address or dict(meta) != dict(core.meta)
        core.incarnation, core.address, core.meta = incarnation, address, dict(meta)
        core.actions.rebroadcast(Alive(core.name, incarnation, address, dict(meta)))
        return changed

    def updateAlive(
        inputs: MemberInputs, core: MemberCore, incarnation: int, address: Address, meta: Mapping[str, Any]
    ) -> None:
        if _alive(core, incarnation, address, meta):
            core.actions.notify("updated", core.snapshot(Status.ALIVE))

    def refuted(
        inputs: MemberInputs,
        core: MemberCore,
        suspicion: Suspicion,
        incarnation: int,
        address: Address,
        meta: Mapping[str, Any],
    ) -> None:
        suspicion.cancel()
        _alive(core, incarnation, address, meta)
        core.actions.notify("updated", core.snapshot(Status.ALIVE))

    def rejoined(
        inputs: MemberInputs,
        core: MemberCore,
        incarnation: int,
        address: Address,
        meta: Mapping[str, Any],
    ) -> None:
        _alive(core, incarnation, address, meta)
        core.actions.notify("joined", core.snapshot(Status.ALIVE))

    def becomeSuspect(inputs: MemberInputs, core: MemberCore, incarnation: int, source: str) -> None:
        core.incarnation = incarnation
        core.actions.rebroadcast(Suspect(core.name, incarnation, source))
        core.actions.notify("suspect", core.snapshot(Status.SUSPECT))

    def confirmSuspect(
        inputs: MemberInputs, core: MemberCore, suspicion: Suspicion, incarnation: int, source: str
    ) -> None:
        if suspicion.confirm(source):
            core.actions.rebroadcast(Suspect(core.name, core.incarnation, source))

    def becomeDead(inputs: MemberInputs, core: MemberCore, incarnation: int, source: str) -> None:
        core.incarnation = incarnation
        core.actions.rebroadcast(Dead(core.name, incarnation, source))
        core.actions.notify("dead", core.snapshot(Status.DEAD))

    def suspectToDead(
        inputs: MemberInputs, core: MemberCore, suspicion: Suspicion, incarnation: int, source: str
    ) -> None:
        suspicion.cancel()
        becomeDead(inputs, core, incarnation, source)

    def timedOut(inputs: MemberInputs, core: MemberCore, suspicion: Suspicion) -> None:
        core.actions.rebroadcast(Dead(core.name, core.incarnation, suspicion.localName))
        core.actions.notify("dead", core.snapshot(Status.DEAD))

    def becomeLeft(inputs: MemberInputs, core: MemberCore, incarnation: int) -> None:
        core.incarnation = incarnation
        core.actions.rebroadcast(Left(core.name, incarnation))
        core.actions.notify("left", core.snapshot(Status.LEFT))

    def suspectToLeft(inputs: MemberInputs, core: MemberCore, suspicion: Suspicion, incarnation: int) -> None:
        suspicion.cancel()
        becomeLeft(inputs, core, incarnation)

    def ignore(inputs: MemberInputs, core: MemberCore, *args: Any, **kwargs: Any) -> None:
        pass

    def removeSuspect(inputs: MemberInputs, core: MemberCore, suspicion: Suspicion) -> None:
        suspicion.cancel()

    def restartSuspicion(
        inputs: MemberInputs, core: MemberCore, suspicion: Suspicion, incarnation: int, source: str
    ) -> None:
        suspicion.restart(source)
        core.incarnation = incarnation
        core.actions.rebroadcast(Suspect(core.name, incarnation, source))
        core.actions.notify("suspect", core.snapshot(Status.SUSPECT))

    # Alive
    alive.upon(MemberInputs.aliveNewer).loop()(updateAlive)
    alive.upon(MemberInputs.suspected).to(suspect)(becomeSuspect)
    alive.upon(MemberInputs.suspectedAgain).to(suspect)(becomeSuspect)
    alive.upon(MemberInputs.declaredDead).to(dead)(becomeDead)
    alive.upon(MemberInputs.departed).to(left)(becomeLeft)
    alive.upon(MemberInputs.suspicionTimedOut).loop()(ignore)
    alive.upon(MemberInputs.removed).to(removedState)(ignore)

    # Suspect
    suspect.upon(MemberInputs.aliveNewer).to(alive)(refuted)
    suspect.upon(MemberInputs.suspected).loop()(confirmSuspect)
    suspect.upon(MemberInputs.suspectedAgain).loop()(restartSuspicion)
    suspect.upon(MemberInputs.declaredDead).to(dead)(suspectToDead)
    suspect.upon(MemberInputs.departed).to(left)(suspectToLeft)
    suspect.upon(MemberInputs.suspicionTimedOut).to(dead)(timedOut)
    suspect.upon(MemberInputs.removed).to(removedState)(removeSuspect)

    # Dead and Left: only a newer alive (a restart or a refutation) brings
    # the member back; a leave after a death is still worth recording.
    for gone in (dead, left):
        gone.upon(MemberInputs.aliveNewer).to(alive)(rejoined)
        gone.upon(MemberInputs.suspected).loop()(ignore)
        gone.upon(MemberInputs.suspectedAgain).loop()(ignore)
        gone.upon(MemberInputs.declaredDead).loop()(ignore)
        gone.upon(MemberInputs.suspicionTimedOut).loop()(ignore)
        gone.upon(MemberInputs.removed).to(removedState)(ignore)
    dead.upon(MemberInputs.departed).to(left)(becomeLeft)
    left.upon(MemberInputs.departed).loop()(ignore)

    # Removed
    removedState.upon(MemberInputs.aliveNewer).loop()(ignore)
    removedState.upon(MemberInputs.suspected).loop()(ignore)
    removedState.upon(MemberInputs.suspectedAgain).loop()(ignore)
    removedState.upon(MemberInputs.declaredDead).loop()(ignore)
    removedState.upon(MemberInputs.departed).loop()(ignore)
    removedState.upon(MemberInputs.suspicionTimedOut).loop()(ignore)
    removedState.upon(MemberInputs.removed).loop()(ignore)

    return b.build()


MemberMachine = _build()
"""
Factory: C{MemberMachine(core)} returns a L{MemberInputs} in state Alive.
"""


def newMemberMachine(core: MemberCore) -> MemberInputs:
    """
    A machine for a member first heard of as alive.
    """
    return MemberMachine(core)
