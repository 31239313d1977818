"""
suite.gossip is a shared package: it never imports a daemon package.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import suite.gossip

#: Suite modules a shared package may import.
ALLOWED = ("suite.gossip", "suite.web", "suite.pki", "suite.logging", "suite.daemon", "suite.netutil")


class LayeringTests(SynchronousTestCase):
    """
    The import graph of suite/gossip.
    """

    def test_onlySharedImports(self) -> None:
        """
        Every C{suite.*} import in suite/gossip names a shared package.
        """
        root = os.path.dirname(suite.gossip.__file__)
        bad = []
        for name in sorted(os.listdir(root)):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(root, name)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                modules: list[str] = []
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module]
                for m in modules:
                    if m.startswith("suite") and not m.startswith(ALLOWED):
                        bad.append(f"{name}: {m}")
        self.assertEqual(bad, [])
