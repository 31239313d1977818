"""
Help, version and argument conventions shared by every console script and
twistd plugin: C{--version}, usage lines, no epytext markup in any help text,
dashed aliases and global options after the subcommand.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import twisted
from suite.daemon import suiteVersion
from tests.support.process import BIN

SCRIPTS = ("specter", "spacecomms", "ceptra", "clustor-cp", "constellation", "goop2")
PLUGINS = ("specter", "spacecomms", "ceptra", "clustor-cp", "constellation", "goop")
EPYTEXT = re.compile(r"\b[CILBUM]\{")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def _consoleOptions() -> dict[str, Any]:
    from suite.ceptra.options import Options as Ceptra
    from suite.clustor.options import Options as Clustor
    from suite.constellation.options import Options as Constellation
    from suite.goop.tap import Options as Goop
    from suite.spacecomms.tap import Options as SpaceComms
    from suite.specter.options import ConsoleOptions

    return {
        "specter": ConsoleOptions,
        "spacecomms": SpaceComms,
        "ceptra": Ceptra,
        "clustor-cp": Clustor,
        "constellation": Constellation,
        "goop2": Goop,
    }


def _walk(options: usage.Options, path: str) -> Iterator[tuple[str, str]]:
    """
    Every (command path, help text) of C{options} and its subcommands.
    """
    yield path, str(options)
    for name, _short, parser, doc in getattr(options, "subCommands", None) or []:
        yield f"{path} {name} (description)", str(doc)
        sub = parser()
        sub.parent = options
        options.subCommand = name
        try:
            yield from _walk(sub, f"{path} {name}")
        finally:
            options.subCommand = None


class HelpTextTests(SynchronousTestCase):
    """
    Every help text reads as plain text.
    """

    def test_noEpytext(self) -> None:
        """
        No C{C{...}}, C{L{...}} or other epytext markup in any help text of
        any console script, plugin, subcommand or plugin description.
        """
        texts: list[tuple[str, str]] = []
        for name, factory in _consoleOptions().items():
            texts.extend(_walk(factory(), name))
        for maker in getPlugins(IServiceMaker):
            if maker.tapname in PLUGINS:
                texts.append((f"twistd {maker.tapname} (description)", maker.description))
                texts.extend(_walk(maker.options(), f"twistd {maker.tapname}"))
        self.assertGreater(len(texts), 20)
        bad = [f"{path}: {m.group(0)}..." for path, text in texts for m in [EPYTEXT.search(text)] if m]
        self.assertEqual(bad, [])

    def test_epytextDetected(self) -> None:
        """
        The scan finds markup when there is some.
        """

        class Marked(usage.Options):
            optParameters = [["x", None, None, "Use C{x}."]]

        self.assertTrue(EPYTEXT.search(str(Marked())))


class VersionTests(SynchronousTestCase):
    """
    C{--version} prints the suite's version, then Twisted's, and exits 0.
    """

    def assertVersion(self, text: str, where: str) -> None:
        lines = text.splitlines()
        self.assertEqual(len(lines), 2, f"{where}: {text!r}")
        self.assertIn(f"(twisted-suite) {suiteVersion()}", lines[0], where)
        self.assertEqual(lines[1], f"Twisted {twisted.__version__}", where)

    def _inProcess(self, options: usage.Options, argv: list[str]) -> str:
        import io
        import sys

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as cm:
            options.parseOptions(argv)
        self.assertEqual(cm.exception.code, 0)
        return out.getvalue()

    def test_everyOptions(self) -> None:
        """
        Every console script's and plugin's options, and their subcommands.
        """
        self.assertNotEqual(suiteVersion(), "unknown")
        for name, factory in _consoleOptions().items():
            self.assertVersion(self._inProcess(factory(), ["--version"]), name)
            for sub in getattr(factory, "subCommands", []):
                if sub[0] in ("pki", "client", "manager"):
                    continue
                self.assertVersion(self._inProcess(factory(), [sub[0], "--version"]), f"{name} {sub[0]}")
        for maker in getPlugins(IServiceMaker):
            if maker.tapname in PLUGINS:
                self.assertVersion(self._inProcess(maker.options(), ["--version"]), maker.tapname)

    def test_realCommands(self) -> None:
        """
        A console script and twistd with a plugin, as operators run them.
        """
        r = _run(f"{BIN}/spacecomms", "--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertVersion(r.stdout, "spacecomms")
        self.assertTrue(r.stdout.startswith("spacecomms "))
        r = _run(f"{BIN}/twistd", "goop", "--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertVersion(r.stdout, "twistd goop")

    def test_helpIntoClosedPipe(self) -> None:
        """
        C{--help} (and C{--version}) into a pipe whose reader went away, as
        with C{| head -1}: exit code 0 and no traceback, for every plugin, a
        plugin's subcommand and a console script's subcommand.
        """
        commands = [[f"{BIN}/twistd", plugin, "--help"] for plugin in PLUGINS]
        commands += [
            [f"{BIN}/twistd", "specter", "server", "--help"],
            [f"{BIN}/specter", "kv", "--help"],
            [f"{BIN}/goop2", "--version"],
        ]
        for argv in commands:
            read, write = os.pipe()
            os.close(read)
            try:
                r = subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
            finally:
                os.close(write)
            self.assertEqual((r.returncode, r.stderr), (0, ""), " ".join(argv[1:]))


class UsageTests(SynchronousTestCase):
    """
    Usage lines, subcommand help and argument conventions.
    """

    def _help(self, factory: Any, argv: list[str]) -> str:
        import io
        import sys

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "argv", [f"/opt/suite/venv/bin/{argv[0]}"])
        with self.assertRaises(SystemExit) as cm:
            factory().parseOptions(argv[1:])
        self.assertIn(cm.exception.code, (0, None))
        return out.getvalue()

    def test_spacecommsUsage(self) -> None:
        """
        C{spacecomms start --help} reads as one command line.
        """
        options = _consoleOptions()
        first = self._help(options["spacecomms"], ["spacecomms", "start", "--help"]).splitlines()[0]
        self.assertEqual(first, "Usage: spacecomms [options] start [--config FILE]")
        first = self._help(options["spacecomms"], ["spacecomms", "--help"]).splitlines()[0]
        self.assertEqual(first, "Usage: spacecomms [options] start|validate-config [--config FILE]")

    def test_goopUsage(self) -> None:
        """
        C{goop2 peer --help}: one usage line, without the hub-only limits
        (which C{rendezvous --help} shows).
        """
        options = _consoleOptions()
        peer = self._help(options["goop2"], ["goop2", "peer", "--help"])
        self.assertEqual(peer.splitlines()[0], "Usage: goop2 [options] peer [options] <peer-directory>")
        self.assertNotIn("--max-sse-clients", peer)
        self.assertNotIn("--publish-rate", peer)
        hub = self._help(options["goop2"], ["goop2", "rendezvous", "--help"])
        self.assertIn("--publish-rate", hub)
        self.assertEqual(self._help(options["goop2"], ["goop2", "--help"]).count("Usage:"), 1)

    def test_specterKV(self) -> None:
        """
        C{specter kv --help} lists the actions; C{specter kv put --help}
        shows the action's arguments.
        """
        options = _consoleOptions()
        text = self._help(options["specter"], ["specter", "kv", "--help"])
        for action in ("put KEY VALUE", "get KEY", "delete KEY", "stats", "lookup KEY"):
            self.assertIn(action, text)
        text = self._help(options["specter"], ["specter", "kv", "put", "--help"])
        self.assertEqual(text.splitlines()[0], "Usage: specter [options] kv [options] put KEY VALUE")

    def test_dashedAliases(self) -> None:
        """
        C{--auth-user}/C{--auth-pass} work like the guide's
        C{--auth_user}/C{--auth_pass}.
        """
        from suite.specter.options import Options

        base = ["server", "--data", "/tmp/d", "--cert", "/tmp/c"]
        for user, password in (("--auth-user", "--auth-pass"), ("--auth_user", "--auth_pass")):
            o = Options(environ={})
            o.parseOptions([*base, user, "ops", f"{password}=s3cret"])
            self.assertEqual(o.subOptions["auth_user"], "ops")
            self.assertEqual(o.subOptions["auth_pass"].reveal(), "s3cret")

    def test_globalOptionsAfterSubcommand(self) -> None:
        """
        C{spacecomms start --verbose} and C{specter server ... --manhole X}:
        the top level's options are accepted after the subcommand, the
        subcommand's own options stay its own.
        """
        from suite.spacecomms.tap import Options

        o = Options(environ={})
        o.parseOptions(["start", "--verbose", "--config", "/etc/sc.yaml"])
        self.assertTrue(o["verbose"])
        self.assertEqual(o.subCommand, "start")
        self.assertEqual(o["config"], "/etc/sc.yaml")
        o = Options(environ={})
        private = os.path.abspath(self.mktemp())
        os.makedirs(private, mode=0o700)
        o.parseOptions(["start", "--config=/etc/x.yaml", "--manhole", f"unix:{private}/m.sock"])
        self.assertEqual(o["manhole"], f"unix:{private}/m.sock")
        o = _consoleOptions()["goop2"]()
        o.parseOptions(["peer", "/var/goop", "--verbose"])
        self.assertTrue(o["verbose"])
        self.assertEqual(o.subOptions["directory"], "/var/goop")
        self.assertRaises(usage.UsageError, Options(environ={}).parseOptions, ["start", "--frob"])


class TwistdLoggingTests(SynchronousTestCase):
    """
    Plain C{twistd -n PLUGIN} (no C{--logger}) logs the suite's way.
    """

    def _twistd(self, *extra: str) -> subprocess.CompletedProcess[str]:
        import socket

        from tests.clustor.helpers import writeState

        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        state = writeState(self.mktemp())
        argv = [f"{BIN}/twistd", "-n", "--pidfile=", "clustor-cp", *extra, "--state", state]
        return _run(*argv, "--listen", f"tcp:{port}:interface=127.0.0.1")

    def test_jsonLines(self) -> None:
        """
        JSON lines on stderr, nothing on stdout.
        """
        import json

        r = self._twistd()
        self.assertEqual(r.returncode, 1, r.stderr[-2000:])
        self.assertEqual(r.stdout, "")
        records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
        self.assertIn("critical", [rec["level"] for rec in records])

    def test_verbose(self) -> None:
        """
        With C{--verbose}, human-readable lines.
        """
        r = self._twistd("--verbose")
        self.assertEqual(r.returncode, 1, r.stderr[-2000:])
        self.assertIn("CRITICAL [suite.daemon] --listen", r.stderr)
        self.assertNotIn('{"time"', r.stderr)
