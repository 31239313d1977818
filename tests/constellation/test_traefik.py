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


def entry(name: str, node: str, url: str, healthy: bool = True, **kw: Any) -> ServiceEntry:
    """
    A container on C{node} serving Traefik service C{name} at C{url}, with a
    default router unless routers are given.
    """
    services = kw.pop("services", {name: {"url": url, "loadBalancer": {}}})
    routers = kw.pop("routers", {})
    return ServiceEntry(
        f"{name}-{node}",
        node,
        healthy=healthy,
        services=services,
        routers=routers,
        defaultRouters=() if routers else tuple(services),
    )


class DynamicConfigTests(SynchronousTestCase):
    """
    L{dynamicConfig} renders the healthy containers of every node.
    """

    def test_empty(self) -> None:
        """
        No services: an empty but valid configuration.
        """
        self.assertEqual(dynamicConfig([], "bolabaden.org"), EMPTY)

    def test_services(self) -> None:
        """
        One load balancer per Traefik service over the healthy containers of
        every node; default routers under DOMAIN (with the node's name while
        one node runs it); label routers as given; a router whose service
        has no healthy server is left out.
        """
        entries = [
            entry("whoami", "node2", "http://10.0.0.2:80"),
            entry("whoami", "node1", "http://10.0.0.1:80"),
            entry("grafana", "node1", "http://10.0.0.1:3000"),
            entry("broken", "node1", "http://10.0.0.1:9", healthy=False),
            entry(
                "custom",
                "node2",
                "http://10.0.0.2:1",
                routers={"c": {"rule": "PathPrefix(`/x`)", "service": "custom", "entryPoints": ["web"]}},
            ),
            entry(
                "api",
                "node2",
                "",
                services={
                    "api": {"url": "http://10.0.0.2:5", "loadBalancer": {"healthCheck": {"path": "/h"}}}
                },
                routers={"dangling": {"rule": "Host(`d`)", "service": "nothing"}},
            ),
        ]
        config = dynamicConfig(entries, "bolabaden.org")["http"]
        self.assertEqual(list(config["routers"]), ["c", "grafana", "whoami"])
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
        self.assertEqual(
            config["routers"]["c"], {"rule": "PathPrefix(`/x`)", "service": "custom", "entryPoints": ["web"]}
        )
        self.assertEqual(list(config["services"]), ["api", "custom", "grafana", "whoami"])
        self.assertEqual(config["services"]["api"]["loadBalancer"]["healthCheck"], {"path": "/h"})
        plain = dynamicConfig(entries, "example.test", ["web"], None)["http"]["routers"]["grafana"]
        self.assertEqual(plain["entryPoints"], ["web"])
        self.assertNotIn("tls", plain)
        self.assertEqual(
            dynamicConfig(list(reversed(entries)), "bolabaden.org"), dynamicConfig(entries, "bolabaden.org")
        )


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
        self.assertEqual(self.get("/"), (200, {}))
        self.assertEqual(self.get("/api/http/routers"), (200, {}))
        self.assertEqual(self.get("/api/http/services"), (200, {}))
        self.assertEqual(self.get("/api/http/middlewares"), (200, {}))

    def test_withService(self) -> None:
        """
        A service in the catalog appears in the routers and services sections.
        """
        self.catalog.put(entry("whoami", "cloudserver1", "http://10.0.0.1:80"))
        code, routers = self.get("/api/http/routers")
        self.assertEqual(list(routers), ["whoami"])
        code, services = self.get("/api/http/services")
        self.assertEqual(services["whoami"]["loadBalancer"]["servers"], [{"url": "http://10.0.0.1:80"}])
        self.catalog.remove("whoami-cloudserver1", "cloudserver1")
        self.assertEqual(self.get("/")[1], {})

    def test_state(self) -> None:
        """
        /api/state lists this node with its priority, the services and WARP status.
        """
        code, state = self.get("/api/state")
        self.assertEqual(code, 200)
        self.assertEqual(
            state["nodes"],
            [
                {
                    "name": "cloudserver1",
                    "priority": 10,
                    "status": "alive",
                    "publicIP": "203.0.113.7",
                    "roles": [],
                }
            ],
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

    def request(self, method: str, path: str) -> tuple[int, Any, Any]:
        d = self.client.request(method, "http://localhost:8081" + path, data=b"x")
        self.client.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response.code, response.headers, json.loads(body)

    def test_methodsAndPaths(self) -> None:
        """
        A method a page does not serve is a JSON 405 naming the allowed ones
        (never Twisted's HTML pages, nor 501); a path below a page is a JSON
        404; C{/api} and C{/api/http} list what is below them.
        """
        for path in ("/", "/api/http/routers", "/api/http/services", "/api/state", "/api", "/api/http"):
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                code, headers, body = self.request(method, path)
                self.assertEqual(code, 405, (method, path))
                self.assertEqual(body["error"], f"method {method} not allowed")
                self.assertIn("GET", body["allowed"])
                self.assertIn(b"GET", headers.getRawHeaders(b"allow")[0])
        for path in ("/api/http/routers/x", "/api/state/x", "/api/http/x", "/api/http/routers/x/y"):
            code, body = self.get(path)
            self.assertEqual(code, 404, path)
            self.assertEqual(body["error"], f"no resource {path}")
        self.assertEqual(self.get("/api/http/routers/"), (200, {}))
        self.assertEqual(
            self.get("/api/http"),
            (
                200,
                {"endpoints": ["/api/http/middlewares", "/api/http/routers", "/api/http/services"]},
            ),
        )
        self.assertEqual(self.get("/api"), (200, {"endpoints": ["/api/http", "/api/state"]}))

    def test_etag(self) -> None:
        """
        The configuration carries an ETag; the same ETag in If-None-Match is
        a 304 without a body; a change changes the ETag.
        """
        d = self.client.get("http://localhost:8081/")
        self.client.flush()
        first = self.successResultOf(d)
        etag = first.headers.getRawHeaders(b"etag")[0]
        d = self.client.get("http://localhost:8081/", headers={b"If-None-Match": [etag]})
        self.client.flush()
        second = self.successResultOf(d)
        self.assertEqual(second.code, 304)
        self.assertEqual(self.successResultOf(second.content()), b"")
        for match in (b"W/" + etag, b'"other", ' + etag, b"*"):
            d = self.client.get("http://localhost:8081/", headers={b"If-None-Match": [match]})
            self.client.flush()
            self.assertEqual(self.successResultOf(d).code, 304, match)
        self.catalog.put(entry("whoami", "cloudserver1", "http://10.0.0.1:80"))
        d = self.client.get("http://localhost:8081/", headers={b"If-None-Match": [etag]})
        self.client.flush()
        third = self.successResultOf(d)
        self.assertEqual(third.code, 200)
        self.assertNotEqual(third.headers.getRawHeaders(b"etag")[0], etag)
