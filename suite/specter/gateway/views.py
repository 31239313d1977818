"""
C{/_internal/tunnels}: this gateway's links, hostnames and counters as
JSON, behind the same credentials as the rest of C{/_internal}.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource

from suite.specter.gateway.core import Gateway
from suite.web.errors import JSONMethodsMixin

__all__ = ["TunnelViews", "ClientEnrollment", "mountTunnelViews", "GatewayCollector", "apexResource"]

log = Logger()


class TunnelViews(JSONMethodsMixin):
    """
    The tunnel view.
    """

    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway

    def render_GET(self, request: Any) -> bytes:
        g = self.gateway
        links = []
        for link in sorted(g.links, key=lambda lk: lk.owner):
            links.append(
                {"owner": link.owner, "hostnames": sorted(link.hostnames), "streams": len(link.streams)}
            )
        body = {
            "gateway": g.config.advertise,
            "apexes": g.config.apexes,
            "draining": g.draining,
            "hostnames": g.registry.hostnames(),
            "links": links,
            "overlayLinks": len(g.overlayLinks),
            "linksOpened": g.metrics.linksOpened,
            "streamsOpened": g.metrics.streamsOpened,
            "errors": {str(k): v for k, v in sorted(g.metrics.errors.items())},
        }
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body, indent=2).encode() + b"\n"


class ClientEnrollment(JSONMethodsMixin):
    """
    C{POST /_internal/pki/client} with form field C{name}: mint a client
    certificate from the node's client CA and answer its PEMs as JSON
    (C{certificate}, C{key}, C{ca}).  The key is a secret: it is never
    logged and the answer is not cacheable.
    """

    isLeaf = True

    def __init__(self, bundle: Any) -> None:
        super().__init__()
        self.bundle = bundle

    def render_POST(self, request: Any) -> bytes:
        from suite.pki.ca import mintClientCertificate
        from suite.web.errors import jsonError

        names = request.args.get(b"name") or []
        name = names[0].decode("utf-8", "replace") if names else ""
        from suite.pki.names import clientName

        try:
            clientName(name)
        except ValueError as e:
            return jsonError(request, 400, f"name: {e}")
        if self.bundle is None or self.bundle.clientCAKey is None:
            return jsonError(
                request, 503, "this node holds no client-ca.key; cannot mint client certificates"
            )
        cert, key = mintClientCertificate(self.bundle, name)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        log.info("minted a client certificate for {name}", name=name)
        body = {"certificate": cert.decode(), "key": key.decode(), "ca": self.bundle.caCertPEM.decode()}
        return json.dumps(body).encode() + b"\n"


class _Overlay(Resource):
    """
    Serves C{extra} children itself and everything else from C{base}.
    """

    def __init__(self, base: IResource, extra: dict[bytes, IResource]) -> None:
        super().__init__()
        self.base = base
        self.extra = extra

    def getChildWithDefault(self, path: bytes, request: Any) -> IResource:
        if path in self.extra:
            return self.extra[path]
        request.prepath.pop()
        request.postpath.insert(0, path)
        return self.base

    def render(self, request: Any) -> Any:
        return self.base.render(request)


def mountTunnelViews(
    admin: Resource,
    gateway: Gateway,
    user: str | None,
    password: str | None,
    ldapChecker: Any = None,
    more: dict[bytes, Resource] | None = None,
) -> None:
    """
    Add C{/_internal/tunnels} (and the views in C{more}, such as
    C{/_internal/acme}) to the helper site when credentials are set (a
    static account and/or an LDAP bind checker, like the rest of
    C{/_internal}; without them the whole tree stays absent).
    """
    checkers: list[Any] = []
    if user and password:
        from suite.cred.basic import StaticPasswordChecker

        checkers.append(StaticPasswordChecker({user: password}))
    if ldapChecker is not None:
        checkers.append(ldapChecker)
    if not checkers:
        return
    from suite.cred.web import requireBasicAuth
    from suite.specter.web import internalRoot
    from suite.web.admin import AdminRoot

    pki = AdminRoot()  # JSON index and JSON 404s
    pki.putChild(b"client", ClientEnrollment(gateway.bundle))
    inner = internalRoot(admin)
    if inner is not None:
        # the ring's /_internal directory is already behind these
        # credentials: the pages join it and are listed in its index
        views: dict[bytes, Resource] = {b"tunnels": TunnelViews(gateway), b"pki": pki, **(more or {})}
        for name, view in views.items():
            inner.putChild(name, view)
        return
    existing = admin.children.get(b"_internal")
    extra = {
        b"tunnels": requireBasicAuth(TunnelViews(gateway), checkers, realm="specter"),
        b"pki": requireBasicAuth(pki, checkers, realm="specter"),
    }
    for name, view in (more or {}).items():
        extra[name] = requireBasicAuth(view, checkers, realm="specter")
    if existing is None:
        inner = AdminRoot()
        for name, child in extra.items():
            inner.putChild(name, child)
        admin.putChild(b"_internal", inner)
        return
    admin.putChild(b"_internal", _Overlay(existing, extra))


class GatewayCollector:
    """
    Prometheus metrics of the gateway, read at scrape time.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        g = self.gateway
        links = GaugeMetricFamily("specter_gateway_links", "Tunnel links held by this gateway.")
        links.add_metric([], len(g.links))
        yield links
        hosts = GaugeMetricFamily(
            "specter_gateway_hostnames", "Tunnel hostnames with a link on this gateway."
        )
        hosts.add_metric([], len(g.registry.hostnames()))
        yield hosts
        streams = GaugeMetricFamily("specter_gateway_streams", "Open streams on this gateway's tunnel links.")
        streams.add_metric([], sum(len(link.streams) for link in g.links))
        yield streams
        opened = CounterMetricFamily(
            "specter_gateway_streams_opened", "Visitor streams opened (local or forwarded)."
        )
        opened.add_metric([], g.metrics.streamsOpened)
        yield opened
        accepted = CounterMetricFamily("specter_gateway_links_opened", "Tunnel links accepted.")
        accepted.add_metric([], g.metrics.linksOpened)
        yield accepted
        errors = CounterMetricFamily(
            "specter_gateway_errors", "Visitor requests answered with an error.", labels=["code"]
        )
        for code, count in sorted(g.metrics.errors.items()):
            errors.add_metric([str(code)], count)
        yield errors


def apexResource(helper: Resource) -> Resource | None:
    """
    What apex hostnames serve: only the helper's C{/_internal} tree (absent
    without credentials, then None).
    """
    internal = helper.children.get(b"_internal")
    if internal is None:
        return None
    root = Resource()
    root.putChild(b"_internal", internal)
    return root
