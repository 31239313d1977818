"""
The data directory of a ring node and the lock that keeps it to one
process: two processes on one directory would replay, append to and
compact the same files and announce the same vnode ids.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import IO

from suite.daemon import ConfigError

__all__ = ["DataDirLock", "LOCK_FILE"]

#: The lock file inside the data directory (it holds the owner's pid).
LOCK_FILE = "lock"


class DataDirLock:
    """
    An exclusive C{flock} on C{DATA/lock}, held for the life of the process
    (the kernel drops it when the process ends, however it ends; a child
    forked to daemonize keeps it).

    @ivar path: the lock file.
    """

    def __init__(self, flag: str, dataDir: str) -> None:
        """
        Take the lock, or raise L{ConfigError} naming C{flag} when another
        process holds it.
        """
        self.path = os.path.join(dataDir, LOCK_FILE)
        try:
            f: IO[str] = open(self.path, "a+", encoding="ascii", errors="replace")
        except OSError as e:
            raise ConfigError(f"{flag}: cannot open {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read(32).strip()
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise ConfigError(
                    f"{flag}: {dataDir} is in use by another process{who}; "
                    "each node needs a data directory of its own"
                ) from None
            raise ConfigError(f"{flag}: cannot lock {self.path}: {e.strerror}") from None
        self._file: IO[str] | None = f
        self.writePid()

    def writePid(self) -> None:
        """
        Record this process's pid in the lock file (again after twistd
        forked to daemonize).
        """
        f = self._file
        if f is None:
            return
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()

    def release(self) -> None:
        """
        Give the directory up (at the end of shutdown).
        """
        f, self._file = self._file, None
        if f is not None:
            f.close()
