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

Writes are acknowledged at once and buffered; a timer flushes the buffer
and fsyncs it off the reactor thread about every C{flushInterval} seconds
(replication to other processes covers the window).  At start-up the log is
replayed; a torn or corrupt tail is cut off (and logged) instead of
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
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.daemon import ConfigError
from suite.kv.interfaces import IKeyValueStore
from suite.kv.memory import TableStore
from suite.kv.records import Incoming, Record
from suite.kv.versions import TOMBSTONE_HORIZON

__all__ = ["AOFStore", "MAGIC", "FORMAT_VERSION", "encodeRecord", "encodeRecordV1", "Runner"]

T = TypeVar("T")
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]
MAGIC = b"SPKVAOF"
FORMAT_VERSION = 2
#: the format before versions, still read
FORMAT_V1 = 1
_FRAME = struct.Struct(">BII")
MAX_RECORD = 64 * 1024 * 1024
log = Logger()


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


def _writeSnapshot(path: str, directory: str, items: list[Record]) -> int:
    """
    Write a fresh log holding C{items} next to C{path}, fsync it and rename
    it over C{path}; return its size.  Blocking.
    """
    tmp = path + ".compact"
    with open(tmp, "wb") as f:
        f.write(MAGIC + bytes([FORMAT_VERSION]))
        for kind, key, payload, hlc, origin in items:
            f.write(encodeRecord(kind, key, payload, hlc, origin))
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    os.replace(tmp, path)
    dirfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return size


@implementer(IKeyValueStore)
class AOFStore(TableStore):
    """
    In-memory records persisted in an append-only file.

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
        #: acknowledge a change only once it is written and fsynced (the
        #: changes made meanwhile share one write: group commit)
        self.sync = sync
        self.directory = directory
        self.path = os.path.join(directory, "kv.aof")
        self.runner = runner
        self.flushInterval = flushInterval
        self.compactMinBytes = compactMinBytes
        self.pending: list[bytes] = []
        self.fileBytes = 0
        self.flushes = 0
        self.compactions = 0
        self.repairedBytes = 0
        self._flushing: Deferred[None] | None = None
        self._timer: IDelayedCall | None = None
        self._closed = False
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._replay()
        self._fh = open(self.path, "ab")
        self._schedule()

    # -- start-up -------------------------------------------------------
    def _replay(self) -> None:
        """
        Load the log into memory, cutting off a torn or corrupt tail.
        Runs once at start-up, before the reactor serves anything.
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        header = MAGIC + bytes([FORMAT_VERSION])
        if len(data) < len(header):
            if data and not header.startswith(data):
                raise ConfigError(f"{self.path}: not a Specter AOF file")
            with open(self.path, "wb") as f:
                f.write(header)
                f.flush()
                os.fsync(f.fileno())
            self.fileBytes = len(header)
            return
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
        self.fileBytes = pos
        if fileVersion == FORMAT_V1:
            self.fileBytes = _writeSnapshot(self.path, self.directory, self._items())
            log.info(
                "AOF {path}: rewrote {records} records of format 1 in format {newFormat} (version 0 each)",
                path=self.path,
                records=len(table.versions),
                newFormat=FORMAT_VERSION,
            )

    def _items(self) -> list[Record]:
        return self.table.records()

    # -- durable acknowledgements (sync) --------------------------------
    def _durable(self, d: Deferred[T]) -> Deferred[T]:
        """
        With C{sync}, C{d}'s result once what is buffered is on disk (a
        failed write fails it: the change is not acknowledged).
        """
        if not self.sync or not self.pending:
            return d
        flushed: Deferred[None] = Deferred()

        def relay(result: Any) -> None:
            # the failure is the change's caller's to handle (and report)
            if isinstance(result, Failure):
                flushed.errback(result)
            else:
                flushed.callback(None)

        self.flush().addBoth(relay)

        def after(result: T) -> Deferred[T]:
            return flushed.addCallback(lambda _: result)

        return d.addCallback(after)

    def _run(self, op: Callable[..., T], *args: Any) -> Deferred[T]:
        return self._durable(super()._run(op, *args))

    def importRecords(self, records: Iterable[Incoming]) -> Deferred[int]:
        return self._durable(super().importRecords(records))

    # -- persistence ----------------------------------------------------
    def _persist(self, kind: str, key: bytes, payload: bytes | None, hlc: int, origin: int) -> None:
        self.pending.append(encodeRecord(kind, key, payload, hlc, origin))

    def _schedule(self) -> None:
        if not self._closed:
            self._timer = self.clock.callLater(self.flushInterval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        d = self.flush()
        d.addErrback(lambda f: log.failure("AOF flush of {path} failed", f, path=self.path))
        d.addBoth(lambda _: self._schedule())

    def flush(self) -> Deferred[None]:
        """
        Write and fsync what is buffered (or compact); fire when durable.
        """
        if self._flushing is not None:
            waiting: Deferred[None] = Deferred()
            self._flushing.addBoth(lambda _: self.flush().chainDeferred(waiting))
            return waiting
        if self._needsCompaction():
            d = self._compact()
        elif self.pending:
            chunk = b"".join(self.pending)
            self.pending = []
            fh = self._fh

            def write() -> None:
                fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())

            self.fileBytes += len(chunk)
            d = self.runner(write)
        else:
            return succeed(None)
        self._flushing = d

        def done(result: Any) -> Any:
            self._flushing = None
            self.flushes += 1
            return result

        d.addBoth(done)
        return d

    def _needsCompaction(self) -> bool:
        return self.fileBytes > self.compactMinBytes and self.fileBytes > 2 * (
            self.table.bytes + 40 * len(self.table.versions)
        )

    def _compact(self) -> Deferred[None]:
        items = self._items()
        self.pending = []
        old = self._fh

        def write() -> Any:
            size = _writeSnapshot(self.path, self.directory, items)
            old.close()
            return size, open(self.path, "ab")

        def swap(result: Any) -> None:
            size, fh = result
            self._fh = fh
            self.compactions += 1
            # writes made while compacting are in self.pending and go to the new file
            self.fileBytes = size
            log.info("AOF {path} compacted to {size} bytes", path=self.path, size=size)

        return self.runner(write).addCallback(swap)

    def stats(self) -> dict[str, Any]:
        s = super().stats()
        s.update(
            fileBytes=self.fileBytes + sum(map(len, self.pending)),
            pendingRecords=len(self.pending),
            flushes=self.flushes,
            compactions=self.compactions,
            repairedBytes=self.repairedBytes,
        )
        return s

    def close(self) -> Deferred[None]:
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

        def shut(_: Any) -> Deferred[None]:
            fh = self._fh
            return self.runner(fh.close)

        return self.flush().addCallback(shut)
