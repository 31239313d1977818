"""
The node's Prometheus metrics, in a registry of its own: the guide's
peers_connected, heartbeat_latency_ms, cdm_processing_time_ms (a
histogram), message_queue_depth (messages queued to peers) and error_rate
(errors per message over the last minute) keep their names; every other
metric is C{spacecomms_} prefixed, among them
spacecomms_cdm_processing_time_p99_ms (the p99 of the last minute, the
single value the guide's thresholds mean) and spacecomms_message_queue_bytes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from suite.spacecomms.node import SpaceNode

__all__ = ["NodeMetrics"]

#: Samples kept for the recent p99 (a minute at 10,000 CDMs/s would be more).
_RECENT_MAX = 10_000
_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)


class _Live:
    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Any]:
        node = self.metrics.node
        yield GaugeMetricFamily(
            "peers_connected", "Peers with an established session.", value=len(node.links)
        )
        depth = messages = 0
        for link in node.links.values():
            depth += int(getattr(link, "queueDepth", lambda: 0)())
            messages += int(getattr(link, "queuedMessages", lambda: 0)())
        yield GaugeMetricFamily(
            "message_queue_depth", "Messages queued to peers, not yet wholly sent.", value=messages
        )
        yield GaugeMetricFamily(
            "spacecomms_message_queue_bytes", "Bytes queued to peers, not yet sent.", value=depth
        )
        yield GaugeMetricFamily(
            "spacecomms_cdm_processing_time_p99_ms",
            "99th percentile of cdm_processing_time_ms over the last 60 s (0 when idle).",
            value=self.metrics.recentP99(),
        )
        lat = GaugeMetricFamily(
            "heartbeat_latency_ms", "Half the round trip of heartbeats to each peer (ms).", labels=["peer"]
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
        self._recent: deque[tuple[float, float]] = deque()
        self.registry.register(_Live(self))

    def _bump(self, msgs: int, errs: int) -> None:
        now = self.node.now()
        self._window.append((now, msgs, errs))
        while self._window and self._window[0][0] < now - 60:
            self._window.popleft()

    def cdmProcessed(self, seconds: float) -> None:
        ms = seconds * 1000.0
        self.processing.observe(ms)
        now = self.node.now()
        self._recent.append((now, ms))
        self._trimRecent(now)

    def _trimRecent(self, now: float) -> None:
        while self._recent and (self._recent[0][0] < now - 60 or len(self._recent) > _RECENT_MAX):
            self._recent.popleft()

    def recentP99(self) -> float:
        """
        The 99th percentile (nearest rank) of the CDM processing times of the
        last 60 s, at most the last L{_RECENT_MAX} of them; 0 with none.
        """
        self._trimRecent(self.node.now())
        if not self._recent:
            return 0.0
        ordered = sorted(ms for _, ms in self._recent)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]

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
