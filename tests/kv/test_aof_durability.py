"""
When the append-only store acknowledges a change: once its records are
written, within the operation, by default; after the fsync too with
C{sync}; failed writes, fsyncs and compactions, with a fake thread runner
and L{Clock}.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

from suite.kv import aof
from suite.kv.aof import AOFStore
from suite.kv.records import LeaseHeld, StoreWriteFailed

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _Fixture(TestCase):
    """
    An L{AOFStore} on a real directory whose thread jobs (fsyncs,
    compactions) wait in C{self.jobs} until the test runs them.
    """

    def setUp(self) -> None:
        self.jobs: list[tuple[Any, Deferred[Any]]] = []
        self.clock = Clock()
        self.dir = self.mktemp()
        self.path = os.path.join(self.dir, "kv.aof")

    def runner(self, f: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((f, d))
        return d

    def runJob(self, error: Exception | None = None) -> None:
        """
        Run the oldest thread job here (or fail it with C{error}).
        """
        f, d = self.jobs.pop(0)
        if error is not None:
            d.errback(error)
        else:
            d.callback(f())

    def open(self, sync: bool = False, **kw: Any) -> AOFStore:
        store = AOFStore(self.dir, self.clock, self.runner, flushInterval=3.0, sync=sync, **kw)
        self.addCleanup(self.shut, store)
        return store

    def shut(self, store: AOFStore) -> None:
        closed = store.close()
        while self.jobs:
            self.runJob()
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def replayed(self) -> AOFStore:
        """
        A store opened on a copy of the file as it is now (what a restart
        after kill -9 would find).
        """
        copy = self.mktemp()
        os.makedirs(copy)
        shutil.copyfile(self.path, os.path.join(copy, "kv.aof"))
        store = AOFStore(copy, Clock(), maybeDeferred)
        self.addCleanup(store.close)
        return store

    def values(self, store: AOFStore, *keys: bytes) -> list[bytes | None]:
        return [self.successResultOf(store.get(k)) for k in keys]


class DefaultAcknowledgementTests(_Fixture):
    """
    By default a change is acknowledged once written (no fsync waited for).
    """

    def test_writtenBeforeAcknowledged(self) -> None:
        """
        Each operation's records are written with one append of their own
        before it returns, and its Deferred has fired by then (no turn, no
        thread, no timer waited for): a restart from the file as it is at
        that moment finds the change.
        """
        store = self.open()
        calls = self.clock.getDelayedCalls()
        self.assertIsNone(self.successResultOf(store.put(b"a", b"1")))
        self.assertEqual(self.values(self.replayed(), b"a"), [b"1"])
        self.assertTrue(self.successResultOf(store.prefixAppend(b"p", b"c")))
        self.assertTrue(self.successResultOf(store.delete(b"a")))
        self.assertEqual(self.successResultOf(store.importRecords([("v", b"x", b"9", 5, 1)])), 1)
        lease = self.successResultOf(store.acquireLease(b"L", b"h", 10.0))
        self.assertEqual((store.appends, store.flushes, self.jobs), (5, 0, []))
        self.assertEqual(self.clock.getDelayedCalls(), calls)  # the fsync ticker only
        again = self.replayed()
        self.assertEqual(self.values(again, b"a", b"x"), [None, b"9"])
        self.assertEqual(self.successResultOf(again.prefixList(b"p")), [b"c"])
        self.assertEqual(self.successResultOf(again.renewLease(b"L", lease.token, 10.0)).holder, b"h")
        # the whole ring handed on: every record forgotten, in the file too
        self.assertEqual(self.successResultOf(store.removeRange(0, 0)), 4)
        self.assertEqual(self.replayed().table.records(), [])

    def test_oneAppendPerOperation(self) -> None:
        """
        An operation that makes several records (an import) writes them
        with one append.
        """
        store = self.open()
        records = [("v", b"k%d" % i, b"%d" % i, 5 + i, 1) for i in range(10)]
        self.assertEqual(self.successResultOf(store.importRecords(records)), 10)
        self.assertEqual(store.appends, 1)
        self.assertEqual(self.values(self.replayed(), b"k0", b"k9"), [b"0", b"9"])

    def test_noChangeNoWrite(self) -> None:
        """
        Operations that change nothing answer at once and write nothing.
        """
        store = self.open()
        self.assertFalse(self.successResultOf(store.delete(b"missing")))
        self.assertFalse(self.successResultOf(store.prefixContains(b"p", b"c")))
        self.assertEqual(self.successResultOf(store.removeRange(0, 0)), 0)
        self.assertEqual(store.appends, 0)

    def test_operationThatRaises(self) -> None:
        """
        An operation that fails (a lease held by another) fails its
        Deferred and writes nothing; what an operation changed before it
        raised is written all the same (memory and file stay in step).
        """
        store = self.open()
        self.successResultOf(store.acquireLease(b"L", b"h", 10.0))
        self.failureResultOf(store.acquireLease(b"L", b"other", 10.0), LeaseHeld)
        self.assertEqual(store.appends, 1)

        def halfDone(tx: Any) -> None:
            tx.write("v", b"half", b"1")
            raise ValueError("part-way")

        self.failureResultOf(store._run(halfDone), ValueError)
        self.assertEqual(self.values(self.replayed(), b"half"), [b"1"])

    def test_fsyncEveryInterval(self) -> None:
        """
        The file is fsynced in a thread every interval when it was appended
        to, and not when it was not.
        """
        store = self.open()
        self.successResultOf(store.put(b"a", b"1"))
        self.assertEqual(self.jobs, [])
        self.clock.advance(3.0)
        self.assertEqual(len(self.jobs), 1)
        self.runJob()
        self.assertEqual(store.flushes, 1)
        self.clock.advance(3.0)
        self.assertEqual(self.jobs, [])

    def test_failedWriteFailsItsChange(self) -> None:
        """
        A write that fails part-way (a full disk) fails the change it
        carried at once with a clear error, cuts the file back to the last
        whole record (earlier changes intact), and is logged (once for a
        run of failures, and the recovery once); a read does
        not try again, the next change writes the failed records again
        together with its own.
        """
        store = self.open()
        self.successResultOf(store.put(b"a", b"v-a"))
        size = os.path.getsize(self.path)
        patch = self.patch(os, "pwrite", _failingPwrite(os.pwrite))
        with capturedLogs() as events:
            error = self.failureResultOf(store.put(b"b", b"2"), StoreWriteFailed).getErrorMessage()
            self.failureResultOf(store.put(b"c", b"3"), StoreWriteFailed)
        # one line for the run of failures, not one per change
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                f"AOF {self.path}: cannot append 1 records (No space left on device); "
                "not acknowledged, tried again with the next change"
            ],
        )
        self.assertEqual(error, f"cannot write {self.path}: No space left on device; not acknowledged")
        self.assertEqual(os.path.getsize(self.path), size)
        self.assertEqual((store.writeErrors, store.stats()["pendingRecords"]), (2, 2))
        self.assertEqual(self.successResultOf(store.get(b"b")), b"2")  # in memory, not acknowledged
        self.assertEqual(store.writeErrors, 2)
        again = self.replayed()
        self.assertEqual((self.values(again, b"a", b"b"), again.repairedBytes), ([b"v-a", None], 0))
        patch.restore()
        with capturedLogs() as events:
            self.successResultOf(store.put(b"d", b"v-d"))
        self.assertEqual(
            [formatEvent(e) for e in events], [f"AOF {self.path}: appending again after 2 failed writes"]
        )
        self.assertEqual(store.stats()["pendingRecords"], 0)
        self.assertEqual(self.values(self.replayed(), b"a", b"b", b"c", b"d"), [b"v-a", b"2", b"3", b"v-d"])

    def test_failedWriteTriedAgainEachInterval(self) -> None:
        """
        Records a failed write left pending are written again at the next
        interval, with no change to carry them.
        """
        store = self.open()
        patch = self.patch(os, "pwrite", _raising(ENOSPC))
        self.failureResultOf(store.put(b"a", b"1"), StoreWriteFailed)
        self.clock.advance(3.0)
        self.assertEqual((store.writeErrors, store.stats()["pendingRecords"]), (2, 1))
        patch.restore()
        self.clock.advance(3.0)
        self.assertEqual(store.stats()["pendingRecords"], 0)
        self.assertEqual(self.values(self.replayed(), b"a"), [b"1"])

    def test_backlogBounded(self) -> None:
        """
        While appends fail, changes wait in memory up to
        C{MAX_PENDING_BYTES}; past it a change is refused before it is
        applied (a get still answers the value before it), imports and
        range removals too; the next interval after the disk takes writes
        again writes every change it kept, and changes are taken again.
        """
        self.patch(aof, "MAX_PENDING_BYTES", 3000)
        store = self.open()
        self.successResultOf(store.put(b"k", b"old"))
        patch = self.patch(os, "pwrite", _raising(ENOSPC))
        for i in range(3):
            self.failureResultOf(store.put(b"big%d" % i, b"x" * 1200), StoreWriteFailed)
        self.assertEqual(store.stats()["pendingRecords"], 3)
        message = self.failureResultOf(store.put(b"k", b"new"), StoreWriteFailed).getErrorMessage()
        self.assertIn("wait for the disk; not applied", message)
        self.assertEqual(store.stats()["pendingRecords"], 3)
        self.assertEqual(self.values(store, b"k"), [b"old"])
        self.failureResultOf(store.removeRange(0, 2**64 - 1), StoreWriteFailed)
        self.failureResultOf(store.importRecords([]), StoreWriteFailed)
        self.assertEqual(self.values(store, b"k"), [b"old"])
        patch.restore()
        # the next interval writes what waits; changes are taken again
        self.clock.advance(3.0)
        self.assertEqual(store.stats()["pendingRecords"], 0)
        self.successResultOf(store.put(b"k", b"new"))
        self.assertEqual(
            self.values(self.replayed(), b"k", b"big0", b"big2"), [b"new", b"x" * 1200, b"x" * 1200]
        )

    def test_failedWriteNotCutBack(self) -> None:
        """
        When the torn append cannot be cut off either, the next append is
        written over it (at the end of the last whole record), so the
        records after it are not lost behind a torn one.
        """
        store = self.open()
        self.successResultOf(store.put(b"a", b"v-a"))
        pwrite = self.patch(os, "pwrite", _failingPwrite(os.pwrite))
        ftruncate = self.patch(os, "ftruncate", _raising(OSError(errno.EIO, "Input/output error")))
        self.failureResultOf(store.put(b"b", b"x" * 1000), StoreWriteFailed)
        self.assertGreater(os.path.getsize(self.path), store.fileBytes)  # the torn half is there
        pwrite.restore()
        ftruncate.restore()
        self.successResultOf(store.put(b"c", b"v-c"))
        self.assertEqual(self.values(self.replayed(), b"a", b"b", b"c"), [b"v-a", b"x" * 1000, b"v-c"])

    def test_shortWrite(self) -> None:
        """
        A short write is continued where it stopped: the record is whole.
        """
        store = self.open()
        self.patch(os, "pwrite", _shortPwrite(os.pwrite))
        self.successResultOf(store.put(b"a", b"y" * 500))
        self.assertEqual(store.fileBytes, os.path.getsize(self.path))
        self.assertEqual(self.values(self.replayed(), b"a"), [b"y" * 500])

    def test_closeWritesWhatIsPending(self) -> None:
        """
        Closing writes what a failed write left pending, fsyncs and stops
        the timers; a change after that fails and is not written.
        """
        store = self.open()
        patch = self.patch(os, "pwrite", _raising(ENOSPC))
        self.failureResultOf(store.put(b"a", b"1"), StoreWriteFailed)
        patch.restore()
        closed = store.close()
        self.assertNoResult(closed)
        self.runJob()
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        message = self.failureResultOf(store.put(b"b", b"2"), StoreWriteFailed).getErrorMessage()
        self.assertEqual(message, f"{self.path}: the store is closed")
        self.failureResultOf(store.flush(), StoreWriteFailed)
        self.assertEqual(self.values(self.replayed(), b"a", b"b"), [b"1", None])


class SyncAcknowledgementTests(_Fixture):
    """
    With C{sync}, a change is acknowledged once written and fsynced.
    """

    def test_acknowledgedWhenFsynced(self) -> None:
        """
        A put is written at once and acknowledged after an fsync, asked for
        at the end of the turn: one fsync covers the changes of the turn,
        and those written while it runs share the next one.
        """
        store = self.open(sync=True)
        put = store.put(b"k", b"v")
        other = store.put(b"j", b"w")
        self.assertEqual(self.values(self.replayed(), b"k", b"j"), [b"v", b"w"])
        self.assertEqual(self.jobs, [])
        self.clock.advance(0)
        self.assertEqual(len(self.jobs), 1)
        self.assertNoResult(put)
        appended = store.prefixAppend(b"p", b"c")
        lease = store.acquireLease(b"L", b"h", 10.0)
        self.clock.advance(0)
        self.assertEqual(len(self.jobs), 1)  # wait for the fsync under way
        self.runJob()
        self.successResultOf(put)
        self.successResultOf(other)
        self.assertNoResult(appended)
        self.runJob()
        self.assertTrue(self.successResultOf(appended))
        self.assertEqual(self.successResultOf(lease).holder, b"h")
        self.assertEqual((store.appends, store.flushes, self.jobs), (4, 2, []))

    def test_closeFsyncsWhatWaits(self) -> None:
        """
        Closing before the end of the turn: the close's fsync acknowledges
        the changes waiting for one.
        """
        store = self.open(sync=True)
        put = store.put(b"k", b"v")
        closed = store.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNoResult(put)
        self.runJob()
        self.successResultOf(put)
        self.successResultOf(closed)

    def test_failedFsyncNotAcknowledged(self) -> None:
        """
        An fsync that fails fails the changes waiting for it, naming the file.
        """
        store = self.open(sync=True)
        put = store.put(b"k", b"v")
        self.clock.advance(0)
        self.runJob(OSError(errno.EIO, "Input/output error"))
        message = self.failureResultOf(put, StoreWriteFailed).getErrorMessage()
        self.assertEqual(message, f"cannot fsync {self.path}: [Errno 5] Input/output error")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_failedWrite(self) -> None:
        """
        A write that fails fails its change at once, without an fsync being
        tried.
        """
        store = self.open(sync=True)
        self.patch(os, "pwrite", _raising(ENOSPC))
        self.failureResultOf(store.put(b"k", b"v"), StoreWriteFailed)
        self.clock.advance(0)
        self.assertEqual(self.jobs, [])


class CompactionTests(_Fixture):
    """
    A compaction keeps every change made while it runs, whatever step a
    kill interrupts.
    """

    def grown(self, sync: bool = False) -> AOFStore:
        """
        A store whose file is due for compaction (one key rewritten).
        """
        store = self.open(sync=sync, compactMinBytes=1 << 30)
        for i in range(20):
            store.put(b"k", b"%d" % i)
            while self.jobs:
                self.runJob()
        store.compactMinBytes = 1
        return store

    def test_writesDuringCompaction(self) -> None:
        """
        Changes made while the snapshot is written go to the old file (a
        kill then loses nothing) and are added to the snapshot before it
        replaces the log; the new file is then fsynced with its directory.
        """
        store = self.grown()
        before = os.path.getsize(self.path)
        flushed = store.flush()
        self.assertEqual(len(self.jobs), 1)  # the snapshot
        self.successResultOf(self._put(store, b"during"))
        self.assertEqual(self.values(self.replayed(), b"k", b"during"), [b"19", b"v-during"])
        self.runJob()  # snapshot written; swapped in on the reactor thread
        self.assertFalse(os.path.exists(self.path + ".compact"))
        self.assertEqual(self.values(self.replayed(), b"k", b"during"), [b"19", b"v-during"])
        self.successResultOf(self._put(store, b"after"))
        self.assertNoResult(flushed)
        self.runJob()  # fsync of the new file and the directory
        self.successResultOf(flushed)
        self.assertEqual(store.compactions, 1)
        self.assertLess(os.path.getsize(self.path), before)
        self.assertEqual(
            self.values(self.replayed(), b"k", b"during", b"after"), [b"19", b"v-during", b"v-after"]
        )

    def _put(self, store: AOFStore, key: bytes) -> Deferred[None]:
        return store.put(key, b"v-" + key)

    def test_interleavedWritesDuringCompaction(self) -> None:
        """
        Puts, deletes, an import and a failed write made between the
        snapshot's start and its swap are all in the compacted log (the
        failed one once written again), in their order; the snapshot holds
        the records as they were when it started.
        """
        store = self.grown()
        store.flush()
        self.successResultOf(self._put(store, b"one"))
        self.successResultOf(store.put(b"k", b"during"))
        patch = self.patch(os, "pwrite", _raising(ENOSPC))
        self.failureResultOf(self._put(store, b"failed"), StoreWriteFailed)
        patch.restore()
        self.assertTrue(self.successResultOf(store.delete(b"one")))
        self.successResultOf(store.importRecords([("v", b"x", b"9", 5, 1)]))
        self.runJob()  # the snapshot; swapped in with what was written meanwhile
        self.runJob()  # fsync of the new file and the directory
        self.assertEqual(store.compactions, 1)
        self.successResultOf(self._put(store, b"after"))
        self.assertEqual(
            self.values(self.replayed(), b"k", b"one", b"failed", b"x", b"after"),
            [b"during", None, b"v-failed", b"9", b"v-after"],
        )
        self.assertEqual(store.stats()["fileBytes"], os.path.getsize(self.path))

    def test_syncWritesDuringCompaction(self) -> None:
        """
        With C{sync}, a change made during a compaction is acknowledged
        after the fsync of the file that holds it from then on.
        """
        store = self.grown(sync=True)
        store.flush()
        during = self._put(store, b"during")
        self.assertNoResult(during)
        self.runJob()  # the snapshot
        self.assertNoResult(during)
        self.runJob()  # the new file's fsync
        self.successResultOf(during)
        self.assertEqual(store.compactions, 1)

    def test_failedCompaction(self) -> None:
        """
        A snapshot that cannot be written leaves the log in place with every
        change, removes the temporary file, is logged and not retried at
        once; the flush waiting for it gets an fsync instead.
        """
        store = self.grown()
        flushed = store.flush()
        self.successResultOf(self._put(store, b"during"))
        self.runJob(ENOSPC)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(len(self.jobs), 1)  # an fsync, not another compaction
        self.runJob()
        self.successResultOf(flushed)
        self.assertEqual(store.compactions, 0)
        self.successResultOf(self._put(store, b"after"))
        self.assertFalse(os.path.exists(self.path + ".compact"))
        self.assertEqual(
            self.values(self.replayed(), b"k", b"during", b"after"), [b"19", b"v-during", b"v-after"]
        )

    def test_failedSwap(self) -> None:
        """
        When the changes made meanwhile cannot be added to the snapshot, the
        snapshot is dropped and the old log, which holds them, stays.
        """
        store = self.grown()
        store.flush()
        self.successResultOf(self._put(store, b"during"))
        f, d = self.jobs.pop(0)
        fresh = f()
        self.patch(os, "pwrite", _raising(ENOSPC))
        d.callback(fresh)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertFalse(os.path.exists(self.path + ".compact"))
        self.assertEqual(store.compactions, 0)
        self.assertEqual(self.values(self.replayed(), b"k", b"during"), [b"19", b"v-during"])


def _failingPwrite(real: Any) -> Any:
    """
    A C{pwrite} that writes half of the first buffer, then fails with ENOSPC.
    """
    calls: list[int] = []

    def pwrite(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        if len(calls) == 1:
            return int(real(fd, bytes(data)[: len(data) // 2], offset))
        raise ENOSPC

    return pwrite


def _shortPwrite(real: Any) -> Any:
    """
    A C{pwrite} whose first call writes 10 bytes only.
    """
    calls: list[int] = []

    def pwrite(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        if len(calls) == 1:
            return int(real(fd, bytes(data)[:10], offset))
        return int(real(fd, data, offset))

    return pwrite


def _raising(error: Exception) -> Any:
    def fail(*args: Any) -> Any:
        raise error

    return fail
