"""
A real CEPtra node following a real control plane, both over mTLS on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from suite.ceptra.service import MTLSPolicy
from suite.pki.bundle import loadIdentity
from tests.ceptra.support import makePKI, nodeEnv
from tests.clustor.helpers import writeState
from tests.support.process import DaemonProcess, freePort, scriptArgs, twistdArgs


class NodeProcessTests(TestCase):
    """
    The node's admin surface as an operator sees it.
    """

    async def test_readinessAndMetrics(self) -> None:
        """
        /healthz is 200; once the placement feed is fresh /readyz is 503 with
        the Raft reason only; /metrics has the feed gauges in ms and no
        seconds-unit names.
        """
        base = os.path.abspath(self.mktemp())
        ca, identity = makePKI(os.path.join(base, "pki"))
        cp = ca.identity("control-plane")
        probe = ca.identity("probe")
        cpPort, adminPort = freePort(), freePort()
        DaemonProcess(
            self,
            twistdArgs(
                "clustor-cp",
                "--state",
                writeState(base),
                "--listen",
                f"tcp:{cpPort}:interface=127.0.0.1",
                "--tls-identity-cert",
                cp.cert,
                "--tls-identity-key",
                cp.key,
                "--tls-trust-bundle",
                cp.trust,
            ),
            name="clustor-cp",
        ).start()
        env = nodeEnv(
            base,
            identity,
            url=f"https://127.0.0.1:{cpPort}",
            CEPTRA_ADMIN_BIND=f"127.0.0.1:{adminPort}",
            CEPTRA_RAFT_BIND=f"127.0.0.1:{freePort()}",
            CEPTRA_FEED_INTERVAL_MS="200",
        )
        node = DaemonProcess(self, scriptArgs("ceptra"), env=env, name="ceptra", cwd=base)
        node.start()

        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, contextFactory=MTLSPolicy(loadIdentity(probe.cert, probe.key, probe.trust)), pool=pool)
        admin = f"https://127.0.0.1:{adminPort}"
        await node.waitForHTTP(admin + "/healthz", agent=agent)

        async def placementReady() -> Any:
            r = await treq.get(admin + "/readyz", agent=agent)
            body = json.loads(await r.content())
            return (r.code, body) if body["checks"]["placement"]["ready"] else None

        code, body = await node.waitFor(placementReady, "a fresh placement feed", timeout=30)
        self.assertEqual(code, 503)
        self.assertFalse(body["ready"])
        self.assertEqual(body["reasons"], ["raft: no raft leader known: raft not implemented yet"])
        self.assertEqual(body["checks"]["placement"]["details"]["revision"], 1)

        r = await treq.get(admin + "/metrics", agent=agent)
        self.assertEqual(r.code, 200)
        text = (await r.content()).decode()
        self.assertIn('clustor_feed_staleness_ms{feed="placement"}', text)
        self.assertIn('clustor_feed_latency_ms{feed="activation"}', text)
        self.assertIn("clustor_system_logs_total", text)
        names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
        self.assertFalse([n for n in names if "seconds" in n], names)
        self.assertTrue(os.path.isfile(os.path.join(base, "data", "snapshots", ".write_probe")))

    def test_missingControlPlane(self) -> None:
        """
        Without CEPTRA_CONTROL_PLANE_URL the console script prints one line and exits 2.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("CEPTRA_")}
        result = subprocess.run(scriptArgs("ceptra"), capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(result.returncode, 2)
        self.assertIn("CEPTRA_CONTROL_PLANE_URL", result.stderr.splitlines()[0])
        self.assertNotIn("Traceback", result.stderr)
