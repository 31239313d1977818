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
import subprocess

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


class GoopGuidePathTests(SynchronousTestCase):
    """
    The Goop2 guide runs C{sudo cp docs/goop-rendezvous.service
    /etc/systemd/system/} from the source tree and links
    C{./Caddyfile.example} beside itself (docs/): both paths exist and are
    the shipped files under conf/goop, so the guide's commands work as
    written.
    """

    def test_paths(self) -> None:
        for name, target in (
            ("goop-rendezvous.service", "goop-rendezvous.service"),
            ("Caddyfile.example", "Caddyfile.example"),
        ):
            path = os.path.join(ROOT, "docs", name)
            self.assertTrue(os.path.isfile(path), path)
            self.assertEqual(os.path.realpath(path), os.path.realpath(os.path.join(CONF, "goop", target)))


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


DOC_PREFIX = "file:///opt/suite/venv/share/doc/suite/"


def _units() -> list[str]:
    units = []
    for folder, _, files in os.walk(CONF):
        units += [os.path.join(folder, f) for f in files if f.endswith(".service")]
    return sorted(units)


def _directives(path: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, value = line.split("=", 1)
                out.setdefault(key, []).append(value)
    return out


class SystemdConventionTests(SynchronousTestCase):
    """
    Every unit follows the same conventions: the suite's venv, no restart
    loop on a usage error, documentation that is installed.
    """

    def test_conventions(self) -> None:
        """
        C{ExecStart} under /opt/suite/venv/bin, C{RestartPreventExitStatus=2},
        C{Restart=on-failure}, a C{Documentation=} naming a guide that
        C{setup.cfg} installs, and a C{User=} or C{DynamicUser=}.
        """
        from setuptools.config.setupcfg import read_configuration

        here = os.getcwd()
        os.chdir(ROOT)
        try:
            installed = dict(read_configuration("setup.cfg")["options"]["data_files"])
        finally:
            os.chdir(here)
        guides = {os.path.basename(p) for p in installed["share/doc/suite"]}
        units = _units()
        self.assertGreaterEqual(len(units), 8)
        for unit in units:
            d = _directives(unit)
            name = os.path.relpath(unit, ROOT)
            self.assertTrue(d["ExecStart"][0].startswith("/opt/suite/venv/bin/"), name)
            self.assertEqual(d.get("RestartPreventExitStatus"), ["2"], name)
            self.assertEqual(d.get("Restart"), ["on-failure"], name)
            self.assertTrue(d.get("User") or d.get("DynamicUser"), name)
            docs = d.get("Documentation", [])
            self.assertTrue(docs, name)
            for doc in docs:
                self.assertTrue(doc.startswith(DOC_PREFIX), f"{name}: {doc}")
                self.assertIn(doc[len(DOC_PREFIX) :], guides, f"{name}: {doc} is not installed")


class SystemdAnalyzeTests(SynchronousTestCase):
    """
    systemd's own checkers accept every unit: C{systemd-analyze verify}
    (the command path swapped for an existing stub, since the suite is not
    installed in /opt here) and C{systemd-analyze security} with an
    exposure of at most 2.5.
    """

    def setUp(self) -> None:
        self.analyze = shutil.which("systemd-analyze")
        if self.analyze is None:
            raise self.skipTest("systemd-analyze is not installed (Debian package systemd)")
        self.work = os.path.abspath(self.mktemp())
        os.makedirs(self.work)
        self.stub = os.path.join(self.work, "stub")
        with open(self.stub, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(self.stub, 0o755)

    def _copy(self, unit: str) -> str:
        with open(unit) as f:
            text = f.read()
        text = re.sub(r"^ExecStart=\S+", f"ExecStart={self.stub}", text, flags=re.M)
        path = os.path.join(self.work, os.path.basename(unit))
        with open(path, "w") as f:
            f.write(text)
        return path

    def _analyze(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.analyze is not None
        return subprocess.run([self.analyze, *args], capture_output=True, text=True, timeout=120)

    def test_verify(self) -> None:
        """
        No errors or warnings from C{systemd-analyze verify}.
        """
        for unit in _units():
            r = self._analyze("verify", "--man=false", self._copy(unit))
            problems = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
            self.assertEqual((r.returncode, problems), (0, []), unit)

    def test_security(self) -> None:
        """
        Exposure at most 2.5 (C{--threshold} counts tenths) for every unit.
        """
        for unit in _units():
            r = self._analyze("security", "--offline=true", "--threshold=25", self._copy(unit))
            last = (r.stdout.strip().splitlines() or [""])[-1]
            self.assertEqual(r.returncode, 0, f"{unit}: {last}")
            self.assertIn("Overall exposure level", last)

    def test_securityCanFail(self) -> None:
        """
        The goop unit of the operator guide, unhardened, is over the bar.
        """
        bare = os.path.join(self.work, "bare.service")
        with open(bare, "w") as f:
            f.write(f"[Service]\nExecStart={self.stub}\nUser=goop\n")
        r = self._analyze("security", "--offline=true", "--threshold=25", bare)
        self.assertNotEqual(r.returncode, 0)
