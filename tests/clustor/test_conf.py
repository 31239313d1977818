"""
The shipped examples under conf/ stay valid.
"""

from __future__ import annotations

import configparser
import os

from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.options import Options as CeptraOptions
from suite.clustor.options import Options as ControlPlaneOptions
from suite.clustor.state import loadStateFile
from suite.constellation.options import Options as ConstellationOptions

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "conf")


def readEnv(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    return env


class ConfExamplesTests(SynchronousTestCase):
    """
    Example state, environment files and systemd units parse.
    """

    def test_state(self) -> None:
        """
        conf/clustor-cp/state.yaml is a valid state file.
        """
        state = loadStateFile(os.path.join(CONF, "clustor-cp", "state.yaml"))
        self.assertEqual([p["id"] for p in state.partitions], ["p0", "p1"])

    def test_envFiles(self) -> None:
        """
        Each example environment file is accepted by its daemon's options.
        """
        for factory, name in (
            (CeptraOptions, "ceptra/ceptra.env"),
            (ControlPlaneOptions, "clustor-cp/clustor-cp.env"),
            (ConstellationOptions, "constellation/constellation.env"),
        ):
            env = readEnv(os.path.join(CONF, name))
            self.assertTrue(env, name)
            options = factory(environ=env)
            options.parseOptions([])

    def test_units(self) -> None:
        """
        Every unit stops with SIGTERM within 120 s and runs a console script.
        """
        units = sorted(os.listdir(os.path.join(CONF, "systemd")))
        expected = {"ceptra@.service", "clustor-cp@.service", "constellation-agent.service", "suite@.service"}
        self.assertTrue(expected <= set(units), units)
        for unit in units:
            parser = configparser.ConfigParser(strict=False, interpolation=None)
            parser.read(os.path.join(CONF, "systemd", unit))
            service = parser["Service"]
            self.assertEqual(service["KillSignal"], "SIGTERM", unit)
            self.assertEqual(service["TimeoutStopSec"], "120", unit)
            self.assertEqual(service["NoNewPrivileges"], "yes", unit)
            self.assertTrue(service["ExecStart"].startswith("/opt/suite/venv/bin/"), unit)
