"""
Key transfer: a joining vnode takes its range from its successor; a leaving
one hands its range (in chunks) to its successor and tells its predecessor;
and the handlers for those calls.  Whether a transfer may begin is the
membership machine's answer (L{Membership.transferStarted}).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from suite.specter.chord import errors as E
from suite.specter.chord.base import records as _records
from suite.specter.chord.base import sleep
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import RING_BITS, VnodeRef, between, ref
from suite.specter.chord.machine import Membership, TransferAnswer
from suite.specter.chord.reconcile import RECORD_BUDGET, chunked
from suite.specter.chord.view import RingView
from suite.specter.interfaces import IVnodePeers

__all__ = ["Handoff", "HANDOFF_CHUNK"]

log = Logger()
HANDOFF_CHUNK = 4096


class Handoff:
    """
    Join, leave and the range handlers of one vnode.

    @param founds: whether this vnode founds the ring (rather than joining
        through a peer); asked at each attempt, as the process may decide
        to re-form its ring meanwhile.
    @param stabilize: refresh the successor list (when a hand-off reached a
        vnode that does not own the range).
    @param rehome: start offering the records held outside the new range
        to their owners (once joined through a peer).
    @param leaveStall: seconds a leave waits for successors that are all
        leaving before it gives up handing its keys on.
    """

    def __init__(
        self,
        view: RingView,
        store: Any,
        peers: IVnodePeers,
        membership: Membership,
        clock: IReactorTime,
        rng: random.Random,
        leaveStall: float,
        founds: Callable[[], bool],
        stabilize: Callable[[], Coroutine[Any, Any, None]],
        rehome: Callable[[], object],
    ) -> None:
        self.view = view
        self.store = store
        self.peers = peers
        self.membership = membership
        self.clock = clock
        self.rng = rng
        self.leaveStall = leaveStall
        self.founds = founds
        self.stabilize = stabilize
        self.rehome = rehome
        #: the joiner last granted a range, and the predecessor it took over
        self.transferredTo: dict[VnodeRef, VnodeRef] = {}
        #: the predecessor before that one, when the range granted covered it too
        self.grantedBefore: VnodeRef | None = None

    def predecessorServes(self, c: VnodeRef) -> None:
        """
        C{c} notified us (only serving vnodes do): if it is the joiner we
        granted our predecessor's range to, it got it and the grant is over.
        """
        if c == self.view.pred and c in self.transferredTo:
            self.transferredTo = {}
            self.grantedBefore = None

    async def join(self, seed: str | None) -> None:
        """
        Take our range from its current holder (found through C{seed}), or
        found the ring.
        """
        v = self.view
        attempt = 0
        target: VnodeRef | None = None
        #: not-serving refusals followed at once in a row
        followed = 0
        while True:
            if self.founds():
                v.pred = v.ref
                v.succs = [v.ref]
                self.membership.joined()
                return
            try:
                if target is None:
                    # the successor of the point just past us: never ourselves
                    entry = await self.peers.entryPoint(seed)
                    target, _ = await self.peers.findSuccessor((v.ref.id + 1) % (1 << RING_BITS), start=entry)
                    if target == v.ref:
                        target = None
                        raise RemoteError(E.BUSY, "lookup returned the joiner")
                if v.succs == [v.ref]:
                    # until the grant: where a call reaching this vnode
                    # should go instead (see Maintenance.step)
                    v.succs = [target]
                answer = await self.peers.call(target, "join", list(v.ref))
                records = _records(answer[0])
                oldPred = ref(answer[1])
                succs = [ref(s) for s in answer[2]]
                older = ref(answer[3]) if len(answer) > 3 else None
                # merged by version with what an earlier life of this vnode
                # kept on disk: after a whole-ring restart that copy may be
                # the only one, and after a ring founded apart (--bootstrap)
                # either side may hold the newer write
                await self.store.importRecords(records)
                v.setPredecessor(oldPred)
                if oldPred is not None and older is not None:
                    # our predecessor may still be joining: let its retry find us
                    self.transferredTo = {oldPred: older}
                    self.grantedBefore = None
                v.setSuccessors([target] + [s for s in succs if s is not None])
                log.info(
                    "vnode {vnode} joined before {succ} taking {count} records",
                    vnode=v.ref.short(),
                    succ=target.short(),
                    count=len(records),
                )
                self.membership.joined()
                if oldPred is not None and oldPred != target:
                    self.peers.call(oldPred, "newSuccessor", list(v.ref)).addErrback(lambda _: None)
                # what this directory holds outside the new range goes to its owners
                self.rehome()
                return
            except RemoteError as e:
                around = e.around
                if around is not None and around != v.ref and around != target and followed < 4:
                    # the vnode found does not serve yet: its successor
                    # holds the range meanwhile
                    followed += 1
                    target = around
                    continue
                followed = 0
                # after a timeout ask the same successor again: it may have
                # switched its predecessor to us already and will resend
                if e.code != E.TIMEOUT:
                    target = None
                if not e.retryable and e.code != E.NOT_IN_RING:  # that one the node reports
                    log.warn("vnode {vnode} join attempt failed: {error}", vnode=v.ref.short(), error=str(e))
                elif attempt and attempt % 20 == 0:
                    # retryable answers are silent; a join that keeps
                    # getting them says so (about every 30 s) and why
                    log.warn(
                        "vnode {vnode} still joining after {n} attempts: {error}",
                        vnode=v.ref.short(),
                        n=attempt,
                        error=str(e),
                    )
            attempt += 1
            await sleep(self.clock, min(2.0, 0.05 * 2 ** min(attempt, 6)) * (0.5 + self.rng.random()))

    async def leave(self) -> None:
        """
        Hand our range to our successor, then tell the machine we left.
        """
        v = self.view
        timeouts = 0
        stalledSince: float | None = None
        for _attempt in range(2_000):
            rng = v.ownedRange()
            target = v.succ
            if target == v.ref or rng is None:
                break
            try:
                records = await self.store.exportRange(*rng)
                for chunk in chunked(records, RECORD_BUDGET, HANDOFF_CHUNK):
                    await self.peers.call(target, "replicate", chunk)
                await self.peers.call(target, "handoff", list(v.ref), list(v.pred) if v.pred else None)
                log.info("vnode {vnode} handed its range to {succ}", vnode=v.ref.short(), succ=target.short())
                if v.pred is not None and v.pred != v.ref:
                    self.peers.call(v.pred, "leaving", list(v.ref), [list(s) for s in v.succs]).addErrback(
                        lambda _: None
                    )
                break
            except RemoteError as e:
                if e.code == E.TIMEOUT:
                    timeouts += 1
                if e.code == E.GONE or timeouts >= 3:
                    timeouts = 0
                    v.dropPeer(target)
                    if v.succs == [v.ref]:
                        await self._refreshSuccessors()
                elif e.code == E.LEAVING:
                    now = self.clock.seconds()
                    stalledSince = now if stalledSince is None else stalledSince
                    if now - stalledSince > self.leaveStall:
                        log.warn(
                            "vnode {vnode}: successors are all leaving; its keys stay on disk",
                            vnode=v.ref.short(),
                        )
                        break
                    await sleep(self.clock, 0.05 + 0.2 * self.rng.random())
                elif e.code == E.NOT_OWNER:
                    await self.stabilize()
                    await sleep(self.clock, 0.05 + 0.2 * self.rng.random())
                else:
                    await sleep(self.clock, 0.05 + 0.2 * self.rng.random())
        self.membership.left()

    async def _refreshSuccessors(self) -> None:
        v = self.view
        try:
            entry = await self.peers.entryPoint(None)
            s, _ = await self.peers.findSuccessor((v.ref.id + 1) % (1 << RING_BITS), start=entry)
            if s != v.ref:
                v.succs = [s]
        except RemoteError:
            await sleep(self.clock, 0.2)

    def remote_leaving(self, who: Any, theirSuccs: Any) -> None:
        v = self.view
        w = ref(who)
        if w is None:
            return
        rest = [r for r in (ref(s) for s in theirSuccs) if r is not None and r != w]
        v.dropPeer(w)
        if rest:
            v.setSuccessors([s for s in v.succs if s != v.ref] + rest if v.succs != [v.ref] else rest)
            v.succs.sort(key=lambda s: (s.id - v.ref.id) % (1 << RING_BITS) or (1 << RING_BITS))

    async def remote_join(self, joiner: Any) -> list[Any]:
        v = self.view
        j = ref(joiner)
        if j is None or j == v.ref:
            raise RemoteError(E.BAD_REQUEST, "bad joiner")
        retried = v.pred == j and j in self.transferredTo
        # the machine answers whether the export may begin; when it does,
        # transferDone must follow whatever happens
        answer = self.membership.transferStarted()
        started = answer is TransferAnswer.STARTED
        try:
            if answer is TransferAnswer.NOT_SERVING and not retried:
                # a joiner's lookup that found another joiner (named by a
                # successor list still holding this id): the range is
                # still held by our successor
                raise E.notServing(v.around(self.peers.suspected))
            return await self._grant(j, retried, started)
        finally:
            if started:
                self.membership.transferDone()

    async def _grant(self, j: VnodeRef, retried: bool, started: bool) -> list[Any]:
        v = self.view
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
            if v.pred == j:
                # the joiner is our predecessor, yet we granted it nothing:
                # that is its earlier life (a process restarted with the same
                # vnode ids), kept because the joiner answers its pings.  Our
                # real predecessor's notify (refused while this one stood in
                # its way) sets the range that is to be split.
                v.setPredecessor(None)
            if v.pred is None:
                raise RemoteError(E.BUSY, "predecessor unknown")
            if v.pred != v.ref and not between(j.id, v.pred.id, v.ref.id):
                raise RemoteError(E.NOT_OWNER, "joiner is not in my range", v.pred)
            old = v.pred
            # when our predecessor is a joiner we granted a range to, its
            # answer may have been lost and our new predecessor stands in
            # its way: the new one gets that range too, and can answer the
            # earlier joiner's retry (see join)
            older = self.transferredTo.get(old) if old != v.ref else None
            v.setPredecessor(j)
            self.transferredTo = {j: old}
            self.grantedBefore = older
        low = older if older is not None else old
        records = (
            await self.store.exportRange(low.id, j.id)
            if old != v.ref
            else await self.store.exportRange(v.ref.id, j.id)
        )
        if v.succs == [v.ref]:
            v.succs = [j]
        return [
            records,
            list(old),
            [list(v.ref)] + [list(s) for s in v.succs],
            list(older) if older is not None else None,
        ]

    async def remote_handoff(self, leaver: Any, newPred: Any) -> None:
        v = self.view
        w, p = ref(leaver), ref(newPred)
        if w is None:
            raise RemoteError(E.BAD_REQUEST, "bad leaver")
        answer = self.membership.transferStarted()
        if answer is TransferAnswer.LEAVING:
            raise RemoteError(E.LEAVING, "leaving too")
        if answer is TransferAnswer.NOT_SERVING:
            raise E.notServing(None)
        if answer is not TransferAnswer.STARTED:
            raise RemoteError(E.BUSY, "not accepting transfers now")
        try:
            if v.pred not in (None, w) and not between(w.id, v.pred.id, v.ref.id):
                raise RemoteError(E.NOT_OWNER, "leaver is not my predecessor", v.pred)
            v.setPredecessor(None if p is None or p == w else p)
            v.dropPeer(w)
        finally:
            self.membership.transferDone()
