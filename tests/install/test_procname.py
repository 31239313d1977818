"""
Daemons go by their command's name: C{pidof spacecomms},
C{pkill -HUP -x spacecomms} (the guide's reload), C{ps -C goop2} and
C{ps aux | grep constellation-agent} find real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import yaml
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.proctitle import processName
from tests.spacecomms.support import NodeSpec, env
from tests.support.process import DaemonProcess, freePort, scriptArgs


def _run(*argv: str) -> tuple[int, str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout


class ProcessNameTests(SynchronousTestCase):
    """
    L{processName} picks the name a script was started as.
    """

    def test_names(self) -> None:
        """
        A script or a link to it keeps its own name; an interpreter, twistd
        or C{-m} falls back to the program's name.
        """
        self.assertEqual(processName("spacecomms", "/opt/suite/venv/bin/spacecomms"), "spacecomms")
        self.assertEqual(
            processName("constellation", "/usr/local/bin/constellation-agent"), "constellation-agent"
        )
        self.assertEqual(processName("goop2", "/usr/bin/python3"), "goop2")
        self.assertEqual(processName("goop2", "/opt/suite/venv/bin/twistd"), "goop2")
        self.assertEqual(processName("specter", "-m"), "specter")
        self.assertEqual(processName("specter", ""), "specter")


class RealProcessNameTests(TestCase):
    """
    Real daemons found by the operators' tools.
    """

    timeout = 120

    async def test_spacecommsPidofAndReload(self) -> None:
        """
        C{pidof spacecomms} names the node; C{pkill -HUP -x spacecomms}
        makes it reload its configuration.
        """
        if shutil.which("pidof") is None or shutil.which("pkill") is None:
            self.skipTest("pidof/pkill not installed")
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        spec = NodeSpec(base, "named", None)
        with open(spec.configPath, "w") as f:
            yaml.safe_dump(spec.document(), f)
        proc = DaemonProcess(
            self, scriptArgs("spacecomms", "start", "--config", spec.configPath), env=env(), name="named"
        ).start()
        await proc.waitForHTTP(spec.url("/health"))
        code, out = _run("pidof", "spacecomms")
        self.assertEqual(code, 0)
        self.assertIn(str(proc.pid), out.split())
        code, out = _run("ps", "-o", "comm=,args=", "-p", str(proc.pid))
        self.assertTrue(out.startswith("spacecomms"), out)
        self.assertIn("spacecomms start --config", out)
        # Other tests may run spacecomms nodes too: signal only this test's
        # children (pkill -P), by the exact name the guide uses.
        code, _ = _run("pkill", "-HUP", "-x", "-P", str(os.getpid()), "spacecomms")
        self.assertEqual(code, 0)
        await proc.waitForLog("configuration reloaded from")
        self.assertTrue(proc.running())

    async def test_goopAndConstellationNames(self) -> None:
        """
        A goop2 hub is C{goop2} to C{ps -C}; the agent started through its
        guide name is C{constellation-agent} on its command line.
        """
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        port = freePort()
        doc = {"presence": {"rendezvous_only": True, "rendezvous_host": True, "rendezvous_port": port}}
        with open(os.path.join(d, "goop.json"), "w") as f:
            json.dump(doc, f)
        hub = DaemonProcess(self, scriptArgs("goop2", "rendezvous", d), name="hub").start()
        await hub.waitForLog("rendezvous hub listening")
        code, out = _run("ps", "-C", "goop2", "-o", "pid=")
        self.assertIn(str(hub.pid), out.split())

        http, gossip = freePort(), freePort()
        agent = DaemonProcess(
            self,
            scriptArgs(
                "constellation-agent",
                "--http-provider",
                f"tcp:{http}:interface=127.0.0.1",
                "--bind-addr",
                "127.0.0.1",
                "--bind-port",
                str(gossip),
                "--gossip-profile",
                "local",
            ),
            env={
                "TS_HOSTNAME": "named",
                "DOMAIN": "example.org",
                "DATA_DIR": os.path.abspath(self.mktemp()),
                "CONSTELLATION_PUBLIC_IP_SOURCES": "none",
            },
            name="agent",
        ).start()
        await agent.waitForPort(http)
        code, out = _run("pidof", "constellation-agent")
        self.assertIn(str(agent.pid), out.split())
        code, out = _run("ps", "-o", "args=", "-p", str(agent.pid))
        self.assertEqual(out.strip(), "constellation-agent")
