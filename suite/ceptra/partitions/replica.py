"""
One hosted partition's replica: its Raft node, storage and engine, its
lifecycle machine (L{suite.ceptra.partitions.lifecycle}) and the
membership change its leader has in flight (L{suite.raft.memberchange}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.backoff import Backoff
from suite.ceptra.machine import PartitionMachine
from suite.ceptra.partitions.lifecycle import ExclusionQuery, LifecycleCore, PartitionLifecycle
from suite.raft.memberchange import ChangeInputs, newMembershipChange
from suite.raft.multi import GroupTransport
from suite.raft.node import RaftNode
from suite.raft.snapshotter import SnapshotInputs

if TYPE_CHECKING:
    from suite.ceptra.partitions.manager import PartitionManager

__all__ = ["NotHosted", "Partition"]

log = Logger(namespace="ceptra.partitions")


class NotHosted(Exception):
    """
    This node has no replica of the partition.
    """


@dataclass(eq=False)
class Partition:
    """
    One hosted partition: its Raft node, storage and engine; its lifecycle
    (Starting, Running, Retiring, Leaving, Dropped, Failed, Retired,
    Confirming, Stopped) is an automat machine (L{suite.ceptra.partitions.lifecycle}),
    and so is the membership change its leader has in flight
    (L{suite.raft.memberchange}).
    """

    pid: str
    node: RaftNode
    storage: Any
    machine: PartitionMachine
    transport: GroupTransport
    manager: PartitionManager
    closing: Deferred[Any] | None = None
    #: the snapshots encoded off the reactor thread (L{suite.raft.snapshotter})
    snapshots: SnapshotInputs | None = None

    def __post_init__(self) -> None:
        self.lifecycle = PartitionLifecycle(LifecycleCore(self))
        #: the membership change in flight, one at a time
        self.change: ChangeInputs = newMembershipChange(self._changeEnded, self._changeStarted)

    def _changeStarted(self, what: str) -> None:
        log.info("partition {pid}: membership change: {what}", pid=self.pid, what=what)

    def _changeEnded(self, what: str, failure: Failure | None) -> None:
        if failure is not None:
            log.info(
                "partition {pid}: {what} did not complete: {why}",
                pid=self.pid,
                what=what,
                why=failure.getErrorMessage(),
            )

    # ReplicaActions (the lifecycle's outputs)

    def abandon(self) -> None:
        self.node.stop()

    def retire(self, epoch: int) -> None:
        self._close()
        self.manager.reclaim(self, epoch)

    def shutdown(self) -> None:
        self._close()
        self.manager.replicaStopped(self)

    def holdsEntries(self) -> bool:
        # an entry, or a snapshot (its index is where the log starts)
        return self.node.log.lastIndex() > 0

    def configEpoch(self) -> int:
        return self.node.configs.latest().epoch

    def exclusion(self) -> ExclusionQuery | None:
        node = self.node
        config = node.configs.latest()
        index = node.configs.latestIndex()
        term = node.log.term(index)
        if self.manager.spiffe in config.members() or not index or term is None or not node.groupId:
            return None
        return ExclusionQuery(index, term, node.groupId, config.epoch)

    def ask(self, query: ExclusionQuery) -> tuple[int, int]:
        return self.manager.askCommitted(self, query)

    def askBackoff(self) -> Backoff:
        return Backoff(self.manager.askInterval, self.manager.askMaxInterval, jitter=False)

    def linkWait(self) -> float:
        return 2 * self.manager.multi.dial.timeout

    def later(self, delay: float, call: Callable[[], None]) -> IDelayedCall:
        delayed: IDelayedCall = self.manager.reactor.callLater(delay, call)
        return delayed

    def currentMember(self, peer: str) -> bool:
        return peer != self.manager.spiffe and peer in self.manager.voters(self.manager.routing, self.pid)

    def retireStopped(self, epoch: int) -> None:
        self.manager.reclaim(self, epoch)

    def stopAsking(self) -> None:
        if self.manager.confirming.get(self.pid) is self:
            del self.manager.confirming[self.pid]

    def _close(self) -> None:
        self.node.stop()
        self.manager.multi.dropGroup(self.pid)
        if self.manager.partitions.get(self.pid) is self:
            del self.manager.partitions[self.pid]
        self.closing = self.storage.close()
        self.closing.addErrback(
            lambda f: log.warn("closing the WAL of {pid}: {why}", pid=self.pid, why=f.getErrorMessage())
        )

    # views

    def serving(self) -> bool:
        return bool(self.lifecycle.serving())

    def committedIndex(self) -> int:
        """
        How far the group has committed, as this replica knows it.
        """
        return max(self.node.commitIndex, self.transport.leaderCommit)

    def matchIndex(self) -> int:
        """
        How far this replica's log is known to match the leader's.
        """
        return self.node.commitIndex
