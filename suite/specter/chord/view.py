"""
A vnode's view of its place in the ring: its predecessor, successor list and
finger table, and the questions answered from them alone (which positions it
owns, who its first successor is).  Every part of the vnode that reads or
changes the ring structure is handed the same L{RingView}.
"""

from __future__ import annotations

from collections.abc import Callable

from suite.specter.chord.ids import RING_BITS, VnodeRef, inRange

__all__ = ["RingView"]


class RingView:
    """
    The ring structure around one vnode.

    @ivar ref: the vnode itself.
    @ivar pred: its predecessor, C{None} while unknown; C{ref} when alone.
    @ivar succs: its successor list (never empty: C{[ref]} when alone).
    @ivar fingers: the finger table, C{None} where not found yet.
    @ivar predFailures: failed pings of C{pred} in a row.
    """

    def __init__(self, ref: VnodeRef, successors: int) -> None:
        self.ref = ref
        #: the longest successor list kept
        self.successors = successors
        self.pred: VnodeRef | None = None
        self.succs: list[VnodeRef] = [ref]
        self.fingers: list[VnodeRef | None] = [None] * RING_BITS
        self.predFailures = 0

    @property
    def succ(self) -> VnodeRef:
        return self.succs[0] if self.succs else self.ref

    def setPredecessor(self, pred: VnodeRef | None) -> None:
        """
        Take C{pred} as the predecessor, with no failed pings yet.
        """
        self.pred = pred
        self.predFailures = 0

    def owns(self, kid: int) -> bool:
        """
        Whether this vnode is responsible for ring position C{kid} now.
        """
        if self.pred is None:
            return False
        if self.pred == self.ref:
            return True
        return inRange(kid, self.pred.id, self.ref.id)

    def ownedRange(self) -> tuple[int, int] | None:
        if self.pred is None:
            return None
        return (self.pred.id, self.ref.id)

    def setSuccessors(self, succs: list[VnodeRef]) -> None:
        out: list[VnodeRef] = []
        for s in succs:
            if s == self.ref:
                if out:
                    # a full circle: what follows is what we would pass on
                    # ourselves, and a vnode that left would circulate there
                    # for ever (nobody's first successor, so never pinged)
                    out.append(s)
                    break
                continue
            if s not in out:
                out.append(s)
            if len(out) >= self.successors:
                break
        self.succs = out or [self.ref]

    def around(self, suspected: Callable[[str], bool]) -> VnodeRef | None:
        """
        Where a call that reached this vnode while it does not serve should
        go instead: the first successor known that is neither this vnode
        nor on a suspected process, if any.
        """
        for s in self.succs:
            if s != self.ref and not suspected(s.addr):
                return s
        return None

    def dropPeer(self, dead: VnodeRef) -> None:
        """
        Forget a vnode that failed or left.
        """
        self.succs = [s for s in self.succs if s != dead] or [self.ref]
        self.fingers = [None if f == dead else f for f in self.fingers]
