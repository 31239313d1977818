"""
One virtual node: L{Maintenance} (its place in the ring) and L{Transfer}
(join and leave with their keys) around the membership machine, plus the KV
handler that checks ownership before the replicator applies a call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import RING_BITS, VnodeRef, ringId
from suite.specter.chord.machine import MembershipCore, buildMembership
from suite.specter.chord.maintenance import Maintenance
from suite.specter.chord.replication import Replicator
from suite.specter.chord.rounds import RoundsCore, buildRounds
from suite.specter.chord.transfer import Transfer

if TYPE_CHECKING:
    from suite.specter.chord.node import ChordNode

__all__ = ["Vnode"]

log = Logger()


class Vnode(Maintenance, Transfer):
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
        #: the joiner last granted a range, and the predecessor it took over
        self.transferredTo: dict[VnodeRef, VnodeRef] = {}
        #: the predecessor before that one, when the range granted covered it too
        self.grantedBefore: VnodeRef | None = None
        self.seed: str | None = None
        self._leaveWaiters: list[Deferred[None]] = []
        self.replicator = Replicator(self)
        self.membershipCore = MembershipCore(self)
        self.membership = buildMembership(self.membershipCore)
        self.rounds = buildRounds(RoundsCore(self.clock, self._roundInterval, self._round))

    # -- membership outputs ---------------------------------------------------
    def beginJoin(self) -> None:
        self._spawn(self._join(), "join")

    def becameActive(self) -> None:
        self.node.becameServing()
        log.info(
            "vnode {vnode} active with {count} successors", vnode=self.ref.short(), count=len(self.succs)
        )
        self.rounds.start()

    def abandonJoin(self) -> None:
        pass

    def beginLeave(self) -> Deferred[None]:
        self._spawn(self._leave(), "leave")
        return self.whenLeft()

    def whenLeft(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._leaveWaiters.append(d)
        return d

    def becameLeft(self) -> None:
        self.rounds.stop()
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
        self.rounds.stop()

    async def remote_kv(self, op: str, key: bytes, args: list[Any]) -> Any:
        if not isinstance(key, bytes) or not isinstance(args, list):
            raise RemoteError(E.BAD_REQUEST, "key must be bytes")
        kid = ringId(key)
        if not self.serving:
            code = self.membership.kvRefused()
            raise RemoteError(code, "vnode not serving", self.succ if code == E.NOT_OWNER else None)
        if not self.owns(kid):
            raise RemoteError(E.NOT_OWNER, "key not in my range", self.step(kid)[1] if self.pred else None)
        return await self.replicator.apply(op, key, args)

    async def remote_recordVersions(self, key: bytes) -> list[Any]:
        """
        The versions of C{key}'s records held here: C{[kind, hlc, origin, live]} each.
        """
        if not isinstance(key, bytes):
            raise RemoteError(E.BAD_REQUEST, "key must be bytes")
        return [
            [kind, hlc, origin, payload is not None]
            for kind, _, payload, hlc, origin in await self.store.exportKey(key)
        ]

    def handler(self, method: str) -> Callable[..., Any] | None:
        return getattr(self, "remote_" + method, None) if method.isidentifier() else None
