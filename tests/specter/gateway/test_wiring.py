"""
C{specter server --apex ...} builds the gateway from real argument lists
(under a MemoryReactorClock: nothing listens).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.daemon import ConfigError
from suite.pki.ca import initBundle
from suite.specter.gateway.service import GatewayService
from suite.specter.options import Options


def _build(test: SynchronousTestCase, *extra: str, reactor: Any = None) -> Any:
    from suite.specter.service import makeServerService

    base = os.path.abspath(test.mktemp())
    initBundle(os.path.join(base, "certs"), ["127.0.0.1"])
    options = Options({})
    options.parseOptions(
        [
            "server",
            "--data",
            os.path.join(base, "data"),
            "--cert",
            os.path.join(base, "certs"),
            "--kv",
            "memory",
            "--virtual",
            "1",
            *extra,
        ]
    )
    return makeServerService(options.subOptions, reactor or MemoryReactorClock())


def _gateway(root: Any) -> GatewayService:
    (svc,) = [s for s in root if isinstance(s, GatewayService)]
    return svc


class WiringTests(SynchronousTestCase):
    def test_apexStartsTheGateway(self) -> None:
        """
        With --apex the gateway owns the TCP port; buffer flags reach it;
        with the advertised port 443 the HTTP listener defaults to :80.
        """
        root = _build(
            self,
            "--apex",
            "Example.TEST",
            "--listen-tcp",
            "127.0.0.1:443",
            "--proxy-buffer",
            "32KiB",
            "--transport-buffer",
            "64KiB",
        )
        gw = _gateway(root)
        self.assertEqual(gw.endpoints, ["tcp:443:interface=127.0.0.1"])
        self.assertEqual([e for e, _ in gw.extraListeners], ["tcp:80:interface=127.0.0.1"])
        self.assertEqual(gw.gateway.config.apexes, ["example.test"])
        self.assertEqual(gw.gateway.config.chunk, 32 * 1024)
        self.assertEqual(gw.gateway.config.transportBuffer, 64 * 1024)

    def test_noHTTPListenerUnlessAsked(self) -> None:
        """
        On another advertised port the HTTP listener starts only when
        --listen-http is given; --proxy-protocol wraps both listeners.
        """
        gw = _gateway(_build(self, "--apex", "example.test", "--listen-tcp", "127.0.0.1:8443"))
        self.assertEqual(gw.extraListeners, [])
        gw = _gateway(
            _build(
                self,
                "--apex",
                "example.test",
                "--listen-tcp",
                "127.0.0.1:8443",
                "--listen-http",
                "127.0.0.1:8080",
                "--proxy-protocol",
            )
        )
        self.assertEqual([e for e, _ in gw.extraListeners], ["tcp:8080:interface=127.0.0.1"])
        from suite.specter.gateway.proxyproto import ProxyHeaderFactory

        self.assertIsInstance(gw.factory, ProxyHeaderFactory)
        self.assertIsInstance(gw.extraListeners[0][1], ProxyHeaderFactory)

    def test_quicNeedsAsyncio(self) -> None:
        """
        An explicit --listen-udp without the asyncio reactor is a one-line
        start-up error naming the flag.
        """
        with self.assertRaises(ConfigError) as e:
            _build(
                self,
                "--apex",
                "example.test",
                "--listen-tcp",
                "127.0.0.1:8443",
                "--listen-udp",
                "127.0.0.1:8443",
            )
        self.assertIn("--listen-udp", str(e.exception))
        self.assertIn("asyncio", str(e.exception))

    def test_withoutApexNoGateway(self) -> None:
        """
        Without --apex the ring keeps its own listener and no gateway runs.
        """
        root = _build(self, "--listen-tcp", "127.0.0.1:8443")
        self.assertEqual([s for s in root if isinstance(s, GatewayService)], [])


class HelperPagesTests(TestCase):
    async def test_acmeInventoryWithoutACME(self) -> None:
        """
        A gateway without --acme still answers /_internal/acme (listed in
        the /_internal index): no certificates, and why.
        """
        import json

        import treq

        from suite.web.limits import LimitedSite
        from tests.specter.gateway.support import listenLocal

        root = _build(self, "--apex", "example.test", "--auth_user", "ops", "--auth_pass", "pw")
        (site,) = [s.factory for s in root if isinstance(getattr(s, "factory", None), LimitedSite)]
        port, portNumber = listenLocal(site)
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{portNumber}/_internal"
        r: Any = await treq.get(base, auth=("ops", "pw"), persistent=False)
        self.assertIn("/acme", json.loads(await r.content())["endpoints"])
        r = await treq.get(f"{base}/acme", auth=("ops", "pw"), persistent=False)
        self.assertEqual(r.code, 200)
        body = json.loads(await r.content())
        self.assertEqual((body["directory"], body["certificates"]), (None, []))
        self.assertIn("no --acme", body["reason"])
