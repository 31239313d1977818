"""
WAL segment files: the on-disk format of L{suite.raft.wal} and the file
work done on its storage thread.

Segment C{wal-<seq>.log}: a 5-byte header C{b"RWAL" + version}, then records
C{[u32 length][u32 crc32][u8 type][payload]} (length counts type+payload,
the CRC covers them).  Segments are preallocated (zeros up to the segment
size), so the end of the written part is the first all-zero record header
followed by nothing but zeros.

Record types of the log's unnamed group C{""} (a log with one group, as
written by L{suite.raft.wal.WALStorage}):

  - 1 hard state C{[term, vote]};
  - 2 append C{[truncateAfter|-1, [entry...]]};
  - 3 compaction C{[index, term]};
  - 4 checkpoint C{[term, vote, index, term, [entry...]]} (starts a segment
    after rotation; older segments are then deleted).

A log shared by several groups (L{suite.raft.wal.SharedWAL}) writes the same
four records for a named group with type C{0x10 | type} and the payload
prefixed by C{[u8 n][group id, n bytes of UTF-8]}; type C{0x15} (group
header only) drops a group's state.  A rotation writes one checkpoint per
group.

At start-up an incomplete or bad record at the very end of the newest
segment is a torn write and is cut off; a bad record anywhere else stops
start-up with the file name and offset.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import msgpack
from twisted.logger import Logger

from suite.daemon import ConfigError
from suite.raft.messages import Entry, SnapshotMeta
from suite.raft.storage import Recovered, applyAppend, applyCompaction

__all__ = [
    "APPEND",
    "CHECKPOINT",
    "COMPACT",
    "CorruptLog",
    "DROP",
    "GroupLog",
    "HARDSTATE",
    "SPARE",
    "SegmentWriter",
    "StorageDirectoryError",
    "encodeRecord",
    "groupRecord",
    "prepareDirectory",
]

log = Logger()

MAGIC = b"RWAL"
VERSION = 1
HEADER = MAGIC + bytes([VERSION])
RECORD = struct.Struct(">II")
HARDSTATE, APPEND, COMPACT, CHECKPOINT = 1, 2, 3, 4
GROUPED = 0x10
DROP = GROUPED | 5
SPARE = "next-segment.tmp"
MAX_RECORD = 256 * 1024 * 1024
MAX_GROUP = 255


class CorruptLog(ConfigError):
    """
    A WAL record that is not at the tail is damaged: start-up refuses.
    """


class StorageDirectoryError(ConfigError):
    """
    A configured storage directory cannot be created or written.
    """


def prepareDirectory(path: str, what: str) -> str:
    """
    Create C{path} and prove it writable with a C{.write_probe} file; raise
    L{StorageDirectoryError} naming the path otherwise.
    """
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_probe")
        with open(probe, "wb") as f:
            f.write(b"ok\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise StorageDirectoryError(f"{what} directory {path} is not writable: {e.strerror or e}")
    return path


def _zero(data: bytes, offset: int) -> bool:
    return data.count(0, offset) == len(data) - offset


def _check(data: bytes, offset: int) -> tuple[str | None, bool]:
    """
    Validate the record at C{offset}: (problem or None, whether the damage
    is confined to the tail, i.e. nothing but zeros follows it).
    """
    if offset + RECORD.size > len(data):
        return "incomplete record header", True
    length, crc = RECORD.unpack_from(data, offset)
    end = offset + RECORD.size + length
    if length == 0 or length > MAX_RECORD:
        return f"bad record length {length}", _zero(data, offset + RECORD.size)
    if end > len(data):
        return "record runs past the end of the segment", True
    if zlib.crc32(data[offset + RECORD.size : end]) != crc:
        return "CRC mismatch", _zero(data, end)
    return None, False


def encodeRecord(kind: int, payload: bytes) -> bytes:
    """
    One framed record of type C{kind}.
    """
    body = bytes([kind]) + payload
    return RECORD.pack(len(body), zlib.crc32(body)) + body


def groupHeader(group: str) -> bytes:
    """
    The C{[u8 n][group id]} prefix of a named group's record payload.
    """
    raw = group.encode("utf-8")
    if not 0 < len(raw) <= MAX_GROUP:
        raise ValueError(f"WAL group id {group!r} must be 1-{MAX_GROUP} bytes of UTF-8")
    return bytes([len(raw)]) + raw


def groupRecord(group: str, kind: int, body: bytes) -> bytes:
    """
    A record of C{group}: the plain type for the unnamed group C{""}, else
    the grouped type with the group header.
    """
    if not group:
        return encodeRecord(kind, body)
    return encodeRecord(GROUPED | kind, groupHeader(group) + body)


def checkpointRecord(group: str, state: GroupLog) -> bytes:
    """
    The checkpoint record restoring C{state} of C{group}.
    """
    r = state.recovered
    body = msgpack.packb([r.term, r.votedFor, state.base, state.baseTerm, r.entries], use_bin_type=True)
    return groupRecord(group, CHECKPOINT, body)


def _entries(raw: list[Any]) -> list[Entry]:
    return [Entry(*e) for e in raw]


def fsyncDirectory(path: str) -> None:
    """
    Make a directory's entries (creations, renames, unlinks) durable.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class GroupLog:
    """
    What the log says about one group: its recovered state and the index
    and term of its last compaction (entries start after C{base}).
    """

    recovered: Recovered = field(default_factory=Recovered)
    base: int = 0
    baseTerm: int = 0


