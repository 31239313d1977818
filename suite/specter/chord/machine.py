"""
The vnode membership machine.

Inputs (L{Membership}): C{start}, C{joined}, C{transferStarted},
C{transferDone}, C{leave}, C{left}, C{kvRefused}.
Outputs (L{IMembershipActions} on the core): C{beginJoin}, C{becameActive},
C{beginLeave}, C{abandonJoin}, C{becameLeft}.
States: Inactive -> Joining -> Active <-> Transferring -> Leaving -> Left;
Inactive or Joining -> Withdrawn (left before it ever served, so it still
answers "busy" rather than pointing at a successor).

Every state answers every input (tests/specter/test_chord_units.py drives
each input in each state), so no caller asks the machine which state it is
in: C{transferStarted} answers whether a transfer began (only Active starts
one) and, if not, why (busy with another transfer, not serving yet,
leaving); C{kvRefused} names the error for a KV call the vnode
does not serve.

Each state but Inactive carries its L{Phase} as state data, recorded on the
core as the state is entered (before the transition's outputs run).  Whether
the vnode serves KV calls, and whether it is gone, are read from that phase
(L{MembershipCore.phase}); nothing else sets them, and the hot path (and an
output asking while the machine runs) reads them without running the
machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.internet.defer import Deferred, succeed

from suite.specter.chord import errors as E

__all__ = [
    "Membership",
    "IMembershipActions",
    "MembershipCore",
    "Phase",
    "TransferAnswer",
    "buildMembership",
]


class Phase(Enum):
    """
    The membership state a vnode is in, as its machine entered it.
    """

    INACTIVE = "inactive"
    JOINING = "joining"
    ACTIVE = "active"
    TRANSFERRING = "transferring"
    LEAVING = "leaving"
    LEFT = "left"
    #: left before it ever served
    WITHDRAWN = "withdrawn"

    @property
    def serving(self) -> bool:
        """
        Whether KV calls are served in this phase.
        """
        return self is Phase.ACTIVE or self is Phase.TRANSFERRING

    @property
    def gone(self) -> bool:
        """
        Whether the vnode has left the ring (or withdrew before joining).
        """
        return self is Phase.LEFT or self is Phase.WITHDRAWN


class TransferAnswer(Enum):
    """
    The machine's answer to L{Membership.transferStarted}.
    """

    #: the transfer began; call C{transferDone} when it ends
    STARTED = "started"
    #: not now: another transfer is running
    BUSY = "busy"
    #: the vnode holds no range yet (or withdrew before it had one): the
    #: caller should go to the vnode that holds it instead
    NOT_SERVING = "not-serving"
    #: the vnode is leaving or has left
    LEAVING = "leaving"


class Membership(Protocol):
    def start(self) -> None:
        """
        The vnode should enter the ring.
        """

    def joined(self) -> None:
        """
        The vnode has its key range and successors.
        """

    def transferStarted(self) -> TransferAnswer:
        """
        Part of the range should be handed to or taken from a neighbour:
        L{TransferAnswer.STARTED} if that may begin now (then
        C{transferDone} must follow), else why not.
        """

    def transferDone(self) -> None:
        """
        That transfer finished.
        """

    def leave(self) -> Deferred[None]:
        """
        The vnode should hand its keys on and leave; fires once it has.
        """

    def left(self) -> None:
        """
        The keys were handed on.
        """

    def kvRefused(self) -> str:
        """
        A KV call reached a vnode that does not serve: the error code to
        answer (L{E.BUSY} before it is active, L{E.NOT_OWNER} once leaving).
        """


class IMembershipActions(Protocol):
    def beginJoin(self) -> None: ...

    def becameActive(self) -> None: ...

    def beginLeave(self) -> Deferred[None]: ...

    def abandonJoin(self) -> None: ...

    def becameLeft(self) -> None: ...

    def whenLeft(self) -> Deferred[None]: ...


@dataclass
class MembershipCore:
    """
    The machine's collaborator: the vnode that carries out the outputs, and
    the phase of the state the machine is in (written only on entering a
    state).
    """

    actions: IMembershipActions
    phase: Phase = Phase.INACTIVE


def _entering(phase: Phase) -> Callable[[Membership, MembershipCore], Phase]:
    def enter(m: Membership, core: MembershipCore) -> Phase:
        core.phase = phase
        return phase

    return enter


def _build() -> TypeMachine[Membership, MembershipCore]:
    b = TypeMachineBuilder(Membership, MembershipCore)
    inactive = b.state("Inactive")
    joining = b.state("Joining", _entering(Phase.JOINING))
    active = b.state("Active", _entering(Phase.ACTIVE))
    transferring = b.state("Transferring", _entering(Phase.TRANSFERRING))
    leaving = b.state("Leaving", _entering(Phase.LEAVING))
    left = b.state("Left", _entering(Phase.LEFT))
    withdrawn = b.state("Withdrawn", _entering(Phase.WITHDRAWN))

    # -- questions every state answers
    active.upon(Membership.transferStarted).to(transferring).returns(TransferAnswer.STARTED)
    for state, answer in (
        (inactive, TransferAnswer.NOT_SERVING),
        (joining, TransferAnswer.NOT_SERVING),
        (transferring, TransferAnswer.BUSY),
        (withdrawn, TransferAnswer.NOT_SERVING),
        (leaving, TransferAnswer.LEAVING),
        (left, TransferAnswer.LEAVING),
    ):
        state.upon(Membership.transferStarted).loop().returns(answer)
    for state, code in (
        (inactive, E.BUSY),
        (joining, E.BUSY),
        # Active and Transferring serve, so they are asked only by a call
        # that raced a state change: ask it to retry.
        (active, E.BUSY),
        (transferring, E.BUSY),
        (withdrawn, E.BUSY),
        (leaving, E.NOT_OWNER),
        (left, E.NOT_OWNER),
    ):
        state.upon(Membership.kvRefused).loop().returns(code)

    # -- the lifecycle
    @inactive.upon(Membership.start).to(joining)
    def _start(m: Membership, core: MembershipCore) -> None:
        core.actions.beginJoin()

    @joining.upon(Membership.joined).to(active)
    def _joined(m: Membership, core: MembershipCore, phase: Phase) -> None:
        core.actions.becameActive()

    transferring.upon(Membership.transferDone).to(active).returns(None)

    @active.upon(Membership.leave).to(leaving)
    def _leaveActive(m: Membership, core: MembershipCore, phase: Phase) -> Deferred[None]:
        return core.actions.beginLeave()

    @transferring.upon(Membership.leave).to(leaving)
    def _leaveTransferring(m: Membership, core: MembershipCore, phase: Phase) -> Deferred[None]:
        return core.actions.beginLeave()

    @joining.upon(Membership.leave).to(withdrawn)
    def _leaveJoining(m: Membership, core: MembershipCore, phase: Phase) -> Deferred[None]:
        core.actions.abandonJoin()
        core.actions.becameLeft()
        return succeed(None)

    @inactive.upon(Membership.leave).to(withdrawn)
    def _leaveInactive(m: Membership, core: MembershipCore) -> Deferred[None]:
        core.actions.becameLeft()
        return succeed(None)

    @leaving.upon(Membership.leave).loop()
    def _leaveAgain(m: Membership, core: MembershipCore, phase: Phase) -> Deferred[None]:
        return core.actions.whenLeft()

    def _leaveLeft(m: Membership, core: MembershipCore, phase: Phase) -> Deferred[None]:
        return succeed(None)

    left.upon(Membership.leave).loop()(_leaveLeft)
    withdrawn.upon(Membership.leave).loop()(_leaveLeft)

    @leaving.upon(Membership.left).to(left)
    def _left(m: Membership, core: MembershipCore, phase: Phase) -> None:
        core.actions.becameLeft()

    # -- late or out-of-order notices, all harmless: a transfer that ends
    # after a leave began, a join that completes after the vnode left, a
    # second start, a "left" that is not the end of a leave.
    # (one loop variable each: mypy types it by the first state's kind)
    for s1 in (joining, active, transferring, leaving, left, withdrawn):
        s1.upon(Membership.start).loop().returns(None)
    for s2 in (inactive, active, transferring, leaving, left, withdrawn):
        s2.upon(Membership.joined).loop().returns(None)
    for s3 in (inactive, joining, active, leaving, left, withdrawn):
        s3.upon(Membership.transferDone).loop().returns(None)
    for s4 in (inactive, joining, active, transferring, left, withdrawn):
        s4.upon(Membership.left).loop().returns(None)
    return b.build()


buildMembership = _build()
"""
Factory: C{buildMembership(core)} returns a L{Membership} in state Inactive.
"""
