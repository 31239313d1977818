"""
L{suite.daemon.envParameters} and L{DaemonOptions.envDefaults}: options
described by an environment table.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from suite.daemon import DaemonOptions, EnvTable, envParameters

TABLE: EnvTable = {
    "listen": ("DEMO_LISTEN", "127.0.0.1:80", "Where to listen."),
    "token": ("DEMO_TOKEN", None, "A token."),
}


class _Options(DaemonOptions):
    optParameters: list[list[Any]] = envParameters(TABLE) + DaemonOptions.optParameters

    def postOptions(self) -> None:
        super().postOptions()
        self.envDefaults(TABLE)


class EnvTableTests(SynchronousTestCase):
    def test_help(self) -> None:
        """
        Each row's help names its variable, and its default when it has one.
        """
        self.assertEqual(
            envParameters(TABLE),
            [
                ["listen", None, None, "Where to listen. [env DEMO_LISTEN, default 127.0.0.1:80]"],
                ["token", None, None, "A token. [env DEMO_TOKEN]"],
            ],
        )

    def test_defaults(self) -> None:
        """
        Unset options take their default; an unset option without one stays C{None}.
        """
        o = _Options(environ={})
        o.parseOptions([])
        self.assertEqual((o["listen"], o["token"]), ("127.0.0.1:80", None))

    def test_environment(self) -> None:
        """
        A set variable fills its option in place of the default.
        """
        o = _Options(environ={"DEMO_LISTEN": "127.0.0.1:81", "DEMO_TOKEN": "t"})
        o.parseOptions([])
        self.assertEqual((o["listen"], o["token"]), ("127.0.0.1:81", "t"))

    def test_flagWins(self) -> None:
        """
        A flag given on the command line wins over the variable and the default.
        """
        o = _Options(environ={"DEMO_LISTEN": "127.0.0.1:81"})
        o.parseOptions(["--listen", "127.0.0.1:82"])
        self.assertEqual(o["listen"], "127.0.0.1:82")
