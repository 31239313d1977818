"""
Record storage: L{MemoryStore} and L{FileStore}.

The file store is an append-only log.  Each record is framed as::

    u32 length | u32 crc32(body) | u8 version (1) | msgpack body

(C{length} counts version and body).  The log is replayed at start-up; a
torn or corrupt tail is cut off; the log is rewritten (compacted) at start-up
and whenever it holds more than twice the live records, in a thread, with
appends made meanwhile carried over before the swap.  Appends are plain
C{write}s (the page cache survives a killed process); C{fsync} runs in a
thread every second when something was appended since the last one began
(one at a time: a tick while one runs is skipped, and appends made
meanwhile are fsynced at the next tick).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from suite.serial import SerialJob
from suite.spacecomms.envelope import DIGEST_BUCKETS
from suite.spacecomms.interfaces import IRecordStore

__all__ = [
    "Record",
    "MemoryStore",
    "FileStore",
    "StoreLocked",
    "StoreWriteError",
    "FORMAT_VERSION",
    "bucketOf",
    "entryHash",
]

FORMAT_VERSION = 1
_HEAD = struct.Struct(">II")
MAX_RECORD = 16 * 1024 * 1024


@dataclass
class Record:
    """
    One CDM or object state as held by a node.

    C{origin}/C{sequence} order updates from the same originator; C{active}
    is False for a withdrawal tombstone (C{reason} says why).
    C{learnedFrom} is the peer that delivered it (None when local);
    C{override} is True when C{origin} took the entry over by an admin
    override; C{signature} and C{cert} are the originator's signature of
    the message that made this version (see L{suite.spacecomms.signing}).
    """

    kind: str
    key: str
    origin: str
    sequence: int
    active: bool = True
    body: dict[str, Any] | None = None
    reason: str | None = None
    createdAt: float = 0.0
    updatedAt: float = 0.0
    learnedFrom: str | None = None
    tca: float | None = None
    objects: list[str] = field(default_factory=list)
    override: bool = False
    signature: bytes | None = None
    cert: bytes | None = None

    def version(self) -> tuple[int, str]:
        return (self.sequence, self.origin)

    def toJSON(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "origin": self.origin,
            "sequence": self.sequence,
            "active": self.active,
            "body": self.body,
            "reason": self.reason,
            "createdAt": self.createdAt,
            "updatedAt": self.updatedAt,
            "learnedFrom": self.learnedFrom,
            "tca": self.tca,
            "objects": self.objects,
            "override": self.override,
            "signature": self.signature,
            "cert": self.cert,
        }

    @classmethod
    def fromJSON(cls, d: dict[str, Any]) -> Record:
        return cls(**d)


def bucketOf(key: str) -> int:
    """
    The anti-entropy digest bucket of an entry key.
    """
    return zlib.crc32(key.encode()) % DIGEST_BUCKETS


def entryHash(r: Record) -> int:
    """
    A 64-bit hash of one entry's identity and version.
    """
    raw = f"{r.kind}\0{r.key}\0{r.origin}\0{r.sequence}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


@implementer(IRecordStore)
class MemoryStore:
    """
    Records in dictionaries only; lost when the process ends.  Keeps the
    anti-entropy digest of its active records up to date as they change.
    """

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Record]] = {"cdm": {}, "object": {}}
        self._digest: dict[str, list[int]] = {k: [0] * DIGEST_BUCKETS for k in self._data}

    def load(self) -> None:
        pass

    def _fold(self, r: Record) -> None:
        if r.active:
            self._digest[r.kind][bucketOf(r.key)] ^= entryHash(r)

    def put(self, record: Record) -> None:
        old = self._data[record.kind].get(record.key)
        if old is not None:
            self._fold(old)
        self._fold(record)
        self._data[record.kind][record.key] = record

    def remove(self, kind: str, key: str) -> None:
        old = self._data[kind].pop(key, None)
        if old is not None:
            self._fold(old)

    def digest(self, kind: str) -> list[int]:
        return list(self._digest[kind])

    def get(self, kind: str, key: str) -> Record | None:
        return self._data[kind].get(key)

    def records(self, kind: str) -> list[Record]:
        return list(self._data[kind].values())

    def count(self, kind: str, active: bool) -> int:
        return sum(1 for r in self._data[kind].values() if r.active == active)

    def close(self) -> Deferred[None]:
        return succeed(None)


def encodeEntry(entry: dict[str, Any]) -> bytes:
    """
    Frame one log entry.
    """
    body = msgpack.packb(entry, use_bin_type=True)
    payload = bytes([FORMAT_VERSION]) + body
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def readEntries(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """
    Decode framed entries from C{data}; return them and the length of the
    valid prefix (anything after it is a torn or corrupt tail).
    """
    out: list[dict[str, Any]] = []
    pos = 0
    while pos + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        if length < 2 or length > MAX_RECORD or start + length > len(data):
            break
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc or payload[0] != FORMAT_VERSION:
            break
        try:
            entry = msgpack.unpackb(payload[1:], raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException, TypeError):
            break
        if not isinstance(entry, dict):
            break
        out.append(entry)
        pos = start + length
    return out, pos


class StoreWriteError(Exception):
    """
    An entry could not be appended to the store's log (a full disk, an I/O
    error): the log was left as it was, and so was the store in memory.
    """


class StoreLocked(OSError):
    """
    Another process holds the store's lock (C{PATH.lock}).
    """


@implementer(IRecordStore)
class FileStore(MemoryStore):
    """
    L{MemoryStore} plus an append-only log at C{path}.

    One process at a time: L{lock} takes an exclusive C{flock} on
    C{PATH.lock} (the log itself is replaced by every compaction, so it
    cannot carry the lock).  A second node on the same file would replay,
    compact and replace it under the first, whose later appends would go to
    an unlinked file and be lost.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        reactor: IReactorTime,
        threadpool: ThreadPool | None = None,
        fsyncInterval: float = 1.0,
    ) -> None:
        super().__init__()
        self.path = path
        self._reactor = reactor
        self._threadpool = threadpool
        self._fd: int | None = None
        #: Bytes in the log, where the next append starts (a failed one is cut back to it).
        self._size = 0
        self._entries = 0
        #: appended to since the last fsync began
        self._dirty = False
        self._compacting: list[bytes] | None = None
        #: one fsync at a time; a tick while one runs is skipped
        self._syncs = SerialJob(self._fsync, f"store {path}: fsync", log=self.log)
        self._fsyncCall = LoopingCall(self._syncs.poll)
        self._fsyncCall.clock = reactor
        self._fsyncInterval = fsyncInterval
        self._lockFd: int | None = None

    def lock(self) -> None:
        """
        Take the store's exclusive lock, held until L{close} (and across
        twistd's fork, as C{flock} locks are).

        @raise StoreLocked: naming the process that holds it, when known.
        """
        if self._lockFd is not None:
            return
        path = self.path + ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise StoreLocked(f"{self.path} is in use by {who} (it holds {path})") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lockFd = fd

    def load(self) -> None:
        """
        Replay the log (repairing a torn tail), compact it, open it for
        appends and start the periodic fsync.  Runs before the node serves;
        once (again, it does nothing).
        """
        if self._fd is not None:
            return
        data = b""
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                data = f.read()
        entries, valid = readEntries(data)
        if valid < len(data):
            self.log.warn(
                "store {path}: cut {bytes} bytes of torn or corrupt tail after {entries} records",
                path=self.path,
                bytes=len(data) - valid,
                entries=len(entries),
            )
        for e in entries:
            self._apply(e)
        self._writeSnapshot(self.path, self._snapshotEntries())
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._entries = sum(len(v) for v in self._data.values())
        self.log.info("store {path}: replayed {entries} entries", path=self.path, entries=len(entries))
        self._fsyncCall.start(self._fsyncInterval, now=False)

    def _apply(self, e: dict[str, Any]) -> None:
        if e.get("op") == "put":
            try:
                r = Record.fromJSON(e["r"])
            except (TypeError, KeyError):
                return
            if r.kind in self._data:
                MemoryStore.put(self, r)
        elif e.get("op") == "del" and e.get("kind") in self._data:
            MemoryStore.remove(self, e["kind"], str(e.get("key")))

    def _snapshotEntries(self) -> list[bytes]:
        return [encodeEntry({"op": "put", "r": r.toJSON()}) for d in self._data.values() for r in d.values()]

    @staticmethod
    def _writeSnapshot(path: str, frames: list[bytes]) -> None:
        tmp = path + ".compact"
        # 0600 like the appends' O_CREAT: the log is the operator's data.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with open(fd, "wb") as f:
            for fr in frames:
                f.write(fr)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _append(self, entry: dict[str, Any]) -> None:
        frame = encodeEntry(entry)
        if self._fd is None:
            raise RuntimeError("store is not open")
        self._writeWhole(self._fd, frame)
        self._dirty = True
        self._entries += 1
        if self._compacting is not None:
            self._compacting.append(frame)

    def _maybeCompact(self) -> None:
        """
        Compact once the log holds more than twice the live entries (after
        the entry just appended is in memory, so the snapshot holds it).
        """
        if (
            self._compacting is None
            and self._entries > 1000
            and self._entries > 2 * sum(len(v) for v in self._data.values())
        ):
            self.compact()

    def _writeWhole(self, fd: int, frame: bytes) -> None:
        """
        Append C{frame} whole, or leave the log as it was: a short or failed
        write (a full disk) is cut off again, since a torn record in the
        middle of the log would make the next start-up drop every record
        after it as a corrupt tail.

        @raise StoreWriteError: naming the file and the reason.
        """
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as e:
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                self._size = os.fstat(fd).st_size
                self.log.error(
                    "store {path}: cannot cut a failed append back off; the next start-up cuts it",
                    path=self.path,
                )
            raise StoreWriteError(f"store {self.path}: cannot append ({e.strerror or e})") from None
        self._size += len(frame)

    def put(self, record: Record) -> None:
        # The log first: what it does not hold is not kept in memory either.
        self._append({"op": "put", "r": record.toJSON()})
        super().put(record)
        self._maybeCompact()

    def remove(self, kind: str, key: str) -> None:
        if self.get(kind, key) is None:
            return
        self._append({"op": "del", "kind": kind, "key": key})
        super().remove(kind, key)
        self._maybeCompact()

    def compact(self) -> Deferred[None]:
        """
        Rewrite the log with the live records only, in a thread.
        """
        if self._compacting is not None:
            return succeed(None)
        frames = self._snapshotEntries()
        self._compacting = []
        live = len(frames)

        def work() -> None:
            self._writeSnapshot(self.path + ".next", frames)

        def swap(_: object) -> None:
            extra = self._compacting or []
            self._compacting = None
            with open(self.path + ".next", "ab") as f:
                for fr in extra:
                    f.write(fr)
            if self._fd is not None:
                os.close(self._fd)
            os.replace(self.path + ".next", self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size
            self._entries = live + len(extra)
            self.log.info(
                "store {path}: compacted to {entries} entries", path=self.path, entries=self._entries
            )

        def failed(f: Any) -> None:
            self._compacting = None
            self.log.failure("store {path}: compaction failed", f, path=self.path)

        d = self._inThread(work)
        d.addCallbacks(swap, failed)
        return d

    def _inThread(self, f: Callable[[], None]) -> Deferred[None]:
        pool = self._threadpool
        if pool is None and IReactorThreads.providedBy(self._reactor):
            pool = self._reactor.getThreadPool()
        if pool is not None and IReactorFromThreads.providedBy(self._reactor):
            return deferToThreadPool(self._reactor, pool, f)
        from twisted.internet.defer import maybeDeferred

        return maybeDeferred(f)

    def _fsync(self) -> Deferred[None] | None:
        """
        One fsync of the log, in a thread, if it was appended to since the
        last one began.
        """
        if not self._dirty or self._fd is None:
            return None
        self._dirty = False
        fd = self._fd

        def failed(f: Any) -> None:
            self.log.failure("store {path}: fsync failed", f, path=self.path)

        def sync() -> None:
            try:
                os.fsync(fd)
            except OSError as e:
                # A compaction may have swapped and closed this descriptor;
                # the new file was fsynced when it was written.
                if e.errno != errno.EBADF:
                    raise

        d = self._inThread(sync)
        d.addErrback(failed)
        return d

    def close(self) -> Deferred[None]:
        if self._fsyncCall.running:
            self._fsyncCall.stop()
        self._syncs.stop()
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._lockFd is not None:
            os.close(self._lockFd)
            self._lockFd = None
        return succeed(None)
