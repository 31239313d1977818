"""
Every automat machine of the suite can be seen: its module is in the
Makefile's C{MACHINE_MODULES} (what C{make diagrams} renders), each machine
it builds has a committed diagram under C{docs/diagrams/}, and each diagram
is linked from the machines table of C{docs/architecture.md}.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

import suite

ROOT = os.path.dirname(os.path.dirname(suite.__file__))
DIAGRAMS = os.path.join(ROOT, "docs", "diagrams")


def machineModules() -> dict[str, int]:
    """
    Each suite module that builds automat machines, with how many.
    """
    found: dict[str, int] = {}
    for directory, _, files in os.walk(os.path.join(ROOT, "suite")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            with open(path, encoding="utf-8") as f:
                builders = len(re.findall(r"\bTypeMachineBuilder\(", f.read()))
            if builders:
                module = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = builders
    return found


def listedModules() -> set[str]:
    """
    The modules named by the Makefile's C{MACHINE_MODULES}.
    """
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    match = re.search(r"^MACHINE_MODULES\s*:?=(.*)$", text, re.MULTILINE)
    assert match is not None, "no MACHINE_MODULES in the Makefile"
    return set(match.group(1).split())


def diagrams() -> list[str]:
    return sorted(n for n in os.listdir(DIAGRAMS) if n.endswith(".svg"))


class MachineDiagramTests(SynchronousTestCase):
    def test_everyMachineModuleIsRendered(self) -> None:
        """
        C{make diagrams} renders exactly the modules that build machines.
        """
        modules = machineModules()
        self.assertGreater(len(modules), 10)
        self.assertEqual(listedModules(), set(modules))

    def test_everyMachineHasADiagram(self) -> None:
        """
        Each module has one diagram per machine it builds, and no diagram
        is left from a machine that is gone.
        """
        perModule: dict[str, int] = {}
        for name in diagrams():
            module = name.rsplit(".", 2)[0]
            perModule[module] = perModule.get(module, 0) + 1
        self.assertEqual(perModule, machineModules())

    def test_everyDiagramIsLinked(self) -> None:
        """
        The architecture's machines table links every diagram.
        """
        with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
            text = f.read()
        table = text[text.index("### Machines") :]
        self.assertEqual([n for n in diagrams() if f"(diagrams/{n})" not in table], [])
