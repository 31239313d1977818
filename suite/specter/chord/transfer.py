"""
Key transfer: a joining vnode takes its range from its successor; a leaving
one hands its range (in chunks) to its successor and tells its predecessor;
and the handlers for those calls and for replica copies.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from suite.specter.chord import errors as E
from suite.specter.chord.base import records as _records
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import RING_BITS, VnodeRef, between, ref
from suite.specter.chord.machine import TransferAnswer
from suite.specter.chord.reconcile import RECORD_BUDGET, Reconcile, chunked

__all__ = ["Transfer", "HANDOFF_CHUNK"]

log = Logger()
HANDOFF_CHUNK = 4096


class Transfer(Reconcile):
    """
    Join, leave and range handlers.
    """

    async def _join(self) -> None:
        attempt = 0
        target: VnodeRef | None = None
        while True:
            if self.node.founding and self.node.firstVnode() is self:
                self.pred = self.ref
                self.succs = [self.ref]
                self.membership.joined()
                return
            try:
                if target is None:
                    # the successor of the point just past us: never ourselves
                    entry = await self.node.entryPoint(self.seed, exclude=self)
                    target, _ = await self.node.findSuccessor(
                        (self.ref.id + 1) % (1 << RING_BITS), start=entry
                    )
                    if target == self.ref:
                        target = None
                        raise RemoteError(E.BUSY, "lookup returned the joiner")
                answer = await self.call(target, "join", list(self.ref))
                records = _records(answer[0])
                oldPred = ref(answer[1])
                succs = [ref(s) for s in answer[2]]
                older = ref(answer[3]) if len(answer) > 3 else None
                # merged by version with what an earlier life of this vnode
                # kept on disk: after a whole-ring restart that copy may be
                # the only one, and after a ring founded apart (--bootstrap)
                # either side may hold the newer write
                await self.store.importRecords(records)
                self.pred = oldPred
                if oldPred is not None and older is not None:
                    # our predecessor may still be joining: let its retry find us
                    self.transferredTo = {oldPred: older}
                    self.grantedBefore = None
                self.setSuccessors([target] + [s for s in succs if s is not None])
                log.info(
                    "vnode {vnode} joined before {succ} taking {count} records",
                    vnode=self.ref.short(),
                    succ=target.short(),
                    count=len(records),
                )
                self.membership.joined()
                if oldPred is not None and oldPred != target:
                    self.call(oldPred, "newSuccessor", list(self.ref)).addErrback(lambda _: None)
                # what this directory holds outside the new range goes to its owners
                self._spawn(self._rehome(), "re-homing")
                return
            except RemoteError as e:
                # after a timeout ask the same successor again: it may have
                # switched its predecessor to us already and will resend
                if e.code != E.TIMEOUT:
                    target = None
                if not e.retryable and e.code != E.NOT_IN_RING:  # that one the node reports
                    log.warn(
                        "vnode {vnode} join attempt failed: {error}", vnode=self.ref.short(), error=str(e)
                    )
            attempt += 1
            await self._sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)) * (0.5 + self.node.rng.random()))

    async def _leave(self) -> None:
        self.rounds.stop()
        timeouts = 0
        stalledSince: float | None = None
        for _attempt in range(2_000):
            rng = self.ownedRange()
            target = self.succ
            if target == self.ref or rng is None:
                break
            try:
                records = await self.store.exportRange(*rng)
                for chunk in chunked(records, RECORD_BUDGET, HANDOFF_CHUNK):
                    await self.call(target, "replicate", chunk)
                await self.call(target, "handoff", list(self.ref), list(self.pred) if self.pred else None)
                log.info(
                    "vnode {vnode} handed its range to {succ}", vnode=self.ref.short(), succ=target.short()
                )
                if self.pred is not None and self.pred != self.ref:
                    self.call(self.pred, "leaving", list(self.ref), [list(s) for s in self.succs]).addErrback(
                        lambda _: None
                    )
                break
            except RemoteError as e:
                if e.code == E.TIMEOUT:
                    timeouts += 1
                if e.code == E.GONE or timeouts >= 3:
                    timeouts = 0
                    self.dropPeer(target)
                    if self.succs == [self.ref]:
                        await self._refreshSuccessors()
                elif e.code == E.LEAVING:
                    now = self.clock.seconds()
                    stalledSince = now if stalledSince is None else stalledSince
                    if now - stalledSince > self.node.config.leaveStall:
                        log.warn(
                            "vnode {vnode}: successors are all leaving; its keys stay on disk",
                            vnode=self.ref.short(),
                        )
                        break
                    await self._sleep(0.05 + 0.2 * self.node.rng.random())
                elif e.code == E.NOT_OWNER:
                    await self.stabilize()
                    await self._sleep(0.05 + 0.2 * self.node.rng.random())
                else:
                    await self._sleep(0.05 + 0.2 * self.node.rng.random())
        self.membership.left()

    async def _refreshSuccessors(self) -> None:
        try:
            entry = await self.node.entryPoint(None, exclude=self)
            s, _ = await self.node.findSuccessor((self.ref.id + 1) % (1 << RING_BITS), start=entry)
            if s != self.ref:
                self.succs = [s]
        except RemoteError:
            await self._sleep(0.2)

    def remote_leaving(self, who: Any, theirSuccs: Any) -> None:
        w = ref(who)
        if w is None:
            return
        rest = [r for r in (ref(s) for s in theirSuccs) if r is not None and r != w]
        self.dropPeer(w)
        if rest:
            self.setSuccessors(
                [s for s in self.succs if s != self.ref] + rest if self.succs != [self.ref] else rest
            )
            self.succs.sort(key=lambda s: (s.id - self.ref.id) % (1 << RING_BITS) or (1 << RING_BITS))

    async def remote_join(self, joiner: Any) -> list[Any]:
        j = ref(joiner)
        if j is None or j == self.ref:
            raise RemoteError(E.BAD_REQUEST, "bad joiner")
        retried = self.pred == j and j in self.transferredTo
        # the machine answers whether the export may begin; when it does,
        # transferDone must follow whatever happens
        started = self.membership.transferStarted() is TransferAnswer.STARTED
        try:
            return await self._grant(j, retried, started)
        finally:
            if started:
                self.membership.transferDone()

    async def _grant(self, j: VnodeRef, retried: bool, started: bool) -> list[Any]:
        if retried:
            # the range is already granted to this joiner; only the answer
            # was lost.  Its first export may still be running (off-thread,
            # so the vnode is Transferring and did not start a second
            # transfer): resend the range.
            old = self.transferredTo[j]
            older = self.grantedBefore
        else:
            if not started:
                raise RemoteError(E.BUSY, "not accepting transfers now")
            if self.pred is None:
                raise RemoteError(E.BUSY, "predecessor unknown")
            if self.pred != self.ref and not between(j.id, self.pred.id, self.ref.id):
                raise RemoteError(E.NOT_OWNER, "joiner is not in my range", self.pred)
            old = self.pred
            # when our predecessor is a joiner we granted a range to, its
            # answer may have been lost and our new predecessor stands in
            # its way: the new one gets that range too, and can answer the
            # earlier joiner's retry (see _join)
            older = self.transferredTo.get(old) if old != self.ref else None
            self.pred = j
            self.transferredTo = {j: old}
            self.grantedBefore = older
        low = older if older is not None else old
        records = (
            await self.store.exportRange(low.id, j.id)
            if old != self.ref
            else await self.store.exportRange(self.ref.id, j.id)
        )
        if self.succs == [self.ref]:
            self.succs = [j]
        return [
            records,
            list(old),
            [list(self.ref)] + [list(s) for s in self.succs],
            list(older) if older is not None else None,
        ]

    async def remote_handoff(self, leaver: Any, newPred: Any) -> None:
        w, p = ref(leaver), ref(newPred)
        if w is None:
            raise RemoteError(E.BAD_REQUEST, "bad leaver")
        answer = self.membership.transferStarted()
        if answer is TransferAnswer.LEAVING:
            raise RemoteError(E.LEAVING, "leaving too")
        if answer is not TransferAnswer.STARTED:
            raise RemoteError(E.BUSY, "not accepting transfers now")
        try:
            if self.pred not in (None, w) and not between(w.id, self.pred.id, self.ref.id):
                raise RemoteError(E.NOT_OWNER, "leaver is not my predecessor", self.pred)
            if p is None or p == w:
                self.pred = None
            else:
                self.pred = p
            self.predFailures = 0
            self.dropPeer(w)
        finally:
            self.membership.transferDone()

    async def remote_replicate(self, records: Any) -> None:
        await self.store.importRecords(_records(records))

    async def remote_digest(self, low: int, high: int, buckets: int = 1) -> list[list[int]]:
        buckets = max(1, min(256, int(buckets)))
        return [list(b) for b in await self.store.digestRange(int(low), int(high), buckets)]

    async def remote_syncRange(self, low: int, high: int, records: Any) -> None:
        # repair from a peer without versions: merged, never dropping a newer write
        await self.store.importRecords(_records(records))
