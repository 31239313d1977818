"""
C{/_internal/tunnels} next to the ring's own C{/_internal} tree.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from suite.cred.basic import StaticPasswordChecker
from suite.cred.web import requireBasicAuth
from suite.specter.gateway.core import Gateway, GatewayConfig
from suite.specter.gateway.routes import MemoryRouteStore
from suite.specter.gateway.views import mountTunnelViews
from tests.specter.gateway.support import listenLocal


class ViewsTests(TestCase):
    async def test_mountedBesideTheRingViews(self) -> None:
        """
        With credentials, /_internal/tunnels answers JSON and the existing
        /_internal children still work; without them, 401.
        """
        admin = Resource()
        internal = Resource()
        internal.putChild(b"chord", Data(b"ring", "text/plain"))
        admin.putChild(
            b"_internal", requireBasicAuth(internal, StaticPasswordChecker({"ops": "pw"}), realm="specter")
        )
        clock = Clock()
        gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443"), MemoryRouteStore(clock), clock
        )
        mountTunnelViews(admin, gateway, "ops", "pw")
        port, portNumber = listenLocal(Site(admin))
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{portNumber}/_internal"
        r: Any = await treq.get(f"{base}/tunnels", auth=("ops", "pw"), persistent=False)
        self.assertEqual(r.code, 200)
        body = json.loads(await r.content())
        self.assertEqual(body["gateway"], "127.0.0.1:443")
        self.assertEqual(body["links"], [])
        r = await treq.get(f"{base}/chord", auth=("ops", "pw"), persistent=False)
        self.assertEqual((r.code, await r.content()), (200, b"ring"))
        r = await treq.get(f"{base}/tunnels", persistent=False)
        self.assertEqual(r.code, 401)
        await r.content()

    def test_noCredentialsNoTree(self) -> None:
        """
        Without credentials nothing is mounted.
        """
        admin = Resource()
        clock = Clock()
        gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443"), MemoryRouteStore(clock), clock
        )
        mountTunnelViews(admin, gateway, None, None)
        self.assertEqual(admin.children, {})


class CollectorTests(TestCase):
    def test_metrics(self) -> None:
        """
        The collector exposes link, hostname and error counts.
        """
        from prometheus_client import CollectorRegistry, generate_latest

        from suite.specter.gateway.views import GatewayCollector

        clock = Clock()
        gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443"), MemoryRouteStore(clock), clock
        )
        gateway.metrics.errors[404] = 3
        registry = CollectorRegistry()
        registry.register(GatewayCollector(gateway))
        text = generate_latest(registry).decode()
        self.assertIn("specter_gateway_links 0.0", text)
        self.assertIn('specter_gateway_errors_total{code="404"} 3.0', text)


class IndexTests(TestCase):
    async def test_gatewayPagesInTheIndex(self) -> None:
        """
        On the ring's helper resource, the gateway's pages join the one
        C{/_internal} directory: its JSON index lists them beside the ring's
        pages, and they answer behind the same credentials.
        """
        from suite.specter.web import makeHelperResource
        from suite.web.admin import makeAdminResource

        clock = Clock()
        admin = makeHelperResource(object(), makeAdminResource([]), "ops", "pw")
        gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443"), MemoryRouteStore(clock), clock
        )
        mountTunnelViews(admin, gateway, "ops", "pw", more={b"acme": Data(b"{}", "application/json")})
        port, portNumber = listenLocal(Site(admin))
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{portNumber}/_internal"
        r: Any = await treq.get(base, auth=("ops", "pw"), persistent=False)
        self.assertEqual(r.code, 200)
        self.assertEqual(
            json.loads(await r.content())["endpoints"], ["/acme", "/chord", "/kv", "/pki", "/tunnels"]
        )
        r = await treq.get(f"{base}/tunnels", auth=("ops", "pw"), persistent=False)
        self.assertEqual(r.code, 200)
        self.assertEqual(json.loads(await r.content())["gateway"], "127.0.0.1:443")
        r = await treq.get(f"{base}/pki", auth=("ops", "pw"), persistent=False)
        self.assertEqual(json.loads(await r.content()), {"endpoints": ["/client"]})
        for page in ("", "/tunnels", "/pki/client", "/acme"):
            r = await treq.get(f"{base}{page}", auth=("ops", "wrong"), persistent=False)
            self.assertEqual(r.code, 401, page)
            await r.content()
        # a method a page does not serve: a JSON 405 naming the allowed ones
        for method, page, allowed in (
            ("GET", "/pki/client", ["HEAD", "POST"]),
            ("POST", "/tunnels", ["GET", "HEAD"]),
            ("POST", "/chord/stats", ["GET", "HEAD"]),
            ("DELETE", "/kv/stats", ["GET", "HEAD"]),
        ):
            r = await treq.request(method, f"{base}{page}", auth=("ops", "pw"), persistent=False)
            self.assertEqual(r.code, 405, page)
            body = json.loads(await r.content())
            self.assertEqual(body["error"], f"method {method} not allowed", page)
            self.assertEqual(sorted(body["allowed"]), allowed, page)


class EnrollmentNameTests(TestCase):
    def test_badNames(self) -> None:
        """
        The enrollment page refuses a name outside the client name rule (a
        trailing newline included) with a 400 naming the rule, before
        minting anything.
        """
        from twisted.web.test.requesthelper import DummyRequest

        from suite.specter.gateway.views import ClientEnrollment

        page = ClientEnrollment(None)
        for bad in (b"alice\n", b"bad name", b"", b"x" * 65):
            request = DummyRequest([])
            request.method = b"POST"
            request.args = {b"name": [bad]}
            body = json.loads(page.render_POST(request))
            self.assertEqual(request.responseCode, 400, bad)
            self.assertTrue(body["error"].startswith("name: must be 1-64 characters"), body)


class EnrollmentTests(TestCase):
    timeout = 60

    async def test_enroll(self) -> None:
        """
        'specter client enroll' gets a client certificate from
        /_internal/pki/client (behind the /_internal credentials), issued by
        the client CA; bad credentials are refused.
        """
        import os
        import sys

        from twisted.internet.utils import getProcessOutputAndValue

        from suite.pki.ca import initBundle
        from suite.pki.load import loadClientIdentity

        base = os.path.abspath(self.mktemp())
        bundle = initBundle(os.path.join(base, "certs"), ["127.0.0.1"])
        clock = Clock()
        gateway = Gateway(
            GatewayConfig(apexes=["example.test"], advertise="127.0.0.1:443"), MemoryRouteStore(clock), clock
        )
        gateway.bundle = bundle
        admin = Resource()
        mountTunnelViews(admin, gateway, "ops", "pw")
        port, portNumber = listenLocal(Site(admin))
        self.addCleanup(port.stopListening)
        target = os.path.join(base, "carol")
        argv = [
            "-m",
            "suite.specter.client",
            "--cert-dir",
            target,
            "enroll",
            "--name",
            "carol",
            "--user",
            "ops",
            f"http://127.0.0.1:{portNumber}",
        ]
        out, err, code = await getProcessOutputAndValue(
            sys.executable, argv, env={**os.environ, "SPECTER_INTERNAL_PASS": "wrong"}
        )
        self.assertEqual(code, 2, err)
        self.assertIn(b"401", err)
        out, err, code = await getProcessOutputAndValue(
            sys.executable, argv, env={**os.environ, "SPECTER_INTERNAL_PASS": "pw"}
        )
        self.assertEqual(code, 0, err)
        identity = loadClientIdentity(target)
        assert bundle.clientCACert is not None
        self.assertEqual(identity.nodeCert.issuer, bundle.clientCACert.subject)
        self.assertEqual(oct(os.stat(os.path.join(target, "client.key")).st_mode & 0o777), "0o600")
