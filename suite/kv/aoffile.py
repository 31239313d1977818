"""
The file under an append-only store: whole appends at a known end, fsync,
and the snapshot a compaction writes.

L{AppendFile.append} is a plain C{pwrite(2)} (page cache, no fsync: about
a microsecond for a record), cheap enough to make on the reactor thread for
every change; the blocking parts (L{fsync}, L{writeSnapshot},
L{syncDirectory}) run in a thread pool.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from twisted.logger import Logger

__all__ = ["AppendFile", "writeSnapshot", "discard", "syncDirectory"]

log = Logger()
_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class AppendFile:
    """
    A log file open for appends at C{size}, its end as far as this process
    knows: every append is written at that offset (C{pwrite}), so one that
    fails and cannot be cut back is overwritten by the next one instead of
    leaving a torn record in the middle of the log.

    @ivar fd: the open descriptor (owned: closed by L{close}).
    @ivar size: bytes of whole records in the file.
    """

    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self.size = size

    @classmethod
    def open(cls, path: str, size: int) -> AppendFile:
        """
        Open C{path} (created 0600 if missing) to append after C{size} bytes.
        """
        return cls(path, os.open(path, _FLAGS, 0o600), size)

    def append(self, data: bytes) -> None:
        """
        Write C{data} whole at the end, or leave the file as it was: a short
        or failed write (a full disk, an I/O error) is cut back off.

        @raise OSError: the write's error; the file ends where it did.
        """
        offset = self.size
        try:
            written = os.pwrite(self.fd, data, offset)
            if written < len(data):
                # a short write (rare): the rest, from where it stopped
                view = memoryview(data)[written:]
                offset += written
                while view:
                    written = os.pwrite(self.fd, view, offset)
                    view = view[written:]
                    offset += written
                self.size = offset
                return
        except OSError:
            self._cutBack()
            raise
        self.size = offset + written

    def _cutBack(self) -> None:
        try:
            os.ftruncate(self.fd, self.size)
        except OSError as e:
            # the next append overwrites it; a start-up cuts what is left past the last good record
            log.error(
                "AOF {path}: cannot cut a failed append back off ({error})",
                path=self.path,
                error=e.strerror or str(e),
            )

    def fsync(self) -> None:
        """
        Make what was appended durable.  Blocking: call it in a thread.
        """
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def writeSnapshot(tmp: str, header: bytes, records: Iterable[bytes]) -> AppendFile:
    """
    Write C{header} and C{records} to a fresh C{tmp} (0600), fsync it and
    return it open for appends; on failure C{tmp} is removed.  Blocking.
    """
    fd = os.open(tmp, _FLAGS | os.O_TRUNC, 0o600)
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(header)
            for record in records:
                f.write(record)
            f.flush()
            size = f.tell()
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        discard(tmp)
        raise
    return AppendFile(tmp, fd, size)


def discard(path: str) -> None:
    """
    Remove C{path} if it is there.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def syncDirectory(directory: str) -> None:
    """
    fsync C{directory} (a rename in it is then durable).  Blocking.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
