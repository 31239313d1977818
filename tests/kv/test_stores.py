"""
Behaviour shared by every IKeyValueStore backend, with real files.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from suite.kv import openStore
from suite.kv.aof import AOFStore
from suite.kv.interfaces import IKeyValueStore
from suite.kv.memory import PURGE_EVERY, MemoryStore
from suite.kv.records import RING_SIZE, LeaseHeld, LeaseLost, bucketBounds, inRange, ringId
from suite.kv.sqlite import SQLiteStore
from suite.kv.versions import ZERO, Version, versionAt


def ver(record: Any) -> Version:
    """
    The version of an exported record.
    """
    return Version(record[3], record[4])


def rec(kind: str, key: bytes, payload: bytes | None, version: Version) -> Any:
    """
    A record to import, with its version.
    """
    return (kind, key, payload, version.hlc, version.origin)


if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class _Backend(_Base):
    backend = "memory"

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.dataDir = self.mktemp()
        os.makedirs(self.dataDir)
        self.pool = ThreadPool(1, 1, name="kv-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.store = self.open()

    def runner(self, f: Any) -> Any:
        return deferToThreadPool(reactor, self.pool, f)  # type: ignore[arg-type]

    origin = 0xA1B2C3D4E5F60718

    def open(self, index: int = 0) -> Any:
        store = openStore(
            self.backend,
            self.dataDir,
            index,
            self.clock,
            self.runner,
            flushInterval=3.0,
            origin=self.origin,
            horizon=3600.0,
        )
        self.addCleanup(store.close)
        return store

    def test_provides(self) -> None:
        """
        The backend provides IKeyValueStore.
        """
        self.assertTrue(verifyObject(IKeyValueStore, self.store))

    async def test_putGetDelete(self) -> None:
        """
        A value put can be read back and deleted once.
        """
        s = self.store
        self.assertIsNone(await s.get(b"k"))
        await s.put(b"k", b"v1")
        await s.put(b"k", b"v2")
        self.assertEqual(await s.get(b"k"), b"v2")
        self.assertTrue(await s.delete(b"k"))
        self.assertFalse(await s.delete(b"k"))
        self.assertIsNone(await s.get(b"k"))

    async def test_prefixSet(self) -> None:
        """
        Prefix children are a set: append, list (sorted), contains, remove.
        """
        s = self.store
        self.assertTrue(await s.prefixAppend(b"p", b"b"))
        self.assertTrue(await s.prefixAppend(b"p", b"a"))
        self.assertFalse(await s.prefixAppend(b"p", b"a"))
        self.assertEqual(await s.prefixList(b"p"), [b"a", b"b"])
        self.assertTrue(await s.prefixContains(b"p", b"a"))
        self.assertTrue(await s.prefixRemove(b"p", b"a"))
        self.assertFalse(await s.prefixContains(b"p", b"a"))
        self.assertFalse(await s.prefixRemove(b"p", b"zz"))
        self.assertEqual(await s.prefixList(b"nothing"), [])

    async def test_leases(self) -> None:
        """
        Leases exclude other holders until expiry; fencing tokens grow with
        each new grant; renew and release need the current token.
        """
        s = self.store
        a = await s.acquireLease(b"L", b"alice", 10)
        again = await s.acquireLease(b"L", b"alice", 10)
        self.assertEqual(a.token, again.token)
        with self.assertRaises(LeaseHeld):
            await s.acquireLease(b"L", b"bob", 10)
        self.clock.advance(11)
        b = await s.acquireLease(b"L", b"bob", 10)
        self.assertGreater(b.token, a.token)
        with self.assertRaises(LeaseLost):
            await s.renewLease(b"L", a.token, 10)
        renewed = await s.renewLease(b"L", b.token, 30)
        self.assertEqual(renewed.expiresAt, self.clock.seconds() + 30)
        self.assertTrue(await s.releaseLease(b"L", b.token))
        c = await s.acquireLease(b"L", b"carol", 5)
        self.assertGreater(c.token, b.token)

    async def test_rangeTransfer(self) -> None:
        """
        Records exported from a ring range import elsewhere unchanged;
        removeRange empties exactly that range and digests agree.
        """
        s = self.store
        keys = [b"key-%d" % i for i in range(200)]
        for k in keys:
            await s.put(k, k.upper())
        await s.prefixAppend(b"key-7", b"child")
        low, high = RING_SIZE // 3, RING_SIZE // 3 * 2
        inside = {k for k in keys if inRange(ringId(k), low, high)}
        recs = await s.exportRange(low, high)
        self.assertEqual({k for kind, k, *_ in recs if kind == "v"}, inside)
        other = MemoryStore(self.clock)
        await other.importRecords(recs)
        self.assertEqual(await other.digestRange(low, high), await s.digestRange(low, high))
        before = await s.digestRange(low, high, 8)
        self.assertEqual(sum(c for c, _ in before), len(recs))
        changed = next(iter(inside))
        await s.put(changed, b"different")
        after = await s.digestRange(low, high, 8)
        moved = [i for i in range(8) if before[i] != after[i]]
        self.assertEqual(len(moved), 1)
        blo, bhi = bucketBounds(low, high, 8)[moved[0]]
        self.assertTrue(inRange(ringId(changed), blo, bhi))
        await s.put(changed, changed.upper())
        removed = await s.removeRange(low, high)
        self.assertEqual(removed, len(recs))
        self.assertEqual(await s.exportRange(low, high), [])
        wrapped = await s.exportRange(high, low)
        self.assertEqual(len([1 for kind, *_ in wrapped if kind == "v"]), len(keys) - len(inside))

    async def test_exportKeyTombstones(self) -> None:
        """
        exportKey carries a deletion as a tombstone with its version, so
        importing it deletes elsewhere too, and an older copy of the value
        imported afterwards does not bring it back.
        """
        s = self.store
        await s.put(b"x", b"1")
        first = await s.exportKey(b"x")
        self.assertEqual([(k, key, p) for k, key, p, *_ in first], [("v", b"x", b"1")])
        other = MemoryStore(self.clock)
        await other.importRecords(first)
        self.assertEqual(await other.get(b"x"), b"1")
        await s.delete(b"x")
        [gone] = await s.exportKey(b"x")
        self.assertIsNone(gone[2])
        self.assertGreater(ver(gone), ver(first[0]))
        self.assertEqual(await other.importRecords(await s.exportKey(b"x")), 1)
        self.assertIsNone(await other.get(b"x"))
        self.assertEqual(await other.importRecords(first), 0)
        self.assertIsNone(await other.get(b"x"))

    async def test_versionsGrow(self) -> None:
        """
        Every write gets a newer version than the last, stamped with the
        store's origin, even when the clock stands still.
        """
        s = self.store
        seen = []
        for i in range(5):
            await s.put(b"k", b"%d" % i)
            [held] = await s.exportKey(b"k")
            seen.append(ver(held))
        self.assertEqual(seen, sorted(set(seen)))
        self.assertEqual({v.origin for v in seen}, {self.origin})
        self.assertEqual(seen[0].wallMs, int(self.clock.seconds() * 1000))

    async def test_importKeepsNewer(self) -> None:
        """
        Imported records replace only older ones: a newer local write
        survives an older copy, a newer copy replaces the local one, and the
        store's clock moves past what it installed.
        """
        s = self.store
        await s.put(b"a", b"local")
        [held] = await s.exportKey(b"a")
        local = ver(held)
        older = Version(local.hlc - 1, 7)
        ahead = Version(local.hlc + (3600_000 << 16), 7)
        count = await s.importRecords([rec("v", b"a", b"older", older), rec("v", b"b", b"new", ahead)])
        self.assertEqual(count, 1)
        self.assertEqual(await s.get(b"a"), b"local")
        self.assertEqual(await s.get(b"b"), b"new")
        await s.importRecords([rec("v", b"a", b"newer", Version(local.hlc + 1, 0))])
        self.assertEqual(await s.get(b"a"), b"newer")
        # a write after installing a version from a clock an hour ahead is newer still
        await s.put(b"b", b"after")
        [held] = await s.exportKey(b"b")
        after = ver(held)
        self.assertGreater(after, ahead)
        # a record from a peer without versions is a write made now
        await s.importRecords([("v", b"b", b"legacy", None, 0)])
        self.assertEqual(await s.get(b"b"), b"legacy")
        [held] = await s.exportKey(b"b")
        self.assertGreater(ver(held), after)

    async def test_mergeAnyOrder(self) -> None:
        """
        Importing the same records in any order, or twice, ends with the
        same digest, and the copy that wins is the newest.
        """
        recs = [
            ("v", b"k", b"one", 5 << 16, 1),
            ("v", b"k", b"two", 5 << 16, 2),
            ("v", b"k", None, 4 << 16, 3),
            ("s", b"k", b"\x90", 9 << 16, 1),
            ("l", b"j", None, 9 << 16, 1),
        ]
        digests: set[tuple[tuple[int, int], ...]] = set()
        for order in (recs, recs[::-1], recs[2:] + recs[:2]):
            store = self.open(index=len(digests) + 1)
            await store.importRecords(order)
            await store.importRecords(order)
            self.assertEqual(await store.get(b"k"), b"two")
            digests.add(tuple(await store.digestRange(0, 0)))
        self.assertEqual(len(digests), 1)

    async def test_leaseTokensFromStamps(self) -> None:
        """
        A new grant's fencing token comes from a fresh stamp: two copies of
        a lease granted apart (rings that merge later) share a token only if
        granted in the same millisecond.
        """
        s = self.store
        a = await s.acquireLease(b"L", b"alice", 10)
        self.assertEqual(a.token, int(self.clock.seconds() * 1000) << 16)
        other = self.open(index=5)
        self.clock.advance(0.001)
        b = await other.acquireLease(b"L", b"bob", 10)
        self.assertNotEqual(a.token, b.token)
        self.clock.advance(11)
        c = await s.acquireLease(b"L", b"carol", 10)
        self.assertGreater(c.token, a.token)

    async def test_tombstonesPurged(self) -> None:
        """
        A tombstone is kept for the horizon and forgotten after it, by
        purge() or by a write about a minute later.
        """
        s = self.store
        await s.put(b"gone", b"1")
        await s.put(b"also", b"1")
        await s.delete(b"gone")
        await s.delete(b"also")
        self.assertEqual(await s.purge(), 0)
        self.assertEqual(len(await s.exportRange(0, 0)), 2)
        self.clock.advance(s.horizon + 1)
        self.assertEqual(await s.purge(), 2)
        self.assertEqual(await s.exportRange(0, 0), [])
        await s.put(b"x", b"1")
        await s.delete(b"x")
        self.clock.advance(s.horizon + PURGE_EVERY + 1)
        await s.put(b"y", b"1")
        self.assertEqual([k for _, k, *_ in await s.exportRange(0, 0)], [b"y"])
        # an expired tombstone from elsewhere is not taken back; a live one is
        old = versionAt(self.clock.seconds() - s.horizon - 1, 5)
        fresh = versionAt(self.clock.seconds() - 1, 5)
        self.assertEqual(await s.importRecords([rec("v", b"x", None, old), rec("v", b"z", None, fresh)]), 1)
        self.assertEqual([k for _, k, *_ in await s.exportRange(0, 0)], [b"y", b"z"])


class MemoryTests(_Backend, TestCase):
    backend = "memory"


class AOFTests(_Backend, TestCase):
    backend = "aof"

    async def test_persistsAcrossRestart(self) -> None:
        """
        Flushed records are replayed by a new store on the same directory.
        """
        s = self.store
        for i in range(50):
            await s.put(b"k%d" % i, b"v%d" % i)
        await s.prefixAppend(b"p", b"c")
        await s.delete(b"k3")
        await s.close()
        again = self.open()
        self.assertEqual(await again.get(b"k7"), b"v7")
        self.assertIsNone(await again.get(b"k3"))
        self.assertEqual(await again.prefixList(b"p"), [b"c"])

    async def test_tornTailRepaired(self) -> None:
        """
        A record cut short by a crash mid-write is dropped at start-up, the
        file truncated to the last good record, and earlier records kept.
        """
        s = self.store
        await s.put(b"a", b"1")
        await s.put(b"b", b"2")
        await s.close()
        path = os.path.join(self.dataDir, "0", "kv.aof")
        good = os.path.getsize(path)
        with open(path, "ab") as f:
            f.write(b"\x01\x00\x00\x00\x40garbage")
        again = self.open()
        self.assertEqual(await again.get(b"b"), b"2")
        self.assertEqual(again.stats()["repairedBytes"], 12)
        self.assertEqual(os.path.getsize(path), good)
        await again.put(b"c", b"3")
        await again.close()
        third = self.open()
        self.assertEqual(await third.get(b"c"), b"3")

    async def test_corruptCRC(self) -> None:
        """
        A record whose CRC does not match ends the replay there.
        """
        s = self.store
        await s.put(b"a", b"1")
        await s.flush()
        path = os.path.join(self.dataDir, "0", "kv.aof")
        mid = os.path.getsize(path)
        await s.put(b"b", b"2")
        await s.close()
        with open(path, "r+b") as f:
            f.seek(mid + 12)
            f.write(b"X")
        again = self.open()
        self.assertEqual(await again.get(b"a"), b"1")
        self.assertIsNone(await again.get(b"b"))

    async def test_writtenBeforeAcknowledged(self) -> None:
        """
        An acknowledged put is in the file already (written, before any
        fsync), and a second store opened on a copy of the file finds it.
        """
        s = self.store
        path = os.path.join(self.dataDir, "0", "kv.aof")
        before = os.path.getsize(path)
        await s.put(b"a", b"1")
        self.assertGreater(os.path.getsize(path), before)
        self.assertEqual(s.flushes, 0)
        copy = self.mktemp()
        os.makedirs(copy)
        with open(path, "rb") as src, open(os.path.join(copy, "kv.aof"), "wb") as dst:
            dst.write(src.read())
        other = AOFStore(copy, self.clock, self.runner)
        self.addCleanup(other.close)
        self.assertEqual(await other.get(b"a"), b"1")

    async def test_compaction(self) -> None:
        """
        Rewriting the same keys grows the log until compaction shrinks it
        to the live data, which survives a restart.
        """
        s = self.store
        s.compactMinBytes = 10_000
        for round in range(20):
            for i in range(20):
                await s.put(b"k%d" % i, b"x" * 100 + b"%d" % round)
        await s.flush()
        await s.flush()
        self.assertGreaterEqual(s.compactions, 1)
        await s.close()
        again = self.open()
        self.assertEqual(await again.get(b"k5"), b"x" * 100 + b"19")

    async def test_formatOneLoads(self) -> None:
        """
        A log of format 1 (records without versions) loads: its records get
        version 0 (a deletion there removes the key), the file is rewritten
        in format 2 at once, and a later write is newer than all of them.
        """
        from suite.kv.aof import FORMAT_VERSION, MAGIC, encodeRecordV1

        d = os.path.join(self.dataDir, "7")
        os.makedirs(d)
        path = os.path.join(d, "kv.aof")
        with open(path, "wb") as f:
            f.write(MAGIC + b"\x01")
            f.write(encodeRecordV1("v", b"a", b"1"))
            f.write(encodeRecordV1("v", b"b", b"2"))
            f.write(encodeRecordV1("s", b"p", b"\x91\xc4\x01c"))
            f.write(encodeRecordV1("v", b"b", None))
            f.write(encodeRecordV1("v", b"a", b"one"))
        store = self.open(index=7)
        self.assertEqual(await store.get(b"a"), b"one")
        self.assertIsNone(await store.get(b"b"))
        self.assertEqual(await store.prefixList(b"p"), [b"c"])
        self.assertEqual(
            sorted(await store.exportRange(0, 0)),
            [("s", b"p", b"\x91\xc4\x01c", 0, 0), ("v", b"a", b"one", 0, 0)],
        )
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), MAGIC + bytes([FORMAT_VERSION]))
        await store.put(b"c", b"3")
        [held] = await store.exportKey(b"c")
        self.assertGreater(ver(held), ZERO)
        await store.close()
        again = self.open(index=7)
        self.assertEqual(await again.get(b"a"), b"one")
        self.assertEqual(await again.get(b"c"), b"3")
        self.assertEqual(await again.exportKey(b"c"), [held])

    async def test_tombstonesPersist(self) -> None:
        """
        Tombstones and versions survive a restart and a compaction, and the
        clock resumes past the newest version in the log.
        """
        s = self.store
        s.compactMinBytes = 1
        await s.put(b"a", b"1")
        await s.delete(b"a")
        for i in range(20):
            await s.put(b"b", b"%d" % i)
        before = sorted(await s.exportRange(0, 0))
        await s.flush()
        await s.flush()
        self.assertGreaterEqual(s.compactions, 1)
        await s.close()
        again = self.open()
        self.assertEqual(sorted(await again.exportRange(0, 0)), before)
        self.assertGreaterEqual(again.hlc.last, max(r[3] for r in before))

    def test_notAnAOF(self) -> None:
        """
        A foreign file in place of the log is refused, naming it.
        """
        d = os.path.join(self.dataDir, "9")
        os.makedirs(d)
        with open(os.path.join(d, "kv.aof"), "wb") as f:
            f.write(b"hello world, not a log")
        from suite.daemon import ConfigError

        e = self.assertRaises(ConfigError, AOFStore, d, self.clock, self.runner)
        self.assertIn("kv.aof", str(e))


class SQLiteTests(_Backend, TestCase):
    backend = "sqlite"

    async def test_persistsAcrossRestart(self) -> None:
        """
        Records are in the WAL-mode database after a restart; the cache
        directory exists under the data dir.
        """
        s = self.store
        await s.put(b"a", b"1")
        await s.prefixAppend(b"p", b"c")
        await s.close()
        again = self.open()
        self.assertEqual(await again.get(b"a"), b"1")
        self.assertEqual(await again.prefixList(b"p"), [b"c"])
        self.assertTrue(os.path.isdir(os.path.join(self.dataDir, "cache")))
        self.assertIsInstance(again, SQLiteStore)

    async def test_schemaZeroMigrated(self) -> None:
        """
        A database made before versions (schema 0) is migrated when opened:
        its records are there with version 0, the schema version is 2, and
        tombstones and versions work from then on and survive a restart.
        """
        import sqlite3

        d = os.path.join(self.dataDir, "3")
        os.makedirs(d)
        path = os.path.join(d, "kv.sqlite")
        db = sqlite3.connect(path)
        db.executescript(
            "CREATE TABLE records (kind TEXT NOT NULL, key BLOB NOT NULL, rid INTEGER NOT NULL,"
            " payload BLOB NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID;"
            "CREATE INDEX records_rid ON records (rid);"
        )
        for key, value in ((b"a", b"1"), (b"b", b"2")):
            db.execute("INSERT INTO records VALUES ('v', ?, ?, ?)", (key, ringId(key) - (1 << 63), value))
        db.commit()
        db.close()
        store = self.open(index=3)
        self.assertEqual(await store.get(b"a"), b"1")
        self.assertEqual(
            sorted(await store.exportRange(0, 0)), [("v", b"a", b"1", 0, 0), ("v", b"b", b"2", 0, 0)]
        )
        self.assertTrue(await store.delete(b"b"))
        [held] = await store.exportKey(b"b")
        self.assertIsNone(held[2])
        version = ver(held)
        self.assertEqual(version.origin, self.origin)
        await store.close()
        db = sqlite3.connect(path)
        self.assertEqual(db.execute("PRAGMA user_version").fetchone(), (2,))
        db.close()
        again = self.open(index=3)
        self.assertEqual(await again.exportKey(b"b"), [held])
        self.assertGreaterEqual(again.hlc.last, version.hlc)
        self.assertEqual(await again.get(b"a"), b"1")


class SQLiteCloseTests(TestCase):
    """
    L{SQLiteStore.close} waits for in-flight batches through a Deferred fired
    by the batch completing, not by polling the clock.
    """

    def test_closeWaitsForBatch(self) -> None:
        """
        A close requested while a batch runs shuts the database only after
        the batch completes, and never touches the clock.
        """
        pending: list[tuple[Any, Deferred[Any]]] = []

        def runner(f: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append((f, d))
            return d

        def runOne() -> None:
            f, d = pending.pop(0)
            d.callback(f())

        clock = Clock()
        d = self.mktemp()
        store = SQLiteStore(d, os.path.join(d, "cache"), clock, runner)
        runOne()  # open
        put = store.put(b"k", b"v")
        closed = store.close()
        self.assertEqual(len(pending), 1)  # the batch, not the shutdown
        self.assertNoResult(closed)
        runOne()  # the batch completes
        self.successResultOf(put)
        self.assertEqual(len(pending), 1)  # now the shutdown
        self.assertNoResult(closed)
        runOne()
        self.successResultOf(closed)
        self.assertIsNone(store._db)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_closeIdle(self) -> None:
        """
        An idle store shuts down at once.
        """
        pending: list[Any] = []

        def runner(f: Any) -> Deferred[Any]:
            pending.append(f)
            return succeed(f())

        d = self.mktemp()
        store = SQLiteStore(d, os.path.join(d, "cache"), Clock(), runner)
        self.successResultOf(store.close())
        self.assertIsNone(store._db)