class SegmentWriter:
    """
    The segment files of one WAL directory.  Blocking: only ever called on
    the storage thread (or before the reactor runs).

    C{syncFile} and C{syncDirectory} are the durability points (an
    fdatasync of a file, an fsync of the directory), and C{syncBatch} the
    fdatasync that ends a batch of appends; a simulation replaces them to
    model a crash between a write and its sync.
    """

    def __init__(self, walDir: str, segmentBytes: int) -> None:
        self.walDir = walDir
        self.segmentBytes = segmentBytes
        self.file: IO[bytes] | None = None
        self.size = 0
        self.seq = 0
        self.syncFile: Callable[[IO[bytes]], None] = lambda f: os.fdatasync(f.fileno())
        self.syncDirectory: Callable[[str], None] = fsyncDirectory
        self.syncBatch: Callable[[IO[bytes]], None] = lambda f: self.syncFile(f)

    def segments(self) -> list[str]:
        names = sorted(n for n in os.listdir(self.walDir) if n.startswith("wal-") and n.endswith(".log"))
        return [os.path.join(self.walDir, n) for n in names]

    def recover(self, repair: bool = True) -> dict[str, GroupLog]:
        """
        Read every segment back: each group's state.  With C{repair} a torn
        tail is cut off and the newest segment is opened for appending;
        without it (reading another node's log, exporting) nothing is
        written and a torn tail is only skipped.
        """
        if repair:
            spare = os.path.join(self.walDir, SPARE)
            if os.path.exists(spare):
                os.unlink(spare)
        groups: dict[str, GroupLog] = {}
        segments = self.segments()
        validEnd = 0
        for number, path in enumerate(segments):
            last = number == len(segments) - 1
            with open(path, "rb") as f:
                data = f.read()
            if len(data) < 5 and last:
                if repair:
                    self._cut(path, 0, "incomplete segment header")
                data = HEADER
            if data[:4] != MAGIC or len(data) < 5:
                raise CorruptLog(f"WAL segment {path} has a bad header; refusing to start")
            if data[4] != VERSION:
                raise CorruptLog(f"WAL segment {path} has format version {data[4]}, expected {VERSION}")
            offset = 5
            while offset < len(data):
                if data[offset : offset + RECORD.size] == bytes(RECORD.size) and _zero(data, offset):
                    break  # the preallocated, never written tail
                problem, tail = _check(data, offset)
                if problem is not None:
                    if last and tail:
                        if repair:
                            self._cut(path, offset, problem)
                        break
                    raise CorruptLog(
                        f"corrupt WAL record in {path} at offset {offset}: {problem}; refusing to start"
                    )
                length, _ = RECORD.unpack_from(data, offset)
                end = offset + RECORD.size + length
                kind = data[offset + RECORD.size]
                try:
                    self._replay(groups, kind, data[offset + RECORD.size + 1 : end])
                except (ValueError, TypeError, UnicodeDecodeError) as e:
                    raise CorruptLog(
                        f"corrupt WAL record in {path} at offset {offset}: {e}; refusing to start"
                    )
                offset = end
            validEnd = offset
            self.seq = int(os.path.basename(path)[4:-4], 16)
        if repair:
            if segments:
                self._open(self.seq, validEnd)
            else:
                self._create(1)
        return groups

    def _cut(self, path: str, offset: int, problem: str) -> None:
        log.warn(
            "repairing torn WAL tail in {path} at offset {offset} ({problem})",
            path=path,
            offset=offset,
            problem=problem,
        )
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(offset)
            f.write(bytes(size - offset))
            if offset < 5:
                f.seek(0)
                f.write(HEADER)
            f.flush()
            self.syncFile(f)

    def _replay(self, groups: dict[str, GroupLog], kind: int, body: bytes) -> None:
        group = ""
        if kind & GROUPED:
            n = body[0] if body else 0
            if n == 0 or len(body) < 1 + n:
                raise ValueError("record with a bad group header")
            group = body[1 : 1 + n].decode("utf-8")
            body = body[1 + n :]
            kind &= ~GROUPED
            if kind == DROP & ~GROUPED:
                groups.pop(group, None)
                return
        state = groups.get(group)
        if state is None:
            state = groups[group] = GroupLog()
        r = state.recovered
        value = msgpack.unpackb(body, raw=False)
        if kind == HARDSTATE:
            r.term, r.votedFor = value
        elif kind == APPEND:
            truncate, raw = value
            applyAppend(r.entries, None if truncate < 0 else truncate, _entries(raw), state.base)
        elif kind == COMPACT:
            index, term = value
            meta = SnapshotMeta(index, term, None)  # type: ignore[arg-type]
            r.entries = applyCompaction(r.entries, state.base, meta)
            state.base, state.baseTerm = index, term
        elif kind == CHECKPOINT:
            r.term, r.votedFor, state.base, state.baseTerm, raw = value
            r.entries = _entries(raw)
        else:
            raise ValueError(f"unknown record type {kind}")

    def _fill(self, path: str) -> None:
        """
        Write a segment file: header, then zeros up to the segment size, so
        later appends rewrite allocated blocks and fdatasync stays cheap.
        """
        with open(path, "wb") as f:
            f.write(HEADER)
            remaining = self.segmentBytes - len(HEADER)
            block = bytes(1024 * 1024)
            while remaining > 0:
                f.write(block[: min(remaining, len(block))])
                remaining -= len(block)
            f.flush()
            self.syncFile(f)

    def prepareSpare(self) -> None:
        """
        Fill the next segment ahead of time (on the preparing thread).
        """
        self._fill(os.path.join(self.walDir, SPARE))

    def _create(self, seq: int, useSpare: bool = False) -> None:
        path = os.path.join(self.walDir, f"wal-{seq:016x}.log")
        if useSpare:
            os.replace(os.path.join(self.walDir, SPARE), path)
        else:
            self._fill(path)
        self.syncDirectory(self.walDir)
        self._open(seq, len(HEADER))

    def _open(self, seq: int, offset: int) -> None:
        if self.file is not None:
            self.file.close()
        self.seq = seq
        self.file = open(os.path.join(self.walDir, f"wal-{seq:016x}.log"), "r+b")
        self.file.seek(offset)
        self.size = offset

    def write(self, chunks: Sequence[bytes | Callable[[], None]]) -> None:
        """
        Write a batch (records, and file work such as a rotation, in order)
        and make it durable with one sync.
        """
        f = self.file
        assert f is not None
        for c in chunks:
            if isinstance(c, bytes):
                f.write(c)
                self.size += len(c)
            else:
                f.flush()
                c()
                f = self.file
                assert f is not None
        f.flush()
        self.syncBatch(f)

    def rotate(self, checkpoint: bytes, useSpare: bool = False) -> None:
        """
        Start the next segment with C{checkpoint} (every group's state) and
        delete the older ones once it is durable.
        """
        old = self.segments()
        self._create(self.seq + 1, useSpare)
        f = self.file
        assert f is not None
        f.write(checkpoint)
        f.flush()
        self.syncFile(f)
        self.size = f.tell()
        for path in old:
            os.unlink(path)
        self.syncDirectory(self.walDir)

    def append(self, record: bytes) -> None:
        """
        Append one record and sync it (offline tools; the log is open).
        """
        self.write([record])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
