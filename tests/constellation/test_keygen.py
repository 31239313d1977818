"""
C{constellation keygen}: a gossip key the agent reads.
"""

from __future__ import annotations

import io
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from suite.constellation.cli import keygen
from suite.gossip.security import readKeyFile


class KeygenTests(SynchronousTestCase):
    def test_stdout(self) -> None:
        """
        A new 32-byte key each time, in base64, that --gossip-key-file takes.
        """
        outs = [io.StringIO(), io.StringIO()]
        for out in outs:
            self.assertEqual(keygen([], out=out), 0)
        self.assertNotEqual(outs[0].getvalue(), outs[1].getvalue())
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(outs[0].getvalue())
        self.assertEqual(len(readKeyFile(path).keys[0]), 32)

    def test_file(self) -> None:
        """
        keygen FILE creates the file with mode 0600 and never overwrites one.
        """
        path = self.mktemp()
        self.assertEqual(keygen([path]), 0)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(len(readKeyFile(path).keys[0]), 32)
        with open(path) as f:
            before = f.read()
        err = io.StringIO()
        self.assertEqual(keygen([path], err=err), 2)
        self.assertEqual(err.getvalue(), f"constellation keygen: cannot create {path}: File exists\n")
        with open(path) as f:
            self.assertEqual(f.read(), before)
        err = io.StringIO()
        self.assertEqual(keygen(["--help"], err=err), 2)
        self.assertEqual(err.getvalue(), "usage: constellation keygen [FILE]\n")
