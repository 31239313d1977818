"""
Readiness of a CEPtra node: the placement feed must be fresh and a Raft
leader known.  Each check is an L{IHealth} provider for C{/readyz}.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from suite.ceptra.interfaces import IRaftStatus
from suite.clustor.interfaces import IFeedClient
from suite.clustor.placement import placementFor
from suite.web.health import HealthReport
from suite.web.interfaces import IHealth

__all__ = [
    "PlacementFeedHealth",
    "PartitionsHealth",
    "ActivationHealth",
]


@implementer(IHealth)
class PlacementFeedHealth:
    """
    Not ready while the placement (routing) feed was never fetched or is
    older than the client's staleness threshold.  When fresh, the details
    show this node's placement (hosted partitions, their warmup readiness,
    pending activation barriers), found by its SPIFFE ID.
    """

    name = "placement"

    def __init__(self, feeds: IFeedClient, spiffe: str | None = None, feed: str = "placement") -> None:
        self.feeds = IFeedClient(feeds)
        self.spiffe = spiffe
        self.feed = feed

    def check(self) -> HealthReport:
        staleness = self.feeds.stalenessMs(self.feed)
        details = {"feed": self.feed, "stalenessMs": round(staleness)}
        if self.feeds.latest(self.feed) is None:
            error = getattr(self.feeds, "lastError", lambda f: None)(self.feed)
            why = f"placement feed never fetched ({error})" if error else "placement feed never fetched"
            return HealthReport(False, (why,), details)
        if self.feeds.isStale(self.feed):
            return HealthReport(False, (f"placement feed stale for {staleness:.0f} ms",), details)
        doc = self.feeds.latest(self.feed) or {}
        details["revision"] = doc.get("revision")
        if self.spiffe is not None:
            details["node"] = placementFor(
                self.spiffe, doc, self._latest("warmup"), self._latest("activation")
            ).toJSON()
        return HealthReport(True, (), details)

    def _latest(self, feed: str) -> Any:
        return self.feeds.latest(feed) if feed in self.feeds.feeds else None


@implementer(IHealth)
class PartitionsHealth:
    """
    Not ready while a hosted partition has no known leader, its replica's
    match index trails the committed index by more than the bound, or its
    group is still starting.  The details carry the CEP overlay of each
    hosted partition: Raft role, indexes, rule version, engine status.

    @param manager: the L{suite.ceptra.partitions.PartitionManager}.
    """

    name = "raft"

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.raft = IRaftStatus(manager)

    def check(self) -> HealthReport:
        reasons = tuple(self.raft.notReadyReasons())
        details = {
            "partitions": {pid: self.manager.partitionStatus(pid) for pid in self.manager.hostedIds()},
            # replicas that no longer run here, data kept (retired ones left
            # their group for good; stopped and orphaned ones were never told
            # so): never reasons, they are not hosted partitions
            **self.manager.diskStatuses(),
        }
        return HealthReport(not reasons, reasons, details)


@implementer(IHealth)
class ActivationHealth:
    """
    Not ready while a hosted partition is not warm (warmup feed) or an
    activation barrier involving one of them is not ready.
    """

    name = "activation"

    def __init__(self, feeds: IFeedClient, spiffe: str) -> None:
        self.feeds = IFeedClient(feeds)
        self.spiffe = spiffe

    def check(self) -> HealthReport:
        def latest(feed: str) -> Any:
            return self.feeds.latest(feed) if feed in self.feeds.feeds else None

        placement = placementFor(self.spiffe, latest("placement"), latest("warmup"), latest("activation"))
        reasons = []
        if latest("warmup") is None:
            reasons.append("warmup feed never fetched")
        if latest("activation") is None:
            reasons.append("activation feed never fetched")
        for pid in placement.partitions:
            if not placement.warm.get(pid):
                reasons.append(f"partition {pid}: warmup not ready")
        for barrier in placement.pendingBarriers:
            reasons.append(f"activation barrier {barrier} not ready")
        return HealthReport(not reasons, tuple(reasons), placement.toJSON())
