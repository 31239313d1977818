"""
Observability for a gossip node: an L{IHealth} provider (ready while the
node runs and has not left; details are the members by state) and a
Prometheus collector read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from zope.interface import implementer

from suite.gossip.node import GossipNode
from suite.web.health import HealthReport
from suite.web.interfaces import IHealth

__all__ = ["GossipHealth", "GossipCollector", "register"]


@implementer(IHealth)
class GossipHealth:
    """
    C{/readyz} answer for one gossip node.
    """

    def __init__(self, node: GossipNode, name: str = "gossip") -> None:
        self.node = node
        self.name = name

    def check(self) -> HealthReport:
        summary = self.node.summary()
        reasons = []
        if not self.node.running:
            reasons.append("gossip is not running")
        elif self.node.leaving:
            reasons.append("leaving the cluster")
        return HealthReport(not reasons, tuple(reasons), summary)


class GossipCollector:
    """
    C{gossip_members{state}}, incarnation, local health score and packet
    counters.
    """

    def __init__(self, node: GossipNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:
        summary = self.node.summary()
        members = GaugeMetricFamily("gossip_members", "Known members by state.", labels=["state"])
        for state, count in sorted(summary["members"].items()):
            members.add_metric([state], count)
        yield members
        yield GaugeMetricFamily(
            "gossip_incarnation", "This node's incarnation.", value=summary["incarnation"]
        )
        yield GaugeMetricFamily(
            "gossip_health_score",
            "Lifeguard local health score (0 is healthy).",
            value=summary["healthScore"],
        )
        events = CounterMetricFamily("gossip_events", "Protocol event counters.", labels=["event"])
        for event, count in sorted(self.node.stats.items()):
            events.add_metric([event], count)
        yield events


def register(node: GossipNode, registry: CollectorRegistry) -> None:
    """
    Add the node's collector to a daemon's registry.
    """
    registry.register(GossipCollector(node))
