"""
The SQLite backend: one database per vnode in WAL mode, driven by a single
writer thread with group commit (every operation queued while a batch runs
goes into the next transaction).  SQLite's temporary files go to
C{<data-dir>/cache}.

Schema version 2 (C{PRAGMA user_version}): each row carries its record's
version (C{hlc}, C{origin}) and whether it is a tombstone (C{dead}, with an
empty payload).  A database of version 0 (before versions) is migrated when
opened: the three columns are added with the default 0, so its records get
version 0.
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
from suite.kv.memory import PURGE_EVERY
from suite.kv.versions import TOMBSTONE_HORIZON, HybridClock, Version, newer, versionAt
from suite.sqlitetx import rollbackAfterError

__all__ = ["SQLiteStore", "SCHEMA_VERSION"]

log = Logger()
_OFFSET = 1 << 63
SCHEMA_VERSION = 2
#: the table as schema 0 made it; later columns are added by L{_migrate}
_TABLE = (
    "CREATE TABLE IF NOT EXISTS records ("
    " kind TEXT NOT NULL, key BLOB NOT NULL, rid INTEGER NOT NULL, payload BLOB NOT NULL,"
    " PRIMARY KEY (kind, key)) WITHOUT ROWID"
)
_RID_INDEX = "CREATE INDEX IF NOT EXISTS records_rid ON records (rid)"
_VERSION_COLUMNS = ("hlc", "origin", "dead")
_TOMBSTONE_INDEX = "CREATE INDEX IF NOT EXISTS records_dead ON records (hlc) WHERE dead = 1"


def _sid(ringPosition: int) -> int:
    """
    Ring positions are unsigned 64-bit; SQLite integers are signed.
    """
    return ringPosition - _OFFSET


def _migrate(db: sqlite3.Connection, path: str) -> None:
    """
    Bring the schema to L{SCHEMA_VERSION}, in one transaction.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        (current,) = db.execute("PRAGMA user_version").fetchone()
        if current < SCHEMA_VERSION:
            db.execute(_TABLE)
            db.execute(_RID_INDEX)
            columns = {row[1] for row in db.execute("PRAGMA table_info(records)")}
            added = [c for c in _VERSION_COLUMNS if c not in columns]
            for column in added:
                db.execute(f"ALTER TABLE records ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
            db.execute(_TOMBSTONE_INDEX)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            (rows,) = db.execute("SELECT count(*) FROM records").fetchone()
            if rows:
                log.info(
                    "SQLite {path}: schema {old} migrated to {new}: {rows} records at version 0",
                    path=path,
                    old=current,
                    new=SCHEMA_VERSION,
                    rows=rows,
                )
        elif current > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"{path}: schema version {current} is newer than this program's")
        db.execute("COMMIT")
    except BaseException:  # undone and re-raised
        rollbackAfterError(db)
        raise


def _unsigned(origin: int) -> int:
    # origins are unsigned 64-bit, stored as two's complement (so 0 is 0)
    return origin & 0xFFFFFFFFFFFFFFFF


def _signed(origin: int) -> int:
    return origin - (1 << 64) if origin >= _OFFSET else origin


