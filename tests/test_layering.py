"""
The suite's import layering, for every module of every package: shared
packages (raft, kv, pki, web, cred, gossip, acme, daemon, logging, ...)
import no subsystem; a subsystem imports no other subsystem, except CEPtra,
which runs on Clustor; nothing imports the demo, which sits on top.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

import suite

SUBSYSTEMS = frozenset({"specter", "spacecomms", "ceptra", "clustor", "constellation", "goop"})
#: Allowed edges between subsystems.
ALLOWED_EDGES = frozenset({("ceptra", "clustor")})
#: Sits on top of everything; imported by nothing.
TOP = "demo"

ROOT = os.path.dirname(suite.__file__)


def _package(module: str) -> str:
    """
    The top-level suite package (or module) of C{suite.x.y}: C{x}.
    """
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def importsOf(source: str, module: str, isPackage: bool) -> Iterator[str]:
    """
    Every suite module that C{source} (the text of C{module}) imports,
    absolute or relative, at top level or inside functions.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "suite" or alias.name.startswith("suite."):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if isPackage else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "suite":
                for alias in node.names:
                    yield f"suite.{alias.name}"
            elif target.startswith("suite."):
                yield target


def violations(importer: str, imported: str) -> str | None:
    """
    Why C{importer} may not import C{imported} (C{None} when it may).
    """
    source, target = _package(importer), _package(imported)
    if source == target or not target:
        return None
    if target == TOP:
        return "nothing imports the demo"
    if source == TOP:
        return None
    if target in SUBSYSTEMS and source not in SUBSYSTEMS:
        return f"shared package suite.{source} imports subsystem suite.{target}"
    if target in SUBSYSTEMS and (source, target) not in ALLOWED_EDGES:
        return f"subsystem suite.{source} imports subsystem suite.{target}"
    return None


def _modules() -> Iterator[tuple[str, str, bool]]:
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            isPackage = name == "__init__.py"
            yield (rel[: -len(".__init__")] if isPackage else rel), path, isPackage


class LayeringTests(SynchronousTestCase):
    """
    The arrows of the import graph point one way.
    """

    def test_suite(self) -> None:
        """
        No module of the suite breaks the layering.
        """
        seen = 0
        bad = []
        for module, path, isPackage in _modules():
            seen += 1
            with open(path) as f:
                source = f.read()
            for imported in importsOf(source, module, isPackage):
                why = violations(module, imported)
                if why:
                    bad.append(f"{module}: {why} ({imported})")
        self.assertGreater(seen, 100)
        self.assertEqual(bad, [])

    def test_rules(self) -> None:
        """
        The rules catch each kind of wrong edge, relative imports included,
        and allow the right ones.
        """

        def check(module: str, source: str, isPackage: bool = False) -> list[str | None]:
            return [violations(module, i) for i in importsOf(source, module, isPackage)]

        self.assertIn("shared package", str(check("suite.raft.log", "from suite.ceptra import x")))
        self.assertIn("shared package", str(check("suite.web.admin", "import suite.goop.tap")))
        self.assertIn("shared package", str(check("suite.kv", "from suite import specter", True)))
        self.assertIn("subsystem suite.goop", str(check("suite.goop.tap", "from ..specter import x")))
        self.assertIn(
            "subsystem suite.clustor", str(check("suite.clustor.a", "from suite.ceptra.b import c"))
        )
        self.assertIn("demo", str(check("suite.specter.cli", "from suite.demo.plan import plan")))
        self.assertEqual(check("suite.ceptra.service", "from suite.clustor.feeds import F"), [None])
        self.assertEqual(
            check("suite.goop.tap", "from .config import x\nfrom suite.web import y"), [None, None]
        )
        self.assertEqual(check("suite.demo.plan", "from suite.pki.ca import initBundle"), [None])
        self.assertEqual(check("suite.gossip.wire", "def f():\n    from suite.daemon import x\n"), [None])
