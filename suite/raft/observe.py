"""
Observability for a Raft node: an L{IHealth} provider (ready when a leader
is known and the node has applied what it committed, with a reason
otherwise) and a Prometheus collector with C{_ms}/index gauges.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from zope.interface import implementer

from suite.raft.node import RaftNode
from suite.web.health import HealthReport
from suite.web.interfaces import IHealth


@implementer(IHealth)
class RaftHealth:
    """
    C{/readyz} answer for one node.
    """

    def __init__(self, node: RaftNode, name: str = "raft") -> None:
        self.node = node
        self.name = name

    def check(self) -> HealthReport:
        status = self.node.status()
        reasons = []
        if status["leader"] is None:
            reasons.append(self.node.whyNotLeader())
        if status["appliedIndex"] < status["commitIndex"]:
            reasons.append(
                f"applied index {status['appliedIndex']} is behind commit index {status['commitIndex']}"
            )
        return HealthReport(not reasons, tuple(reasons), status)


class RaftCollector:
    """
    Gauges read from the node at scrape time.
    """

    def __init__(self, node: RaftNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:
        s = self.node.status()
        for name, doc, value in (
            ("raft_term", "Current term.", s["term"]),
            ("raft_commit_index", "Highest committed log index.", s["commitIndex"]),
            ("raft_applied_index", "Highest applied log index.", s["appliedIndex"]),
            ("raft_last_index", "Last log index.", s["lastIndex"]),
            ("raft_snapshot_index", "Index of the latest snapshot.", s["snapshotIndex"]),
            ("raft_is_leader", "1 on the leader.", 1 if s["role"] == "leader" else 0),
            ("raft_leader_known", "1 when a leader is known.", 0 if s["leader"] is None else 1),
            (
                "raft_foreign_peers",
                "Peers heard from in the last minute that belong to another Raft group.",
                len(s["foreignPeers"]),
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        match = GaugeMetricFamily("raft_match_index", "Leader's view of each member's log.", labels=["node"])
        for peer, index in sorted(s["matchIndex"].items()):
            match.add_metric([peer], index)
        yield match
        t = self.node.settings
        yield GaugeMetricFamily(
            "raft_election_timeout_min_ms", "Election timeout floor.", value=t.electionTimeoutMin * 1000
        )
        yield GaugeMetricFamily(
            "raft_heartbeat_interval_ms", "Heartbeat interval.", value=t.heartbeatInterval * 1000
        )


def makeRegistry(node: RaftNode) -> tuple[CollectorRegistry, Histogram]:
    """
    A registry with the node's gauges and a commit-latency histogram.
    """
    registry = CollectorRegistry()
    registry.register(RaftCollector(node))
    latency = Histogram(
        "raft_commit_latency_ms",
        "Time from proposal to applied result on the leader.",
        buckets=(0.5, 1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000),
        registry=registry,
    )
    return registry, latency
