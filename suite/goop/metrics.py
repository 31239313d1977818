"""
The rest of the suite's admin surface on Goop2's hub and viewer: C{/readyz}
(the same checks as the guide's C{/healthz}, in the suite's readiness
format) and C{/metrics} (Prometheus text, C{goop_} prefixed, in a registry
of each service's own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from suite.web.health import ReadinessResource
from suite.web.interfaces import IHealth

# prometheus_client (with the http.server, wsgiref and gzip modules its
# exposition imports) is loaded at the first scrape, not at start-up: an
# unscraped peer or hub does not pay for it (docs/performance.md).
if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily

__all__ = ["HubCollector", "PeerCollector", "addAdminResources"]


def _lag(lag: Any) -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(
        "goop_event_loop_lag_seconds", "How late the last periodic reactor call fired.", value=lag.lag
    )


class HubCollector:
    """The rendezvous hub's gauges and counters, read at scrape time."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        hub = self.hub
        yield GaugeMetricFamily("goop_hub_peers", "Peers the hub currently lists.", value=len(hub.registry))
        yield CounterMetricFamily(
            "goop_hub_publications", "Presence publications accepted.", value=hub.published
        )
        yield CounterMetricFamily(
            "goop_hub_publications_refused", "Presence publications refused.", value=hub.refused
        )
        yield GaugeMetricFamily(
            "goop_hub_event_clients", "Clients connected to /events.", value=hub.sse.clientCount
        )
        yield _lag(hub.lag)


class PeerCollector:
    """A peer's gauges, read at scrape time."""

    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        peer = self.peer
        known = len(peer.directory.peers()) if peer.directory is not None else 0
        yield GaugeMetricFamily("goop_peers_known", "Other peers this peer knows of.", value=known)
        yield GaugeMetricFamily(
            "goop_log_entries", "Entries held in the in-memory log buffer.", value=len(peer.logs.entries)
        )
        yield _lag(peer.lag)


def addAdminResources(
    root: Resource,
    providers: Callable[[], Sequence[IHealth]],
    collector: Any,
    clock: Any,
) -> None:
    """
    Put C{/readyz} (over C{providers}) and C{/metrics} (C{collector} in a
    registry of its own) under C{root}.
    """
    root.putChild(b"readyz", ReadinessResource(list(providers()), clock))
    root.putChild(b"metrics", _MetricsOnFirstUse(collector))


class _MetricsOnFirstUse(Resource):
    """
    C{/metrics}: the suite's L{suite.web.metrics.MetricsResource} over
    C{collector} in a registry of its own, both made at the first request.
    """

    isLeaf = True

    def __init__(self, collector: Any) -> None:
        super().__init__()
        self.collector = collector
        self.metrics: Resource | None = None

    def render(self, request: IRequest) -> bytes | int:
        if self.metrics is None:
            from prometheus_client import CollectorRegistry

            from suite.web.metrics import MetricsResource

            registry = CollectorRegistry(auto_describe=True)
            registry.register(self.collector)
            self.metrics = MetricsResource(registry)
        result: bytes | int = self.metrics.render(request)
        return result
