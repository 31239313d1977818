"""
The Traefik HTTP provider: dynamic configuration rendered from the
catalog, served as JSON.

Endpoints (all C{GET}, JSON):

  - C{/}: the whole dynamic configuration (what Traefik's C{providers.http.endpoint}
    polls), empty sections left out;
  - C{/api/http/routers}, C{/api/http/services}, C{/api/http/middlewares}:
    one section each;
  - C{/api/state}: this agent's view of the cluster (nodes, services with
    health, WARP status).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from suite.constellation.catalog import ServiceEntry
from suite.constellation.interfaces import IServiceCatalog
from suite.web.conditional import etagMatches
from suite.web.errors import JSONMethodsMixin, JSONNoResource, jsonResponse

__all__ = ["dynamicConfig", "traefikDocument", "ProviderRoot"]


def dynamicConfig(
    services: list[ServiceEntry],
    domain: str,
    entryPoints: Sequence[str] = ("websecure",),
    certResolver: str | None = "letsencrypt",
) -> dict[str, Any]:
    """
    Render Traefik dynamic configuration from the healthy containers of
    every node.  A Traefik service gets one server per healthy container
    that defines it, on any node (sorted by URL); its load balancer options
    come from the first definition (by container, then node).  Routers come
    from labels (the first definition of a name wins) or, for a container
    without router labels, a default router per service: ``Host(`S.DOMAIN`)``,
    plus ``Host(`S.NODE.DOMAIN`)`` while only one node runs it, on
    C{entryPoints}, with C{certResolver} when set.  A router whose service
    has no healthy server is left out, so Traefik never sees a dangling
    reference.  With nothing to serve the result is the empty but valid
    C{{"http": {"routers": {}, "services": {}, "middlewares": {}}}}.
    """
    healthy = sorted((e for e in services if e.healthy), key=lambda e: (e.name, e.node))
    servers: dict[str, set[str]] = {}
    balancers: dict[str, dict[str, Any]] = {}
    nodes: dict[str, set[str]] = {}
    for entry in healthy:
        for name, backend in entry.services.items():
            servers.setdefault(name, set()).add(backend["url"])
            nodes.setdefault(name, set()).add(entry.node)
            lb = backend.get("loadBalancer")
            balancers.setdefault(name, dict(lb) if isinstance(lb, dict) else {})
    routers: dict[str, dict[str, Any]] = {}
    for entry in healthy:
        for name, router in sorted(entry.routers.items()):
            routers.setdefault(name, dict(router))
        for name in entry.defaultRouters:
            if name in routers or name not in servers:
                continue
            rule = f"Host(`{name}.{domain}`)"
            if len(nodes[name]) == 1:
                rule += f" || Host(`{name}.{next(iter(nodes[name]))}.{domain}`)"
            router = {"rule": rule, "service": name, "entryPoints": list(entryPoints)}
            if certResolver:
                router["tls"] = {"certResolver": certResolver}
            routers[name] = router
    outRouters = {
        name: routers[name]
        for name in sorted(routers)
        if "@" in str(routers[name].get("service", "")) or routers[name].get("service") in servers
    }
    outServices: dict[str, Any] = {}
    for name in sorted(servers):
        lb = {"servers": [{"url": u} for u in sorted(servers[name])], "passHostHeader": True}
        lb.update(balancers[name])
        outServices[name] = {"loadBalancer": lb}
    return {"http": {"routers": outRouters, "services": outServices, "middlewares": {}}}


def traefikDocument(config: Mapping[str, Any]) -> dict[str, Any]:
    """
    C{config} as served to Traefik: empty sections left out (Traefik's
    HTTP provider refuses an empty C{middlewares} map as a "standalone
    element"), so nothing to serve is C{{}}.
    """
    http = {k: v for k, v in config.get("http", {}).items() if v}
    return {"http": http} if http else {}


def _body(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"


class _Page(JSONMethodsMixin, Resource):
    """
    A page of the provider: a method it does not serve is a JSON C{405},
    and a path below it a JSON C{404} (a trailing slash is the page itself).
    """

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return JSONNoResource(f"no resource {request.path.decode('utf-8', 'replace')}")


class _ConfigPage(_Page):
    """
    A JSON document with a strong ETag; a matching C{If-None-Match} is a 304.
    """

    def __init__(self, produce: Callable[[], Any]) -> None:
        super().__init__()
        self.produce = produce

    def render_GET(self, request: IRequest) -> bytes:
        body = _body(self.produce())
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        request.setHeader(b"ETag", etag)
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        if etagMatches(request.getHeader(b"if-none-match"), etag):
            request.setResponseCode(304)
            return b""
        return body


class _JSONPage(_Page):
    def __init__(self, produce: Callable[[], Any]) -> None:
        super().__init__()
        self.produce = produce

    def render_GET(self, request: IRequest) -> bytes:
        return jsonResponse(request, self.produce())


class _Branch(_Page):
    """
    C{/api}, C{/api/http}: an index of what is below.
    """

    def render_GET(self, request: IRequest) -> bytes:
        base = request.path.decode("utf-8", "replace").rstrip("/")
        names = sorted(f"{base}/{k.decode('ascii', 'replace')}" for k in self.children if k)
        return jsonResponse(request, {"endpoints": names})


class ProviderRoot(JSONMethodsMixin, Resource):
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
        entryPoints: Sequence[str] = ("websecure",),
        certResolver: str | None = "letsencrypt",
        extra: Callable[[], Mapping[str, Any]] = dict,
    ) -> None:
        super().__init__()
        self.extra = extra
        self.catalog = IServiceCatalog(catalog)
        self.domain = domain
        self.entryPoints = tuple(entryPoints)
        self.certResolver = certResolver
        self.admin = admin
        self._root = _ConfigPage(lambda: traefikDocument(self.config()))
        api = _Branch()
        httpBranch = _Branch()
        for section in ("routers", "services", "middlewares"):
            httpBranch.putChild(
                section.encode(),
                _ConfigPage(partial(self._httpSection, section)),
            )
        api.putChild(b"http", httpBranch)
        api.putChild(b"state", _JSONPage(self.state))
        self.putChild(b"api", api)
        self.warp = warp

    def _httpSection(self, name: str) -> Any:
        return self.config()["http"][name]

    def config(self) -> dict[str, Any]:
        """
        The current dynamic configuration.
        """
        return dynamicConfig(self.catalog.services(), self.domain, self.entryPoints, self.certResolver)

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
            **self.extra(),
        }

    def render_GET(self, request: IRequest) -> bytes:
        return self._root.render_GET(request)

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        child: IResource = self.admin.getChildWithDefault(path, request)
        return child
