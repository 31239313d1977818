"""
The in-memory backend (tests only) and the base shared with the AOF one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from suite.kv import records as r
from suite.kv.interfaces import IKeyValueStore
from suite.kv.versions import TOMBSTONE_HORIZON, HybridClock, Version, versionAt

__all__ = ["TableStore", "MemoryStore", "PURGE_EVERY"]

T = TypeVar("T")
#: seconds between two purges of expired tombstones (done by a write)
PURGE_EVERY = 60.0


class TableStore:
    """
    A store whose records live in a L{records.Table}; subclasses persist
    each change through L{_persist}.

    @param origin: the writer id stamped into every version (a vnode id).
    @param horizon: seconds a tombstone is kept.
    """

    name = "table"

    def __init__(self, clock: IReactorTime, origin: int = 0, horizon: float = TOMBSTONE_HORIZON) -> None:
        self.clock = clock
        self.table = r.Table()
        self.hlc = HybridClock(clock.seconds, origin)
        self.horizon = horizon
        self.writes = 0
        self.reads = 0
        self.installed = 0
        self.stale = 0
        self.purged = 0
        self._purgeAt = 0

    # the Tx protocol, with persistence
    def read(self, kind: str, key: bytes) -> bytes | None:
        return self.table.read(kind, key)

    def stamp(self) -> Version:
        return self.hlc.stamp()

    def write(self, kind: str, key: bytes, payload: bytes | None) -> None:
        hlc, origin = self.hlc.stamp()
        self.table.write(kind, key, payload, hlc, origin)
        self.writes += 1
        self._persist(kind, key, payload, hlc, origin)
        if hlc >= self._purgeAt:
            self._purgeExpired()

    def _persist(self, kind: str, key: bytes, payload: bytes | None, hlc: int, origin: int) -> None:
        """
        Record a change: a record, a tombstone, or (C{None} at version 0) a
        record forgotten.
        """

    def _purgeExpired(self) -> int:
        now = self.clock.seconds()
        self._purgeAt = versionAt(now + PURGE_EVERY).hlc
        count = self.table.purge(versionAt(now - self.horizon))
        self.purged += count
        return count

    def _run(self, op: Callable[..., T], *args: Any) -> Deferred[T]:
        try:
            return succeed(op(self, *args))
        except Exception:  # handed to the caller's Deferred
            return fail()

    def get(self, key: bytes) -> Deferred[bytes | None]:
        self.reads += 1
        return succeed(self.table.read(r.VALUE, key))

    def put(self, key: bytes, value: bytes) -> Deferred[None]:
        return self._run(r.opPut, key, value)

    def delete(self, key: bytes) -> Deferred[bool]:
        return self._run(r.opDelete, key)

    def prefixAppend(self, prefix: bytes, child: bytes) -> Deferred[bool]:
        return self._run(r.opPrefixAppend, prefix, child)

    def prefixList(self, prefix: bytes) -> Deferred[list[bytes]]:
        return self._run(r.opPrefixList, prefix)

    def prefixContains(self, prefix: bytes, child: bytes) -> Deferred[bool]:
        return self._run(r.opPrefixContains, prefix, child)

    def prefixRemove(self, prefix: bytes, child: bytes) -> Deferred[bool]:
        return self._run(r.opPrefixRemove, prefix, child)

    def acquireLease(self, name: bytes, holder: bytes, ttl: float) -> Deferred[r.Lease]:
        return self._run(r.opAcquire, name, holder, ttl, self.clock.seconds())

    def renewLease(self, name: bytes, token: int, ttl: float) -> Deferred[r.Lease]:
        return self._run(r.opRenew, name, token, ttl, self.clock.seconds())

    def releaseLease(self, name: bytes, token: int) -> Deferred[bool]:
        return self._run(r.opRelease, name, token, self.clock.seconds())

    def exportKey(self, key: bytes) -> Deferred[list[r.Record]]:
        return succeed(self.table.exportKey(key))

    def exportRange(self, low: int, high: int) -> Deferred[list[r.Record]]:
        return succeed(self.table.inRange(low, high))

    def importRecords(self, records: Iterable[r.Incoming]) -> Deferred[int]:
        return succeed(self._install(records))

    def _install(self, records: Iterable[r.Incoming]) -> int:
        """
        L{importRecords}, at once: how many were installed.
        """
        table = self.table
        count = 0
        now = self.clock.seconds()
        # a tombstone past the horizon is as good as none (it may be purged here already)
        expired = versionAt(now - self.horizon).hlc
        observe = self.hlc.observe
        for kind, key, payload, hlc, origin in records:
            if kind not in r.KINDS:
                continue
            if hlc is None:
                # from a peer without versions: a write made now, as it expects
                if payload is not None or table.read(kind, key) is not None:
                    self.write(kind, key, payload)
                    count += 1
            elif payload is None and hlc < expired:
                self.stale += 1
            elif table.install(kind, key, payload, hlc, origin):
                observe(hlc)
                self._persist(kind, key, payload, hlc, origin)
                count += 1
            else:
                self.stale += 1
        self.installed += count
        if versionAt(now).hlc >= self._purgeAt:
            self._purgeExpired()
        return count

    def removeRange(self, low: int, high: int) -> Deferred[int]:
        return succeed(self._forgetRange(low, high))

    def _forgetRange(self, low: int, high: int) -> int:
        """
        L{removeRange}, at once: how many were forgotten.
        """
        doomed = self.table.inRange(low, high)
        for kind, key, _, _, _ in doomed:
            self.table.forget(kind, key)
            self._persist(kind, key, None, 0, 0)
        return len(doomed)

    def purge(self) -> Deferred[int]:
        return succeed(self._purgeExpired())

    def digestRange(self, low: int, high: int, buckets: int = 1) -> Deferred[list[tuple[int, int]]]:
        if versionAt(self.clock.seconds()).hlc >= self._purgeAt:
            self._purgeExpired()
        return succeed(self.table.digests(low, high, buckets))

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "records": len(self.table.data),
            "tombstones": len(self.table.tombstones),
            "bytes": self.table.bytes,
            "writes": self.writes,
            "reads": self.reads,
            "installed": self.installed,
            "stale": self.stale,
            "purged": self.purged,
        }

    def close(self) -> Deferred[None]:
        return succeed(None)


@implementer(IKeyValueStore)
class MemoryStore(TableStore):
    """
    Records in memory only; lost on exit.  For tests and simulations.
    """

    name = "memory"