class _Tx:
    def __init__(self, db: sqlite3.Connection, hlc: HybridClock) -> None:
        self.db = db
        self.hlc = hlc

    def read(self, kind: str, key: bytes) -> bytes | None:
        row = self.db.execute(
            "SELECT payload FROM records WHERE kind=? AND key=? AND dead=0", (kind, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def stamp(self) -> Version:
        return self.hlc.stamp()

    def write(self, kind: str, key: bytes, payload: bytes | None) -> None:
        hlc, origin = self.hlc.stamp()
        self.put(kind, key, payload, hlc, origin)

    def put(self, kind: str, key: bytes, payload: bytes | None, hlc: int, origin: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO records (kind, key, rid, payload, hlc, origin, dead) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                key,
                _sid(r.ringId(key)),
                b"" if payload is None else payload,
                hlc,
                _signed(origin),
                payload is None,
            ),
        )

    def held(self, kind: str, key: bytes) -> r.Record | None:
        row = self.db.execute(
            "SELECT payload, hlc, origin, dead FROM records WHERE kind=? AND key=?", (kind, key)
        ).fetchone()
        if row is None:
            return None
        return kind, key, (None if row[3] else bytes(row[0])), row[1], _unsigned(row[2])

    def install(self, kind: str, key: bytes, payload: bytes | None, hlc: int, origin: int) -> bool:
        held = self.held(kind, key)
        if held is not None and not newer(payload, Version(hlc, origin), held[2], Version(held[3], held[4])):
            return False
        self.put(kind, key, payload, hlc, origin)
        self.hlc.observe(hlc)
        return True

    def forget(self, kind: str, key: bytes) -> None:
        self.db.execute("DELETE FROM records WHERE kind=? AND key=?", (kind, key))

    def exportKey(self, key: bytes) -> list[r.Record]:
        out: list[r.Record] = []
        for kind in r.KINDS:
            held = self.held(kind, key)
            if held is not None:
                out.append(held)
        return out

    def range(self, low: int, high: int) -> list[r.Record]:
        q = "SELECT kind, key, payload, hlc, origin, dead FROM records WHERE "
        if low < high:
            rows = self.db.execute(q + "rid > ? AND rid <= ?", (_sid(low), _sid(high)))
        else:
            rows = self.db.execute(q + "rid > ? OR rid <= ?", (_sid(low), _sid(high)))
        return [
            (k, bytes(key), None if dead else bytes(p), hlc, _unsigned(origin))
            for k, key, p, hlc, origin, dead in rows
        ]

    def purge(self, before: Version) -> int:
        cursor = self.db.execute("DELETE FROM records WHERE dead=1 AND hlc < ?", (before.hlc,))
        return int(cursor.rowcount)


@implementer(IKeyValueStore)
class SQLiteStore:
    """
    Records in C{<directory>/kv.sqlite}.

    @param runner: runs a blocking callable on this store's single writer
        thread (a one-thread pool) and returns a Deferred.
    """

    name = "sqlite"

    def __init__(
        self,
        directory: str,
        cacheDir: str,
        clock: IReactorTime,
        runner: Runner,
        origin: int = 0,
        horizon: float = TOMBSTONE_HORIZON,
    ) -> None:
        self.clock = clock
        self.runner = runner
        self.hlc = HybridClock(clock.seconds, origin)
        self.horizon = horizon
        self.installed = 0
        self.stale = 0
        self.purged = 0
        self._purgeAt = 0.0
        self.path = os.path.join(directory, "kv.sqlite")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.makedirs(cacheDir, mode=0o700, exist_ok=True)
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
        _migrate(db, self.path)
        (high,) = db.execute("SELECT max(hlc) FROM records").fetchone()
        self.hlc.observe(high or 0)
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
            tx = _Tx(self._db, self.hlc)
            results: list[tuple[bool, Any]] = []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for op, _ in batch:
                    try:
                        results.append((True, op(tx)))
                    except (r.LeaseHeld, r.LeaseLost) as e:
                        results.append((False, e))
                now = self.clock.seconds()
                if now >= self._purgeAt:
                    self._purgeAt = now + PURGE_EVERY
                    self.purged += tx.purge(versionAt(now - self.horizon))
                self._db.execute("COMMIT")
            except BaseException:  # undone and re-raised
                rollbackAfterError(self._db)
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
        return self._submit(lambda tx: tx.exportKey(key))

    def exportRange(self, low: int, high: int) -> Deferred[list[r.Record]]:
        return self._submit(lambda tx: tx.range(low, high))

    def importRecords(self, records: Iterable[r.Incoming]) -> Deferred[int]:
        batch = [rec for rec in records if rec[0] in r.KINDS]

        def op(tx: _Tx) -> int:
            count = 0
            # a tombstone past the horizon is as good as none (it may be purged here already)
            expired = versionAt(self.clock.seconds() - self.horizon).hlc
            for kind, key, payload, hlc, origin in batch:
                if hlc is None:
                    # from a peer without versions: a write made now, as it expects
                    if payload is not None or tx.read(kind, key) is not None:
                        tx.write(kind, key, payload)
                        count += 1
                elif payload is None and hlc < expired:
                    continue
                elif tx.install(kind, key, payload, hlc, origin):
                    count += 1
            self.installed += count
            self.stale += len(batch) - count
            return count

        return self._submit(op)

    def removeRange(self, low: int, high: int) -> Deferred[int]:
        def op(tx: _Tx) -> int:
            doomed = tx.range(low, high)
            for kind, key, _, _, _ in doomed:
                tx.forget(kind, key)
            return len(doomed)

        return self._submit(op)

    def purge(self) -> Deferred[int]:
        def op(tx: _Tx) -> int:
            count = tx.purge(versionAt(self.clock.seconds() - self.horizon))
            self.purged += count
            return count

        return self._submit(op)

    def digestRange(self, low: int, high: int, buckets: int = 1) -> Deferred[list[tuple[int, int]]]:
        def op(tx: _Tx) -> list[tuple[int, int]]:
            rows = tx.db.execute("SELECT rid, kind, key, payload, hlc, origin, dead FROM records")
            items = (
                (rid + _OFFSET, kind, bytes(key), None if dead else bytes(payload), hlc, _unsigned(origin))
                for rid, kind, key, payload, hlc, origin, dead in rows
            )
            return r.digestBuckets(items, low, high, buckets)

        return self._submit(op)

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "path": self.path,
            "batches": self.batches,
            "ops": self.ops,
            "queued": len(self._queue),
            "installed": self.installed,
            "stale": self.stale,
            "purged": self.purged,
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
