"""
The six twistd plugins are discoverable and each answers --help.
"""

from __future__ import annotations

import subprocess

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase

from tests.support.process import BIN

PLUGINS = ("specter", "spacecomms", "ceptra", "clustor-cp", "constellation", "goop")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


class PluginDiscoveryTests(SynchronousTestCase):
    """
    twistd finds exactly the suite's plugins through the plugin system.
    """

    def test_pluginsRegistered(self) -> None:
        """
        Every suite daemon is an IServiceMaker plugin with a tap module.
        """
        makers = {p.tapname: p for p in getPlugins(IServiceMaker) if IPlugin.providedBy(p)}
        for name in PLUGINS:
            self.assertIn(name, makers)
            self.assertTrue(makers[name].module.startswith("suite."))

    def test_twistdHelpListsPlugins(self) -> None:
        """
        C{twistd --help} lists all six plugins.
        """
        result = _run(f"{BIN}/twistd", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for name in PLUGINS:
            self.assertIn(f"    {name} ", result.stdout)

    def test_eachPluginHelp(self) -> None:
        """
        C{twistd PLUGIN --help} exits 0 and documents the manhole flag shared by every daemon.
        """
        for name in PLUGINS:
            result = _run(f"{BIN}/twistd", name, "--help")
            self.assertEqual(result.returncode, 0, f"{name}: {result.stderr}")
            self.assertIn("--manhole", result.stdout, name)

    def test_badFlagUnderTwistdIsOneLine(self) -> None:
        """
        An unknown flag given to C{twistd PLUGIN} is reported as one error
        line naming the flag (plus a pointer to --help), exit code 2, and no
        traceback or help dump.
        """
        for name in PLUGINS:
            result = _run(f"{BIN}/twistd", "-n", name, "--no-such-flag")
            self.assertEqual(result.returncode, 2, f"{name}: {result.stdout}{result.stderr}")
            lines = result.stderr.strip().splitlines()
            self.assertIn("--no-such-flag", lines[0], name)
            self.assertNotIn("Traceback", result.stderr, name)
            self.assertLessEqual(len(lines), 2, name)
