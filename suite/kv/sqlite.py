"""
The SQLite backend: one database per vnode in WAL mode, driven by a single
writer thread with group commit (every operation queued while a batch runs
goes into the next transaction).  SQLite's temporary files go to
C{<data-dir>/cache}.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.kv import records as r
from suite.kv.aof import Runner
from suite.kv.interfaces import IKeyValueStore

__all__ = ["SQLiteStore"]

log = Logger()
_OFFSET = 1 << 63
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key BLOB NOT NULL,
    rid INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_rid ON records (rid);
"""


def _sid(ringPosition: int) -> int:
    """
    Ring positions are unsigned 64-bit; SQLite integers are signed.
    """
    return ringPosition - _OFFSET


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def read(self, kind: str, key: bytes) -> bytes | None:
        row = self.db.execute("SELECT payload FROM records WHERE kind=? AND key=?", (kind, key)).fetchone()
        return None if row is None else bytes(row[0])

    def write(self, kind: str, key: bytes, payload: bytes | None) -> None:
        if payload is None:
            self.db.execute("DELETE FROM records WHERE kind=? AND key=?", (kind, key))
        else:
            self.db.execute(
                "INSERT OR REPLACE INTO records (kind, key, rid, payload) VALUES (?, ?, ?, ?)",
                (kind, key, _sid(r.ringId(key)), payload),
            )

    def range(self, low: int, high: int) -> list[r.Record]:
        q = "SELECT kind, key, payload FROM records WHERE "
        if low < high:
            rows = self.db.execute(q + "rid > ? AND rid <= ?", (_sid(low), _sid(high)))
        else:
            rows = self.db.execute(q + "rid > ? OR rid <= ?", (_sid(low), _sid(high)))
        return [(k, bytes(key), bytes(p)) for k, key, p in rows]


