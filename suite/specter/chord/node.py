"""
One process's share of the ring: its vnodes, iterative lookups, and the KV
entry point that routes an operation to the key's owner and retries on
stale ownership.

Its parts live beside it: L{suite.specter.chord.calls} (outgoing calls and
the dispatcher of incoming ones), L{suite.specter.chord.ringview} (the
membership view kept across restarts, getting in), L{suite.specter.chord.heal}
(the probe machine that heals a split ring) and L{suite.specter.chord.status}
(what the process tells about itself).  C{ChordNode} is the one surface the
service, the vnodes, the debug pages and the tests use.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.specter.chord import errors as E
from suite.specter.chord import status as _status
from suite.specter.chord.calls import Calls, dispatch
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.heal import HealCore, HealProbe, Inconclusive, buildHealProbe, lookAt, probeOnce
from suite.specter.chord.ids import VnodeRef, between, inRange, ref, ringId, vnodeId
from suite.specter.chord.ringview import RingView
from suite.specter.chord.vnode import Vnode
from suite.specter.interfaces import IChordTransport, IRing, IRingState

__all__ = ["ChordConfig", "ChordNode"]

log = Logger()
MAX_HOPS = 64


def _stepAnswer(answer: Any) -> tuple[bool, VnodeRef]:
    """
    Decode a C{step} answer, C{[done, vnode]}.
    """
    try:
        decoded = ref(answer[1])
    except (TypeError, ValueError, IndexError, KeyError):
        decoded = None
    if decoded is None:
        raise RemoteError(E.INTERNAL, "bad step answer")
    return bool(answer[0]), decoded


@dataclass
class ChordConfig:
    """
    Ring tuning shared by every vnode of a process.
    """

    virtual: int = 5
    replicas: int = 3
    successors: int = 16
    stabilizeInterval: float = 0.5
    repairEvery: int = 4
    rpcTimeout: float = 3.0
    kvDeadline: float = 30.0
    leaveStall: float = 10.0
    antiEntropy: float = 60.0
    #: seconds between probes of a formerly known peer outside the ring view
    healInterval: float = 10.0


@implementer(IRing)
class ChordNode:
    """
    The vnodes of the process advertised at C{addr}.

    @param storeFactory: C{storeFactory(index)} opens vnode C{index}'s store.
    """

    def __init__(
        self,
        addr: str,
        transport: Any,
        clock: IReactorTime,
        config: ChordConfig,
        storeFactory: Callable[[int], Any],
        rng: random.Random | None = None,
        ringState: Any = None,
    ) -> None:
        self.addr = addr
        self.transport = IChordTransport(transport)
        self.clock = clock
        self.config = config
        self.rng = rng or random.Random()
        self.vnodes = [Vnode(self, i, vnodeId(addr, i), storeFactory(i)) for i in range(config.virtual)]
        self.byId = {v.ref.id: v for v in self.vnodes}
        self.lookups = 0
        self.hops = 0
        self.retries = 0
        #: lookup steps routed around a vnode that did not serve
        self.rerouted = 0
        self.seed: str | None = None
        self.calls = Calls(self)
        self.view = RingView(self, ringState)
        #: rejoins into another ring found after a split (see L{heal})
        self.heals = 0
        self.healing: HealProbe = buildHealProbe(
            HealCore(clock, config.healInterval, self.rng, lambda: probeOnce(self), self.rejoin)
        )

    # -- the view's parts others read --------------------------------------------------
    @property
    def ringState(self) -> IRingState | None:
        return self.view.ringState

    @property
    def knownPeers(self) -> list[str]:
        """
        Processes this one was in a ring with (its last saved view).
        """
        return self.view.knownPeers

    @property
    def formerPeers(self) -> set[str]:
        """
        Every process this one has been in a ring with (for healing splits).
        """
        return self.view.formerPeers

    @property
    def seeds(self) -> list[str]:
        """
        Addresses tried, in order, when no vnode of this process serves.
        """
        return self.view.seeds

    @property
    def founding(self) -> bool:
        """
        Whether this process founds the ring (rather than joining one).
        """
        return self.view.founding

    @founding.setter
    def founding(self, value: bool) -> None:
        self.view.founding = value

    @property
    def joinProblem(self) -> str | None:
        """
        Why this process is not in the ring, while it cannot get in.
        """
        return self.view.joinProblem

    # -- lifecycle -------------------------------------------------------------
    def firstVnode(self) -> Vnode:
        return self.vnodes[0]

    def start(self, seed: str | None, bootstrap: bool = False, alsoJoin: tuple[str, ...] = ()) -> None:
        """
        Bring every vnode into the ring.  With C{seed}, through it (and,
        failing it, through the peers the ring state names); without, a
        process with ring state rejoins through the peers it knew; one
        without ring state, or told to C{bootstrap}, founds a new ring.
        Probing for a split ring starts too.
        """
        self.seed = seed
        self.view.plan(seed, bootstrap, alsoJoin)
        for v in self.vnodes:
            v.start(seed)
        self.healing.start()

    def leave(self) -> Deferred[None]:
        """
        Every vnode hands its keys on and leaves; fires when all have.  The
        ring state is saved first, so a restart finds the ring again.
        """
        self.saveRingState(force=True)
        return Deferred.fromCoroutine(self._leaveAll())

    async def _leaveAll(self) -> None:
        """
        A vnode whose successor is a vnode of this process that is not
        leaving yet leaves before the next one starts to (a leaving vnode
        refuses handoffs: its successor must take its keys first, to hand
        them on with its own); the others leave together.
        """
        leaving: set[VnodeRef] = set()
        others: list[Deferred[None]] = []
        for v in self.vnodes:
            succ = v.succ
            leaving.add(v.ref)
            left = v.leave()
            if succ.addr == self.addr and succ not in leaving:
                await DeferredList([left], consumeErrors=True)
            else:
                others.append(left)
        await DeferredList(others, consumeErrors=True)

    def stop(self) -> None:
        for v in self.vnodes:
            v.stop()
        self.healing.stop()

    # -- ring state and getting in ----------------------------------------------------
    def currentPeers(self) -> set[str]:
        return self.view.currentPeers()

    def ringSnapshot(self, peers: set[str]) -> dict[str, Any]:
        return self.view.snapshot(peers)

    def saveRingState(self, force: bool = False) -> None:
        self.view.save(force)

    def closeRingState(self) -> Deferred[None]:
        """
        Stop saving the ring state (at shutdown, after L{leave}): fires once
        the write in progress and the last view asked for are written.
        """
        return self.view.close()

    def joinTrouble(self, reason: str) -> None:
        self.view.joinTrouble(reason)

    def outOfRing(self) -> str | None:
        return self.view.outOfRing()

    def becameServing(self) -> None:
        self.view.becameServing()

    def whenServing(self) -> Deferred[None]:
        """
        A Deferred that fires once every vnode of this process serves keys
        (at once if they do); cancellable.
        """
        return self.view.whenServing()

    # -- healing a split ---------------------------------------------------------------
    async def heal(self, peer: str) -> bool:
        """
        Whether C{peer} serves in another ring whose name (its lowest vnode
        id) is lower than this ring's: the ring this one moves into once a
        second probe finds it too.  False when that cannot be told.
        """
        try:
            found = await lookAt(self, peer)
        except Inconclusive:
            return False
        return found is not None and found.theirs.id < found.ours.id

    def rejoin(self, peer: str) -> None:
        """
        Leave the current ring without handing keys on and join the ring
        C{peer} serves in, as a process restarted with C{peer} as its seed:
        new vnodes on the same stores.
        """
        self.heals += 1
        # the whole ring moves at once: a ring left half in place would
        # route through the moved vnodes' ids and interleave with the other
        for other in sorted(self.currentPeers() - {peer}):
            self.transport.call(other, None, "heal", [peer], self.config.rpcTimeout).addErrback(
                lambda _: None
            )
        old = self.vnodes
        for v in old:
            v.stop()
        self.vnodes = [Vnode(self, v.ref.index, v.ref.id, v.store) for v in old]
        self.byId = {v.ref.id: v for v in self.vnodes}
        self.calls.forget()
        self.seed = peer
        self.view.rejoining(peer)
        log.info("rejoining through {peer} to merge the two rings", peer=peer)

        def merged(_: Any) -> None:
            log.info("merged into the ring of {peer}: every vnode serves there", peer=peer)

        self.whenServing().addCallback(merged)
        for v in self.vnodes:
            v.start(peer)

    def healRequested(self, peer: Any) -> bool:
        """
        The C{heal} call: a process of this ring found the ring C{peer}
        serves in and rejoins it; this one follows (and tells its own
        peers), unless it moved lately or already sees C{peer} in its ring.
        """
        if not isinstance(peer, str) or peer == self.addr or len(peer) > 1024:
            raise RemoteError(E.BAD_REQUEST, "heal: bad peer address")
        if peer in self.currentPeers() or not all(v.serving for v in self.vnodes):
            return False
        followed = self.healing.healRequested(peer)
        if followed:
            log.info("a peer of this ring found another ring through {peer}", peer=peer)
        return followed

    # -- calls ----------------------------------------------------------------------
    def call(self, target: VnodeRef, method: str, *args: Any) -> Deferred[Any]:
        return self.calls.call(target, method, list(args))

    def _timedOut(self, addr: str) -> None:
        self.calls.timedOut(addr)

    def suspected(self, addr: str) -> bool:
        """
        Whether calls to C{addr} timed out lately (so lookups route around it).
        """
        return self.calls.suspected(addr)

    def dispatch(self, vid: int | None, method: str, args: list[Any]) -> Deferred[Any]:
        """
        Run an incoming call; failures are L{RemoteError}s.
        """
        return dispatch(self, vid, method, args)

    def hello(self) -> list[Any]:
        return _status.hello(self)

    def status(self) -> dict[str, Any]:
        """
        The C{status} call: serving vnodes, and whether this process has a
        ring history (so restarting processes can agree who re-forms it).
        """
        return _status.status(self)

    def stats(self) -> dict[str, Any]:
        return _status.stats(self)

    # -- lookups ----------------------------------------------------------------------
    async def entryPoint(self, seed: str | None, exclude: Vnode | None = None) -> VnodeRef:
        for v in self.vnodes:
            if v is not exclude and v.serving:
                return v.ref
        known = [
            r
            for v in self.vnodes
            for r in (*v.succs, v.pred)
            if r is not None and r.addr != self.addr and not self.suspected(r.addr)
        ]
        if known:
            # learnt from the ring itself (a join answer, a notify): in touch
            self.view.inTouch()
            return self.rng.choice(known)
        return await self.view.contactSeeds()

    async def findSuccessor(self, kid: int, start: VnodeRef | None = None) -> tuple[VnodeRef, int]:
        """
        Iterative lookup of the vnode responsible for C{kid}; also returns
        the number of remote hops it took.

        A vnode on the way that does not serve (still joining, leaving, or
        gone from its process) is routed around rather than waited for: the
        lookup goes on at the successor it names, else through the
        successor list of the vnode that led to it, skipping every vnode
        that refused this lookup (L{rerouted} counts these).
        """
        current = start or await self.entryPoint(None)
        hops = 0
        #: the vnode whose answer led to C{current}
        prev: VnodeRef | None = None
        #: vnodes that refused a step of this lookup
        avoid: set[VnodeRef] = set()
        for _ in range(MAX_HOPS):
            local = self.byId.get(current.id) if current.addr == self.addr else None
            try:
                if local is not None and not local.gone:
                    done, nxt = local.step(kid)
                else:
                    hops += 1
                    done, nxt = _stepAnswer(await self.call(current, "step", kid))
            except RemoteError as e:
                # BUSY from a step: the vnode does not serve (see Maintenance.step)
                hinted = e.around is not None and e.around not in avoid and e.around != current
                if e.code not in (E.TIMEOUT, E.GONE, E.BUSY):
                    raise
                if current == start and not hinted:
                    # (its hint is no answer to this lookup)
                    raise RemoteError(e.code, e.message) from None
                around: tuple[bool, VnodeRef] | None = None
                if e.code != E.TIMEOUT:
                    avoid.add(current)
                    self.rerouted += 1
                    if hinted and e.around is not None:
                        around = (False, e.around)
                    elif prev is not None:
                        around, extra = await self._around(prev, kid, avoid)
                        hops += extra
                if around is None:
                    if e.code == E.BUSY:
                        raise RemoteError(E.BUSY, "lookup found no serving vnode") from None
                    prev, current = None, start if start is not None else await self.entryPoint(None)
                    continue
                done, nxt = around
                if done:
                    self.lookups += 1
                    self.hops += hops
                    return nxt, hops
                # (prev stays: it is the last vnode that answered)
                current = nxt
                continue
            if self._idle(nxt):
                # one of our own vnodes that does not serve (a successor
                # list elsewhere still names its id): known without asking
                avoid.add(nxt)
            if nxt in avoid:
                # an answer naming a vnode that refused this lookup: go on
                # through the answering vnode's successors instead
                self.rerouted += 1
                found, extra = await self._around(current, kid, avoid)
                hops += extra
                if found is None:
                    raise RemoteError(E.BUSY, "lookup found no serving vnode")
                done, nxt = found
            if done:
                self.lookups += 1
                self.hops += hops
                return nxt, hops
            prev, current = current, nxt
        raise RemoteError(E.BUSY, "lookup did not converge")

    def _idle(self, r: VnodeRef) -> bool:
        """
        Whether C{r} is a vnode of this process that does not serve.
        """
        mine = self.byId.get(r.id) if r.addr == self.addr else None
        return mine is not None and not mine.serving

    async def _around(
        self, via: VnodeRef, kid: int, avoid: set[VnodeRef]
    ) -> tuple[tuple[bool, VnodeRef] | None, int]:
        """
        The step C{via} would answer for C{kid} from its successor list
        alone, were the vnodes in C{avoid} not in the ring: C{(True,
        owner)}, C{(False, next)}, or None when the list gives no way on.
        Also the remote hops that took.
        """
        local = self.byId.get(via.id) if via.addr == self.addr else None
        hops = 0
        try:
            if local is not None and not local.gone:
                succs = list(local.succs)
            else:
                hops = 1
                state = await self.call(via, "state")
                succs = [r for r in (ref(s) for s in state[1]) if r is not None]
        except RemoteError:
            return None, hops
        except (TypeError, ValueError, IndexError):
            raise RemoteError(E.INTERNAL, "bad state answer") from None
        low = via
        best: VnodeRef | None = None
        for s in succs:
            if s == via or s in avoid or self.suspected(s.addr) or self._idle(s):
                continue
            if inRange(kid, low.id, s.id):
                return (True, s), hops
            if between(s.id, via.id, kid):
                best = s
            low = s
        return ((False, best) if best is not None else None), hops

    # -- IRing ---------------------------------------------------------------------------
    async def _kv(self, op: str, key: bytes, args: list[Any]) -> Any:
        problem = self.outOfRing()
        if problem is not None:
            raise RemoteError(E.NOT_IN_RING, f"this node is not in the ring: {problem}")
        kid = ringId(key)
        deadline = self.clock.seconds() + self.config.kvDeadline
        hint: VnodeRef | None = None
        attempt = 0
        while True:
            try:
                owner = hint
                if owner is None:
                    owner, _ = await self.findSuccessor(kid)
                return await self.call(owner, "kv", op, key, args)
            except RemoteError as e:
                problem = self.outOfRing() if e.code == E.NOT_IN_RING else None
                if problem is not None:
                    raise RemoteError(E.NOT_IN_RING, f"this node is not in the ring: {problem}") from None
                if (not e.retryable and e.code != E.NOT_IN_RING) or self.clock.seconds() > deadline:
                    raise
                self.retries += 1
                attempt += 1
                # a hint with not-owner, or with busy from a vnode that does
                # not serve yet (see errors.notServing): go there at once
                rerouted = e.code == E.NOT_OWNER or e.around is not None
                hint = e.hint if rerouted and attempt % 4 else None
                if not rerouted or attempt > 2:
                    d: Deferred[None] = Deferred()
                    self.clock.callLater(
                        min(1.0, 0.02 * attempt) * (0.5 + self.rng.random()), d.callback, None
                    )
                    await d

    def kv(self, op: str, key: bytes, args: list[Any]) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._kv(op, key, args))

    async def _lookup(self, key: bytes) -> tuple[VnodeRef, list[VnodeRef], int]:
        owner, replicas, hops, _ = await _status.lookupVersions(self, key)
        return owner, replicas, hops

    def lookup(self, key: bytes) -> Deferred[tuple[VnodeRef, list[VnodeRef], int]]:
        return Deferred.fromCoroutine(self._lookup(key))

    def lookupVersions(self, key: bytes) -> Deferred[tuple[VnodeRef, list[VnodeRef], int, list[Any]]]:
        """
        L{lookup}, plus the versions of the key's records at the owner:
        C{[kind, hlc, origin, live]} each.
        """
        return Deferred.fromCoroutine(_status.lookupVersions(self, key))

    def holders(self, key: bytes) -> Deferred[list[int]]:
        """
        Indexes of this process's vnodes whose store holds a value for C{key}
        (as owner or replica); for operators and tests.
        """
        return Deferred.fromCoroutine(_status.holders(self, key))
