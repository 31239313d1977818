"""
What every part of a vnode shares: its state (predecessor, successor list,
fingers, store) and small helpers.  L{suite.specter.chord.vnode.Vnode}
combines it with ring maintenance and key transfer.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from suite.kv.records import KINDS, Incoming
from suite.kv.versions import Version
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef, inRange

if TYPE_CHECKING:
    from suite.specter.chord.machine import Membership, MembershipCore, Phase
    from suite.specter.chord.node import ChordNode
    from suite.specter.chord.replication import Replicator
    from suite.specter.chord.rounds import Rounds

__all__ = ["VnodeBase", "records", "version"]

T = TypeVar("T")
log = Logger()


_U64 = 1 << 64


def version(value: Any) -> Version:
    """
    Check a version received from the wire: C{[hlc, origin]}, each an
    unsigned 64-bit integer.
    """
    hlc, origin = value
    if type(hlc) is not int or type(origin) is not int or not (0 <= hlc < _U64 and 0 <= origin < _U64):
        raise RemoteError(E.BAD_REQUEST, "malformed version")
    return Version(hlc, origin)


def records(value: Any) -> list[Incoming]:
    """
    Check records received from the wire: C{[kind, key, payload-or-nil, hlc,
    origin]} (L{suite.kv.records.Record}, flat: one array per record), or
    C{[kind, key, payload-or-nil]} from a peer without versions (imported
    as a new write, see L{suite.kv.interfaces}).
    """
    out: list[Incoming] = []
    append = out.append
    for item in value:
        if len(item) == 5:
            kind, key, payload, hlc, origin = item
            # (msgpack integers are below 2**64 already)
            if type(hlc) is not int or type(origin) is not int or hlc < 0 or origin < 0:
                raise RemoteError(E.BAD_REQUEST, "malformed version")
        else:
            kind, key, payload = item
            hlc, origin = None, 0
        if kind not in KINDS or type(key) is not bytes or not (payload is None or type(payload) is bytes):
            raise RemoteError(E.BAD_REQUEST, "malformed record")
        append((kind, key, payload, hlc, origin))
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
    replicator: Replicator
    membership: Membership
    #: the membership machine's core: its phase says whether KV calls are served
    membershipCore: MembershipCore
    #: the maintenance rounds (started when active, stopped on leaving)
    rounds: Rounds

    @property
    def phase(self) -> Phase:
        """
        The membership phase, as the machine last entered it.
        """
        return self.membershipCore.phase

    @property
    def serving(self) -> bool:
        """
        Whether KV calls are served (Active or Transferring).
        """
        return self.membershipCore.phase.serving

    @property
    def gone(self) -> bool:
        """
        Whether the vnode has left the ring (Left or Withdrawn).
        """
        return self.membershipCore.phase.gone

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

    async def _sleep(self, seconds: float) -> None:
        d: Deferred[None] = Deferred()
        self.clock.callLater(seconds, d.callback, None)
        await d
