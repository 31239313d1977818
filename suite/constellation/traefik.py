"""
The Traefik HTTP provider: dynamic configuration rendered from the
catalog, served as JSON.

Endpoints (all C{GET}, JSON):

  - C{/}: the whole dynamic configuration (what Traefik's C{providers.http.endpoint}
    polls);
  - C{/api/http/routers}, C{/api/http/services}, C{/api/http/middlewares}:
    one section each;
  - C{/api/state}: this agent's view of the cluster (nodes, services with
    health, WARP status).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from suite.constellation.catalog import ServiceEntry
from suite.constellation.interfaces import IServiceCatalog
from suite.web.errors import JSONNoResource, jsonResponse

__all__ = ["dynamicConfig", "ProviderRoot", "routerRule"]


def routerRule(entry: ServiceEntry, domain: str) -> str:
    """
    The router rule of C{entry}: its own, or C{Host(`NAME.DOMAIN`)} plus the
    per-node name C{Host(`NAME.NODE.DOMAIN`)}.
    """
    if entry.rule:
        return entry.rule
    return f"Host(`{entry.name}.{domain}`) || Host(`{entry.name}.{entry.node}.{domain}`)"


def dynamicConfig(services: list[ServiceEntry], domain: str) -> dict[str, Any]:
    """
    Render Traefik dynamic configuration for the healthy services that have
    at least one backend URL.  Entries of the same name on several nodes
    share one router and one load balancer.  With no services the result is
    the empty but valid C{{"http": {"routers": {}, "services": {}, "middlewares": {}}}}.
    """
    routers: dict[str, Any] = {}
    backends: dict[str, dict[str, Any]] = {}
    byName: dict[str, list[ServiceEntry]] = {}
    for entry in services:
        if entry.healthy and entry.urls:
            byName.setdefault(entry.name, []).append(entry)
    for name in sorted(byName):
        entries = byName[name]
        first = entries[0]
        if len(entries) == 1:
            rule = routerRule(first, domain)
        else:
            rule = first.rule or f"Host(`{name}.{domain}`)"
        router: dict[str, Any] = {
            "rule": rule,
            "service": name,
            "entryPoints": list(first.entryPoints),
        }
        if first.certResolver:
            router["tls"] = {"certResolver": first.certResolver}
        routers[name] = router
        urls = sorted({u for e in entries for u in e.urls})
        backends[name] = {"loadBalancer": {"servers": [{"url": u} for u in urls], "passHostHeader": True}}
    return {"http": {"routers": routers, "services": backends, "middlewares": {}}}


class _JSONPage(Resource):
    isLeaf = True

    def __init__(self, produce: Callable[[], Any]) -> None:
        super().__init__()
        self.produce = produce

    def render_GET(self, request: IRequest) -> bytes:
        return jsonResponse(request, self.produce())


class _Branch(Resource):
    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return JSONNoResource(f"no resource {request.path.decode('utf-8', 'replace')}")


class ProviderRoot(Resource):
    """
    The provider's root: C{/} is the whole dynamic configuration; C{/api/...}
    are the sections and the state view; anything else is looked up in
    C{admin} (C{/healthz}, C{/readyz}, C{/metrics}).
    """

    def __init__(
        self,
        catalog: IServiceCatalog,
        domain: str,
        admin: Resource,
        warp: Callable[[], Mapping[str, Any]],
    ) -> None:
        super().__init__()
        self.catalog = IServiceCatalog(catalog)
        self.domain = domain
        self.admin = admin
        api = _Branch()
        httpBranch = _Branch()
        for section in ("routers", "services", "middlewares"):
            httpBranch.putChild(
                section.encode(),
                _JSONPage(lambda s=section: self.config()["http"][s]),  # type: ignore[misc]
            )
        api.putChild(b"http", httpBranch)
        api.putChild(b"state", _JSONPage(self.state))
        self.putChild(b"api", api)
        self.warp = warp

    def config(self) -> dict[str, Any]:
        """
        The current dynamic configuration.
        """
        return dynamicConfig(self.catalog.services(), self.domain)

    def state(self) -> dict[str, Any]:
        """
        This agent's view of the cluster.
        """
        return {
            "node": self.catalog.nodeName,
            "domain": self.domain,
            "nodes": [n.toJSON() for n in self.catalog.nodes()],
            "services": [s.toJSON() for s in self.catalog.services()],
            "warp": dict(self.warp()),
        }

    def render_GET(self, request: IRequest) -> bytes:
        return jsonResponse(request, self.config())

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return self.admin.getChildWithDefault(path, request)
