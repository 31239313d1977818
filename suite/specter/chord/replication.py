"""
Replication: the owner applies each KV call to its store, then copies the
key's resulting records to the next R-1 successors on distinct processes
and answers once they have acknowledged (or failed).  Repair, run from the
maintenance loop, compares range digests (versions and tombstones
included) with each replica and, for each bucket that differs, exchanges
records by version with it (see L{suite.specter.chord.reconcile}): the
owner takes the replica's newer copies and sends its own newer ones, so a
write the replica holds and the owner missed is never overwritten.  A
replica that matched the current range is checked again only after
C{antiEntropy} seconds, unless a copy to it failed or the owned range
changed meanwhile.

An owner whose range changed (it joined, or took over a failed
predecessor's range, perhaps before the ring agreed who that was) may lack
records its replicas hold: until repair has compared the new range with
every replica, a read first fetches the key's records from the replicas
and keeps the newer ones, so the old holders serve reads until the new
owner has the records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.kv.records import KINDS, Lease, LeaseHeld, LeaseLost, bucketBounds
from suite.specter.chord import errors as E
from suite.specter.chord.base import records as _records
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef
from suite.specter.chord.machine import MembershipCore
from suite.specter.chord.reconcile import exchangeBucket
from suite.specter.chord.view import RingView
from suite.specter.interfaces import IVnodePeers

__all__ = ["Replicator", "READS", "WRITES", "OPS"]

log = Logger()
READS = {"get": 0, "list": 0, "contains": 1}
WRITES = {"put": 1, "delete": 0, "append": 1, "remove": 1, "acquire": 2, "renew": 2, "release": 1}
OPS = {**READS, **WRITES}
BUCKETS = 32


def _leaseOut(lease: Lease) -> list[Any]:
    return [lease.name, lease.holder, lease.token, lease.expiresAt]


class _Pipe:
    """
    Replication traffic to one replica: at most one call in flight; records
    queued meanwhile go together in the next call (group commit).
    """

    def __init__(self, peers: IVnodePeers, target: VnodeRef, onFailure: Callable[[VnodeRef], None]) -> None:
        self.peers = peers
        self.target = target
        self.onFailure = onFailure
        self.queue: list[Any] = []
        self.waiting: list[Deferred[bool]] = []
        self.busy = False

    def send(self, records: list[Any]) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.queue.extend(records)
        self.waiting.append(d)
        if not self.busy:
            self._flush()
        return d

    def _flush(self) -> None:
        records, self.queue = self.queue, []
        waiting, self.waiting = self.waiting, []
        self.busy = True

        def done(result: Any) -> None:
            ok = not isinstance(result, Failure)
            if not ok:
                self.onFailure(self.target)
            self.busy = False
            for d in waiting:
                d.callback(ok)
            if self.queue:
                self._flush()

        self.peers.call(self.target, "replicate", records).addBoth(done)


class Replicator:
    """
    Replication and repair for one vnode: the owner of the range its
    L{RingView} gives, whose records are in C{store}.

    @param membership: the vnode's membership core (repair runs only while
        the vnode serves).
    @param replicas: how many copies of each record the ring keeps (R).
    @param antiEntropy: seconds before a replica that matched is compared again.
    """

    def __init__(
        self,
        view: RingView,
        store: Any,
        peers: IVnodePeers,
        membership: MembershipCore,
        clock: IReactorTime,
        replicas: int,
        antiEntropy: float,
    ) -> None:
        self.view = view
        self.store = store
        self.peers = peers
        self.membership = membership
        self.clock = clock
        self.copies = replicas
        self.antiEntropy = antiEntropy
        self.replicated = 0
        self.replicaFailures = 0
        self.repairs = 0
        #: reads that took newer records from a replica first
        self.readThroughs = 0
        self.pipes: dict[VnodeRef, _Pipe] = {}
        #: replica -> (low, high, when): that replica matched our range then
        self.clean: dict[VnodeRef, tuple[int, int, float]] = {}

    def _dirty(self, target: VnodeRef) -> None:
        self.clean.pop(target, None)

    def replicas(self) -> list[VnodeRef]:
        """
        The next R-1 successors on processes other than this one and each other.
        """
        v = self.view
        want = self.copies - 1
        out: list[VnodeRef] = []
        seen = {v.ref.addr}
        for s in v.succs:
            if len(out) >= want:
                break
            if s.addr not in seen:
                seen.add(s.addr)
                out.append(s)
        return out

    async def apply(self, op: str, key: bytes, args: list[Any]) -> Any:
        if op not in OPS or len(args) != OPS[op]:
            raise RemoteError(E.BAD_REQUEST, f"unknown operation {op!r} or wrong arguments")
        store = self.store
        if op in READS and self.unsettled():
            await self.readThrough(key)
        try:
            if op == "get":
                return await store.get(key)
            if op == "list":
                return await store.prefixList(key)
            if op == "contains":
                return await store.prefixContains(key, _bytes(args[0]))
            if op == "put":
                result: Any = await store.put(key, _bytes(args[0]))
            elif op == "delete":
                result = await store.delete(key)
            elif op == "append":
                result = await store.prefixAppend(key, _bytes(args[0]))
            elif op == "remove":
                result = await store.prefixRemove(key, _bytes(args[0]))
            elif op == "acquire":
                result = _leaseOut(await store.acquireLease(key, _bytes(args[0]), _ttl(args[1])))
            elif op == "renew":
                result = _leaseOut(await store.renewLease(key, int(_num(args[0])), _ttl(args[1])))
            else:
                result = await store.releaseLease(key, int(_num(args[0])))
        except LeaseHeld as e:
            raise RemoteError(E.LEASE_HELD, str(e)) from None
        except LeaseLost as e:
            raise RemoteError(E.LEASE_LOST, str(e)) from None
        await self.copy(key)
        return result

    def unsettled(self) -> bool:
        """
        Whether some replica has not been compared with the current owned
        range yet (so it may hold records of that range this vnode lacks).
        """
        rng = self.view.ownedRange()
        if rng is None:
            return False
        low, high = rng
        if low == self.view.ref.id:
            low = high
        for target in self.replicas():
            seen = self.clean.get(target)
            if seen is None or seen[:2] != (low, high):
                return True
        return False

    async def readThrough(self, key: bytes) -> None:
        """
        Take the replicas' records of C{key} that are newer than ours.
        """
        slots = [[kind, key] for kind in KINDS]
        for target in self.replicas():
            if self.peers.suspected(target.addr):
                continue
            try:
                got, _ = await self.peers.call(target, "fetch", slots)
                if got and await self.store.importRecords(_records(got)):
                    self.readThroughs += 1
            except RemoteError:
                continue

    async def copy(self, key: bytes) -> None:
        targets = self.replicas()
        if any(t not in targets for t in self.clean):
            # a replica that misses this write must be checked when it returns
            self.clean = {t: seen for t, seen in self.clean.items() if t in targets}
        if not targets:
            return
        await self._send(targets, await self.store.exportKey(key))

    async def copyKeys(self, keys: list[bytes]) -> None:
        """
        Copy the records now held for C{keys} to the replicas (after a merge).
        """
        targets = self.replicas()
        self.clean = {}
        if not targets:
            return
        held = await gatherResults([self.store.exportKey(key) for key in keys])
        await self._send(targets, [rec for recs in held for rec in recs])

    async def _send(self, targets: list[VnodeRef], records: list[Any]) -> None:
        calls = []
        for t in targets:
            pipe = self.pipes.get(t)
            if pipe is None:
                pipe = self.pipes[t] = _Pipe(self.peers, t, self._dirty)
            calls.append(pipe.send(records))
        if len(self.pipes) > 4 * len(targets):
            self.pipes = {t: p for t, p in self.pipes.items() if t in targets or p.busy}
        results = await DeferredList(calls, consumeErrors=True)
        for _, ok in results:
            if ok:
                self.replicated += 1
            else:
                self.replicaFailures += 1

    async def repair(self) -> None:
        """
        Bring every replica's copy of the owned range in line with ours.
        """
        v = self.view
        rng = v.ownedRange()
        if rng is None or not self.membership.phase.serving:
            return
        low, high = rng
        if low == v.ref.id:
            low = high  # alone: the whole ring
        mine = None
        now = self.clock.seconds()
        targets = self.replicas()
        # a replica that dropped out (crashed) and came back is checked afresh
        self.clean = {t: seen for t, seen in self.clean.items() if t in targets}
        for target in targets:
            seen = self.clean.get(target)
            if seen is not None and seen[:2] == (low, high) and now - seen[2] < self.antiEntropy:
                continue
            pipe = self.pipes.get(target)
            if pipe is not None and pipe.busy:
                continue  # copies in flight: digests would differ for now
            try:
                theirs = await self.peers.call(target, "digest", low, high, BUCKETS)
                if mine is None:
                    mine = [list(b) for b in await self.store.digestRange(low, high, BUCKETS)]
                differ = [i for i in range(BUCKETS) if list(theirs[i]) != mine[i]]
                if not differ:
                    self.clean[target] = (low, high, now)
                    continue
                bounds = bucketBounds(low, high, BUCKETS)
                sent = taken = 0
                for i in differ:
                    blo, bhi = bounds[i]
                    out, into = await exchangeBucket(self.peers, self.store, target, blo, bhi)
                    sent += out
                    taken += into
                self.repairs += 1
                self.clean[target] = (low, high, now)
                if taken:
                    # newer records came from this replica: the others need them too
                    self.clean = {target: self.clean[target]}
                    mine = None
                log.info(
                    "vnode {vnode} repaired replica {replica} ({buckets} of {total} buckets, "
                    "{count} records sent, {taken} newer ones taken from it)",
                    vnode=v.ref.short(),
                    replica=target.short(),
                    buckets=len(differ),
                    total=BUCKETS,
                    count=sent,
                    taken=taken,
                )
            except RemoteError:
                continue

    def stats(self) -> dict[str, Any]:
        return {
            "replicated": self.replicated,
            "replicaFailures": self.replicaFailures,
            "repairs": self.repairs,
            "readThroughs": self.readThroughs,
        }


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise RemoteError(E.BAD_REQUEST, "argument must be bytes")


#: the longest lease, in seconds (one day)
MAX_TTL = 86400.0


def _ttl(value: Any) -> float:
    ttl = _num(value)
    if not 0 < ttl <= MAX_TTL:
        raise RemoteError(E.BAD_REQUEST, f"ttl must be greater than 0 and at most {MAX_TTL:g} seconds")
    return ttl


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RemoteError(E.BAD_REQUEST, "argument must be a number")
    return float(value)
