"""
The Traefik HTTP provider: rendering and the served endpoints.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.constellation.catalog import LocalCatalog, ServiceEntry
from suite.constellation.interfaces import IServiceCatalog
from suite.constellation.traefik import ProviderRoot, dynamicConfig
from suite.web.admin import makeAdminResource

EMPTY: dict[str, Any] = {"http": {"routers": {}, "services": {}, "middlewares": {}}}


class DynamicConfigTests(SynchronousTestCase):
    """
    L{dynamicConfig} renders healthy services with backends.
    """

    def test_empty(self) -> None:
        """
        No services: an empty but valid configuration.
        """
        self.assertEqual(dynamicConfig([], "bolabaden.org"), EMPTY)

    def test_services(self) -> None:
        """
        One router and load balancer per service name; unhealthy entries and
        entries without backends are left out; replicas are merged.
        """
        entries = [
            ServiceEntry("whoami", "node1", ("http://10.0.0.1:80",)),
            ServiceEntry("whoami", "node2", ("http://10.0.0.2:80",)),
            ServiceEntry("grafana", "node1", ("http://10.0.0.1:3000",)),
            ServiceEntry("broken", "node1", ("http://10.0.0.1:9",), healthy=False),
            ServiceEntry("nobackend", "node1", ()),
            ServiceEntry(
                "custom", "node2", ("http://10.0.0.2:1",), rule="PathPrefix(`/x`)", certResolver=None
            ),
        ]
        config = dynamicConfig(entries, "bolabaden.org")["http"]
        self.assertEqual(sorted(config["routers"]), ["custom", "grafana", "whoami"])
        self.assertEqual(
            config["routers"]["grafana"],
            {
                "rule": "Host(`grafana.bolabaden.org`) || Host(`grafana.node1.bolabaden.org`)",
                "service": "grafana",
                "entryPoints": ["websecure"],
                "tls": {"certResolver": "letsencrypt"},
            },
        )
        self.assertEqual(config["routers"]["whoami"]["rule"], "Host(`whoami.bolabaden.org`)")
        self.assertEqual(
            config["services"]["whoami"]["loadBalancer"]["servers"],
            [{"url": "http://10.0.0.1:80"}, {"url": "http://10.0.0.2:80"}],
        )
        self.assertEqual(config["routers"]["custom"]["rule"], "PathPrefix(`/x`)")
        self.assertNotIn("tls", config["routers"]["custom"])


class ProviderResourceTests(SynchronousTestCase):
    """
    The endpoints Traefik and operators read.
    """

    def setUp(self) -> None:
        self.catalog = LocalCatalog("cloudserver1", "203.0.113.7")
        admin = makeAdminResource([])
        root = ProviderRoot(self.catalog, "bolabaden.org", admin, lambda: {"monitored": False})
        self.client: Any = StubTreq(root)

    def get(self, path: str) -> tuple[int, Any]:
        d = self.client.get("http://localhost:8081" + path)
        self.client.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        try:
            return response.code, json.loads(body)
        except ValueError:
            return response.code, body

    def test_catalogInterface(self) -> None:
        """
        The catalog provides L{IServiceCatalog}.
        """
        self.assertTrue(verifyObject(IServiceCatalog, self.catalog))

    def test_emptyConfig(self) -> None:
        """
        /, /api/http/routers, /api/http/services and /api/http/middlewares
        answer valid JSON with no services.
        """
        self.assertEqual(self.get("/"), (200, EMPTY))
        self.assertEqual(self.get("/api/http/routers"), (200, {}))
        self.assertEqual(self.get("/api/http/services"), (200, {}))
        self.assertEqual(self.get("/api/http/middlewares"), (200, {}))

    def test_withService(self) -> None:
        """
        A service in the catalog appears in the routers and services sections.
        """
        self.catalog.put(ServiceEntry("whoami", "cloudserver1", ("http://10.0.0.1:80",)))
        code, routers = self.get("/api/http/routers")
        self.assertEqual(list(routers), ["whoami"])
        code, services = self.get("/api/http/services")
        self.assertEqual(services["whoami"]["loadBalancer"]["servers"], [{"url": "http://10.0.0.1:80"}])
        self.catalog.remove("whoami", "cloudserver1")
        self.assertEqual(self.get("/")[1], EMPTY)

    def test_state(self) -> None:
        """
        /api/state lists this node with its priority, the services and WARP status.
        """
        code, state = self.get("/api/state")
        self.assertEqual(code, 200)
        self.assertEqual(
            state["nodes"],
            [{"name": "cloudserver1", "priority": 10, "status": "alive", "publicIP": "203.0.113.7"}],
        )
        self.assertEqual(state["services"], [])
        self.assertEqual(state["warp"], {"monitored": False})

    def test_adminAndUnknown(self) -> None:
        """
        /healthz comes from the admin resource; unknown paths are JSON 404s.
        """
        self.assertEqual(self.get("/healthz"), (200, b"ok\n"))
        code, body = self.get("/api/nope")
        self.assertEqual(code, 404)
        self.assertIn("error", body)
        self.assertEqual(self.get("/nope")[0], 404)
