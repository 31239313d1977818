"""
Small file helpers shared by several packages.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import BinaryIO

from twisted.application.service import Service

__all__ = [
    "writeAtomically",
    "syncDirectory",
    "LOCK_NAME",
    "DirectoryLocked",
    "lockDirectory",
    "DirectoryLock",
]

#: The lock file of a locked directory: it holds the owner's process id.
LOCK_NAME = ".lock"


def syncDirectory(directory: str) -> None:
    """
    fsync C{directory}, so that names created or renamed in it survive a
    crash.
    """
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeAtomically(path: str, data: bytes, mode: int = 0o600, syncDir: bool = True) -> None:
    """
    Replace C{path} with C{data} so that a reader (or a crash) sees either
    the old file or the whole new one: write a temporary file beside it
    with permissions C{mode}, fsync it, rename it over C{path} and, if
    C{syncDir}, fsync the directory.  Blocking: call it off the reactor
    thread.  The temporary file is removed if anything fails.
    """
    temporary = f"{path}.tmp{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:  # clean up and re-raise
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    if syncDir:
        syncDirectory(os.path.dirname(path))


class DirectoryLocked(Exception):
    """
    Another process holds a directory's lock; the message names the
    directory and, when known, the process.
    """


def lockDirectory(directory: str) -> BinaryIO:
    """
    Take the exclusive lock of C{directory}: a POSIX record lock on
    C{DIRECTORY/.lock}, which then holds this process's id.  The lock lasts
    while the returned file stays open (and at most as long as the
    process).  Locks belong to processes: the same process may take it
    again.

    @raise DirectoryLocked: another process holds it.
    @raise OSError: the lock file cannot be opened.
    """
    path = os.path.join(directory, LOCK_NAME)
    f = open(path, "a+b")  # noqa: SIM115 (the caller keeps it open)
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.seek(0)
        owner = f.read(32).decode("ascii", "replace").strip()
        f.close()
        if e.errno in (errno.EACCES, errno.EAGAIN):
            held = f" (pid {owner})" if owner.isdigit() else ""
            raise DirectoryLocked(f"{directory} is in use by another process{held}") from None
        raise
    f.truncate(0)
    f.write(f"{os.getpid()}\n".encode("ascii"))
    f.flush()
    return f


class DirectoryLock(Service):
    """
    Hold the locks of some directories (L{lockDirectory}) from construction,
    so that a second daemon on the same data fails at start-up, until the
    service stops.  Make it the first child of the root service: it then
    stops last, after whatever writes to the directories.

    @raise DirectoryLocked: another process holds one of them (none is
        then held).
    @raise OSError: a lock file cannot be opened (likewise).
    """

    name = "data-lock"

    def __init__(self, *directories: str) -> None:
        self.directories = tuple(dict.fromkeys(os.path.realpath(d) for d in directories))
        self.files: list[BinaryIO] = []
        self._lock()

    def _lock(self) -> None:
        try:
            for directory in self.directories:
                self.files.append(lockDirectory(directory))
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        for f in self.files:
            f.close()
        self.files = []

    def startService(self) -> None:
        if not self.files:
            self._lock()
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self._release()
