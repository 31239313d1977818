"""
What the partition manager tells about this node's replicas: the status
pages (C{/partitions}, C{/readyz} details), readiness
(L{suite.ceptra.interfaces.IRaftStatus}) and the states the metrics
report (L{suite.ceptra.partitions.status}).
"""

from __future__ import annotations

from typing import Any

from suite.ceptra.partitions.disk import ReplicaDisk
from suite.ceptra.partitions.replica import Partition
from suite.ceptra.placement import PlacementLedger
from suite.ceptra.routing import Routing
from suite.raft.groupid import formatGroup

__all__ = ["PartitionReports"]


class PartitionReports:
    """
    The reports of L{suite.ceptra.partitions.manager.PartitionManager}
    (mixed into it), read from its replicas, its disk and its routing
    table.
    """

    spiffe: str
    routing: Routing
    partitions: dict[str, Partition]
    confirming: dict[str, Partition]
    disk: ReplicaDisk
    ledger: PlacementLedger
    maxLag: int

    def unresolved(self, routing: Routing, pid: str) -> list[str]:
        raise NotImplementedError  # the manager's (a routing table query)

    def hostedIds(self) -> list[str]:
        me = self.routing.nodeBySpiffe(self.spiffe)
        return self.routing.hosted(me) if me is not None else []

    def retiredStatuses(self) -> dict[str, list[dict[str, Any]]]:
        """
        Every retired copy kept here, by partition, until deleted.
        """
        return self.disk.retiredStatuses()

    def diskStatuses(self) -> dict[str, Any]:
        """
        The replicas whose data this node keeps though they do not run
        here (status pages): C{retired} (every retired copy, by
        partition), C{stopped} and C{orphaned} (stopped without their
        removal known committed; orphaned: their partition is not in the
        routing table).
        """
        stopped = self.disk.stoppedStatuses(orphaned=False)
        for pid, status in stopped.items():
            self._asking(pid, status)
        return {
            "retired": self.disk.retiredStatuses(),
            "stopped": stopped,
            "orphaned": self.disk.stoppedStatuses(orphaned=True),
        }

    def _asking(self, pid: str, status: dict[str, Any]) -> dict[str, Any]:
        # A stopped replica asking its group's members for proof of its
        # removal: the entry asked about, and the rounds so far.
        part = self.confirming.get(pid)
        if part is not None:
            described = part.lifecycle.describe()
            if "asking" in described:
                status["asking"] = described["asking"]
        return status

    def replicaStates(self) -> dict[str, str]:
        """
        The lifecycle state of each replica here, by partition: as its
        lifecycle machine describes it; a replica stopped with its data in
        place as C{stopped} or C{orphaned}; a retired copy kept here whose
        partition has no replica here as C{retired}.
        """
        states = {pid: str(part.lifecycle.describe()["state"]) for pid, part in self.partitions.items()}
        for pid in self.disk.stopped:
            states.setdefault(pid, str(self.disk.stoppedStatus(pid)["state"]))
        hosted = set(self.hostedIds())
        for pid in self.disk.copies:
            if pid not in states and pid not in hosted:
                states[pid] = "retired"
        return states

    def partitionStatus(self, pid: str, withHash: bool = False) -> dict[str, Any]:
        part = self.partitions.get(pid)
        if part is None:
            if pid in self.disk.stopped:
                return self._asking(pid, self.disk.stoppedStatus(pid))
            if pid in self.disk.copies and pid not in self.hostedIds():
                # Left its group for good: not a replica that failed to start
                # (its latest copy; every copy is under retired).
                return self.disk.retiredList(pid)[-1]
            return {"partition": pid, "state": "not started"}
        state = dict(part.lifecycle.describe())
        if not part.serving():
            return {"partition": pid, **state}
        node = part.node
        config = node.configs.latest()
        return {
            "partition": pid,
            **state,
            "role": node.roleName,
            "term": node.term,
            "leader": node.leaderId,
            "committedIndex": part.committedIndex(),
            "matchIndex": part.matchIndex(),
            "appliedIndex": node.lastApplied,
            "voters": sorted(config.voters),
            "learners": sorted(config.learners),
            "placementEpoch": self.ledger.epoch(pid),
            "configEpoch": config.epoch,
            "incarnation": node.incarnationNumber,
            "voteIntact": node.votesIntact(),
            "group": formatGroup(node.groupId),
            "lastMembershipChange": part.change.last() or None,
            "cep": part.machine.status(),
            **({"stateHash": part.machine.stateHash()} if withHash else {}),
        }

    def leaderKnown(self) -> bool:
        return not self.notReadyReasons()

    def notReadyReasons(self) -> tuple[str, ...]:
        reasons = []
        if self.routing.nodeBySpiffe(self.spiffe) is None:
            reasons.append(f"this node ({self.spiffe}) is not in the routing table")
        for pid in self.hostedIds():
            reason = self.partitionNotReady(pid)
            if reason is not None:
                reasons.append(reason)
        return tuple(reasons)

    def partitionNotReady(self, pid: str) -> str | None:
        """
        Why this node's replica of the hosted partition C{pid} is not ready
        (not started, failed, no leader known, or lagging by more than
        C{maxLag}), or C{None} when it is.
        """
        part = self.partitions.get(pid)
        if part is None:
            missing = self.unresolved(self.routing, pid)
            if missing:
                return (
                    f"partition {pid}: not started: the routing table gives replicas {missing} "
                    "no SPIFFE ID or Raft address"
                )
        state = part.lifecycle.describe() if part is not None else {"state": "starting"}
        if state["state"] == "failed":
            return f"partition {pid}: failed to start: {state['error']}"
        if part is None or not part.serving():
            return f"partition {pid}: raft group {state['state']}"
        if part.node.leaderId is None:
            return f"partition {pid}: no raft leader known (term {part.node.term})"
        lag = part.committedIndex() - part.matchIndex()
        if lag > self.maxLag:
            return (
                f"partition {pid}: match index {part.matchIndex()} is {lag} behind committed "
                f"{part.committedIndex()} (bound {self.maxLag})"
            )
        applyLag = part.node.commitIndex - part.node.lastApplied
        if applyLag > self.maxLag:
            return f"partition {pid}: applying {applyLag} entries behind commit"
        return None
