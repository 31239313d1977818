"""
The six twistd plugins are discoverable and each answers --help.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.application.service import IServiceMaker, ServiceMaker
from twisted.plugin import getPlugins
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
        makers = {p.tapname: p for p in getPlugins(IServiceMaker) if isinstance(p, ServiceMaker)}
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


class ConsoleScriptPluginTests(SynchronousTestCase):
    """
    A console script hands twistd options that know only its own plugin, so
    twistd does not import every plugin module.
    """

    def test_onlyItsPlugin(self) -> None:
        """
        The options list one subcommand, parse its arguments like twistd's
        own, and count as twistd's for the start-up barrier (so a failed
        listener ends the process).
        """
        from twisted.scripts.twistd import ServerOptions

        from suite.daemon import _underTwistd, onlySuitePlugin

        options = onlySuitePlugin(ServerOptions, "goop")()
        self.assertEqual([c[0] for c in options.subCommands], ["goop"])
        options.parseOptions(["--nodaemon", "--pidfile=", "goop", "rendezvous", "somewhere"])
        self.assertEqual(options.subCommand, "goop")
        self.assertEqual(sorted(options.loadedPlugins), ["goop"])
        self.assertEqual(options.subOptions.subOptions["directory"], "somewhere")
        self.assertEqual(_underTwistd(options.subOptions.subOptions), (True, None))

    def test_unknownPlugin(self) -> None:
        """
        A name that is not one of the suite's plugins is a ConfigError naming it.
        """
        from twisted.scripts.twistd import ServerOptions

        from suite.daemon import ConfigError, onlySuitePlugin

        e = self.assertRaises(ConfigError, onlySuitePlugin, ServerOptions, "nonesuch")
        self.assertIn("'nonesuch'", str(e))

    def test_noPluginScan(self) -> None:
        """
        Parsing a console script's twistd options imports the suite's
        plugin module and no other package's.
        """
        code = (
            "import sys\n"
            "from twisted.scripts.twistd import ServerOptions\n"
            "from suite.daemon import onlySuitePlugin\n"
            "o = onlySuitePlugin(ServerOptions, 'goop')()\n"
            "o.parseOptions(['goop', 'rendezvous', 'x'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('twisted.plugins.')))\n"
        )
        result = _run(sys.executable, "-c", code)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "['twisted.plugins.suite_plugins']")
