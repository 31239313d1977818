"""
A simulated disk under the real WAL code: L{suite.raft.wal.SharedWAL} and
L{suite.raft.segments.SegmentWriter} run unchanged on real files (in a
temporary directory), but the storage threads are replaced by
L{SimRunner}s driven by one L{task.Clock}, and durability is modelled by
L{SimFiles}:

  - a batch's records are written when the runner executes it, and become
    durable only when its fsync completes, some (simulated) time later;
  - a crash in between puts every file back to its last durable content
    (with C{torn}, keeping a random prefix of the bytes written since, as a
    disk that got part of the write out before power went);
  - the other syncs (segment creation, rotation, torn-tail repair) are
    durable at once: they run inside one step of the runner.

Recovery after a crash is the real start-up code reading those files.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from suite.raft.segments import SegmentWriter
from suite.raft.wal import SharedWAL


class SimFiles:
    """
    The durable content of every synced file of one node.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.durable: dict[str, bytes] = {}
        self.pending: dict[str, bytes] = {}
        self.batchSyncs = 0

    def _read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def syncNow(self, f: IO[bytes]) -> None:
        self.durable[f.name] = self._read(str(f.name))

    def syncLater(self, f: IO[bytes]) -> None:
        self.pending[str(f.name)] = self._read(str(f.name))

    def commit(self) -> None:
        """
        The fsync of the running batch completed.
        """
        if self.pending:
            self.batchSyncs += 1
        self.durable.update(self.pending)
        self.pending.clear()

    def crash(self, torn: bool) -> int:
        """
        Put files back to their durable content; return how many bytes
        written since survived (torn writes).
        """
        self.pending.clear()
        kept = 0
        for path, durable in list(self.durable.items()):
            if not os.path.exists(path):
                del self.durable[path]
                continue
            current = self._read(path)
            if current == durable:
                continue
            lo = 0
            n = min(len(current), len(durable))
            while lo < n and current[lo] == durable[lo]:
                lo += 1
            hi = max(len(current), len(durable))
            while hi > lo and hi <= n and current[hi - 1] == durable[hi - 1]:
                hi -= 1
            keep = self.rng.randint(0, hi - lo) if torn else 0
            kept += keep
            restored = durable[:lo] + current[lo : lo + keep] + durable[lo + keep :]
            with open(path, "wb") as f:
                f.write(restored)
        return kept

    def writer(self, walDir: str, segmentBytes: int) -> SegmentWriter:
        """
        A segment writer whose syncs go through this model.
        """
        w = SegmentWriter(walDir, segmentBytes)
        w.syncFile = self.syncNow
        w.syncDirectory = lambda path: None
        w.syncBatch = self.syncLater
        return w


class SimRunner:
    """
    A storage thread on the simulated clock: work runs in order, each item
    after a delay (the write), and its result is delivered after another
    (the fsync), when the batch's data becomes durable.
    """

    def __init__(
        self, clock: Clock, rng: random.Random, files: SimFiles, delay: tuple[float, float] = (0.0002, 0.002)
    ) -> None:
        self.clock, self.rng, self.files, self.delay = clock, rng, files, delay
        self.started = False
        self.dead = False
        self.queue: deque[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = deque()
        self.call: IDelayedCall | None = None
        self.busy = False
        #: True between a batch's write and the end of its fsync.
        self.syncing = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def run(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        if not self.dead:
            self.queue.append((fn, args, d))
            self._next()
        return d

    def _wait(self) -> float:
        return self.rng.uniform(*self.delay)

    def _next(self) -> None:
        if self.busy or not self.queue or self.dead:
            return
        self.busy = True
        item = self.queue.popleft()
        self.call = self.clock.callLater(self._wait(), self._execute, *item)

    def _execute(self, fn: Callable[..., Any], args: tuple[Any, ...], d: Deferred[Any]) -> None:
        try:
            outcome: Any = fn(*args)
        except Exception:
            outcome = Failure()
        self.syncing = True
        self.call = self.clock.callLater(self._wait(), self._complete, d, outcome)

    def _complete(self, d: Deferred[Any], outcome: Any) -> None:
        self.call = None
        self.syncing = False
        self.files.commit()
        self.busy = False
        if isinstance(outcome, Failure):
            d.errback(outcome)
        else:
            d.callback(outcome)
        self._next()

    def crash(self) -> None:
        self.dead = True
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        self.queue.clear()


class SimDisk:
    """
    One node's WAL directory, snapshot directories and simulated devices.
    """

    def __init__(self, base: str, clock: Clock, rng: random.Random, segmentBytes: int = 16 * 1024) -> None:
        self.base, self.clock, self.rng, self.segmentBytes = base, clock, rng, segmentBytes
        self.files = SimFiles(rng)
        self.runners: list[SimRunner] = []
        self.wal: SharedWAL | None = None

    def open(self) -> SharedWAL:
        """
        A fresh L{SharedWAL} on the directory (a process start).
        """
        writer = SimRunner(self.clock, self.rng, self.files)
        spare = SimRunner(self.clock, self.rng, self.files, (0.001, 0.01))
        self.runners = [writer, spare]
        self.wal = SharedWAL(
            os.path.join(self.base, "wal"),
            self.clock,
            self.segmentBytes,
            runner=writer,
            spareRunner=spare,
            writer=self.files.writer(os.path.join(self.base, "wal"), self.segmentBytes),
        )
        return self.wal

    def snapshotDir(self, group: str) -> str:
        return os.path.join(self.base, "snap", group)

    def crash(self, torn: bool = False) -> bool:
        """
        Power loss: pending work is lost and files go back to what was
        durable.  Return whether a batch was between its write and its
        fsync.
        """
        between = any(r.syncing for r in self.runners)
        for r in self.runners:
            r.crash()
        self.files.crash(torn)
        if self.wal is not None and self.wal.writer.file is not None:
            self.wal.writer.file.close()
            self.wal.writer.file = None
        self.wal = None
        return between
