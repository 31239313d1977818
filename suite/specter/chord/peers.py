"""
A vnode's calls into the ring, made through its process (L{RingNode}, which
L{suite.specter.chord.node.ChordNode} is): calls to other vnodes, which stop
once the vnode has left, and iterative lookups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef
from suite.specter.chord.machine import MembershipCore
from suite.specter.interfaces import IVnodePeers

if TYPE_CHECKING:
    from suite.specter.chord.vnode import Vnode

__all__ = ["Peers", "RingNode"]


class RingNode(Protocol):
    """
    What a vnode's calls into the ring use of its process: a structural
    type, which L{suite.specter.chord.node.ChordNode} satisfies without
    declaring it.
    """

    def call(self, target: VnodeRef, method: str, *args: Any) -> Deferred[Any]: ...

    async def findSuccessor(self, kid: int, start: VnodeRef | None = None) -> tuple[VnodeRef, int]: ...

    async def entryPoint(self, seed: str | None, exclude: Vnode | None = None) -> VnodeRef: ...

    def suspected(self, addr: str) -> bool: ...


@implementer(IVnodePeers)
class Peers:
    """
    The calls of one vnode (C{owner}) to the rest of the ring.

    @param membership: the owner's membership core: once it is gone, calls
        fail with L{E.GONE} without leaving the process.
    """

    def __init__(self, node: RingNode, membership: MembershipCore, owner: Vnode) -> None:
        self.node = node
        self.membership = membership
        self.owner = owner

    def call(self, target: VnodeRef, method: str, *args: Any) -> Deferred[Any]:
        if self.membership.phase.gone:
            # a maintenance round still running when the vnode left must not
            # touch the ring any more (a late notify would resurrect it)
            return fail(RemoteError(E.GONE, "this vnode left"))
        return self.node.call(target, method, *args)

    async def findSuccessor(self, kid: int, start: VnodeRef | None = None) -> tuple[VnodeRef, int]:
        """
        Iterative lookup of the vnode responsible for C{kid}.
        """
        return await self.node.findSuccessor(kid, start=start)

    async def entryPoint(self, seed: str | None) -> VnodeRef:
        """
        A serving vnode to start a lookup from: another one of this process,
        else one learnt from the ring, else one found through C{seed}.
        """
        return await self.node.entryPoint(seed, exclude=self.owner)

    def suspected(self, addr: str) -> bool:
        """
        Whether calls to C{addr} timed out lately.
        """
        return self.node.suspected(addr)
