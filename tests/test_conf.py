"""
The shipped examples under conf/ for Specter and Goop² stay valid, and every
systemd unit starts a console script the package installs.  (CEPtra,
Clustor and Constellation examples: tests/clustor/test_conf.py; SpaceComms:
tests/spacecomms/test_config.py.)
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil

from twisted.trial.unittest import SynchronousTestCase

from suite.goop.config import loadConfig
from suite.specter.options import Options as SpecterOptions
from tests.clustor.test_conf import CONF, readEnv

ROOT = os.path.dirname(CONF)


def consoleScripts() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return {line.split("=")[0].strip() for line in lines}


class SpecterConfTests(SynchronousTestCase):
    """
    conf/specter/*.env: the arguments and environment parse as documented.
    """

    def test_envFiles(self) -> None:
        """
        Each environment file's C{SUITE_ARGS} with its variables is a valid
        C{specter server} command line, and the variables land in options.
        """
        for name in ("seed.env", "join.env"):
            env = readEnv(os.path.join(CONF, "specter", name))
            options = SpecterOptions(environ=env)
            options.parseOptions(shlex.split(env["SUITE_ARGS"]))
            self.assertEqual(options.subCommand, "server", name)
            server = options.subOptions
            self.assertEqual(server["auth_user"], env["INTERNAL_USER"], name)
            self.assertTrue(server["data-dir"], name)
        join = readEnv(os.path.join(CONF, "specter", "join.env"))
        options = SpecterOptions(environ=join)
        options.parseOptions(shlex.split(join["SUITE_ARGS"]))
        self.assertEqual(options.subOptions["virtual"], 5)
        self.assertEqual(options.subOptions["replicas"], 3)

    def test_dnsEnv(self) -> None:
        """
        dns.env is a valid C{specter dns} command line; its binds come from
        C{LISTEN_ADDR}.
        """
        env = readEnv(os.path.join(CONF, "specter", "dns.env"))
        options = SpecterOptions(environ=env)
        options.parseOptions(shlex.split(env["SUITE_ARGS"]))
        self.assertEqual(options.subCommand, "dns")
        dns = options.subOptions
        self.assertEqual(dns["acme"][1], "acme-hosted.net")
        self.assertEqual(len(dns["acme-ns"]), 2)
        self.assertEqual(dns["udp-binds"], [("0.0.0.0", 53)])
        self.assertEqual(dns["rpc-client"], "unix:/run/specter/rpc.sock")


class GoopConfTests(SynchronousTestCase):
    """
    conf/goop/*.json are valid C{goop.json} files with no unknown keys.
    """

    def test_documents(self) -> None:
        for name in ("goop.json", "rendezvous.goop.json"):
            directory = self.mktemp()
            os.makedirs(directory)
            shutil.copy(os.path.join(CONF, "goop", name), os.path.join(directory, "goop.json"))
            config = loadConfig(directory, create=False)
            self.assertEqual(config.warnings, (), name)


class SystemdUnitTests(SynchronousTestCase):
    """
    Every unit under conf/ starts one of the installed console scripts.
    """

    def test_execStart(self) -> None:
        scripts = consoleScripts()
        units = []
        for folder, _, files in os.walk(CONF):
            units += [os.path.join(folder, f) for f in files if f.endswith(".service")]
        self.assertTrue(units)
        for unit in units:
            with open(unit) as f:
                text = f.read()
            match = re.search(r"^ExecStart=(\S+)", text, re.M)
            self.assertIsNotNone(match, unit)
            assert match is not None
            program = os.path.basename(match.group(1))
            if program == "%i":
                # suite@.service: the instance name is the script name
                continue
            self.assertIn(program, scripts, unit)
