"""
What every part of a vnode shares: its state (predecessor, successor list,
fingers, store) and small helpers.  L{suite.specter.chord.vnode.Vnode}
combines it with ring maintenance and key transfer.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from suite.kv.records import KINDS
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef, inRange

if TYPE_CHECKING:
    from suite.specter.chord.machine import Membership
    from suite.specter.chord.node import ChordNode
    from suite.specter.chord.replication import Replicator

__all__ = ["VnodeBase", "records"]

T = TypeVar("T")
log = Logger()


def records(value: Any) -> list[tuple[str, bytes, bytes | None]]:
    """
    Check records received from the wire: C{[kind, key, payload-or-nil]}.
    """
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


class VnodeBase:
    """
    State and helpers of one vnode.
    """

    node: ChordNode
    clock: Any
    ref: VnodeRef
    store: Any
    pred: VnodeRef | None
    succs: list[VnodeRef]
    fingers: list[VnodeRef | None]
    nextFinger: int
    predFailures: int
    ticks: int
    transferredTo: dict[VnodeRef, VnodeRef]
    grantedBefore: VnodeRef | None
    seed: str | None
    serving: bool
    gone: bool
    replicator: Replicator
    membership: Membership
    _timer: IDelayedCall | None
    _left: Deferred[None] | None
    _running: bool

    async def stabilize(self) -> None:
        """
        Refresh the successor list (see L{Maintenance.stabilize}).
        """
        raise NotImplementedError

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
            if len(out) >= self.node.config.successors:
                break
        self.succs = out or [self.ref]

    def dropPeer(self, dead: VnodeRef) -> None:
        """
        Forget a vnode that failed or left.
        """
        self.succs = [s for s in self.succs if s != dead] or [self.ref]
        self.fingers = [None if f == dead else f for f in self.fingers]

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    async def _sleep(self, seconds: float) -> None:
        d: Deferred[None] = Deferred()
        self.clock.callLater(seconds, d.callback, None)
        await d
