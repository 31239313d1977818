"""
The record stores: memory, and the append-only file with CRC framing,
replay, torn-tail repair and compaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.spacecomms.interfaces import IRecordStore
from suite.spacecomms.store import FileStore, MemoryStore, Record, encodeEntry, readEntries
from tests.spacecomms.sim import stored


def _rec(key: str, seq: int = 1, active: bool = True) -> Record:
    return Record(
        "cdm",
        key,
        "A",
        seq,
        active,
        {"k": key} if active else None,
        None if active else "ERROR",
        1.0,
        2.0,
        None,
        3.0,
        ["1", "2"],
    )


class StoreTests(SynchronousTestCase):
    """
    Both stores keep what they are given; the file store keeps it across
    restarts.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.path = os.path.join(os.path.abspath(self.mktemp()), "data")
        os.makedirs(os.path.dirname(self.path))

    def _open(self) -> FileStore:
        s = FileStore(self.path, self.clock)
        s.load()
        self.addCleanup(s.close)
        return s

    def test_interfaces(self) -> None:
        """
        Both stores provide IRecordStore.
        """
        self.assertTrue(verifyObject(IRecordStore, MemoryStore()))
        self.assertTrue(verifyObject(IRecordStore, FileStore(self.path, self.clock)))

    def test_memory(self) -> None:
        """
        put, get, remove, records and count behave as a dictionary.
        """
        s = MemoryStore()
        s.put(_rec("a"))
        s.put(_rec("b", active=False))
        self.assertEqual(s.get("cdm", "a"), _rec("a"))
        self.assertEqual((s.count("cdm", True), s.count("cdm", False)), (1, 1))
        s.remove("cdm", "a")
        self.assertIsNone(s.get("cdm", "a"))
        self.assertEqual(len(s.records("cdm")), 1)

    def test_replay(self) -> None:
        """
        Records and removals are replayed after a restart.
        """
        s = self._open()
        s.put(_rec("a"))
        s.put(_rec("b"))
        s.put(_rec("a", 2, active=False))
        s.remove("cdm", "b")
        s.close()
        t = self._open()
        self.assertEqual(t.get("cdm", "a"), _rec("a", 2, active=False))
        self.assertIsNone(t.get("cdm", "b"))

    def test_tornTail(self) -> None:
        """
        A partial last record or a bad CRC is cut off; earlier records stay.
        """
        s = self._open()
        s.put(_rec("a"))
        s.put(_rec("b"))
        s.close()
        with open(self.path, "ab") as f:
            f.write(encodeEntry({"op": "put", "r": _rec("c").toJSON()})[:-3])
        t = self._open()
        self.assertEqual(sorted(r.key for r in t.records("cdm")), ["a", "b"])
        t.close()
        data = bytearray(open(self.path, "rb").read())
        data[-2] ^= 0xFF
        open(self.path, "wb").write(bytes(data))
        u = self._open()
        self.assertEqual(len(u.records("cdm")), 1)

    def test_fullDiskLeavesLogWhole(self) -> None:
        """
        An append that fails half-written (a full disk) is cut off again
        and raises StoreWriteError, and the record is not kept in memory
        either; the next append succeeds, and a restart finds every record
        that was appended whole, none cut as a corrupt tail.
        """
        import errno

        from suite.spacecomms.store import StoreWriteError

        s = self._open()
        s.put(_rec("BEFORE"))
        size = os.path.getsize(self.path)
        realWrite = os.write

        def half(fd: int, data: bytes) -> int:
            realWrite(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "write", half)
        e = self.assertRaises(StoreWriteError, s.put, _rec("FULL"))
        self.assertIn("cannot append (No space left on device)", str(e))
        self.assertIsNone(s.get("cdm", "FULL"))
        self.assertEqual(os.path.getsize(self.path), size)
        self.assertRaises(StoreWriteError, s.remove, "cdm", "BEFORE")
        self.assertIsNotNone(s.get("cdm", "BEFORE"))
        self.patch(os, "write", realWrite)
        s.put(_rec("AFTER"))
        s.close()
        again = self._open()
        self.assertEqual(sorted(r.key for r in again.records("cdm")), ["AFTER", "BEFORE"])

    def test_compaction(self) -> None:
        """
        Rewriting many versions of one key leaves a log of live records that
        still replays to the same state.
        """
        s = self._open()
        for i in range(3000):
            s.put(_rec("hot", i))
        s.put(_rec("cold"))
        entries, _ = readEntries(open(self.path, "rb").read())
        self.assertLess(len(entries), 3000)
        s.close()
        t = self._open()
        self.assertEqual(stored(t, "cdm", "hot").sequence, 2999)
        self.assertIsNotNone(t.get("cdm", "cold"))

    def test_fileMode(self) -> None:
        """
        The log is 0600 whether created by an append, rewritten at start-up
        or replaced by a compaction.
        """
        import stat

        s = self._open()
        for i in range(3000):
            s.put(_rec("hot", i))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        s.close()
        os.chmod(self.path, 0o644)
        t = self._open()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        t.close()

    def test_periodicFsync(self) -> None:
        """
        The fsync loop runs on the clock and stops on close.
        """
        s = self._open()
        s.put(_rec("a"))
        self.clock.advance(1.0)
        self.assertFalse(s._dirty)
        s.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fsyncOneAtATime(self) -> None:
        """
        One fsync at a time: ticks and appends while one runs start no
        other; the appends are fsynced by exactly one more, at the first
        tick after it ended; with nothing appended since, none runs.
        """
        synced: list[int] = []
        self.patch(os, "fsync", synced.append)
        s = self._open()
        del synced[:]  # the log rewritten at start-up
        runs: list[tuple[Callable[[], None], Deferred[None]]] = []

        def inThread(f: Callable[[], None]) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            runs.append((f, d))
            return d

        self.patch(s, "_inThread", inThread)
        self.clock.advance(1.0)
        self.assertEqual(runs, [])  # nothing appended
        s.put(_rec("a"))
        self.clock.advance(1.0)
        self.assertEqual(len(runs), 1)
        for key in ("b", "c", "d"):
            s.put(_rec(key))
            self.clock.advance(1.0)
        self.assertEqual(len(runs), 1)
        f, d = runs[0]
        f()
        d.callback(None)
        self.assertEqual((len(runs), len(synced)), (1, 1))
        self.clock.advance(1.0)
        self.assertEqual(len(runs), 2)
        runs[1][1].callback(None)
        self.clock.advance(5.0)
        self.assertEqual(len(runs), 2)
        # a failed fsync is logged and the next appends are fsynced again
        s.put(_rec("e"))
        self.clock.advance(1.0)
        runs[2][1].errback(Failure(OSError(5, "I/O error")))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        s.put(_rec("f"))
        self.clock.advance(1.0)
        self.assertEqual(len(runs), 4)
        # close fsyncs the log at once, an fsync in flight or not
        del synced[:]
        s.close()
        self.assertEqual(len(synced), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_digest(self) -> None:
        """
        The digest follows puts, replacements, withdrawals and removals:
        it always equals the XOR of the active records' hashes, also after
        the file store is replayed; withdrawn records do not count.
        """
        from suite.spacecomms.store import bucketOf, entryHash

        def expected(store: MemoryStore) -> list[int]:
            out = [0] * 256
            for r in store.records("cdm"):
                if r.active:
                    out[bucketOf(r.key)] ^= entryHash(r)
            return out

        s = self._open()
        empty = s.digest("cdm")
        self.assertEqual(empty, [0] * 256)
        for i in range(40):
            s.put(_rec(f"K{i}", 1))
        for i in range(0, 40, 3):
            s.put(_rec(f"K{i}", 2))
        for i in range(0, 40, 5):
            s.put(_rec(f"K{i}", 3, active=False))
        for i in range(0, 40, 7):
            s.remove("cdm", f"K{i}")
        self.assertEqual(s.digest("cdm"), expected(s))
        self.assertNotEqual(s.digest("cdm"), empty)
        self.assertEqual(s.digest("object"), [0] * 256)
        before = s.digest("cdm")
        self.successResultOf(s.close())
        again = self._open()
        self.assertEqual(again.digest("cdm"), before)
        for i in range(40):
            again.remove("cdm", f"K{i}")
        self.assertEqual(again.digest("cdm"), empty)
