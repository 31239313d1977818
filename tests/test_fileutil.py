"""
Tests for L{suite.fileutil}.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from suite.fileutil import writeAtomically


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
