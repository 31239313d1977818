"""
The node's Prometheus metrics, in a registry of its own: the guide's
peers_connected, heartbeat_latency_ms, cdm_processing_time_ms,
message_queue_depth and error_rate (errors per message over the last
minute) keep their names; every other metric is C{spacecomms_} prefixed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from suite.spacecomms.node import SpaceNode

__all__ = ["NodeMetrics"]

_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)


class _Live:
    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Any]:
        node = self.metrics.node
        yield GaugeMetricFamily(
            "peers_connected", "Peers with an established session.", value=len(node.links)
        )
        depth = 0
        for link in node.links.values():
            depth += int(getattr(link, "queueDepth", lambda: 0)())
        yield GaugeMetricFamily("message_queue_depth", "Bytes queued to peers, not yet written.", value=depth)
        lat = GaugeMetricFamily(
            "heartbeat_latency_ms", "Age of the last heartbeat on arrival, per peer (ms).", labels=["peer"]
        )
        for peer, ms in sorted(self.metrics.latency.items()):
            if peer in node.links:
                lat.add_metric([peer], ms)
        yield lat
        yield GaugeMetricFamily(
            "error_rate", "Errors per received message over the last 60 s.", value=self.metrics.errorRate()
        )
        yield GaugeMetricFamily(
            "spacecomms_cdms_active", "Active CDMs held.", value=node.store.count("cdm", True)
        )
        yield GaugeMetricFamily(
            "spacecomms_objects_tracked", "Active object states held.", value=node.store.count("object", True)
        )


class NodeMetrics:
    """
    Counters the node updates, plus gauges read live at scrape time.
    """

    def __init__(self, node: SpaceNode) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        self.latency: dict[str, float] = {}
        self.processing = Histogram(
            "cdm_processing_time_ms",
            "Time to validate, store and route one CDM (ms).",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.messages = Counter(
            "spacecomms_peer_messages_received", "Messages received from peers.", registry=self.registry
        )
        self.errors = Counter(
            "spacecomms_peer_errors", "Errors (ERROR messages sent, invalid input).", registry=self.registry
        )
        self.invalid = Counter(
            "spacecomms_cdm_validation_failures", "CDMs rejected by validation.", registry=self.registry
        )
        self._window: deque[tuple[float, int, int]] = deque()
        self.registry.register(_Live(self))  # type: ignore[arg-type]

    def _bump(self, msgs: int, errs: int) -> None:
        now = self.node.now()
        self._window.append((now, msgs, errs))
        while self._window and self._window[0][0] < now - 60:
            self._window.popleft()

    def cdmProcessed(self, seconds: float) -> None:
        self.processing.observe(seconds * 1000.0)

    def received(self) -> None:
        self.messages.inc()
        self._bump(1, 0)

    def error(self) -> None:
        self.errors.inc()
        self._bump(0, 1)

    def invalidCDM(self) -> None:
        self.invalid.inc()

    def heartbeat(self, peer: str, ms: float) -> None:
        self.latency[peer] = ms

    def errorRate(self) -> float:
        now = self.node.now()
        msgs = sum(m for t, m, _ in self._window if t >= now - 60)
        errs = sum(e for t, _, e in self._window if t >= now - 60)
        return errs / msgs if msgs else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
