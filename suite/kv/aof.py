"""
The default backend: records in memory, every change appended to a log.

File format (C{<dir>/kv.aof})::

    header  b"SPKVAOF" + format version (1 byte)
    record  version (1 byte) | length (u32 BE) | CRC-32 of body (u32 BE) | body
    body    msgpack [kind, key, payload-or-nil]

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
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from suite.daemon import ConfigError
from suite.kv.interfaces import IKeyValueStore
from suite.kv.memory import TableStore

__all__ = ["AOFStore", "MAGIC", "FORMAT_VERSION", "encodeRecord", "Runner"]

T = TypeVar("T")
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]
MAGIC = b"SPKVAOF"
FORMAT_VERSION = 1
_FRAME = struct.Struct(">BII")
MAX_RECORD = 64 * 1024 * 1024
log = Logger()


def encodeRecord(kind: str, key: bytes, payload: bytes | None) -> bytes:
    """
    One framed log record.
    """
    body: bytes = msgpack.packb([kind, key, payload])
    return _FRAME.pack(FORMAT_VERSION, len(body), zlib.crc32(body)) + body


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
    ) -> None:
        super().__init__(clock)
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
        os.makedirs(directory, exist_ok=True)
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
        if data[len(MAGIC)] != FORMAT_VERSION:
            raise ConfigError(f"{self.path}: unsupported AOF format version {data[len(MAGIC)]}")
        pos = len(header)
        end = len(data)
        count = 0
        table = self.table
        while pos < end:
            if end - pos < _FRAME.size:
                break
            version, length, crc = _FRAME.unpack_from(data, pos)
            start = pos + _FRAME.size
            if version != FORMAT_VERSION or length > MAX_RECORD or start + length > end:
                break
            body = data[start : start + length]
            if zlib.crc32(body) != crc:
                break
            try:
                kind, key, payload = msgpack.unpackb(body)
            except Exception:
                break
            table.write(kind, key, payload)
            count += 1
            pos = start + length
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

    # -- persistence ----------------------------------------------------
    def _persist(self, kind: str, key: bytes, payload: bytes | None) -> None:
        self.pending.append(encodeRecord(kind, key, payload))

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
            self.table.bytes + 16 * len(self.table.data)
        )

    def _compact(self) -> Deferred[None]:
        items = list(self.table.data.items())
        self.pending = []
        tmp = self.path + ".compact"
        old = self._fh

        def write() -> Any:
            with open(tmp, "wb") as f:
                f.write(MAGIC + bytes([FORMAT_VERSION]))
                for (kind, key), payload in items:
                    f.write(encodeRecord(kind, key, payload))
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            os.replace(tmp, self.path)
            dirfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
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
