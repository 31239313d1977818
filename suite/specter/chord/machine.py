"""
The vnode membership machine.

Inputs (L{Membership}): C{start}, C{joined}, C{transferStarted},
C{transferDone}, C{leave}, C{left}, C{acceptsTransfer}.
Outputs (L{IMembershipActions} on the core): C{beginJoin}, C{becameActive},
C{beginLeave}, C{abandonJoin}, C{becameLeft}.
States: Inactive -> Joining -> Active <-> Transferring -> Leaving -> Left.

C{acceptsTransfer} is answered by every state, so no caller asks the
machine which state it is in; whether KV calls are served is a flag the
outputs set on the vnode (C{becameActive} raises it, C{beginLeave} and
C{becameLeft} lower it), so the hot path never runs the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, succeed

__all__ = ["Membership", "IMembershipActions", "MembershipCore", "buildMembership"]


class Membership(Protocol):
    def start(self) -> None:
        """
        The vnode should enter the ring.
        """

    def joined(self) -> None:
        """
        The vnode has its key range and successors.
        """

    def transferStarted(self) -> None:
        """
        Part of the range is being handed to or taken from a neighbour.
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

    def acceptsTransfer(self) -> bool:
        """
        Whether a joiner or a leaver may move a range to or from this vnode now.
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
    The machine's collaborator: the vnode that carries out the outputs.
    """

    actions: IMembershipActions


def _build() -> Any:
    b = TypeMachineBuilder(Membership, MembershipCore)
    inactive = b.state("Inactive")
    joining = b.state("Joining")
    active = b.state("Active")
    transferring = b.state("Transferring")
    leaving = b.state("Leaving")
    left = b.state("Left")

    for state, accepts in (
        (inactive, False),
        (joining, False),
        (active, True),
        (transferring, False),
        (leaving, False),
        (left, False),
    ):
        state.upon(Membership.acceptsTransfer).loop().returns(accepts)

    @inactive.upon(Membership.start).to(joining)
    def _start(m: Membership, core: MembershipCore) -> None:
        core.actions.beginJoin()

    @joining.upon(Membership.joined).to(active)
    def _joined(m: Membership, core: MembershipCore) -> None:
        core.actions.becameActive()

    active.upon(Membership.transferStarted).to(transferring).returns(None)
    transferring.upon(Membership.transferDone).to(active).returns(None)

    @active.upon(Membership.leave).to(leaving)
    def _leaveActive(m: Membership, core: MembershipCore) -> Deferred[None]:
        return core.actions.beginLeave()

    @transferring.upon(Membership.leave).to(leaving)
    def _leaveTransferring(m: Membership, core: MembershipCore) -> Deferred[None]:
        return core.actions.beginLeave()

    @joining.upon(Membership.leave).to(left)
    def _leaveJoining(m: Membership, core: MembershipCore) -> Deferred[None]:
        core.actions.abandonJoin()
        core.actions.becameLeft()
        return succeed(None)

    @inactive.upon(Membership.leave).to(left)
    def _leaveInactive(m: Membership, core: MembershipCore) -> Deferred[None]:
        core.actions.becameLeft()
        return succeed(None)

    @leaving.upon(Membership.leave).loop()
    def _leaveAgain(m: Membership, core: MembershipCore) -> Deferred[None]:
        return core.actions.whenLeft()

    @left.upon(Membership.leave).loop()
    def _leaveLeft(m: Membership, core: MembershipCore) -> Deferred[None]:
        return succeed(None)

    @leaving.upon(Membership.left).to(left)
    def _left(m: Membership, core: MembershipCore) -> None:
        core.actions.becameLeft()

    # transfers that finish after a leave began, and late notices, are harmless
    leaving.upon(Membership.transferDone).loop().returns(None)
    leaving.upon(Membership.transferStarted).loop().returns(None)
    left.upon(Membership.transferDone).loop().returns(None)
    left.upon(Membership.joined).loop().returns(None)
    leaving.upon(Membership.joined).loop().returns(None)
    for s in (joining, active, transferring, leaving, left):
        s.upon(Membership.start).loop().returns(None)
    return b.build()


buildMembership: Callable[[MembershipCore], Membership] = _build()
