"""
Replication: the owner applies each KV call to its store, then copies the
key's resulting records to the next R-1 successors on distinct processes
and answers once they have acknowledged (or failed).  Repair, run from the
maintenance loop, compares range digests with each replica and resends the
whole owned range where they differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import DeferredList
from twisted.logger import Logger

from suite.kv.records import Lease, LeaseHeld, LeaseLost
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import VnodeRef

if TYPE_CHECKING:
    from suite.specter.chord.vnode import Vnode

__all__ = ["Replicator", "READS", "WRITES", "OPS"]

log = Logger()
READS = {"get": 0, "list": 0, "contains": 1}
WRITES = {"put": 1, "delete": 0, "append": 1, "remove": 1, "acquire": 2, "renew": 2, "release": 1}
OPS = {**READS, **WRITES}
SYNC_CHUNK = 4096


def _leaseOut(lease: Lease) -> list[Any]:
    return [lease.name, lease.holder, lease.token, lease.expiresAt]


class Replicator:
    """
    Replication and repair for one vnode.
    """

    def __init__(self, vnode: "Vnode") -> None:
        self.vnode = vnode
        self.replicated = 0
        self.replicaFailures = 0
        self.repairs = 0

    def replicas(self) -> list[VnodeRef]:
        """
        The next R-1 successors on processes other than this one and each other.
        """
        v = self.vnode
        want = v.node.config.replicas - 1
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
        store = self.vnode.store
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
                result = _leaseOut(await store.acquireLease(key, _bytes(args[0]), _num(args[1])))
            elif op == "renew":
                result = _leaseOut(await store.renewLease(key, int(_num(args[0])), _num(args[1])))
            else:
                result = await store.releaseLease(key, int(_num(args[0])))
        except LeaseHeld as e:
            raise RemoteError(E.LEASE_HELD, str(e)) from None
        except LeaseLost as e:
            raise RemoteError(E.LEASE_LOST, str(e)) from None
        await self.copy(key)
        return result

    async def copy(self, key: bytes) -> None:
        targets = self.replicas()
        if not targets:
            return
        records = await self.vnode.store.exportKey(key)
        calls = [self.vnode.call(t, "replicate", records) for t in targets]
        results = await DeferredList(calls, consumeErrors=True)
        for ok, _ in results:
            if ok:
                self.replicated += 1
            else:
                self.replicaFailures += 1

    async def repair(self) -> None:
        """
        Bring every replica's copy of the owned range in line with ours.
        """
        v = self.vnode
        rng = v.ownedRange()
        if rng is None or not v.membership.servesKeys():
            return
        low, high = rng
        if low == v.ref.id:
            low = high  # alone: the whole ring
        mine = None
        for target in self.replicas():
            try:
                theirs = await v.call(target, "digest", low, high)
                if mine is None:
                    mine = list(await v.store.digestRange(low, high))
                if list(theirs) == mine:
                    continue
                records = await v.store.exportRange(low, high)
                live = [r for r in records if r[2] is not None]
                if len(live) <= SYNC_CHUNK:
                    await v.call(target, "syncRange", low, high, live)
                else:
                    await v.call(target, "syncRange", low, high, live[:SYNC_CHUNK])
                    for i in range(SYNC_CHUNK, len(live), SYNC_CHUNK):
                        await v.call(target, "replicate", live[i : i + SYNC_CHUNK])
                self.repairs += 1
                log.info(
                    "vnode {vnode} repaired replica {replica} ({count} records)",
                    vnode=v.ref.short(),
                    replica=target.short(),
                    count=len(live),
                )
            except RemoteError:
                continue

    def stats(self) -> dict[str, Any]:
        return {"replicated": self.replicated, "replicaFailures": self.replicaFailures, "repairs": self.repairs}


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise RemoteError(E.BAD_REQUEST, "argument must be bytes")


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RemoteError(E.BAD_REQUEST, "argument must be a number")
    return float(value)
