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
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from suite.ceptra.service import MTLSPolicy
from suite.pki.load import loadIdentity
from suite.pki.tls import clientContextFactory
from tests.ceptra.support import SPIFFE, makePKI, nodeEnv
from tests.clustor.certs import Identity
from tests.clustor.helpers import STATE_YAML, writeState
from tests.support.process import DaemonProcess, freePort, scriptArgs, twistdArgs


@implementer(IPolicyForHTTPS)
class _NoClientCertificate:
    """
    Trust the test CA but present no certificate.
    """

    def __init__(self, identity: Identity) -> None:
        self.bundle = loadIdentity(identity.cert, identity.key, identity.trust)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return clientContextFactory(self.bundle, ipAddress=hostname.decode(), useClientCert=False)


class _Silent(Protocol):
    """
    A client that connects and never says anything.
    """

    def __init__(self) -> None:
        self.lost: Deferred[float] = Deferred()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(reactor.seconds())


async def _closedAfter(port: int) -> float:
    """
    Seconds until the server closes a connection on which nothing is sent.
    """
    silent = _Silent()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), silent)
    start = reactor.seconds()
    silent.lost.addTimeout(30, reactor)
    return await silent.lost - start


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
        probe = ca.identity("probe", "spiffe://ops.example/probe")
        stranger = ca.identity("stranger", "spiffe://ops.example/stranger")
        cpPort, adminPort, raftPort = freePort(), freePort(), freePort()
        DaemonProcess(
            self,
            twistdArgs(
                "clustor-cp",
                "--state",
                writeState(
                    base,
                    STATE_YAML.replace("spiffe://example.org/ceptra/a", SPIFFE).replace(
                        "replicas: [ceptra-a, ceptra-b]", "replicas: [ceptra-a]\n    epoch: 1"
                    ),
                ),
                "--listen",
                f"tcp:{cpPort}:interface=127.0.0.1",
                "--tls-identity-cert",
                cp.cert,
                "--tls-identity-key",
                cp.key,
                "--tls-trust-bundle",
                cp.trust,
                "--client-spiffe",
                "spiffe://example.org",
            ),
            name="clustor-cp",
        ).start()
        env = nodeEnv(
            base,
            identity,
            url=f"https://127.0.0.1:{cpPort}",
            CEPTRA_ADMIN_BIND=f"127.0.0.1:{adminPort}",
            CEPTRA_RAFT_BIND=f"127.0.0.1:{raftPort}",
            CEPTRA_FEED_INTERVAL_MS="200",
            CEPTRA_ADMIN_ALLOWED_SPIFFE="spiffe://ops.example/probe",
        )
        node = DaemonProcess(self, scriptArgs("ceptra", "--verbose"), env=env, name="ceptra", cwd=base)
        node.start()

        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(
            reactor, contextFactory=MTLSPolicy(loadIdentity(probe.cert, probe.key, probe.trust)), pool=pool
        )
        admin = f"https://127.0.0.1:{adminPort}"
        await node.waitForHTTP(admin + "/healthz", agent=agent)

        async def placementReady() -> Any:
            r = await treq.get(admin + "/readyz", agent=agent)
            body = json.loads(await r.content())
            ok = body["checks"]["placement"]["ready"] and body["checks"]["raft"]["ready"]
            return (r.code, body) if ok else None

        # This node is p0's only replica and leads its group; the activation
        # barrier epoch-1 still holds readiness back.
        code, body = await node.waitFor(placementReady, "a fresh placement feed and a leader", timeout=30)
        self.assertEqual(code, 503)
        self.assertFalse(body["ready"])
        self.assertEqual(body["reasons"], ["activation: activation barrier epoch-1 not ready"])
        self.assertEqual(body["checks"]["raft"]["details"]["partitions"]["p0"]["role"], "leader")
        details = body["checks"]["placement"]["details"]
        self.assertEqual(details["revision"], 1)
        self.assertEqual(
            details["node"],
            {
                "nodeId": "ceptra-a",
                "partitions": ["p0"],
                "warm": {"p0": True},
                "pendingBarriers": ["epoch-1"],
            },
        )

        r = await treq.get(admin + "/metrics", agent=agent)
        self.assertEqual(r.code, 200)
        text = (await r.content()).decode()
        self.assertIn('clustor_feed_staleness_ms{feed="placement"}', text)
        self.assertIn('clustor_feed_latency_ms{feed="activation"}', text)
        self.assertIn("clustor_system_logs_total", text)
        self.assertIn('ceptra_partition_committed_index{partition="p0"}', text)
        self.assertIn('ceptra_partition_match_index{partition="p0"}', text)
        # the readiness ratios: p0, hosted here, is ready
        self.assertIn('ceptra_partition_ready{partition="p0"} 1.0', text)
        self.assertIn("ceptra_ready_partitions_ratio 1.0", text)
        names = {
            line.split("{")[0].split(" ")[0]
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        self.assertFalse([n for n in names if "seconds" in n], names)
        self.assertFalse([n for n in names if n.endswith("_created")], names)
        self.assertTrue(os.path.isfile(os.path.join(base, "data", "snapshots", ".write_probe")))

        # A certificate from the bundle whose SPIFFE ID is not on the allow
        # list is refused by the admin listener.
        refused = Agent(
            reactor,
            contextFactory=MTLSPolicy(loadIdentity(stranger.cert, stranger.key, stranger.trust)),
            pool=pool,
        )
        with self.assertRaises(ResponseNeverReceived):
            await treq.get(admin + "/healthz", agent=refused)

        # Without a client certificate, neither the admin surface nor the
        # control plane completes a handshake.
        anonymous = Agent(reactor, contextFactory=_NoClientCertificate(probe), pool=pool)
        for url in (admin + "/healthz", f"https://127.0.0.1:{cpPort}/routing"):
            with self.assertRaises(ResponseNeverReceived):
                await treq.get(url, agent=anonymous)
        # The control plane also wants a SPIFFE ID in its trust domain, which
        # the probe's certificate lacks.
        with self.assertRaises(ResponseNeverReceived):
            await treq.get(f"https://127.0.0.1:{cpPort}/routing", agent=agent)

        # A client that connects and never starts its TLS handshake is
        # closed after 10 s on the admin, Raft and control-plane listeners.
        waited = await gatherResults(
            [Deferred.fromCoroutine(_closedAfter(p)) for p in (adminPort, raftPort, cpPort)]
        )
        for seconds in waited:
            self.assertGreater(seconds, 9)
            self.assertLess(seconds, 20)
        # Nothing of the node's private key reaches its (verbose) log.
        with open(identity.key) as f:
            keyLines = [line for line in f.read().splitlines() if line and not line.startswith("-----")]
        output = node.output()
        self.assertIn("ceptra node", output)
        for line in keyLines:
            self.assertNotIn(line, output)

    def test_missingControlPlane(self) -> None:
        """
        Without CEPTRA_CONTROL_PLANE_URL the console script prints one line and exits 2.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("CEPTRA_")}
        result = subprocess.run(scriptArgs("ceptra"), capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(result.returncode, 2)
        self.assertIn("CEPTRA_CONTROL_PLANE_URL", result.stderr.splitlines()[0])
        self.assertNotIn("Traceback", result.stderr)

    def test_plainControlPlaneOffLoopback(self) -> None:
        """
        A plain http:// control plane off loopback is refused before start:
        one line naming the variable, exit 2, nothing created.
        """
        base = os.path.abspath(self.mktemp())
        _, identity = makePKI(os.path.join(base, "pki"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CEPTRA_")}
        env.update(nodeEnv(base, identity, url="http://192.0.2.10:26010"))
        result = subprocess.run(scriptArgs("ceptra"), capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(result.returncode, 2)
        first = result.stderr.splitlines()[0]
        self.assertIn("CEPTRA_CONTROL_PLANE_URL", first)
        self.assertIn("only on loopback", first)
        self.assertNotIn("Traceback", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(base, "data")))

    def test_overlappingStorage(self) -> None:
        """
        A snapshot directory inside the WAL directory is refused at start:
        one line naming both variables, exit 2, no traceback.
        """
        base = os.path.abspath(self.mktemp())
        _, identity = makePKI(os.path.join(base, "pki"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CEPTRA_")}
        env.update(nodeEnv(base, identity, CEPTRA_SNAPSHOT_DIR=os.path.join(base, "data", "wal", "snap")))
        result = subprocess.run(scriptArgs("ceptra"), capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("CEPTRA_SNAPSHOT_DIR", result.stderr)
        self.assertIn("is inside CEPTRA_WAL_DIR", result.stderr)
