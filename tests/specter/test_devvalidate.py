"""
C{make dev-validate}: a local ring with a tunnel, checked end to end.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.specter import devvalidate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DevValidateTests(TestCase):
    timeout = 180

    async def test_makeDevValidate(self) -> None:
        out, err, code = await getProcessOutputAndValue(
            "make", ["-s", "-C", ROOT, "dev-validate"], env=os.environ, path=ROOT
        )
        self.assertEqual(code, 0, (out + err).decode())
        lines = out.decode().splitlines()
        self.assertTrue(lines[-1].startswith("dev-validate: OK in "), lines)
        self.assertIn("answers over HTTPS through all three gateways", out.decode())


class FailureTests(SynchronousTestCase):
    def test_failedCheckExits1(self) -> None:
        def failing(base: str, binDir: str) -> None:
            raise devvalidate.CheckFailed("node n1 ready (not within 60 s)")

        self.patch(devvalidate, "validate", failing)
        errors: list[str] = []
        self.patch(sys.stderr, "write", errors.append)
        self.assertEqual(devvalidate.main([]), 1)
        self.assertTrue(errors[0].startswith("dev-validate: FAILED: node n1 ready"), errors)
