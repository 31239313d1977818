"""
The admin site every daemon runs: C{/healthz}, C{/readyz} and C{/metrics},
served by a L{LimitedSite} on loopback (or a unix socket) by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from suite.daemon import ConfigError, GuardedEndpointService
from suite.web.endpoint import EndpointError, loopbackEndpoint
from suite.web.errors import JSONMethodsMixin, JSONNoResource, jsonResponse
from suite.web.health import LivenessResource, ReadinessResource
from suite.web.interfaces import IHealth
from suite.web.limits import LimitedSite
from suite.web.metrics import MetricsResource

__all__ = ["AdminRoot", "makeAdminResource", "makeAdminService"]

log = Logger()


class AdminRoot(JSONMethodsMixin, Resource):
    """
    The admin root: an index at C{/}, JSON 404 for unknown paths.  Daemons
    may C{putChild} their own admin pages.
    """

    def render_GET(self, request: IRequest) -> bytes:
        names = sorted("/" + k.decode("ascii", "replace") for k in self.children if k)
        return jsonResponse(request, {"endpoints": names})

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return JSONNoResource(f"no admin resource /{path.decode('utf-8', 'replace')}")


def makeAdminResource(
    providers: Sequence[IHealth | IService],
    registry: CollectorRegistry | None = None,
    forbidSecondsSuffix: bool = False,
    clock: IReactorTime | None = None,
    readinessTimeout: float = 5.0,
) -> Resource:
    """
    Build the admin resource tree.

    @param providers: L{IHealth} providers aggregated by C{/readyz}; a plain
        L{IService} is adapted (ready while running).
    @param registry: the daemon's own registry for C{/metrics} (an empty one
        when L{None}; the global default registry is never used).
    @param forbidSecondsSuffix: refuse metrics with a seconds unit.
    @param clock: when given, a provider slower than C{readinessTimeout}
        seconds counts as not ready.
    @raise suite.web.metrics.MetricNameError: with C{forbidSecondsSuffix},
        naming a registered metric with a seconds unit.
    """
    checked = [IHealth(p) for p in providers]
    root = AdminRoot()
    root.putChild(b"healthz", LivenessResource())
    root.putChild(b"readyz", ReadinessResource(checked, clock, readinessTimeout))
    root.putChild(b"metrics", MetricsResource(registry, forbidSecondsSuffix))
    return root


def makeAdminService(
    description: str,
    resource: IResource,
    reactor: Any,
    allowRemote: bool = False,
    flag: str = "admin endpoint",
    **siteOptions: Any,
) -> IService:
    """
    Serve C{resource} through a L{LimitedSite} on the endpoint string
    C{description}.

    A TCP endpoint without an interface listens on 127.0.0.1.  Requests
    from web pages are refused on loopback connections (the site's
    C{localHostsOnly}, unless C{siteOptions} turn it off).

    @param allowRemote: permit a non-loopback interface.
    @param flag: the option or key that gave C{description}, for errors.
    @param siteOptions: passed to L{LimitedSite} (C{maxBodyBytes}, ...).
    @raise ConfigError: for a non-loopback interface without
        C{allowRemote}, or a malformed description; the message names both.
    """
    try:
        checked = loopbackEndpoint(description, allowRemote, what=flag)
        endpoint = serverFromString(reactor, checked)
    except EndpointError as e:
        raise ConfigError(str(e)) from None
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{flag} {description!r}: {e}") from None
    siteOptions.setdefault("reactor", reactor)
    # on loopback, no web page may drive it (DNS rebinding, cross-site posts)
    siteOptions.setdefault("localHostsOnly", True)
    site = LimitedSite(resource, **siteOptions)
    service = GuardedEndpointService(endpoint, site, flag, checked)
    service.setName("admin")
    return service
