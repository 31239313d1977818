"""
The file-backed WAL and snapshot store, on real files in temp dirs.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.raft.messages import Configuration, Entry, SnapshotMeta
from suite.raft.snapshot import CorruptSnapshot, SnapshotStore
from suite.raft.storage import Recovered
from suite.raft.wal import CorruptLog, SharedWAL, StorageDirectoryError, WALStorage, prepareDirectory

CONFIG = Configuration(frozenset({"a", "b", "c"}))


class WALTests(TestCase):
    """
    Round trips, repair and refusal.
    """

    def setUp(self) -> None:
        self.base = self.mktemp()
        self.walDir = os.path.join(self.base, "wal")
        self.snapDir = os.path.join(self.base, "snap")

    async def open(self, segmentBytes: int = 64 * 1024) -> tuple[WALStorage, Recovered]:
        storage = WALStorage(self.walDir, self.snapDir, reactor, segmentBytes=segmentBytes)
        self.addCleanup(lambda: storage.close() if storage.wal.runner.started else None)
        return storage, await storage.load()

    async def fill(self, count: int = 10) -> None:
        storage, _ = await self.open()
        await storage.saveHardState(4, "b")
        for i in range(1, count + 1):
            await storage.appendEntries(None, [Entry(1, i, 0, b"x" * 30)])
        await storage.close()

    def segment(self) -> str:
        names = sorted(n for n in os.listdir(self.walDir) if n.endswith(".log"))
        return os.path.join(self.walDir, names[-1])

    async def test_roundTrip(self) -> None:
        """
        Term, vote, truncations and appends come back after a restart.
        """
        storage, recovered = await self.open()
        self.assertEqual(recovered.entries, [])
        await storage.saveHardState(3, "a")
        await storage.appendEntries(None, [Entry(1, 1), Entry(1, 2), Entry(1, 3)])
        await storage.appendEntries(1, [Entry(2, 2, 0, b"y", "client", 7)])
        await storage.close()
        _, recovered = await self.open()
        self.assertEqual((recovered.term, recovered.votedFor), (3, "a"))
        self.assertEqual(recovered.entries, [Entry(1, 1), Entry(2, 2, 0, b"y", "client", 7)])

    async def test_writeProbe(self) -> None:
        """
        Start-up creates both directories with a .write_probe in each.
        """
        await self.open()
        self.assertTrue(os.path.exists(os.path.join(self.walDir, ".write_probe")))
        self.assertTrue(os.path.exists(os.path.join(self.snapDir, ".write_probe")))

    def test_unwritableDirectory(self) -> None:
        """
        A directory that cannot be created is a fatal error naming the path.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("not a directory")
        path = os.path.join(blocker, "wal")
        e = self.assertRaises(StorageDirectoryError, prepareDirectory, path, "WAL")
        self.assertIn(path, str(e))
        self.assertIn("WAL directory", str(e))

    async def test_groupCommitOffTheReactorThread(self) -> None:
        """
        Writes issued together share fsyncs, which run on a worker thread.
        """
        storage, _ = await self.open()
        threads = set()
        original = storage.writer.write

        def spy(chunks: list[object]) -> None:
            threads.add(threading.current_thread())
            original(chunks)  # type: ignore[arg-type]

        storage.writer.write = spy  # type: ignore[method-assign,assignment]
        before = storage.batches
        await gatherResults([storage.appendEntries(None, [Entry(1, i)]) for i in range(1, 101)])
        self.assertLess(storage.batches - before, 10)
        self.assertNotIn(threading.current_thread(), threads)
        self.assertTrue(threads)

    async def test_tornTailRepaired(self) -> None:
        """
        A half-written last record is cut off (with a log line) and the
        records before it survive.
        """
        await self.fill(10)
        path = self.segment()
        with open(path, "r+b") as f:
            data = f.read()
            end = len(data.rstrip(b"\0"))
            f.seek(end - 10)
            f.write(bytes(10))
        _, recovered = await self.open()
        self.assertEqual([e.index for e in recovered.entries], list(range(1, 10)))
        self.assertEqual(recovered.term, 4)

    async def test_tornTailRepairedOnce(self) -> None:
        """
        After repair the log accepts appends and reads back cleanly.
        """
        await self.fill(5)
        path = self.segment()
        with open(path, "r+b") as f:
            data = f.read()
            end = len(data.rstrip(b"\0"))
            f.seek(end - 3)
            f.write(b"\xff\xff\xff")
        storage, recovered = await self.open()
        self.assertEqual(len(recovered.entries), 4)
        await storage.appendEntries(None, [Entry(1, 5, 0, b"new")])
        await storage.close()
        _, recovered = await self.open()
        self.assertEqual(recovered.entries[-1], Entry(1, 5, 0, b"new"))

    async def test_corruptMiddleRecordRefuses(self) -> None:
        """
        A damaged record followed by good ones stops start-up, naming the
        file and the offset.
        """
        await self.fill(10)
        path = self.segment()
        with open(path, "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0xFF]))
        storage = WALStorage(self.walDir, self.snapDir, reactor)
        self.addCleanup(storage.close)
        error = await self.assertFailure(storage.load(), CorruptLog)
        self.assertIn(path, str(error))
        self.assertRegex(str(error), r"at offset \d+")

    async def test_badVersionRefuses(self) -> None:
        """
        A segment with an unknown format version is refused.
        """
        await self.fill(2)
        path = self.segment()
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(b"\x09")
        storage = WALStorage(self.walDir, self.snapDir, reactor)
        self.addCleanup(storage.close)
        error = await self.assertFailure(storage.load(), CorruptLog)
        self.assertIn("format version 9", str(error))

    async def test_snapshotCompactsAndRotates(self) -> None:
        """
        A snapshot compacts the log; once the segment is full a new segment
        starts with a checkpoint and old ones are deleted.
        """
        storage, _ = await self.open(segmentBytes=4096)
        await storage.saveHardState(2, None)
        await storage.appendEntries(None, [Entry(1, i, 0, b"z" * 200) for i in range(1, 40)])
        await storage.saveSnapshot(SnapshotMeta(30, 1, CONFIG), b"state")
        await storage.appendEntries(None, [Entry(2, 40)])
        await storage.close()
        self.assertEqual(len([n for n in os.listdir(self.walDir) if n.endswith(".log")]), 1)
        _, recovered = await self.open(segmentBytes=4096)
        assert recovered.snapshot is not None
        self.assertEqual(recovered.snapshot[0], SnapshotMeta(30, 1, CONFIG))
        self.assertEqual(recovered.snapshot[1], b"state")
        self.assertEqual([e.index for e in recovered.entries], list(range(31, 41)))
        self.assertEqual(recovered.term, 2)


class SpareSegmentTests(TestCase):
    """
    The next segment is filled ahead of time and renamed in at rotation.
    """

    async def test_rotationUsesPreparedSegment(self) -> None:
        """
        Once a segment is half full a spare is prepared on another thread;
        rotation renames it into place and everything reloads.
        """
        from suite.raft.wal import SPARE

        base = self.mktemp()
        storage = WALStorage(base + "/wal", base + "/snap", reactor, segmentBytes=4096)
        prepared: list[Deferred[object]] = []
        run = storage.wal.spareRunner.run

        def spy(fn: Any, *args: Any) -> Deferred[object]:
            d = run(fn, *args)
            prepared.append(d)
            return d

        storage.wal.spareRunner.run = spy  # type: ignore[method-assign]
        await storage.load()
        await storage.appendEntries(None, [Entry(1, i, 0, b"z" * 100) for i in range(1, 50)])
        await storage.sync()
        self.assertEqual(len(prepared), 1)
        await prepared[0]
        self.assertTrue(os.path.exists(os.path.join(base, "wal", SPARE)))
        renames = []
        replace = os.replace

        def spyReplace(src: str, dst: str) -> None:
            renames.append(os.path.basename(src))
            replace(src, dst)

        self.patch(os, "replace", spyReplace)
        await storage.saveSnapshot(SnapshotMeta(20, 1, CONFIG), b"state")
        await storage.close()
        self.assertIn(SPARE, renames)
        self.assertFalse(os.path.exists(os.path.join(base, "wal", SPARE)))
        self.assertEqual(len([n for n in os.listdir(base + "/wal") if n.endswith(".log")]), 1)
        storage = WALStorage(base + "/wal", base + "/snap", reactor, segmentBytes=4096)
        recovered = await storage.load()
        await storage.close()
        self.assertEqual([e.index for e in recovered.entries], list(range(21, 50)))


class SnapshotStoreTests(TestCase):
    """
    Snapshot files.
    """

    def test_roundTripAndKeep(self) -> None:
        """
        The newest snapshot loads back; only the last two are kept.
        """
        d = self.mktemp()
        os.makedirs(d)
        store = SnapshotStore(d)
        for i in (5, 10, 15):
            store.save(SnapshotMeta(i, 1, CONFIG), b"data%d" % i)
        self.assertEqual(store.loadLatest(), (SnapshotMeta(15, 1, CONFIG), b"data15"))
        self.assertEqual(len(os.listdir(d)), 2)

    def test_corruptSnapshotRefuses(self) -> None:
        """
        A snapshot failing its CRC stops start-up, naming the file.
        """
        d = self.mktemp()
        os.makedirs(d)
        store = SnapshotStore(d)
        store.save(SnapshotMeta(5, 1, CONFIG), b"payload")
        [name] = os.listdir(d)
        path = os.path.join(d, name)
        with open(path, "r+b") as f:
            f.seek(-2, os.SEEK_END)
            f.write(b"!!")
        e = self.assertRaises(CorruptSnapshot, store.loadLatest)
        self.assertIn(path, str(e))


class SnapshotBeforeCompactionTests(TestCase):
    """
    A crash between writing a snapshot file and its compaction record.
    """

    async def test_divergentSuffixDropped(self) -> None:
        """
        If the log's entry at the snapshot index has another term, the
        entries after it belong to another history and are dropped at load.
        """
        base = self.mktemp()
        storage = WALStorage(base + "/wal", base + "/snap", reactor)
        await storage.load()
        await storage.appendEntries(None, [Entry(1, i) for i in range(1, 8)])
        await storage.close()
        SnapshotStore(base + "/snap").save(SnapshotMeta(5, 3, CONFIG), b"s")
        storage = WALStorage(base + "/wal", base + "/snap", reactor)
        recovered = await storage.load()
        await storage.close()
        self.assertEqual(recovered.entries, [])

    async def test_matchingSuffixKept(self) -> None:
        """
        If it has the snapshot's term, the entries after it are kept.
        """
        base = self.mktemp()
        storage = WALStorage(base + "/wal", base + "/snap", reactor)
        await storage.load()
        await storage.appendEntries(None, [Entry(1, i) for i in range(1, 8)])
        await storage.close()
        SnapshotStore(base + "/snap").save(SnapshotMeta(5, 1, CONFIG), b"s")
        storage = WALStorage(base + "/wal", base + "/snap", reactor)
        recovered = await storage.load()
        await storage.close()
        self.assertEqual([e.index for e in recovered.entries], [6, 7])


class FakeRunner:
    """
    Records work handed to it; the test fires the Deferreds.
    """

    def __init__(self) -> None:
        self.started = True
        self.calls: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, fn: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((fn, args, d))
        return d


class MachineTests(SynchronousTestCase):
    """
    The WAL's two machines: every input in every state.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.runner = FakeRunner()
        self.spareRunner = FakeRunner()
        self.wal = SharedWAL(
            self.mktemp(), self.clock, 4096, runner=self.runner, spareRunner=self.spareRunner
        )

    # -- batches ------------------------------------------------------------

    def batchIn(self, state: str) -> tuple[Any, list[Deferred[None]]]:
        """
        The batch machine brought into C{state}; the Deferreds of the
        records written so far.
        """
        m = self.wal.batcher
        waiters: list[Deferred[None]] = []
        if state == "Idle":
            return m, waiters
        waiters.append(self.wal.submit(b"rec"))
        if state == "Scheduled":
            return m, waiters
        self.clock.advance(0)
        self.assertEqual(len(self.runner.calls), 1)
        if state == "Writing":
            return m, waiters
        self.runner.calls[0][2].errback(Failure(OSError("disk gone")))
        self.flushLoggedErrors(OSError)
        for d in waiters:
            self.failureResultOf(d, OSError)
        return m, []

    def test_batchIdle(self) -> None:
        """
        Idle: a record schedules one end-of-turn write; a sync fires at
        once; stray completions are ignored.
        """
        m, _ = self.batchIn("Idle")
        self.assertEqual(m.written(), [])
        self.assertEqual(m.writeFailed(Failure(OSError())), [])
        m.turnEnded()
        self.assertEqual(self.runner.calls, [])
        self.successResultOf(m.syncRequested())
        self.wal.submit(b"a")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_batchScheduled(self) -> None:
        """
        Scheduled: more records join the same batch; the end of the turn
        hands the whole queue to the storage thread at once.
        """
        m, waiters = self.batchIn("Scheduled")
        waiters.append(self.wal.submit(b"b"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(m.written(), [])
        self.assertEqual(m.writeFailed(Failure(OSError())), [])
        synced = m.syncRequested()
        m.turnEnded()
        [(_, (chunks,), d)] = self.runner.calls
        self.assertEqual(chunks, [b"rec", b"b"])
        self.assertNoResult(synced)
        d.callback(None)
        for w in [*waiters, synced]:
            self.successResultOf(w)

    def test_batchWriting(self) -> None:
        """
        Writing: records queued now wait for the next batch; completion
        fires the batch's Deferreds and schedules the next batch; a sync
        with nothing queued rides on the batch in progress.
        """
        m, waiters = self.batchIn("Writing")
        synced = m.syncRequested()
        m.turnEnded()
        self.assertEqual(len(self.runner.calls), 1)
        later = self.wal.submit(b"next")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.runner.calls[0][2].callback(None)
        self.successResultOf(waiters[0])
        self.successResultOf(synced)
        self.assertNoResult(later)
        self.clock.advance(0)
        self.assertEqual(self.runner.calls[1][1], ([b"next"],))

    def test_fileWorkStartsABatch(self) -> None:
        """
        Records queued before file work (a snapshot file, a rotation) are
        written and synced without waiting for it; the file work and what
        follows it make the next batch.
        """
        before = self.wal.submit(b"a")
        work = self.wal.submit(lambda: None)
        after = self.wal.submit(b"b")
        self.clock.advance(0)
        [(_, (chunks,), d)] = self.runner.calls
        self.assertEqual(chunks, [b"a"])
        d.callback(None)
        self.successResultOf(before)
        self.assertNoResult(work)
        self.clock.advance(0)
        (_, (chunks,), d) = self.runner.calls[1]
        self.assertEqual(len(chunks), 2)
        self.assertEqual(chunks[1], b"b")
        d.callback(None)
        self.successResultOf(work)
        self.successResultOf(after)

    def test_batchWritingFails(self) -> None:
        """
        Writing: a failed write fails the batch and everything queued.
        """
        m, waiters = self.batchIn("Writing")
        queued = self.wal.submit(b"next")
        self.runner.calls[0][2].errback(Failure(OSError("EIO")))
        self.flushLoggedErrors(OSError)
        self.failureResultOf(waiters[0], OSError)
        self.failureResultOf(queued, OSError)

    def test_batchBroken(self) -> None:
        """
        Broken: nothing is written any more; every record and sync fails.
        """
        m, _ = self.batchIn("Broken")
        d = self.wal.submit(b"x")
        self.clock.advance(0)
        self.failureResultOf(d, OSError)
        self.assertEqual(len(self.runner.calls), 1)
        m.turnEnded()
        self.assertEqual(m.written(), [])
        self.assertEqual(m.writeFailed(Failure(OSError())), [])
        self.failureResultOf(m.syncRequested(), OSError)

    # -- spare segments -------------------------------------------------------

    def spareIn(self, state: str) -> Any:
        m = self.wal.spare
        if state == "NoSpare":
            return m
        m.segmentHalfFull()
        self.assertEqual(len(self.spareRunner.calls), 1)
        if state == "Preparing":
            return m
        self.spareRunner.calls[0][2].callback(None)
        if state == "Ready":
            return m
        self.assertTrue(m.rotating())
        return m

    def test_spareNone(self) -> None:
        """
        NoSpare: a half-full segment starts filling the next one; a rotation
        cannot use a spare.
        """
        m = self.spareIn("NoSpare")
        m.prepared()
        m.prepareFailed("x")
        m.rotated()
        self.assertFalse(m.rotating())
        self.assertEqual(self.spareRunner.calls, [])
        m.segmentHalfFull()
        self.assertEqual(self.spareRunner.calls[0][0], self.wal.writer.prepareSpare)

    def test_sparePreparing(self) -> None:
        """
        Preparing: no second preparation; a rotation now fills its own
        segment; a failure goes back to NoSpare (to be tried again).
        """
        m = self.spareIn("Preparing")
        m.segmentHalfFull()
        m.rotated()
        self.assertFalse(m.rotating())
        self.assertEqual(len(self.spareRunner.calls), 1)
        m.prepareFailed("disk full")
        m.segmentHalfFull()
        self.assertEqual(len(self.spareRunner.calls), 2)
        m.prepared()
        self.assertTrue(m.rotating())

    def test_spareReady(self) -> None:
        """
        Ready: the next rotation takes the spare (once).
        """
        m = self.spareIn("Ready")
        m.segmentHalfFull()
        m.prepared()
        m.prepareFailed("x")
        m.rotated()
        self.assertEqual(len(self.spareRunner.calls), 1)
        self.assertTrue(m.rotating())
        self.assertFalse(m.rotating())

    def test_spareConsumed(self) -> None:
        """
        Consumed: no new spare until the rotation that took it is done.
        """
        m = self.spareIn("Consumed")
        m.segmentHalfFull()
        m.prepared()
        m.prepareFailed("x")
        self.assertFalse(m.rotating())
        self.assertEqual(len(self.spareRunner.calls), 1)
        m.rotated()
        m.segmentHalfFull()
        self.assertEqual(len(self.spareRunner.calls), 2)
