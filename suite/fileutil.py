"""
Small file helpers shared by several packages.
"""

from __future__ import annotations

import os

__all__ = ["writeAtomically", "syncDirectory"]


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