@implementer(IKeyValueStore)
class SQLiteStore:
    """
    Records in C{<directory>/kv.sqlite}.

    @param runner: runs a blocking callable on this store's single writer
        thread (a one-thread pool) and returns a Deferred.
    """

    name = "sqlite"

    def __init__(self, directory: str, cacheDir: str, clock: IReactorTime, runner: Runner) -> None:
        self.clock = clock
        self.runner = runner
        self.path = os.path.join(directory, "kv.sqlite")
        os.makedirs(directory, exist_ok=True)
        os.makedirs(cacheDir, exist_ok=True)
        self.cacheDir = cacheDir
        self._queue: list[tuple[Callable[[_Tx], Any], Deferred[Any]]] = []
        self._busy = False
        self._idle: list[Deferred[None]] = []
        self._db: sqlite3.Connection | None = None
        self.batches = 0
        self.ops = 0
        self.opened: Deferred[None] = self._call(self._open)

    def _open(self) -> None:
        # runs on the writer thread
        os.environ.setdefault("SQLITE_TMPDIR", self.cacheDir)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute(f"PRAGMA temp_store_directory='{self.cacheDir}'")
        except sqlite3.Error:
            pass
        db.executescript(_SCHEMA)
        self._db = db

    def _call(self, fn: Callable[[], Any]) -> Deferred[Any]:
        return self.runner(fn)

    def _submit(self, op: Callable[[_Tx], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self._queue.append((op, d))
        self._kick()
        return d

    def _kick(self) -> None:
        if self._busy:
            return
        if not self._queue:
            waiters, self._idle = self._idle, []
            for w in waiters:
                w.callback(None)
            return
        batch, self._queue = self._queue, []
        self._busy = True

        def run() -> list[tuple[bool, Any]]:
            if self._db is None:
                self._open()
            assert self._db is not None
            tx = _Tx(self._db)
            results: list[tuple[bool, Any]] = []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for op, _ in batch:
                    try:
                        results.append((True, op(tx)))
                    except (r.LeaseHeld, r.LeaseLost) as e:
                        results.append((False, e))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return results

        def done(results: list[tuple[bool, Any]]) -> None:
            self._busy = False
            self.batches += 1
            self.ops += len(batch)
            for (ok, value), (_, d) in zip(results, batch, strict=False):
                if ok:
                    d.callback(value)
                else:
                    d.errback(value)
            self._kick()

        def failed(f: Any) -> None:
            self._busy = False
            log.failure("SQLite batch on {path} failed", f, path=self.path)
            for _, d in batch:
                d.errback(f)
            self._kick()

        self.opened.addCallback(lambda _: self.runner(run)).addCallbacks(done, failed)

    def get(self, key: bytes) -> Deferred[bytes | None]:
        return self._submit(lambda tx: tx.read(r.VALUE, key))

    def put(self, key: bytes, value: bytes) -> Deferred[None]:
        return self._submit(lambda tx: r.opPut(tx, key, value))

    def delete(self, key: bytes) -> Deferred[bool]:
        return self._submit(lambda tx: r.opDelete(tx, key))

    def prefixAppend(self, prefix: bytes, child: bytes) -> Deferred[bool]:
        return self._submit(lambda tx: r.opPrefixAppend(tx, prefix, child))

    def prefixList(self, prefix: bytes) -> Deferred[list[bytes]]:
        return self._submit(lambda tx: r.opPrefixList(tx, prefix))

    def prefixContains(self, prefix: bytes, child: bytes) -> Deferred[bool]:
        return self._submit(lambda tx: r.opPrefixContains(tx, prefix, child))

    def prefixRemove(self, prefix: bytes, child: bytes) -> Deferred[bool]:
        return self._submit(lambda tx: r.opPrefixRemove(tx, prefix, child))

    def acquireLease(self, name: bytes, holder: bytes, ttl: float) -> Deferred[r.Lease]:
        now = self.clock.seconds()
        return self._submit(lambda tx: r.opAcquire(tx, name, holder, ttl, now))

    def renewLease(self, name: bytes, token: int, ttl: float) -> Deferred[r.Lease]:
        now = self.clock.seconds()
        return self._submit(lambda tx: r.opRenew(tx, name, token, ttl, now))

    def releaseLease(self, name: bytes, token: int) -> Deferred[bool]:
        now = self.clock.seconds()
        return self._submit(lambda tx: r.opRelease(tx, name, token, now))

    def exportKey(self, key: bytes) -> Deferred[list[r.Record]]:
        return self._submit(lambda tx: [(k, key, tx.read(k, key)) for k in r.KINDS])

    def exportRange(self, low: int, high: int) -> Deferred[list[r.Record]]:
        return self._submit(lambda tx: tx.range(low, high))

    def importRecords(self, records: Iterable[r.Record]) -> Deferred[None]:
        batch = [rec for rec in records if rec[0] in r.KINDS]

        def op(tx: _Tx) -> None:
            for kind, key, payload in batch:
                tx.write(kind, key, payload)

        return self._submit(op)

    def removeRange(self, low: int, high: int) -> Deferred[int]:
        def op(tx: _Tx) -> int:
            doomed = tx.range(low, high)
            for kind, key, _ in doomed:
                tx.write(kind, key, None)
            return len(doomed)

        return self._submit(op)

    def digestRange(self, low: int, high: int, buckets: int = 1) -> Deferred[list[tuple[int, int]]]:
        def op(tx: _Tx) -> list[tuple[int, int]]:
            rows = tx.db.execute("SELECT rid, kind, key, payload FROM records")
            items = ((rid + _OFFSET, kind, bytes(key), bytes(payload)) for rid, kind, key, payload in rows)
            return r.digestBuckets(items, low, high, buckets)

        return self._submit(op)

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "path": self.path,
            "batches": self.batches,
            "ops": self.ops,
            "queued": len(self._queue),
        }

    def close(self) -> Deferred[None]:
        def shut() -> None:
            if self._db is not None:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
                self._db = None

        return self._whenIdle().addCallback(lambda _: self.runner(shut))

    def _whenIdle(self) -> Deferred[None]:
        """
        Fire when no batch is running and none is queued: at once if so now,
        else when the batch that empties the queue completes.
        """
        if not self._busy and not self._queue:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d
