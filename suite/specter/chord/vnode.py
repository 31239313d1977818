"""
One virtual node: its place in the ring (predecessor, successor list,
fingers), the maintenance loop (stabilize, check-predecessor, fix-fingers,
replica repair, on the injected clock with jitter), join and leave with key
transfer, and the handlers other vnodes call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from suite.kv.records import KINDS
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import RING_BITS, VnodeRef, between, fingerStart, inRange, ref, ringId
from suite.specter.chord.machine import MembershipCore, buildMembership
from suite.specter.chord.replication import Replicator

if TYPE_CHECKING:
    from suite.specter.chord.node import ChordNode

__all__ = ["Vnode"]

T = TypeVar("T")
log = Logger()
PRED_FAILURES = 2
HANDOFF_CHUNK = 4096


def _records(value: Any) -> list[tuple[str, bytes, bytes | None]]:
    out = []
    for item in value:
        kind, key, payload = item
        if (
            kind not in KINDS
            or not isinstance(key, bytes)
            or not (payload is None or isinstance(payload, bytes))
        ):
            raise RemoteError(E.BAD_REQUEST, "malformed record")
        out.append((kind, key, payload))
    return out


class Vnode:
    """
    A vnode of a L{ChordNode}; C{store} holds the keys it owns and those it
    replicates for its predecessors.
    """

    def __init__(self, node: ChordNode, index: int, nodeId: int, store: Any) -> None:
        self.node = node
        self.clock = node.clock
        self.ref = VnodeRef(nodeId, node.addr, index)
        self.store = store
        self.pred: VnodeRef | None = None
        self.succs: list[VnodeRef] = [self.ref]
        self.fingers: list[VnodeRef | None] = [None] * RING_BITS
        self.nextFinger = 0
        self.predFailures = 0
        self.ticks = 0
        self.transferredTo: dict[VnodeRef, VnodeRef] = {}
        self.seed: str | None = None
        self._timer: IDelayedCall | None = None
        self._left: Deferred[None] | None = None
        self._leaveWaiters: list[Deferred[None]] = []
        self._running = False
        #: set by the membership machine's outputs: KV calls may be served
        self.serving = False
        self.gone = False
        self.replicator = Replicator(self)
        self.membership = buildMembership(MembershipCore(self))

    # -- helpers ----------------------------------------------------------
    def _spawn(self, coro: Awaitable[T], what: str) -> Deferred[T]:
        d: Deferred[T] = Deferred.fromCoroutine(coro)  # type: ignore[arg-type]

        def failed(f: Any) -> None:
            log.failure("vnode {vnode}: {what} failed", f, vnode=self.ref.short(), what=what)

        d.addErrback(failed)
        return d

    @property
    def succ(self) -> VnodeRef:
        return self.succs[0] if self.succs else self.ref

    def call(self, target: VnodeRef, method: str, *args: Any) -> Deferred[Any]:
        if self.gone:
            # a maintenance round still running when the vnode left must not
            # touch the ring any more (a late notify would resurrect it)
            return fail(RemoteError(E.GONE, "this vnode left"))
        return self.node.call(target, method, *args)

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
            if s not in out and not (s == self.ref and out):
                out.append(s)
            if len(out) >= self.node.config.successors:
                break
        if len(out) > 1 and out[0] == self.ref:
            out = out[1:] + [self.ref]
        self.succs = out or [self.ref]

    def dropPeer(self, dead: VnodeRef) -> None:
        """
        Forget a vnode that failed or left.
        """
        self.succs = [s for s in self.succs if s != dead] or [self.ref]
        self.fingers = [None if f == dead else f for f in self.fingers]

    # -- membership outputs ---------------------------------------------------
    def beginJoin(self) -> None:
        self._spawn(self._join(), "join")

    def becameActive(self) -> None:
        self.serving = True
        log.info(
            "vnode {vnode} active with {count} successors", vnode=self.ref.short(), count=len(self.succs)
        )
        self._scheduleTick()

    def abandonJoin(self) -> None:
        pass

    def beginLeave(self) -> Deferred[None]:
        self.serving = False
        self._left = Deferred()
        self._spawn(self._leave(), "leave")
        return self.whenLeft()

    def whenLeft(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._leaveWaiters.append(d)
        return d

    def becameLeft(self) -> None:
        self.serving = False
        self.gone = True
        self._stopTimer()
        log.info("vnode {vnode} left the ring", vnode=self.ref.short())
        waiters, self._leaveWaiters = self._leaveWaiters, []
        for d in waiters:
            d.callback(None)

    # -- lifecycle -----------------------------------------------------------
    def start(self, seed: str | None) -> None:
        self.seed = seed
        self.membership.start()

    def leave(self) -> Deferred[None]:
        return self.membership.leave()

    def stop(self) -> None:
        self._stopTimer()

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    async def _sleep(self, seconds: float) -> None:
        d: Deferred[None] = Deferred()
        self.clock.callLater(seconds, d.callback, None)
        await d

    async def _join(self) -> None:
        attempt = 0
        target: VnodeRef | None = None
        while True:
            if self.seed is None and self.node.firstVnode() is self:
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
                # merged with what an earlier life of this vnode kept on disk:
                # after a whole-ring restart that copy may be the only one
                await self.store.importRecords(records)
                self.pred = oldPred
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
                return
            except RemoteError as e:
                # after a timeout ask the same successor again: it may have
                # switched its predecessor to us already and will resend
                if e.code != E.TIMEOUT:
                    target = None
                if not e.retryable:
                    log.warn(
                        "vnode {vnode} join attempt failed: {error}", vnode=self.ref.short(), error=str(e)
                    )
            attempt += 1
            await self._sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)) * (0.5 + self.node.rng.random()))

    async def _leave(self) -> None:
        self._stopTimer()
        timeouts = 0
        stalledSince: float | None = None
        for _attempt in range(2_000):
            rng = self.ownedRange()
            target = self.succ
            if target == self.ref or rng is None:
                break
            try:
                records = await self.store.exportRange(*rng)
                for i in range(0, len(records), HANDOFF_CHUNK):
                    await self.call(target, "replicate", records[i : i + HANDOFF_CHUNK])
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

    # -- maintenance ------------------------------------------------------------
    def _scheduleTick(self) -> None:
        interval = self.node.config.stabilizeInterval
        self._timer = self.clock.callLater(interval * (0.75 + 0.5 * self.node.rng.random()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._running:
            return
        self._running = True

        def done(_: Any) -> None:
            self._running = False
            if self.serving:
                self._scheduleTick()

        self._spawn(self._maintain(), "maintenance").addBoth(done)

    async def _maintain(self) -> None:
        self.ticks += 1
        await self.stabilize()
        await self.checkPredecessor()
        await self.fixFingers()
        if self.ticks % self.node.config.repairEvery == 0:
            await self.replicator.repair()

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
        if self.pred == j and j in self.transferredTo:
            old = self.transferredTo[j]
        else:
            if not self.membership.acceptsTransfer():
                raise RemoteError(E.BUSY, "not accepting transfers now")
            if self.pred is None:
                raise RemoteError(E.BUSY, "predecessor unknown")
            if self.pred != self.ref and not between(j.id, self.pred.id, self.ref.id):
                raise RemoteError(E.NOT_OWNER, "joiner is not in my range", self.pred)
            old = self.pred
            self.pred = j
            self.transferredTo = {j: old}
        self.membership.transferStarted()
        try:
            records = (
                await self.store.exportRange(old.id, j.id)
                if old != self.ref
                else await self.store.exportRange(self.ref.id, j.id)
            )
        finally:
            self.membership.transferDone()
        if self.succs == [self.ref]:
            self.succs = [j]
        return [records, list(old), [list(self.ref)] + [list(s) for s in self.succs]]

    async def remote_handoff(self, leaver: Any, newPred: Any) -> None:
        w, p = ref(leaver), ref(newPred)
        if w is None:
            raise RemoteError(E.BAD_REQUEST, "bad leaver")
        if self._left is not None:
            raise RemoteError(E.LEAVING, "leaving too")
        if not self.membership.acceptsTransfer():
            raise RemoteError(E.BUSY, "not accepting transfers now")
        if self.pred not in (None, w) and not between(w.id, self.pred.id, self.ref.id):
            raise RemoteError(E.NOT_OWNER, "leaver is not my predecessor", self.pred)
        if p is None or p == w:
            self.pred = None
        else:
            self.pred = p
        self.predFailures = 0
        self.dropPeer(w)

    async def remote_replicate(self, records: Any) -> None:
        await self.store.importRecords(_records(records))

    async def remote_digest(self, low: int, high: int, buckets: int = 1) -> list[list[int]]:
        buckets = max(1, min(256, int(buckets)))
        return [list(b) for b in await self.store.digestRange(int(low), int(high), buckets)]

    async def remote_syncRange(self, low: int, high: int, records: Any) -> None:
        recs = _records(records)
        await self.store.removeRange(int(low), int(high))
        await self.store.importRecords(recs)

    async def remote_kv(self, op: str, key: bytes, args: list[Any]) -> Any:
        if not isinstance(key, bytes) or not isinstance(args, list):
            raise RemoteError(E.BAD_REQUEST, "key must be bytes")
        kid = ringId(key)
        if not self.serving:
            raise RemoteError(
                E.BUSY if self._left is None else E.NOT_OWNER,
                "vnode not serving",
                self.succ if self._left else None,
            )
        if not self.owns(kid):
            raise RemoteError(E.NOT_OWNER, "key not in my range", self.step(kid)[1] if self.pred else None)
        return await self.replicator.apply(op, key, args)

    def handler(self, method: str) -> Callable[..., Any] | None:
        return getattr(self, "remote_" + method, None) if method.isidentifier() else None


_ = succeed
