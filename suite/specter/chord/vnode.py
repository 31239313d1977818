"""
One virtual node, composed of parts that each get only what they use:

  - L{RingView} (C{view}): predecessor, successor list, fingers, and which
    positions that makes ours; shared by the parts that read or change the
    ring structure;
  - L{Peers} (C{peers}): calls to other vnodes through the process, refused
    once this vnode is gone;
  - L{Maintenance} (C{maintenance}): stabilize, check-predecessor,
    fix-fingers, the lookup step;
  - L{Handoff} (C{handoff}): join and leave with their keys, the range
    grants;
  - L{Replicator} (C{replicator}): copies of each write, repair;
  - L{Reconciler} (C{reconciler}): re-homing records held outside the range;
  - L{RecordServer} (C{records}): the calls served from the store alone.

The vnode itself carries out the membership machine's outputs
(L{IMembershipActions}), runs the maintenance rounds (the rounds machine
times them), serves KV calls after checking ownership, and maps each call
peers make to the part that answers it (L{Vnode.handler}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from suite.specter.chord import errors as E
from suite.specter.chord.base import spawn
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef, ref, ringId
from suite.specter.chord.machine import MembershipCore, Phase, buildMembership
from suite.specter.chord.maintenance import Maintenance
from suite.specter.chord.peers import Peers
from suite.specter.chord.reconcile import Reconciler, RecordServer
from suite.specter.chord.replication import Replicator
from suite.specter.chord.rounds import RoundsCore, buildRounds
from suite.specter.chord.transfer import Handoff
from suite.specter.chord.view import RingView

if TYPE_CHECKING:
    from suite.specter.chord.node import ChordNode

__all__ = ["Vnode"]

log = Logger()


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
        config = node.config
        #: maintenance rounds run so far
        self.ticks = 0
        self.seed: str | None = None
        self._leaveWaiters: list[Deferred[None]] = []
        #: the membership machine's core: its phase says whether KV calls are served
        self.membershipCore = MembershipCore(self)
        self.membership = buildMembership(self.membershipCore)
        self.view = RingView(self.ref, config.successors)
        self.peers = Peers(node, self.membershipCore, self)
        self.records = RecordServer(store)
        self.replicator = Replicator(
            self.view,
            store,
            self.peers,
            self.membershipCore,
            self.clock,
            replicas=config.replicas,
            antiEntropy=config.antiEntropy,
        )
        self.maintenance = Maintenance(self.view, self.peers, self.membershipCore)
        self.reconciler = Reconciler(
            self.view,
            store,
            self.peers,
            self.membership,
            self.membershipCore,
            self.clock,
            node.rng,
            copyKeys=self.replicator.copyKeys,
        )
        self.handoff = Handoff(
            self.view,
            store,
            self.peers,
            self.membership,
            self.clock,
            node.rng,
            leaveStall=config.leaveStall,
            founds=lambda: node.founding and node.firstVnode() is self,
            stabilize=self.maintenance.stabilize,
            rehome=lambda: spawn(self.reconciler.rehome(), "re-homing", self.ref),
        )
        #: the maintenance rounds (started when active, stopped on leaving)
        self.rounds = buildRounds(RoundsCore(self.clock, self._roundInterval, self._round))
        m, h, r, c = self.maintenance, self.handoff, self.records, self.reconciler
        self._handlers: dict[str, Callable[..., Any]] = {
            # ring structure
            "ping": m.remote_ping,
            "state": m.remote_state,
            "notify": self.remote_notify,
            "step": m.remote_step,
            "newSuccessor": m.remote_newSuccessor,
            # ranges moving on join and leave
            "join": h.remote_join,
            "handoff": h.remote_handoff,
            "leaving": h.remote_leaving,
            # records, from the store alone
            "replicate": r.remote_replicate,
            "digest": r.remote_digest,
            "syncRange": r.remote_syncRange,
            "versions": r.remote_versions,
            "fetch": r.remote_fetch,
            # re-homing
            "offer": c.remote_offer,
            "merge": c.remote_merge,
            # clients' keys
            "kv": self.remote_kv,
            "recordVersions": self.remote_recordVersions,
        }

    # -- what the rest of the process reads ----------------------------------------
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

    @property
    def pred(self) -> VnodeRef | None:
        return self.view.pred

    @property
    def succs(self) -> list[VnodeRef]:
        return self.view.succs

    @property
    def succ(self) -> VnodeRef:
        return self.view.succ

    @property
    def fingers(self) -> list[VnodeRef | None]:
        return self.view.fingers

    def owns(self, kid: int) -> bool:
        """
        Whether this vnode is responsible for ring position C{kid} now.
        """
        return self.view.owns(kid)

    def ownedRange(self) -> tuple[int, int] | None:
        """
        The range this vnode owns, C{(predecessor, self]}, if it knows it.
        """
        return self.view.ownedRange()

    def step(self, kid: int) -> tuple[bool, VnodeRef]:
        """
        One step of an iterative lookup: C{(True, owner)} or C{(False, next)}.
        """
        return self.maintenance.step(kid)

    # -- membership outputs ---------------------------------------------------
    def beginJoin(self) -> None:
        spawn(self.handoff.join(self.seed), "join", self.ref)

    def becameActive(self) -> None:
        self.node.becameServing()
        log.info(
            "vnode {vnode} active with {count} successors", vnode=self.ref.short(), count=len(self.succs)
        )
        self.rounds.start()

    def abandonJoin(self) -> None:
        pass

    def beginLeave(self) -> Deferred[None]:
        self.rounds.stop()
        spawn(self.handoff.leave(), "leave", self.ref)
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

    # -- maintenance rounds ---------------------------------------------------------
    def _roundInterval(self) -> float:
        interval: float = self.node.config.stabilizeInterval
        return interval * (0.75 + 0.5 * self.node.rng.random())

    def _round(self) -> Deferred[None]:
        return spawn(self._maintain(), "maintenance", self.ref)

    async def _maintain(self) -> None:
        self.ticks += 1
        await self.maintenance.stabilize()
        await self.maintenance.checkPredecessor()
        await self.maintenance.fixFingers()
        if self.ticks % self.node.config.repairEvery == 0:
            await self.replicator.repair()
        self.node.saveRingState()

    # -- lifecycle -----------------------------------------------------------
    def start(self, seed: str | None) -> None:
        self.seed = seed
        self.membership.start()

    def leave(self) -> Deferred[None]:
        return self.membership.leave()

    def stop(self) -> None:
        self.rounds.stop()

    # -- calls peers make -------------------------------------------------------------
    def handler(self, method: str) -> Callable[..., Any] | None:
        """
        The part's method that answers call C{method}, if there is one.
        """
        return self._handlers.get(method)

    def remote_notify(self, candidate: Any) -> None:
        c = ref(candidate)
        if c is None or c == self.ref:
            return
        # (before the predecessor may change: the grant is to the current one)
        self.handoff.predecessorServes(c)
        self.maintenance.notified(c)

    async def remote_kv(self, op: str, key: bytes, args: list[Any]) -> Any:
        if not isinstance(key, bytes) or not isinstance(args, list):
            raise RemoteError(E.BAD_REQUEST, "key must be bytes")
        kid = ringId(key)
        if not self.serving:
            code = self.membership.kvRefused()
            if code == E.NOT_OWNER:
                raise RemoteError(code, "vnode not serving", self.succ)
            raise E.notServing(self.view.around(self.node.suspected))
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
