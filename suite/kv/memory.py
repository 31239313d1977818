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

__all__ = ["TableStore", "MemoryStore"]

T = TypeVar("T")


class TableStore:
    """
    A store whose records live in a L{records.Table}; subclasses persist
    each write through L{_persist}.
    """

    name = "table"

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.table = r.Table()
        self.writes = 0
        self.reads = 0

    # the Tx protocol, with persistence
    def read(self, kind: str, key: bytes) -> bytes | None:
        return self.table.read(kind, key)

    def write(self, kind: str, key: bytes, payload: bytes | None) -> None:
        self.table.write(kind, key, payload)
        self.writes += 1
        self._persist(kind, key, payload)

    def _persist(self, kind: str, key: bytes, payload: bytes | None) -> None:
        pass

    def _run(self, op: Callable[..., T], *args: Any) -> Deferred[T]:
        try:
            return succeed(op(self, *args))
        except Exception:
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

    def importRecords(self, records: Iterable[r.Record]) -> Deferred[None]:
        for kind, key, payload in records:
            if kind in r.KINDS and (payload is not None or self.table.read(kind, key) is not None):
                self.write(kind, key, payload)
        return succeed(None)

    def removeRange(self, low: int, high: int) -> Deferred[int]:
        doomed = self.table.inRange(low, high)
        for kind, key, _ in doomed:
            self.write(kind, key, None)
        return succeed(len(doomed))

    def digestRange(self, low: int, high: int, buckets: int = 1) -> Deferred[list[tuple[int, int]]]:
        return succeed(self.table.digests(low, high, buckets))

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "records": len(self.table.data),
            "bytes": self.table.bytes,
            "writes": self.writes,
            "reads": self.reads,
        }

    def close(self) -> Deferred[None]:
        return succeed(None)


@implementer(IKeyValueStore)
class MemoryStore(TableStore):
    """
    Records in memory only; lost on exit.  For tests and simulations.
    """

    name = "memory"
