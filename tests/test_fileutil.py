"""
Tests for L{suite.fileutil}.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from suite.fileutil import LOCK_NAME, DirectoryLock, DirectoryLocked, lockDirectory, writeAtomically

_HOLDER = (
    "import sys; from suite.fileutil import lockDirectory; "
    "f = lockDirectory(sys.argv[1]); print('locked', flush=True); sys.stdin.read()"
)


def lockedElsewhere(case: SynchronousTestCase, directory: str) -> int:
    """
    Lock C{directory} from another process, which holds the lock until the
    test ends; return that process's id.
    """
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, directory],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )

    def release() -> None:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
        assert child.stdout is not None
        child.stdout.close()

    case.addCleanup(release)
    assert child.stdout is not None
    case.assertEqual(child.stdout.readline(), b"locked\n")
    return child.pid


class WriteAtomicallyTests(SynchronousTestCase):
    """
    L{writeAtomically} replaces a file whole, with the asked permissions,
    and leaves no temporary file behind.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "state")

    def test_writeAndReplace(self) -> None:
        """
        The file holds the new bytes with mode C{0600} by default; a second
        write replaces it; nothing else is left in the directory.
        """
        writeAtomically(self.path, b"one")
        writeAtomically(self.path, b"two" * 100_000)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"two" * 100_000)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertEqual(os.listdir(self.directory), ["state"])

    def test_mode(self) -> None:
        """
        C{mode} is applied whatever the umask and the old file's mode.
        """
        with open(self.path, "wb") as f:
            f.write(b"old")
        os.chmod(self.path, 0o600)
        writeAtomically(self.path, b"new", mode=0o644)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o644)

    def test_partialWrites(self) -> None:
        """
        Short writes are continued until every byte is written.
        """
        real = os.write

        def short(fd: int, data: bytes | memoryview) -> int:
            return real(fd, bytes(data[:7]))

        self.patch(os, "write", short)
        writeAtomically(self.path, b"0123456789" * 10)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"0123456789" * 10)

    def test_failureLeavesOldFile(self) -> None:
        """
        If writing fails, the old file stays as it was and the temporary
        file is removed.
        """
        writeAtomically(self.path, b"old")

        def broken(fd: int) -> None:
            raise OSError(28, "No space left on device")

        self.patch(os, "fsync", broken)
        self.assertRaises(OSError, writeAtomically, self.path, b"new")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertEqual(os.listdir(self.directory), ["state"])


class DirectoryLockTests(SynchronousTestCase):
    """
    L{lockDirectory} and L{DirectoryLock}: one process per directory.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def test_otherProcessRefused(self) -> None:
        """
        While another process holds the lock, taking it fails naming the
        directory and that process; the same process may take it twice.
        """
        pid = lockedElsewhere(self, self.directory)
        with self.assertRaises(DirectoryLocked) as cm:
            lockDirectory(self.directory)
        self.assertEqual(str(cm.exception), f"{self.directory} is in use by another process (pid {pid})")
        with self.assertRaises(DirectoryLocked):
            DirectoryLock(self.directory)

    def test_serviceHoldsUntilStopped(self) -> None:
        """
        L{DirectoryLock} holds the lock (the file names this process) from
        construction until it stops; another process can then take it.
        """
        other = os.path.join(self.directory, "other")
        os.makedirs(other)
        lock = DirectoryLock(self.directory, other, self.directory + "/")
        self.assertEqual(len(lock.files), 2)
        with open(os.path.join(self.directory, LOCK_NAME)) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")
        lock.startService()
        lock.stopService()
        self.assertEqual(lock.files, [])
        lockedElsewhere(self, self.directory)
        with self.assertRaises(DirectoryLocked):
            lock.startService()
        self.assertEqual(lock.files, [])
