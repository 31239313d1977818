"""
One process's share of the ring: its vnodes, the dispatcher for calls that
arrive from other processes, iterative lookups, and the KV entry point that
routes an operation to the key's owner and retries on stale ownership.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef, ref, ringId, vnodeId
from suite.specter.chord.vnode import Vnode
from suite.specter.interfaces import IChordTransport, IRing, IRingState

__all__ = ["ChordConfig", "ChordNode"]

log = Logger()
MAX_HOPS = 64
#: seconds between two reports of the same trouble getting into the ring
JOIN_LOG_INTERVAL = 5.0
#: the most processes a node asks while looking for its ring
MAX_PEERS = 1024
#: seconds out of reach of the ring before KV calls are refused outright
REFUSE_AFTER = 3.0
BATCH_INFLIGHT = 4
BATCH_MAX = 1024


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


class _Batcher:
    """
    KV calls to one peer process: up to L{BATCH_INFLIGHT} C{multi} calls in
    flight; calls made meanwhile travel together in the next one.
    """

    def __init__(self, node: ChordNode, addr: str) -> None:
        self.node = node
        self.addr = addr
        self.queue: list[tuple[int, list[Any], Deferred[Any]]] = []
        self.inflight = 0

    def send(self, vid: int, args: list[Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queue.append((vid, args, d))
        if self.inflight < BATCH_INFLIGHT:
            self._flush()
        return d

    def _flush(self) -> None:
        batch, self.queue = self.queue[:BATCH_MAX], self.queue[BATCH_MAX:]
        self.inflight += 1
        calls = [[vid, "kv", args] for vid, args, _ in batch]
        d = self.node.transport.call(self.addr, None, "multi", [calls], self.node.config.rpcTimeout)

        def done(results: Any) -> None:
            self.inflight -= 1
            if isinstance(results, Failure) or not isinstance(results, list) or len(results) != len(batch):
                err = (
                    results.value
                    if isinstance(results, Failure) and isinstance(results.value, RemoteError)
                    else RemoteError(E.GONE, "batch failed")
                )
                if err.code == E.TIMEOUT:
                    self.node._timedOut(self.addr)
                for _, _, waiting in batch:
                    waiting.errback(err)
            else:
                for (_, _, waiting), (ok, value) in zip(batch, results, strict=True):
                    if ok:
                        waiting.callback(value)
                    else:
                        waiting.errback(RemoteError.fromWire(value))
            if self.queue and self.inflight < BATCH_INFLIGHT:
                self._flush()

        d.addBoth(done)


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
        self.suspects: dict[str, float] = {}
        self.timeouts: dict[str, int] = {}
        self.seed: str | None = None
        self.batchers: dict[str, _Batcher] = {}
        #: where this process's ring membership is kept across restarts
        self.ringState = IRingState(ringState) if ringState is not None else None
        history = self.ringState.load() if self.ringState is not None else None
        #: processes this one was in a ring with (its last saved view)
        previous = (history or {}).get("addr")
        self.knownPeers: list[str] = [
            p for p in (history or {}).get("peers", []) if p not in (addr, previous)
        ]
        if previous and previous != addr:
            # Node identity is the advertise address (vnode ids hash it): a new
            # one means new ring positions.  Rejoin through the peers known.
            log.warn(
                "advertise address changed from {old} to {new}: joining as new vnodes through "
                "the {count} peers known; this directory's records are merged into the new "
                "ranges and the ring drops the vnodes of {old} once they stop answering",
                old=previous,
                new=addr,
                count=len(self.knownPeers),
            )
        self._savedPeers = set(self.knownPeers)
        #: every process this one has been in a ring with (for healing splits)
        self.formerPeers: set[str] = set(self.knownPeers)
        self._nextProbe = clock.seconds() + config.healInterval
        #: the lowest vnode of another ring found by the last probe: a ring
        #: is only merged when two probes in a row find it (not churn)
        self._foreign: VnodeRef | None = None
        #: rejoins into another ring found after a split (see L{heal})
        self.heals = 0
        self._rejoinedAt: float | None = None
        self._saving = False
        self._saveAgain = False
        #: addresses tried, in order, when no vnode of this process serves
        self.seeds: list[str] = []
        #: whether this process founds the ring (rather than joining one)
        self.founding = False
        #: why this process is not in the ring, while it cannot get in
        self.joinProblem: str | None = None
        self._joinLoggedAt: float | None = None
        self._troubleSince = 0.0
        self._joinSuppressed = 0
        #: who waits for every vnode here to serve (L{whenServing})
        self._servingWaiters: list[Deferred[None]] = []

    # -- lifecycle -------------------------------------------------------------
    def firstVnode(self) -> Vnode:
        return self.vnodes[0]

    def start(self, seed: str | None, bootstrap: bool = False, alsoJoin: tuple[str, ...] = ()) -> None:
        """
        Bring every vnode into the ring.  With C{seed}, through it (and,
        failing it, through the peers the ring state names); without, a
        process with ring state rejoins through the peers it knew; one
        without ring state, or told to C{bootstrap}, founds a new ring.
        """
        self.seed = seed
        given = ([seed] if seed else []) + [a for a in alsoJoin if a != seed]
        self.seeds = given + [p for p in self.knownPeers if p not in given]
        self.founding = bootstrap or not self.seeds
        if self.founding:
            log.info("founding a new ring" + (" (--bootstrap)" if bootstrap else ""))
        elif seed is None:
            log.info(
                "rejoining the ring through the {count} peers this node knew: {peers}",
                count=len(self.knownPeers),
                peers=", ".join(self.knownPeers),
            )
        for v in self.vnodes:
            v.start(seed)

    def leave(self) -> Deferred[Any]:
        """
        Every vnode hands its keys on and leaves; fires when all have.  The
        ring state is saved first, so a restart finds the ring again.
        """
        self.saveRingState(force=True)
        return DeferredList([v.leave() for v in self.vnodes], consumeErrors=True)

    # -- ring state --------------------------------------------------------------------
    def currentPeers(self) -> set[str]:
        """
        The other processes this one's vnodes know now (successors,
        predecessors, fingers).
        """
        out: set[str] = set()
        for v in self.vnodes:
            if v.gone:
                continue
            for r in (*v.succs, v.pred, *v.fingers):
                if r is not None and r.addr != self.addr:
                    out.add(r.addr)
        return out

    def ringSnapshot(self, peers: set[str]) -> dict[str, Any]:
        return {
            "format": 1,
            "addr": self.addr,
            "peers": sorted(peers),
            "vnodes": [
                {
                    "index": v.ref.index,
                    "predecessor": list(v.pred) if v.pred else None,
                    "successors": [list(s) for s in v.succs],
                }
                for v in self.vnodes
            ],
        }

    def saveRingState(self, force: bool = False) -> None:
        """
        Save the ring membership when the set of peers changed (or when
        C{force}d); an empty view never replaces a saved one, so a process
        that lost every peer still knows where its ring was.
        """
        if self.ringState is None:
            return
        if not any(v.serving for v in self.vnodes):
            return
        peers = self.currentPeers()
        if not peers or (peers == self._savedPeers and not force):
            return
        if self._saving:
            self._saveAgain = True
            return
        self._saving = True
        self._savedPeers = peers
        if len(self.formerPeers) < MAX_PEERS:
            self.formerPeers |= peers
        self.knownPeers = sorted(peers)

        def saved(result: Any) -> None:
            self._saving = False
            if isinstance(result, Failure):
                log.failure("cannot save the ring state", result)
                self._savedPeers = set()
            if self._saveAgain:
                self._saveAgain = False
                self.saveRingState()

        self.ringState.save(self.ringSnapshot(peers)).addBoth(saved)

    # -- getting in ----------------------------------------------------------------------
    def joinTrouble(self, reason: str) -> None:
        """
        Record why this process is not in the ring and log it, at most once
        every L{JOIN_LOG_INTERVAL} seconds (with how many retries failed since).
        """
        now = self.clock.seconds()
        if self.joinProblem is None:
            self._troubleSince = now
        self.joinProblem = reason
        if self._joinLoggedAt is not None and now - self._joinLoggedAt < JOIN_LOG_INTERVAL:
            self._joinSuppressed += 1
            return
        log.warn(
            "not in the ring: {reason} (retrying; {count} more failed attempts since the last report)",
            reason=reason,
            count=self._joinSuppressed,
        )
        self._joinLoggedAt = now
        self._joinSuppressed = 0

    def outOfRing(self) -> str | None:
        """
        Why KV calls are refused here: no vnode serves and the ring has been
        out of reach for L{REFUSE_AFTER} seconds or more.
        """
        if self.joinProblem is None or any(v.serving for v in self.vnodes):
            return None
        if self.clock.seconds() - self._troubleSince < REFUSE_AFTER:
            return None
        return self.joinProblem

    def becameServing(self) -> None:
        if self.joinProblem is not None:
            log.info("in the ring again")
        self.joinProblem = None
        self._joinLoggedAt = None
        if self._servingWaiters and all(v.serving for v in self.vnodes):
            waiters, self._servingWaiters = self._servingWaiters, []
            for d in waiters:
                d.callback(None)

    def whenServing(self) -> Deferred[None]:
        """
        A Deferred that fires once every vnode of this process serves keys
        (at once if they do); cancellable.
        """
        if all(v.serving for v in self.vnodes):
            return succeed(None)
        d: Deferred[None] = Deferred(lambda d: self._servingWaiters.remove(d))
        self._servingWaiters.append(d)
        return d

    def status(self) -> dict[str, Any]:
        """
        The C{status} call: serving vnodes, and whether this process has a
        ring history (so restarting processes can agree who re-forms it).
        """
        return {
            "serving": [list(v.ref) for v in self.vnodes if v.serving],
            "history": bool(self.knownPeers),
            "founding": self.founding,
            "peers": self.knownPeers[:MAX_PEERS],
        }

    async def _contactSeeds(self) -> VnodeRef:
        """
        A serving vnode of another process, found through the seeds and,
        transitively, the peers each of them knew.  When every process so
        found answers and none serves (the whole ring is restarting), the
        one with the lowest address founds it again: all of them see the
        same set, so exactly one does.
        """
        if not self.seeds:
            raise RemoteError(E.BUSY, "no serving vnode yet")
        queue = list(self.seeds)
        seen = set(queue)
        answered: dict[str, dict[str, Any]] = {}
        errors: list[str] = []
        i = 0
        while i < len(queue):
            addr = queue[i]
            i += 1
            try:
                try:
                    info = await self.transport.call(addr, None, "status", [], self.config.rpcTimeout)
                except RemoteError as e:
                    if e.code != E.BAD_REQUEST:
                        raise
                    # a peer from before the status call: it only knows hello
                    hello = await self.transport.call(addr, None, "hello", [], self.config.rpcTimeout)
                    info = {"serving": hello, "history": False}
            except RemoteError as e:
                errors.append(f"{addr}: {e.message or e.code}")
                continue
            if not isinstance(info, dict):
                errors.append(f"{addr}: malformed status answer")
                continue
            refs = [r for r in (ref(x) for x in info.get("serving") or []) if r is not None]
            if refs:
                self.joinProblem = None
                return self.rng.choice(refs)
            answered[addr] = info
            for peer in info.get("peers") or []:
                if isinstance(peer, str) and peer != self.addr and peer not in seen and len(seen) < MAX_PEERS:
                    seen.add(peer)
                    queue.append(peer)
        if not answered:
            self.joinTrouble("cannot reach any known ring peer (" + "; ".join(errors) + ")")
            raise RemoteError(E.NOT_IN_RING, self.joinProblem or "")
        restarting = {a for a, info in answered.items() if info.get("history")}
        if self.knownPeers and restarting == seen and all(self.addr < a for a in seen):
            if not self.founding:
                log.info(
                    "every ring peer is restarting too ({peers}): this node re-forms the ring",
                    peers=", ".join(sorted(seen)),
                )
            self.founding = True
            raise RemoteError(E.BUSY, "re-forming the ring")
        self.joinTrouble(
            "no ring peer serves yet: "
            + ", ".join(sorted(answered))
            + " answered (waiting for the ring to re-form"
            + (f"; unreachable: {'; '.join(errors)})" if errors else ")")
        )
        raise RemoteError(E.NOT_IN_RING, self.joinProblem or "")

    # -- healing a split ---------------------------------------------------------------
    def maybeProbe(self) -> None:
        """
        Called every maintenance round: at most once per C{healInterval},
        ask one formerly known process outside the current ring view which
        ring it is in (L{heal}).
        """
        now = self.clock.seconds()
        if now < self._nextProbe:
            return
        self._nextProbe = now + self.config.healInterval * (0.75 + 0.5 * self.rng.random())
        if not all(v.serving for v in self.vnodes):
            return
        outside = sorted(self.formerPeers - self.currentPeers() - {self.addr})
        if not outside:
            return
        peer = self.rng.choice(outside)
        Deferred.fromCoroutine(self.heal(peer)).addErrback(
            lambda f: log.failure("probing {peer} for another ring failed", f, peer=peer)
        )

    async def heal(self, peer: str) -> bool:
        """
        If C{peer} serves in another ring (a split that outlasted failure
        detection), merge: each ring is named by its lowest vnode id (the
        owner of id 0); the ring with the higher one rejoins the other, one
        process at a time, exactly as a restarted process rejoins (its
        records merge by version and re-home).  The lower name of the ring
        taking processes in only falls and the other's only rises, so every
        process agrees which side moves.  Returns whether this one rejoined.
        """
        try:
            info = await self.transport.call(peer, None, "status", [], self.config.rpcTimeout)
        except RemoteError:
            return False
        if not isinstance(info, dict):
            return False
        refs = [r for r in (ref(x) for x in info.get("serving") or []) if r is not None]
        if not refs or not all(v.serving for v in self.vnodes):
            return False
        entry = self.rng.choice(refs)
        mine = self.vnodes[0].ref
        try:
            state = await self.call(entry, "state")
            near = {r.addr for r in (ref(x) for x in [state[0], *state[1]]) if r is not None}
            if near & (self.currentPeers() | {self.addr}):
                self._foreign = None
                return False
            theirs, _ = await self.findSuccessor(0, start=entry)
            ours, _ = await self.findSuccessor(0)
            landing, _ = await self.findSuccessor(mine.id, start=entry)
        except (RemoteError, TypeError, IndexError):
            return False
        if theirs == ours or landing == mine or theirs.addr == self.addr:
            self._foreign = None
            return False
        if self._foreign != theirs:
            # churn in one ring can look like this for a moment: ask again
            self._foreign = theirs
            self._nextProbe = min(self._nextProbe, self.clock.seconds() + self.config.healInterval / 2)
            return False
        self._foreign = None
        log.info(
            "found another ring through {peer} (its lowest vnode {theirs}, ours {ours})",
            peer=peer,
            theirs=theirs.short(),
            ours=ours.short(),
        )
        if theirs.id > ours.id:
            return False
        self.rejoin(peer)
        return True

    def rejoin(self, peer: str) -> None:
        """
        Leave the current ring without handing keys on and join the ring
        C{peer} serves in, as a process restarted with C{peer} as its seed:
        new vnodes on the same stores.
        """
        self.heals += 1
        self._rejoinedAt = self.clock.seconds()
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
        self.suspects.clear()
        self.timeouts.clear()
        self.seed = peer
        self.seeds = [peer] + sorted(self.formerPeers - {peer, self.addr})
        self.founding = False
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
        now = self.clock.seconds()
        if self._rejoinedAt is not None and now - self._rejoinedAt < self.config.healInterval:
            return False
        if peer in self.currentPeers() or not all(v.serving for v in self.vnodes):
            return False
        log.info("a peer of this ring found another ring through {peer}", peer=peer)
        self.formerPeers.add(peer)
        self.rejoin(peer)
        return True

    def stop(self) -> None:
        for v in self.vnodes:
            v.stop()

    # -- calls ----------------------------------------------------------------------
    def call(self, target: VnodeRef, method: str, *args: Any) -> Deferred[Any]:
        if target.addr == self.addr:
            return self.dispatch(target.id, method, list(args))
        if method == "kv":
            batcher = self.batchers.get(target.addr)
            if batcher is None:
                batcher = self.batchers[target.addr] = _Batcher(self, target.addr)
            return batcher.send(target.id, list(args))
        d: Deferred[Any] = self.transport.call(
            target.addr, target.id, method, list(args), self.config.rpcTimeout
        )

        def answered(result: Any) -> Any:
            self.timeouts.pop(target.addr, None)
            return result

        def failed(f: Any) -> Any:
            if f.check(RemoteError) and f.value.code == E.TIMEOUT:
                self._timedOut(target.addr)
            else:
                self.timeouts.pop(target.addr, None)
            return f

        return d.addCallbacks(answered, failed)

    def _timedOut(self, addr: str) -> None:
        count = self.timeouts[addr] = self.timeouts.get(addr, 0) + 1
        if count >= 2:
            self.suspects[addr] = self.clock.seconds() + 2 * self.config.rpcTimeout

    def suspected(self, addr: str) -> bool:
        """
        Whether calls to C{addr} timed out lately (so lookups route around it).
        """
        until = self.suspects.get(addr)
        if until is None:
            return False
        if until < self.clock.seconds():
            del self.suspects[addr]
            return False
        return True

    def dispatch(self, vid: int | None, method: str, args: list[Any]) -> Deferred[Any]:
        """
        Run an incoming call; failures are L{RemoteError}s.
        """
        if vid is None:
            if method == "hello":
                return maybeDeferred(self.hello)
            if method == "status":
                return maybeDeferred(self.status)
            if method == "heal" and len(args) == 1:
                return maybeDeferred(self.healRequested, args[0])
            if (
                method == "multi"
                and len(args) == 1
                and isinstance(args[0], list)
                and len(args[0]) <= BATCH_MAX
            ):
                return self._multi(args[0])
            return _fail(RemoteError(E.BAD_REQUEST, f"unknown node method {method!r}"))
        v = self.byId.get(vid) if isinstance(vid, int) else None
        if v is None or v.gone:
            return _fail(RemoteError(E.GONE, "no such vnode"))
        handler = v.handler(method) if isinstance(method, str) else None
        if handler is None:
            return _fail(RemoteError(E.BAD_REQUEST, f"unknown method {method!r}"))
        if not isinstance(args, list):
            return _fail(RemoteError(E.BAD_REQUEST, "arguments must be a list"))

        def run() -> Any:
            result = handler(*args)
            if hasattr(result, "__await__"):
                return Deferred.fromCoroutine(result)
            return result

        d = maybeDeferred(run)

        def wrap(f: Any) -> Any:
            if f.check(RemoteError):
                return f
            if f.check(TypeError, ValueError, KeyError, IndexError, AttributeError):
                raise RemoteError(E.BAD_REQUEST, f"{method}: bad arguments")
            log.failure("vnode call {method} failed", f, method=method)
            raise RemoteError(E.INTERNAL, f"{method} failed")

        return d.addErrback(wrap)

    def _multi(self, calls: list[Any]) -> Deferred[Any]:
        """
        Run a batch of vnode calls; answer C{[ok, result-or-error]} for each.
        """
        ds = []
        for call in calls:
            if not isinstance(call, list) or len(call) != 3 or call[1] == "multi":
                ds.append(_fail(RemoteError(E.BAD_REQUEST, "malformed batched call")))
            else:
                ds.append(self.dispatch(call[0], call[1], call[2]))

        def collect(results: list[tuple[bool, Any]]) -> list[Any]:
            out = []
            for ok, value in results:
                if ok:
                    out.append([True, value])
                else:
                    err = (
                        value.value
                        if isinstance(value.value, RemoteError)
                        else RemoteError(E.INTERNAL, "call failed")
                    )
                    out.append([False, err.toWire()])
            return out

        return DeferredList(ds, consumeErrors=True).addCallback(collect)

    def hello(self) -> list[Any]:
        return [list(v.ref) for v in self.vnodes if v.serving]

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
            self.joinProblem = None
            return self.rng.choice(known)
        return await self._contactSeeds()

    async def findSuccessor(self, kid: int, start: VnodeRef | None = None) -> tuple[VnodeRef, int]:
        """
        Iterative lookup of the vnode responsible for C{kid}; also returns
        the number of remote hops it took.
        """
        current = start or await self.entryPoint(None)
        hops = 0
        for _ in range(MAX_HOPS):
            local = self.byId.get(current.id) if current.addr == self.addr else None
            if local is not None and not local.gone:
                done, nxt = local.step(kid)
            else:
                hops += 1
                try:
                    answer = await self.call(current, "step", kid)
                except RemoteError as e:
                    if e.code not in (E.TIMEOUT, E.GONE) or current == start:
                        raise
                    current = start if start is not None else await self.entryPoint(None)
                    continue
                done = bool(answer[0])
                decoded = ref(answer[1])
                if decoded is None:
                    raise RemoteError(E.INTERNAL, "bad step answer")
                nxt = decoded
            if done:
                self.lookups += 1
                self.hops += hops
                return nxt, hops
            current = nxt
        raise RemoteError(E.BUSY, "lookup did not converge")

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
                hint = e.hint if e.code == E.NOT_OWNER and attempt % 4 else None
                if e.code != E.NOT_OWNER or attempt > 2:
                    d: Deferred[None] = Deferred()
                    self.clock.callLater(
                        min(1.0, 0.02 * attempt) * (0.5 + self.rng.random()), d.callback, None
                    )
                    await d

    def kv(self, op: str, key: bytes, args: list[Any]) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._kv(op, key, args))

    async def _lookup(self, key: bytes) -> tuple[VnodeRef, list[VnodeRef], int]:
        owner, replicas, hops, _ = await self._lookupVersions(key)
        return owner, replicas, hops

    async def _lookupVersions(self, key: bytes) -> tuple[VnodeRef, list[VnodeRef], int, list[Any]]:
        owner, hops = await self.findSuccessor(ringId(key))
        versions = await self.call(owner, "recordVersions", key)
        state = await self.call(owner, "state")
        succs = [r for r in (ref(s) for s in state[1]) if r is not None]
        want = self.config.replicas - 1
        replicas: list[VnodeRef] = []
        seen = {owner.addr}
        for s in succs:
            if len(replicas) >= want:
                break
            if s.addr not in seen:
                seen.add(s.addr)
                replicas.append(s)
        return owner, replicas, hops, versions

    def lookup(self, key: bytes) -> Deferred[tuple[VnodeRef, list[VnodeRef], int]]:
        return Deferred.fromCoroutine(self._lookup(key))

    def lookupVersions(self, key: bytes) -> Deferred[tuple[VnodeRef, list[VnodeRef], int, list[Any]]]:
        """
        L{lookup}, plus the versions of the key's records at the owner:
        C{[kind, hlc, origin, live]} each.
        """
        return Deferred.fromCoroutine(self._lookupVersions(key))

    async def _holders(self, key: bytes) -> list[int]:
        out = []
        for v in self.vnodes:
            if not v.gone and await v.store.get(key) is not None:
                out.append(v.ref.index)
        return out

    def holders(self, key: bytes) -> Deferred[list[int]]:
        """
        Indexes of this process's vnodes whose store holds a value for C{key}
        (as owner or replica); for operators and tests.
        """
        return Deferred.fromCoroutine(self._holders(key))

    def stats(self) -> dict[str, Any]:
        return {
            "addr": self.addr,
            "lookups": self.lookups,
            "hops": self.hops,
            "retries": self.retries,
            "vnodes": [
                {
                    "index": v.ref.index,
                    "id": f"{v.ref.id:016x}",
                    "serving": v.serving,
                    "predecessor": v.pred.short() if v.pred else None,
                    "successors": [s.short() for s in v.succs],
                    "replicas": [s.short() for s in v.replicator.replicas()],
                    "store": v.store.stats(),
                    **v.replicator.stats(),
                }
                for v in self.vnodes
            ],
        }


def _fail(e: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(e)
    return d
