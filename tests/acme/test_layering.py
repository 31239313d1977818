"""
suite.acme is a shared package: it never imports a subsystem.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import suite.acme

SUBSYSTEMS = {"specter", "spacecomms", "clustor", "ceptra", "constellation", "goop", "demo"}


class LayeringTests(SynchronousTestCase):
    """
    The arrows point one way.
    """

    def test_noSubsystemImports(self) -> None:
        """
        No module of suite.acme imports suite.<subsystem>.
        """
        package = os.path.dirname(suite.acme.__file__)
        offenders = []
        for fileName in sorted(os.listdir(package)):
            if not fileName.endswith(".py"):
                continue
            with open(os.path.join(package, fileName)) as f:
                tree = ast.parse(f.read(), fileName)
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "suite" and len(parts) > 1 and parts[1] in SUBSYSTEMS:
                        offenders.append(f"{fileName}: {name}")
        self.assertEqual(offenders, [])
