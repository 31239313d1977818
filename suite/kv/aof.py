"""
The default backend: records in memory, every change appended to a log.

File format (C{<dir>/kv.aof}), format version 2::

    header  b"SPKVAOF" + format version (1 byte, 2)
    record  format version (1 byte) | length (u32 BE) | CRC-32 of body (u32 BE) | body
    body    msgpack [kind, key, payload-or-nil, hlc, origin]

A nil payload with a version is a tombstone; nil at version 0 (hlc and
origin 0) forgets the record.  Format 1 files (body C{[kind, key,
payload-or-nil]}, nil deleting) are still read: their records get version
0, and the file is rewritten in format 2 at once.

Durability: the records of each operation are appended with one
C{write(2)} inside the operation, before it returns its (already fired)
result, so a process crash (kill -9) loses no acknowledged change; the
file is fsynced in a thread every C{flushInterval} seconds, which bounds
what a power loss or OS crash can take (Redis's C{appendfsync everysec}).
With C{sync} a change is acknowledged only once fsynced too.  At start-up
the log is replayed; a torn or corrupt tail is cut off (and logged) instead of
refusing to start.  When the file grows past twice the live data it is
compacted into a fresh snapshot written to a temporary file and renamed.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgpack
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.daemon import ConfigError
from suite.kv.aoffile import AppendFile, discard, syncDirectory, writeSnapshot
from suite.kv.interfaces import IKeyValueStore
from suite.kv.memory import TableStore
from suite.kv.records import Incoming, Record, StoreWriteFailed
from suite.kv.versions import TOMBSTONE_HORIZON
from suite.serial import SerialJob

__all__ = ["AOFStore", "MAGIC", "FORMAT_VERSION", "encodeRecord", "encodeRecordV1", "Runner"]

T = TypeVar("T")
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]
MAGIC = b"SPKVAOF"
FORMAT_VERSION = 2
#: the format before versions, still read
FORMAT_V1 = 1
HEADER = MAGIC + bytes([FORMAT_VERSION])
_FRAME = struct.Struct(">BII")
#: seconds before a failed compaction is tried again
COMPACT_RETRY = 60.0
MAX_RECORD = 64 * 1024 * 1024
#: While appends fail (a full disk), changes are kept in memory and tried
#: again; above this many bytes waiting, a new change is refused before it
#: is applied (memory stays bounded through a long outage).
MAX_PENDING_BYTES = 64 * 1024 * 1024
log = Logger()
#: an operation's Deferred and the result it fires with once its changes are stored
_Ack = tuple["Deferred[Any]", Any]


def encodeRecord(kind: str, key: bytes, payload: bytes | None, hlc: int, origin: int) -> bytes:
    """
    One framed log record.
    """
    body: bytes = msgpack.packb([kind, key, payload, hlc, origin])
    return _FRAME.pack(FORMAT_VERSION, len(body), zlib.crc32(body)) + body


def encodeRecordV1(kind: str, key: bytes, payload: bytes | None) -> bytes:
    """
    One framed record of format 1 (for tests of the upgrade).
    """
    body: bytes = msgpack.packb([kind, key, payload])
    return _FRAME.pack(FORMAT_V1, len(body), zlib.crc32(body)) + body


def _rewrite(path: str, directory: str, items: list[Record]) -> int:
    """
    Replace the log at C{path} by a fresh one holding C{items} (fsynced,
    renamed over it); return its size.  Blocking (used at start-up).
    """
    fresh = writeSnapshot(path + ".compact", HEADER, (encodeRecord(*item) for item in items))
    try:
        os.replace(fresh.path, path)
        syncDirectory(directory)
        return fresh.size
    finally:
        fresh.close()


@implementer(IKeyValueStore)
class AOFStore(TableStore):
    """
    In-memory records persisted in an append-only file.

    The records an operation makes are appended to the file with one
    write (C{pwrite} at the known end, on the reactor thread) before the
    operation returns: its Deferred has fired by then, so callers go on in
    the same call (no turn is waited for).  The file is fsynced in a thread
    every C{flushInterval} seconds, or, with C{sync}, before the changes
    are acknowledged (one fsync, asked for at the end of the turn, covers
    the changes of the turn, and the changes written while one fsync runs
    share the next: group commit).  A failed write fails the operation with
    L{StoreWriteFailed}; its records stay in memory and are written again
    with the next change (or the next interval, or L{flush}).

    @param runner: runs a blocking callable off the reactor thread and
        returns a Deferred (e.g. C{deferToThreadPool} bound to a pool).
    """

    name = "aof"

    def __init__(
        self,
        directory: str,
        clock: IReactorTime,
        runner: Runner,
        flushInterval: float = 3.0,
        compactMinBytes: int = 4 * 1024 * 1024,
        origin: int = 0,
        horizon: float = TOMBSTONE_HORIZON,
        sync: bool = False,
    ) -> None:
        super().__init__(clock, origin, horizon)
        #: acknowledge a change only once it is fsynced too
        self.sync = sync
        self.directory = directory
        self.path = os.path.join(directory, "kv.aof")
        self.runner = runner
        self.flushInterval = flushInterval
        self.compactMinBytes = compactMinBytes
        #: encoded changes not in the file yet (the running operation's, or a failed write's)
        self.pending: list[bytes] = []
        self.appends = 0
        self.writeErrors = 0
        self.flushes = 0
        self.compactions = 0
        self.repairedBytes = 0
        #: writes failed since the last one that did not (the first is logged)
        self._failedInARow = 0
        #: acknowledgements (and flushes) waiting for the next fsync
        self._unsynced: list[_Ack] = []
        #: appended since the last fsync began
        self._dirty = False
        #: what is appended while a compaction writes its snapshot
        self._sinceSnapshot: list[bytes] | None = None
        self._compactAfter = 0.0
        #: with C{sync}, the end-of-turn call that asks for the fsync of the turn's changes
        self._fsyncDue: IDelayedCall | None = None
        self._closed = False
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._file = AppendFile.open(self.path, self._replay())
        #: fsyncs and compactions, one at a time
        self._disk = SerialJob(self._diskWork, f"AOF {self.path}: fsync", log=log)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock
        self._ticker.start(flushInterval, now=False)

    @property
    def fileBytes(self) -> int:
        """
        Bytes of whole records in the file.
        """
        return self._file.size

    # -- start-up -------------------------------------------------------
    def _replay(self) -> int:
        """
        Load the log into memory, cutting off a torn or corrupt tail.
        Runs once at start-up, before the reactor serves anything; returns
        the size of the file's whole records.
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        header = HEADER
        if len(data) < len(header):
            if data and not header.startswith(data):
                raise ConfigError(f"{self.path}: not a Specter AOF file")
            with open(self.path, "wb") as f:
                f.write(header)
                f.flush()
                os.fsync(f.fileno())
            return len(header)
        if data[: len(MAGIC)] != MAGIC:
            raise ConfigError(f"{self.path}: not a Specter AOF file")
        fileVersion = data[len(MAGIC)]
        if fileVersion not in (FORMAT_V1, FORMAT_VERSION):
            raise ConfigError(f"{self.path}: unsupported AOF format version {fileVersion}")
        pos = len(header)
        end = len(data)
        count = 0
        table = self.table
        high = 0
        while pos < end:
            if end - pos < _FRAME.size:
                break
            version, length, crc = _FRAME.unpack_from(data, pos)
            start = pos + _FRAME.size
            if version != fileVersion or length > MAX_RECORD or start + length > end:
                break
            body = data[start : start + length]
            if zlib.crc32(body) != crc:
                break
            try:
                if fileVersion == FORMAT_V1:
                    kind, key, payload = msgpack.unpackb(body)
                    hlc = origin = 0
                else:
                    kind, key, payload, hlc, origin = msgpack.unpackb(body)
            except Exception:  # a corrupt record ends replay: cut and logged below
                break
            if payload is None and hlc == 0 and origin == 0:
                table.forget(kind, key)
            else:
                table.write(kind, key, payload, hlc, origin)
                if hlc > high:
                    high = hlc
            count += 1
            pos = start + length
        self.hlc.observe(high)
        if pos < end:
            self.repairedBytes = end - pos
            log.warn(
                "AOF {path}: cut a torn or corrupt tail of {count} bytes after {records} good records",
                path=self.path,
                count=end - pos,
                records=count,
            )
            with open(self.path, "r+b") as f:
                f.truncate(pos)
                f.flush()
                os.fsync(f.fileno())
        if fileVersion != FORMAT_V1:
            return pos
        size = _rewrite(self.path, self.directory, self._items())
        log.info(
            "AOF {path}: rewrote {records} records of format 1 in format {newFormat} (version 0 each)",
            path=self.path,
            records=len(table.versions),
            newFormat=FORMAT_VERSION,
        )
        return size

    def _items(self) -> list[Record]:
        return self.table.records()

    # -- acknowledgements -------------------------------------------------
    def _backlog(self) -> StoreWriteFailed | None:
        """
        While appends fail, why a new change is refused before it is
        applied: more than L{MAX_PENDING_BYTES} already wait for the disk.
        """
        if not self._failedInARow:
            return None
        waiting = sum(map(len, self.pending))
        if waiting <= MAX_PENDING_BYTES:
            return None
        return StoreWriteFailed(
            f"cannot write {self.path}: {waiting} bytes of earlier changes wait for the disk; not applied"
        )

    def _run(self, op: Callable[..., T], *args: Any) -> Deferred[T]:
        refused = self._backlog()
        if refused is not None:
            return fail(refused)
        before = len(self.pending)
        try:
            result = op(self, *args)
        except Exception:  # handed to the caller's Deferred
            failed: Deferred[T] = fail()
            if len(self.pending) > before:
                # what the operation changed before it raised is in memory: keep the file in step
                self._appendPending()
            return failed
        return self._whenStored(result, before)

    def importRecords(self, records: Iterable[Incoming]) -> Deferred[int]:
        refused = self._backlog()
        if refused is not None:
            return fail(refused)
        before = len(self.pending)
        return self._whenStored(self._install(records), before)

    def removeRange(self, low: int, high: int) -> Deferred[int]:
        refused = self._backlog()
        if refused is not None:
            return fail(refused)
        before = len(self.pending)
        return self._whenStored(self._forgetRange(low, high), before)

    def _whenStored(self, result: T, before: int) -> Deferred[T]:
        """
        An operation's C{result} once the records it made (C{pending} past
        C{before}; none: at once) are written: fired already, or failed with
        L{StoreWriteFailed}; with C{sync}, firing once they are fsynced too.
        """
        if len(self.pending) == before:
            return succeed(result)
        error = self._appendPending()
        if error is not None:
            return fail(error)
        if not self.sync:
            return succeed(result)
        ack: Deferred[T] = Deferred()
        self._unsynced.append((ack, result))
        if self._fsyncDue is None:
            # at the end of the turn: one fsync covers every change of the turn
            self._fsyncDue = self.clock.callLater(0, self._requestFsync)
        return ack

    def _requestFsync(self) -> None:
        self._fsyncDue = None
        self._disk.request()

    # -- appends ----------------------------------------------------------
    def _persist(self, kind: str, key: bytes, payload: bytes | None, hlc: int, origin: int) -> None:
        self.pending.append(encodeRecord(kind, key, payload, hlc, origin))

    def _appendPending(self) -> StoreWriteFailed | None:
        """
        Append what is pending with one write; return the error that fails
        the changes it carried, if it failed (they stay pending).
        """
        pending = self.pending
        if not pending:
            return None
        if self._closed:
            return StoreWriteFailed(f"{self.path}: the store is closed")
        chunk = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            self._file.append(chunk)
        except OSError as e:
            return self._appendFailed(e)
        self.pending = []
        self.appends += 1
        self._dirty = True
        if self._failedInARow:
            log.info(
                "AOF {path}: appending again after {count} failed writes",
                path=self.path,
                count=self._failedInARow,
            )
            self._failedInARow = 0
        if self._sinceSnapshot is not None:
            self._sinceSnapshot.append(chunk)
        return None

    def _appendFailed(self, error: OSError) -> StoreWriteFailed:
        self.writeErrors += 1
        self._failedInARow += 1
        reason = error.strerror or str(error)
        if self._failedInARow == 1:
            # once per run of failures (a full disk fails every change until it is not)
            log.error(
                "AOF {path}: cannot append {records} records ({reason}); "
                "not acknowledged, tried again with the next change",
                path=self.path,
                records=len(self.pending),
                reason=reason,
            )
        return StoreWriteFailed(f"cannot write {self.path}: {reason}; not acknowledged")

    def _tick(self) -> None:
        self._appendPending()
        self._disk.request()

    def flush(self) -> Deferred[None]:
        """
        Append what is pending, then make everything appended durable (an
        fsync, or a compaction when one is due); fire when it is, or fail
        with L{StoreWriteFailed}.
        """
        if self._closed:
            return fail(StoreWriteFailed(f"{self.path}: the store is closed"))
        error = self._appendPending()
        if error is not None:
            return fail(error)
        done: Deferred[None] = Deferred()
        self._unsynced.append((done, None))
        self._disk.request()
        return done

    # -- fsync and compaction (one at a time, in a thread) ----------------
    def _diskWork(self) -> Deferred[None] | None:
        if self._compactionDue():
            return self._compact()
        if self._dirty:
            return self._fsync()
        # everything appended is covered by an fsync that ended
        waiting, self._unsynced = self._unsynced, []
        _fire(waiting)
        return None

    def _fsync(self) -> Deferred[None]:
        return self._syncCovering(self.runner(self._file.fsync))

    def _syncCovering(self, d: Deferred[Any]) -> Deferred[None]:
        """
        Hand the waiters and the dirty mark to the fsync C{d} just started
        (it covers everything appended so far).
        """
        waiting, self._unsynced = self._unsynced, []
        self._dirty = False

        def synced(_: object) -> None:
            self.flushes += 1
            _fire(waiting)

        def failed(f: Failure) -> None:
            self._dirty = True
            log.failure("AOF {path}: fsync failed", f, path=self.path)
            _fail(waiting, StoreWriteFailed(f"cannot fsync {self.path}: {f.getErrorMessage()}"))

        return d.addCallbacks(synced, failed)

    def _compactionDue(self) -> bool:
        return (
            self.clock.seconds() >= self._compactAfter
            and self.fileBytes > self.compactMinBytes
            and self.fileBytes > 2 * (self.table.bytes + 40 * len(self.table.versions))
        )

    def _compact(self) -> Deferred[None]:
        """
        Write a snapshot to C{kv.aof.compact} in a thread (the appends meanwhile
        still go to the old file, and are kept), then on the reactor thread
        append those to the snapshot and rename it over the log, then fsync
        it and the directory in a thread.  A kill at any point leaves one
        file holding every append made.
        """
        self._appendPending()
        items = self._items()
        self._sinceSnapshot = []
        tmp = self.path + ".compact"

        def write() -> AppendFile:
            return writeSnapshot(tmp, HEADER, (encodeRecord(*item) for item in items))

        d = self.runner(write)
        d.addCallback(self._swapIn)
        d.addErrback(self._compactFailed)
        return d

    def _swapIn(self, fresh: AppendFile) -> Deferred[None]:
        since, self._sinceSnapshot = self._sinceSnapshot or [], None
        try:
            fresh.append(b"".join(since))
            os.replace(fresh.path, self.path)
        except OSError:
            fresh.close()
            discard(fresh.path)
            raise
        fresh.path = self.path
        old, self._file = self._file, fresh
        old.close()
        self.compactions += 1
        log.info("AOF {path} compacted to {size} bytes", path=self.path, size=fresh.size)

        def sync() -> None:
            fresh.fsync()
            syncDirectory(self.directory)

        return self._syncCovering(self.runner(sync))

    def _compactFailed(self, f: Failure) -> None:
        self._sinceSnapshot = None
        self._compactAfter = self.clock.seconds() + COMPACT_RETRY
        log.failure(
            "AOF {path}: compaction failed; retried in {retry} s", f, path=self.path, retry=COMPACT_RETRY
        )
        # the waiters of this run get the fsync they wanted from the next one
        if self._unsynced:
            self._disk.request()

    # -- the rest -----------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        s = super().stats()
        s.update(
            fileBytes=self.fileBytes + sum(map(len, self.pending)),
            pendingRecords=len(self.pending),
            appends=self.appends,
            writeErrors=self.writeErrors,
            flushes=self.flushes,
            compactions=self.compactions,
            repairedBytes=self.repairedBytes,
        )
        return s

    def close(self) -> Deferred[None]:
        """
        Append what is pending, wait for the fsync or compaction under way,
        fsync and close the file.
        """
        if self._closed:
            return succeed(None)
        self._appendPending()
        self._closed = True
        if self._ticker.running:
            self._ticker.stop()
        if self._fsyncDue is not None:
            # the fsync of the close covers the changes waiting for it
            self._fsyncDue.cancel()
            self._fsyncDue = None
        if self.pending:
            log.error(
                "AOF {path}: closed with {records} records it could not write",
                path=self.path,
                records=len(self.pending),
            )
        d = self._disk.stop()
        d.addCallback(lambda _: self._syncCovering(self.runner(self._file.fsync)))
        d.addBoth(self._closeFile)
        return d

    def _closeFile(self, _: object) -> None:
        self._file.close()


def _fire(acks: list[_Ack]) -> None:
    for ack, result in acks:
        ack.callback(result)


def _fail(acks: list[_Ack], error: Exception) -> None:
    for ack, _ in acks:
        ack.errback(error)
