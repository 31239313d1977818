"""
The rest of the suite's admin surface on Goop2's hub and viewer: C{/readyz}
(the same checks as the guide's C{/healthz}, in the suite's readiness
format) and C{/metrics} (Prometheus text, C{goop_} prefixed, in a registry
of each service's own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.web.resource import Resource

from suite.web.health import ReadinessResource
from suite.web.interfaces import IHealth
from suite.web.metrics import MetricsResource

__all__ = ["HubCollector", "PeerCollector", "addAdminResources"]


def _lag(lag: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "goop_event_loop_lag_seconds", "How late the last periodic reactor call fired.", value=lag.lag
    )


class HubCollector:
    """The rendezvous hub's gauges and counters, read at scrape time."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Any]:
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
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    root.putChild(b"readyz", ReadinessResource(list(providers()), clock))
    root.putChild(b"metrics", MetricsResource(registry))
