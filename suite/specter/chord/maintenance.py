"""
Ring maintenance of a vnode, on the injected clock with jitter: stabilize
(adopt a closer successor, refresh the successor list, notify),
check-predecessor, fix-fingers and (every few rounds) replica repair; the
lookup step; and the handlers for those calls.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from suite.specter.chord import errors as E
from suite.specter.chord.base import VnodeBase
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import RING_BITS, VnodeRef, between, fingerStart, inRange, ref

__all__ = ["Maintenance", "PRED_FAILURES"]

log = Logger()
PRED_FAILURES = 2


class Maintenance(VnodeBase):
    """
    Maintenance loops and ring-structure handlers.
    """

    # -- maintenance ------------------------------------------------------------
    def _roundInterval(self) -> float:
        interval: float = self.node.config.stabilizeInterval
        return interval * (0.75 + 0.5 * self.node.rng.random())

    def _round(self) -> Any:
        return self._spawn(self._maintain(), "maintenance")

    async def _maintain(self) -> None:
        self.ticks += 1
        await self.stabilize()
        await self.checkPredecessor()
        await self.fixFingers()
        if self.ticks % self.node.config.repairEvery == 0:
            await self.replicator.repair()
        self.node.saveRingState()
        self.node.maybeProbe()

    async def stabilize(self) -> None:
        alive = [s for s in self.succs if not self.node.suspected(s.addr)]
        if alive and alive != self.succs:
            self.succs = alive
        for _ in range(len(self.succs) + 1):
            s = self.succ
            if s == self.ref:
                if self.pred is not None and self.pred != self.ref:
                    self.succs = [self.pred]
                    continue
                return
            try:
                state = await self.call(s, "state")
            except RemoteError as e:
                if e.code in (E.GONE, E.TIMEOUT):
                    self.dropPeer(s)
                    continue
                return
            x = ref(state[0])
            theirs = [ref(v) for v in state[1]]
            if x is not None and x != self.ref and between(x.id, self.ref.id, s.id):
                self.setSuccessors([x, s] + [t for t in theirs if t is not None])
                continue
            self.setSuccessors([s] + [t for t in theirs if t is not None])
            if not self.serving:
                return
            try:
                await self.call(s, "notify", list(self.ref))
            except RemoteError:
                pass
            return

    async def checkPredecessor(self) -> None:
        p = self.pred
        if p is None or p == self.ref:
            return
        try:
            await self.call(p, "ping")
            self.predFailures = 0
        except RemoteError as e:
            self.predFailures += 1
            if e.code == E.GONE or self.predFailures >= PRED_FAILURES:
                if self.pred == p:
                    log.info(
                        "vnode {vnode}: predecessor {pred} is gone", vnode=self.ref.short(), pred=p.short()
                    )
                    self.pred = None
                self.dropPeer(p)

    async def fixFingers(self) -> None:
        for _ in range(4):
            k = self.nextFinger
            self.nextFinger = (k + 1) % RING_BITS
            start = fingerStart(self.ref.id, k)
            if inRange(start, self.ref.id, self.succ.id):
                self.fingers[k] = self.succ
                continue
            try:
                found, _ = await self.node.findSuccessor(start, start=self.ref)
                self.fingers[k] = found
            except RemoteError:
                return

    # -- lookups ----------------------------------------------------------------
    def step(self, kid: int) -> tuple[bool, VnodeRef]:
        """
        One step of an iterative lookup: C{(True, owner)} or C{(False, next)}.
        """
        if self.pred is not None and self.owns(kid) and self.serving:
            return True, self.ref
        prev = self.ref
        for s in self.succs:
            if inRange(kid, prev.id, s.id):
                return True, s
            prev = s
        best = self.ref
        suspected = self.node.suspected
        for f in [*reversed(self.fingers), *self.succs]:
            if (
                f is not None
                and not suspected(f.addr)
                and between(f.id, self.ref.id, kid)
                and between(f.id, best.id, kid)
            ):
                best = f
        if best == self.ref:
            return True, self.succ
        return False, best

    # -- handlers (called through the node dispatcher) --------------------------
    def remote_ping(self) -> bool:
        return True

    def remote_state(self) -> list[Any]:
        return [
            list(self.pred) if self.pred else None,
            [list(s) for s in self.succs],
            self.serving or self.pred is not None,
        ]

    def remote_notify(self, candidate: Any) -> None:
        c = ref(candidate)
        if c is None or c == self.ref:
            return
        if c == self.pred and c in self.transferredTo:
            # only serving vnodes notify: the joiner got its range
            self.transferredTo = {}
            self.grantedBefore = None
        if self.pred is None or self.pred == self.ref or between(c.id, self.pred.id, self.ref.id):
            if self.pred is not None and self.pred != self.ref and not self.serving:
                return
            self.pred = c
            self.predFailures = 0
            if self.succs == [self.ref]:
                self.succs = [c]

    def remote_step(self, kid: int) -> list[Any]:
        done, r = self.step(int(kid))
        return [done, list(r)]

    def remote_newSuccessor(self, candidate: Any) -> None:
        c = ref(candidate)
        if (
            c is not None
            and c != self.ref
            and (self.succ == self.ref or between(c.id, self.ref.id, self.succ.id))
        ):
            self.setSuccessors([c] + self.succs)
