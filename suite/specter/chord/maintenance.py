"""
Ring maintenance of a vnode: stabilize (adopt a closer successor, refresh
the successor list, notify), check-predecessor and fix-fingers, each run
once per maintenance round (L{suite.specter.chord.rounds}); the lookup
step; and the handlers for those calls.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import RING_BITS, VnodeRef, between, fingerStart, inRange, ref
from suite.specter.chord.machine import MembershipCore, Phase
from suite.specter.chord.view import RingView
from suite.specter.interfaces import IVnodePeers

__all__ = ["Maintenance", "PRED_FAILURES"]

log = Logger()
PRED_FAILURES = 2


class Maintenance:
    """
    The ring-structure procedures of one vnode (its L{RingView}) and the
    handlers of the calls peers make for theirs.

    @param membership: the vnode's membership core: a vnode that does not
        serve neither notifies its successor nor answers lookups for its
        range, and keeps the predecessor it has.
    """

    def __init__(self, view: RingView, peers: IVnodePeers, membership: MembershipCore) -> None:
        self.view = view
        self.peers = peers
        self.membership = membership
        #: the finger fixed next
        self.nextFinger = 0

    @property
    def _serving(self) -> bool:
        return self.membership.phase.serving

    async def stabilize(self) -> None:
        v = self.view
        alive = [s for s in v.succs if not self.peers.suspected(s.addr)]
        if alive and alive != v.succs:
            v.succs = alive
        #: successors found to hold no range this round (see below)
        rangeless: set[VnodeRef] = set()
        for _ in range(len(v.succs) + 1):
            s = v.succ
            if s == v.ref:
                if v.pred is not None and v.pred != v.ref:
                    v.succs = [v.pred]
                    continue
                return
            try:
                state = await self.peers.call(s, "state")
            except RemoteError as e:
                if e.code in (E.GONE, E.TIMEOUT):
                    v.dropPeer(s)
                    continue
                return
            if len(state) > 2 and not state[2]:
                # a vnode that neither serves nor knows its predecessor is
                # still joining: a restarted process's vnode answering at an
                # id that this list kept from its earlier life.  Taken as
                # our successor it would close the ring on itself (its list
                # is just itself) and every lookup past it would end at a
                # vnode that grants nothing: skip it until it has joined.
                rangeless.add(s)
                v.dropPeer(s)
                continue
            x = ref(state[0])
            theirs = [ref(t) for t in state[1]]
            if x is not None and x != v.ref and x not in rangeless and between(x.id, v.ref.id, s.id):
                v.setSuccessors([x, s] + [t for t in theirs if t is not None])
                continue
            v.setSuccessors([s] + [t for t in theirs if t is not None])
            if not self._serving:
                return
            try:
                await self.peers.call(s, "notify", list(v.ref))
            except RemoteError:
                pass
            return

    async def checkPredecessor(self) -> None:
        v = self.view
        p = v.pred
        if p is None or p == v.ref:
            return
        try:
            await self.peers.call(p, "ping")
            v.predFailures = 0
        except RemoteError as e:
            v.predFailures += 1
            if e.code == E.GONE or v.predFailures >= PRED_FAILURES:
                if v.pred == p:
                    log.info("vnode {vnode}: predecessor {pred} is gone", vnode=v.ref.short(), pred=p.short())
                    v.pred = None
                v.dropPeer(p)

    async def fixFingers(self) -> None:
        v = self.view
        for _ in range(4):
            k = self.nextFinger
            self.nextFinger = (k + 1) % RING_BITS
            start = fingerStart(v.ref.id, k)
            if inRange(start, v.ref.id, v.succ.id):
                v.fingers[k] = v.succ
                continue
            try:
                found, _ = await self.peers.findSuccessor(start, start=v.ref)
                v.fingers[k] = found
            except RemoteError:
                return

    # -- lookups ----------------------------------------------------------------
    def step(self, kid: int) -> tuple[bool, VnodeRef]:
        """
        One step of an iterative lookup: C{(True, owner)} or C{(False, next)}.

        A vnode that does not serve (joining, leaving, gone) answers no
        step: its view may be an earlier life's or empty, and whatever it
        named (itself above all) would send the lookup to a vnode that
        holds no range.  It refuses with L{E.BUSY} and, as the hint, the
        successor it knows, so the asker routes around it (see
        L{suite.specter.chord.node.ChordNode.findSuccessor}).
        """
        v = self.view
        if not self._serving:
            raise E.notServing(v.around(self.peers.suspected))
        if v.pred is not None and v.owns(kid):
            return True, v.ref
        prev = v.ref
        for s in v.succs:
            if inRange(kid, prev.id, s.id):
                return True, s
            prev = s
        best = v.ref
        suspected = self.peers.suspected
        for f in [*reversed(v.fingers), *v.succs]:
            if (
                f is not None
                and not suspected(f.addr)
                and between(f.id, v.ref.id, kid)
                and between(f.id, best.id, kid)
            ):
                best = f
        if best == v.ref:
            return True, v.succ
        return False, best

    # -- handlers (called through the node dispatcher) --------------------------
    def remote_ping(self) -> bool:
        return True

    def remote_state(self) -> list[Any]:
        v = self.view
        return [
            list(v.pred) if v.pred else None,
            [list(s) for s in v.succs],
            self._serving or v.pred is not None,
        ]

    def notified(self, c: VnodeRef) -> None:
        """
        The C{notify} call from C{c} (another vnode): it may be our
        predecessor now.
        """
        v = self.view
        if self.membership.phase in (Phase.INACTIVE, Phase.JOINING):
            # a joiner learns its predecessor from the range it is granted;
            # taken from a notify, it would tell the ring it holds a range
            # (see stabilize) while it holds none
            return
        if v.pred is None or v.pred == v.ref or between(c.id, v.pred.id, v.ref.id):
            if v.pred is not None and v.pred != v.ref and not self._serving:
                return
            v.setPredecessor(c)
            if v.succs == [v.ref]:
                v.succs = [c]

    def remote_step(self, kid: int) -> list[Any]:
        done, r = self.step(int(kid))
        return [done, list(r)]

    def remote_newSuccessor(self, candidate: Any) -> None:
        v = self.view
        c = ref(candidate)
        if c is not None and c != v.ref and (v.succ == v.ref or between(c.id, v.ref.id, v.succ.id)):
            v.setSuccessors([c] + v.succs)
