"""
The container files: one Dockerfile target per daemon family, non-root,
with a HEALTHCHECK on the daemon's health endpoint; the compose example
hardened; the health probe itself against live and dead endpoints.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.support.http import serveLoopback
from tests.support.process import freePort

SRC = Path(__file__).resolve().parents[2]
FAMILIES = {
    "spacecomms": "spacecomms",
    "goop": "goop2",
    "specter": "specter",
    "constellation": "constellation-agent",
    "ceptra": "ceptra",
}


def _stages() -> dict[str, list[str]]:
    """Dockerfile instructions (continuations joined) per stage name."""
    text = (SRC / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if m:
            current = stages.setdefault(m.group(1), [])
        current.append(line)
    return stages


class DockerfileTests(SynchronousTestCase):
    def test_targets(self) -> None:
        """
        Each family's target derives from the non-root runtime stage, has a
        HEALTHCHECK through healthcheck.py with its own HEALTH_URL, and an
        entrypoint that is one of the suite's console scripts; the default
        (last) target is SpaceComms, as the guide's `docker build .` expects.
        """
        stages = _stages()
        self.assertEqual(list(stages)[-1], "spacecomms")
        runtime = " ".join(stages["runtime"])
        self.assertIn("USER 10001:10001", runtime)
        cfg = configparser.ConfigParser()
        cfg.read(SRC / "setup.cfg")
        scripts = {
            line.split("=")[0].strip()
            for line in cfg["options.entry_points"]["console_scripts"].split("\n")
            if line
        }
        for family, script in FAMILIES.items():
            lines = stages[family]
            self.assertTrue(lines[0].upper().startswith("FROM RUNTIME AS"), family)
            body = " ".join(lines)
            self.assertIn("HEALTHCHECK", body, family)
            self.assertIn("/opt/suite/healthcheck.py", body, family)
            self.assertRegex(body, r"HEALTH_URL=https?://127\.0\.0\.1:\d+/health", family)
            entry = re.search(r'ENTRYPOINT \["/opt/suite/venv/bin/([^"]+)"\]', body)
            assert entry is not None, family
            self.assertEqual(entry.group(1), script)
            self.assertIn(script, scripts)
            self.assertNotIn("USER root", body)

    def test_compose(self) -> None:
        """
        Every compose service runs read-only, without capabilities or
        privilege gain, from an image the Dockerfile builds; Specter gets
        the guide's stop_grace_period.
        """
        doc = yaml.safe_load((SRC / "containers/compose.yaml").read_text())
        images = {"spacecomms:latest", "goop2:latest", "specter:latest"}
        self.assertGreaterEqual(len(doc["services"]), 5)
        for name, svc in doc["services"].items():
            self.assertIs(svc["read_only"], True, name)
            self.assertEqual(svc["cap_drop"], ["ALL"], name)
            self.assertIn("no-new-privileges:true", svc["security_opt"], name)
            self.assertIn(svc["image"], images, name)
        self.assertEqual(doc["services"]["specter"]["stop_grace_period"], "120s")
        shared = [s for n, s in doc["services"].items() if n.startswith("goop-")]
        self.assertEqual(len(shared), 3)
        for svc in shared:
            self.assertIn("goop-shared:/opt/goop/shared", svc["volumes"])


class _Health(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"ok"


def _probe(url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTH_", "CEPTRA_", "CLUSTOR_"))}
    return subprocess.run(
        [sys.executable, "-I", "-S", str(SRC / "containers/healthcheck.py")],
        env=dict(env, HEALTH_URL=url, **extra),
        capture_output=True,
        text=True,
        timeout=30,
    )


class HealthProbeTests(TestCase):
    async def test_probe(self) -> None:
        """
        The HEALTHCHECK command exits 0 for a live endpoint and 1, with one
        line naming the URL, for a closed port.
        """
        portNumber = await serveLoopback(self, Site(_Health()))
        live = await deferToThread(_probe, f"http://127.0.0.1:{portNumber}/healthz")
        self.assertEqual(live.returncode, 0, live.stderr)
        dead = await deferToThread(_probe, f"http://127.0.0.1:{freePort()}/healthz")
        self.assertEqual(dead.returncode, 1)
        self.assertTrue(dead.stderr.startswith("unhealthy: http://127.0.0.1:"), dead.stderr)

    async def test_probeMutualTLS(self) -> None:
        """
        Against an mTLS listener (CEPtra's admin API, clustor-cp with TLS)
        the probe presents the daemon's own identity from its CEPTRA_TLS_*
        or CLUSTOR_CP_TLS_* variables and passes; with the trust bundle but
        no certificate it fails with one line.
        """
        from suite.pki.load import loadIdentity
        from suite.pki.tls import serverContextFactory
        from tests.clustor.certs import CertAuthority

        ca = CertAuthority(os.path.abspath(self.mktemp()))
        node = ca.identity("node-1", "spiffe://example.org/ceptra/node-1")
        port = reactor.listenSSL(  # type: ignore[attr-defined]
            0,
            Site(_Health()),
            serverContextFactory(loadIdentity(node.cert, node.key, node.trust)),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        url = f"https://127.0.0.1:{port.getHost().port}/healthz"
        ceptra = await deferToThread(
            _probe,
            url,
            CEPTRA_TLS_IDENTITY_CERT=node.cert,
            CEPTRA_TLS_IDENTITY_KEY=node.key,
            CEPTRA_TLS_TRUST_BUNDLE=node.trust,
        )
        self.assertEqual(ceptra.returncode, 0, ceptra.stderr)
        clustor = await deferToThread(
            _probe,
            url,
            CLUSTOR_CP_TLS_IDENTITY_CERT=node.cert,
            CLUSTOR_CP_TLS_IDENTITY_KEY=node.key,
            CLUSTOR_CP_TLS_TRUST_BUNDLE=node.trust,
        )
        self.assertEqual(clustor.returncode, 0, clustor.stderr)
        anonymous = await deferToThread(_probe, url, HEALTH_TLS_CA=node.trust)
        self.assertEqual(anonymous.returncode, 1)
        self.assertTrue(anonymous.stderr.startswith(f"unhealthy: {url}: "), anonymous.stderr)
        self.assertEqual(len(anonymous.stderr.splitlines()), 1, anonymous.stderr)
