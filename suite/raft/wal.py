"""
Durable Raft storage on files: a write-ahead log in segments
(L{suite.raft.segments}) plus snapshot files (L{suite.raft.snapshot}).

One L{SharedWAL} serves every Raft group of a node: each group's
L{GroupStorage} (an L{IRaftStorage}) queues its records at one batching
point, and everything queued in one reactor turn is written and made
durable by the storage thread with one fsync; each Deferred fires after the
fsync that covers it (Raft acknowledges nothing before that).  Records
queued while a batch is being written go into the next batch.
L{WALStorage} is a log with one group, as a single Raft node uses it.

Two small machines (L{suite.raft.walbatch}) hold the log's state: the
batching point (Idle, Scheduled, Writing, Broken) and the spare segment
(NoSpare, Preparing, Ready, Consumed: once the segment is half full the
next one is filled ahead of time on another thread, so rotation renames it
instead of stalling appends behind a 16 MiB write).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.raft.interfaces import IRaftStorage
from suite.raft.messages import Entry, SnapshotMeta
from suite.raft.segments import (
    APPEND,
    COMPACT,
    DROP,
    HARDSTATE,
    SPARE,
    CorruptLog,
    GroupLog,
    SegmentWriter,
    StorageDirectoryError,
    checkpointRecord,
    encodeRecord,
    groupHeader,
    groupRecord,
    prepareDirectory,
)
from suite.raft.snapshot import SnapshotStore
from suite.raft.storage import Recovered, applyAppend, applyCompaction
from suite.raft.walbatch import (
    BatchCore,
    BatchMachine,
    Chunk,
    Runner,
    SpareCore,
    SpareMachine,
    StorageThread,
)

__all__ = [
    "CorruptLog",
    "GroupStorage",
    "SPARE",
    "SharedWAL",
    "StorageDirectoryError",
    "StorageThread",
    "WALStorage",
    "prepareDirectory",
]

log = Logger()


# -- the shared log -----------------------------------------------------------


class _Once:
    """
    Run a coroutine once; every caller of L{wait} gets its outcome.
    """

    def __init__(self, work: Callable[[], Any]) -> None:
        self.work = work
        self.waiting: list[Deferred[None]] | None = None
        self.outcome: Failure | None | bool = False

    def wait(self) -> Deferred[None]:
        if self.outcome is None:
            return succeed(None)
        if isinstance(self.outcome, Failure):
            return fail(self.outcome)
        d: Deferred[None] = Deferred()
        if self.waiting is None:
            self.waiting = [d]
            Deferred.fromCoroutine(self.work()).addBoth(self._done)
        else:
            self.waiting.append(d)
        return d

    def _done(self, result: object) -> None:
        self.outcome = result if isinstance(result, Failure) else None
        waiting, self.waiting = self.waiting or [], []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(None)


class SharedWAL:
    """
    One write-ahead log for any number of Raft groups: one batching point,
    one storage thread, one fsync per batch across groups.

    @param runner: where the writes run (default: a L{StorageThread});
        C{spareRunner} likewise for preparing the next segment.
    @param writer: the segment files (default: a L{SegmentWriter} on
        C{walDir}).
    """

    def __init__(
        self,
        walDir: str,
        reactor: Any,
        segmentBytes: int = 16 * 1024 * 1024,
        *,
        runner: Runner | None = None,
        spareRunner: Runner | None = None,
        writer: SegmentWriter | None = None,
    ) -> None:
        self.clock = reactor
        self.walDir = prepareDirectory(walDir, "WAL")
        self.writer = writer or SegmentWriter(self.walDir, segmentBytes)
        self.runner: Runner = runner or StorageThread(reactor, "raft-wal")
        self.spareRunner: Runner = spareRunner or StorageThread(reactor, "raft-wal-prepare")
        self._queue = BatchCore(self)
        self.batcher = BatchMachine(self._queue)
        self.spare = SpareMachine(SpareCore(self))
        #: Every group the log holds state for (attached or not): what a
        #: rotation's checkpoint carries.
        self.states: dict[str, GroupLog] = {}
        self.attached: dict[str, GroupStorage] = {}
        #: Batches written (one fsync each).
        self.batches = 0
        self._loaded = _Once(self._load)
        self._closing = _Once(self._close)

    # -- start-up -----------------------------------------------------------

    def load(self) -> Deferred[None]:
        """
        Read the log back (once, however many groups ask).
        """
        return self._loaded.wait()

    async def _load(self) -> None:
        if not self.runner.started:
            self.runner.start()
            self.spareRunner.start()
        self.states = await self.runner.run(self.writer.recover)

    def group(self, group: str, snapshotDir: str, importFrom: str | None = None) -> GroupStorage:
        """
        The storage of C{group} (snapshots in C{snapshotDir}).  With
        C{importFrom}: a single-group WAL directory whose state is taken
        over when this log holds nothing for the group (migration from
        per-group logs, or a group exported from another node); its
        segments are then renamed C{*.log.imported} (other files there,
        such as an incarnation file, stay).
        """
        if group in self.attached:
            raise ValueError(f"WAL group {group!r} is already open")
        if group:
            groupHeader(group)
        storage = GroupStorage(self, group, snapshotDir, importFrom)
        self.attached[group] = storage
        return storage

    # -- writing --------------------------------------------------------------

    def submit(self, item: Chunk) -> Deferred[None]:
        """
        Queue a record (or file work); fires once it is durable.
        """
        d = self._queue.add(item)
        self.batcher.queued()
        return d

    def sync(self) -> Deferred[None]:
        """
        Fires once everything queued so far is durable.
        """
        return self.batcher.syncRequested()

    def afterBatch(self) -> None:
        """
        A batch is durable: prepare the next segment once this one is half
        full.
        """
        if self.writer.size >= self.writer.segmentBytes // 2:
            self.spare.segmentHalfFull()

    def maybeRotate(self) -> Deferred[None] | None:
        """
        After a compaction: when the segment is full, queue a rotation whose
        checkpoint carries every group's state.
        """
        if self.writer.size <= self.writer.segmentBytes:
            return None
        checkpoint = b"".join(checkpointRecord(g, s) for g, s in sorted(self.states.items()))
        useSpare = self.spare.rotating()
        d = self.submit(lambda: self.writer.rotate(checkpoint, useSpare))

        def renamed(result: object) -> object:
            self.spare.rotated()
            return result

        d.addBoth(renamed)
        return d

    def drop(self, group: str) -> Deferred[None]:
        """
        Forget C{group}'s state (a replica that left for good); fires when
        durable.  The group must not be open.
        """
        if group in self.attached:
            raise ValueError(f"WAL group {group!r} is open")
        self.states.pop(group, None)
        return self.submit(encodeRecord(DROP, groupHeader(group)))

    def close(self) -> Deferred[None]:
        """
        Wait for the queue to drain, then release the files and threads.
        """
        return self._closing.wait()

    async def _close(self) -> None:
        if not self.runner.started:
            return
        try:
            while self._queue.items:
                await self.sync()
            await self.sync()
        finally:
            await self.runner.run(self.writer.close)
            self.runner.stop()
            self.spareRunner.stop()


def _retireSegments(source: SegmentWriter) -> None:
    """
    Rename a taken-over WAL's segments C{*.log.imported} (kept for
    inspection, never read again); other files of the directory stay.
    """
    for path in source.segments():
        os.replace(path, path + ".imported")
    source.syncDirectory(source.walDir)


@implementer(IRaftStorage)
class GroupStorage:
    """
    L{IRaftStorage} of one group on a L{SharedWAL} and its own snapshot
    directory.
    """

    def __init__(self, wal: SharedWAL, group: str, snapshotDir: str, importFrom: str | None = None) -> None:
        self.wal = wal
        self.group = group
        self.snapshots = SnapshotStore(prepareDirectory(snapshotDir, "snapshot"))
        self.importFrom = importFrom
        self.state = GroupLog()
        self.latest: tuple[SnapshotMeta, bytes] | None = None
        self.closed = False

    # The group's live state (what a checkpoint writes).

    @property
    def term(self) -> int:
        return self.state.recovered.term

    @property
    def votedFor(self) -> str | None:
        return self.state.recovered.votedFor

    @property
    def entries(self) -> list[Entry]:
        return self.state.recovered.entries

    async def _load(self) -> Recovered:
        wal = self.wal
        await wal.load()
        snap = await wal.runner.run(self.snapshots.loadLatest)
        state = wal.states.get(self.group)
        if state is None and self.importFrom is not None:
            state = await self._import(self.importFrom)
        if state is None:
            state = GroupLog()
        wal.states[self.group] = self.state = state
        r = state.recovered
        if snap is not None:
            meta = snap[0]
            if r.entries:
                # As if the compaction record had been written: keep the
                # suffix only if the log holds the snapshot's last entry.
                r.entries = applyCompaction(r.entries, r.entries[0].index - 1, meta)
            state.base, state.baseTerm = meta.index, meta.term
        elif r.entries and r.entries[0].index != 1:
            raise CorruptLog(
                f"WAL in {wal.walDir} starts group {self.group or '(unnamed)'} at index "
                f"{r.entries[0].index} but no snapshot was found in {self.snapshots.directory}; "
                "refusing to start"
            )
        self.latest = snap
        return Recovered(r.term, r.votedFor, snap, list(r.entries))

    async def _import(self, path: str) -> GroupLog | None:
        if not os.path.isdir(path) or not any(
            n.startswith("wal-") and n.endswith(".log") for n in os.listdir(path)
        ):
            return None
        source = SegmentWriter(path, 0)
        groups: dict[str, GroupLog] = await self.wal.runner.run(source.recover, False)
        state = groups.get("")
        if state is None:
            return None
        log.info(
            "taking over the WAL of group {group} from {path}", group=self.group or "(unnamed)", path=path
        )
        self.wal.states[self.group] = state
        await self.wal.submit(checkpointRecord(self.group, state))
        await self.wal.runner.run(_retireSegments, source)
        return state

    def load(self) -> Deferred[Recovered]:
        return Deferred.fromCoroutine(self._load())

    def _record(self, kind: int, body: bytes) -> Deferred[None]:
        return self.wal.submit(groupRecord(self.group, kind, body))

    def saveHardState(self, term: int, votedFor: str | None) -> Deferred[None]:
        r = self.state.recovered
        r.term, r.votedFor = term, votedFor
        return self._record(HARDSTATE, msgpack.packb([term, votedFor]))

    def appendEntries(self, truncateAfter: int | None, entries: Sequence[Entry]) -> Deferred[None]:
        applyAppend(self.state.recovered.entries, truncateAfter, list(entries), self.state.base)
        payload = [-1 if truncateAfter is None else truncateAfter, list(entries)]
        return self._record(APPEND, msgpack.packb(payload, use_bin_type=True))

    def saveSnapshot(self, meta: SnapshotMeta, data: bytes) -> Deferred[None]:
        state = self.state
        self.latest = (meta, data)
        state.recovered.entries = applyCompaction(state.recovered.entries, state.base, meta)
        state.base, state.baseTerm = meta.index, meta.term
        self.wal.submit(lambda: self.snapshots.save(meta, data))
        d = self._record(COMPACT, msgpack.packb([meta.index, meta.term]))
        rotation = self.wal.maybeRotate()
        return d if rotation is None else rotation

    def readSnapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        return self.latest

    def sync(self) -> Deferred[None]:
        return self.wal.sync()

    def close(self) -> Deferred[None]:
        """
        Detach this group from the log (which keeps its state; the group may
        be opened again at once) and wait until its writes are durable.
        """
        if not self.closed:
            self.closed = True
            if self.wal.attached.get(self.group) is self:
                del self.wal.attached[self.group]
        return self.wal.sync()


@implementer(IRaftStorage)
class WALStorage(GroupStorage):
    """
    L{IRaftStorage} on a WAL directory of its own (one group) and a
    snapshot directory; closing it closes the log.
    """

    def __init__(self, walDir: str, snapshotDir: str, reactor: Any, segmentBytes: int = 16 * 1024 * 1024):
        wal = SharedWAL(walDir, reactor, segmentBytes)
        super().__init__(wal, "", snapshotDir)
        wal.attached[""] = self
        self.walDir = wal.walDir

    @property
    def writer(self) -> SegmentWriter:
        return self.wal.writer

    @property
    def batches(self) -> int:
        return self.wal.batches

    def close(self) -> Deferred[None]:
        async def closing() -> None:
            try:
                await super(WALStorage, self).close()
            finally:
                await self.wal.close()

        return Deferred.fromCoroutine(closing())
