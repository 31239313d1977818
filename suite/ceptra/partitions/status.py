"""
The metrics of a node's partitions (C{ceptra_partition_*}, C{ceptra_raft_*}):
a collector asked at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from suite.ceptra.partitions.lifecycle import DESCRIBED_STATES

if TYPE_CHECKING:
    from suite.ceptra.partitions.manager import PartitionManager

__all__ = ["REPORTED_STATES", "PartitionCollector"]

#: The label values of C{ceptra_partition_state}: the lifecycle machine's
#: states, and C{orphaned} (a replica stopped without its removal known
#: committed, whose partition is not in the routing table).
REPORTED_STATES = DESCRIBED_STATES + ("orphaned",)


class PartitionCollector:
    def __init__(self, manager: PartitionManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        labels = ["partition"]
        committed = GaugeMetricFamily(
            "ceptra_partition_committed_index",
            "Highest log index the partition's group committed.",
            labels=labels,
        )
        match = GaugeMetricFamily(
            "ceptra_partition_match_index",
            "Highest log index of this replica known to match the leader's log.",
            labels=labels,
        )
        applied = GaugeMetricFamily(
            "ceptra_partition_applied_index", "Highest log index applied to the engine.", labels=labels
        )
        leader = GaugeMetricFamily(
            "ceptra_partition_leader", "1 when this node leads the partition's group.", labels=labels
        )
        term = GaugeMetricFamily(
            "ceptra_partition_term", "Current Raft term of the partition.", labels=labels
        )
        events = CounterMetricFamily(
            "ceptra_partition_events", "Events applied to the partition's engine.", labels=labels
        )
        dups = CounterMetricFamily(
            "ceptra_partition_duplicate_events", "Events dropped as duplicates by event_id.", labels=labels
        )
        rules = GaugeMetricFamily(
            "ceptra_partition_rules_version", "Rules documents applied to the partition.", labels=labels
        )
        placementEpoch = GaugeMetricFamily(
            "ceptra_partition_placement_epoch",
            "Placement epoch this node applied for the partition (from the routing feed).",
            labels=labels,
        )
        configEpoch = GaugeMetricFamily(
            "ceptra_partition_config_epoch",
            "Placement epoch recorded in the partition's Raft configuration.",
            labels=labels,
        )
        intact = GaugeMetricFamily(
            "ceptra_partition_vote_intact",
            "1 when the group has recorded this replica's storage incarnation (its vote counts).",
            labels=labels,
        )
        foreign = GaugeMetricFamily(
            "ceptra_partition_foreign_peers",
            "Peers of the partition's group heard from in the last minute that belong to another "
            "Raft group (their messages refused for its group id).",
            labels=labels,
        )
        ignored = CounterMetricFamily(
            "ceptra_placement_ignored_updates",
            "Routing feed placements ignored: an older epoch (stale) or another placement "
            "under the applied epoch (conflict).",
            labels=["partition", "reason"],
        )
        retired = GaugeMetricFamily(
            "ceptra_partition_retired",
            "Retired copies of this node's replicas of the partition kept under the data directory's "
            "retired/ (until deleted).",
            labels=labels,
        )
        for pid, copies in sorted(self.manager.disk.copies.items()):
            retired.add_metric([pid], len(copies))
        lifecycle = GaugeMetricFamily(
            "ceptra_partition_state",
            "1 for the lifecycle state this node's replica of the partition is in, 0 for the others "
            "(a replica stopped with its data in place is stopped, or orphaned once its partition is "
            "not routed; a retired replica whose data is kept is retired).",
            labels=["partition", "state"],
        )
        for pid, current in sorted(self.manager.replicaStates().items()):
            for state in REPORTED_STATES + (() if current in REPORTED_STATES else (current,)):
                lifecycle.add_metric([pid, state], 1 if state == current else 0)
        ledger = self.manager.ledger
        for pid in sorted(ledger.applied):
            placementEpoch.add_metric([pid], ledger.epoch(pid))
        for (pid, reason), n in sorted(ledger.ignored.items()):
            ignored.add_metric([pid, reason], n)
        for pid, part in sorted(self.manager.partitions.items()):
            if not part.serving():
                continue
            committed.add_metric([pid], part.committedIndex())
            match.add_metric([pid], part.matchIndex())
            applied.add_metric([pid], part.node.lastApplied)
            leader.add_metric([pid], 1 if part.node.leader is not None else 0)
            term.add_metric([pid], part.node.term)
            events.add_metric([pid], part.machine.events)
            dups.add_metric([pid], part.machine.duplicates)
            rules.add_metric([pid], part.machine.rulesVersion)
            configEpoch.add_metric([pid], part.node.configs.latest().epoch)
            intact.add_metric([pid], 1 if part.node.votesIntact() else 0)
            foreign.add_metric([pid], len(part.node.foreignPeers))
        ready = GaugeMetricFamily(
            "ceptra_partition_ready",
            "1 when this node's replica of the hosted partition passes the raft readiness check "
            "(started, leader known, match and applied index within the lag bound).",
            labels=labels,
        )
        hosted = self.manager.hostedIds()
        readyCount = 0
        for pid in hosted:
            ok = self.manager.partitionNotReady(pid) is None
            readyCount += ok
            ready.add_metric([pid], 1 if ok else 0)
        ratio = GaugeMetricFamily(
            "ceptra_ready_partitions_ratio",
            "Hosted partitions whose replica here is ready, over the partitions hosted here "
            "(1 when none is hosted; 0 while this node is not in the routing table).",
        )
        inTable = self.manager.routing.nodeBySpiffe(self.manager.spiffe) is not None
        ratio.add_metric([], (readyCount / len(hosted) if hosted else 1.0) if inTable else 0.0)
        multi = self.manager.multi
        links = GaugeMetricFamily(
            "ceptra_raft_links", "Open Raft links to peer nodes (shared by all partitions)."
        )
        links.add_metric([], len(multi.links))
        frames = CounterMetricFamily("ceptra_raft_frames_sent", "Raft frames sent over the shared links.")
        frames.add_metric([], multi.framesSent)
        rejected = CounterMetricFamily(
            "ceptra_raft_rejected_links", "Raft links refused: unknown or mismatched peer identity."
        )
        rejected.add_metric([], multi.rejectedLinks)
        yield from (committed, match, applied, leader, term, events, dups, rules, links, frames, rejected)
        yield from (placementEpoch, configEpoch, intact, foreign, ignored, retired, lifecycle, ready, ratio)
