"""
The membership changes the leader of a hosted partition drives: from the
group's configuration toward the applied placement, one single-server
change at a time, each recording the placement's epoch (the package's
docstring tells the rules, L{suite.ceptra.partitions}).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from suite.ceptra.partitions.replica import Partition
from suite.raft.messages import Configuration
from suite.raft.node import RaftNode

__all__ = ["MembershipDriver"]

log = Logger(namespace="ceptra.partitions")


class MembershipDriver:
    """
    The membership changes of the groups this node (C{spiffe}) leads.
    """

    def __init__(self, spiffe: str) -> None:
        self.spiffe = spiffe
        #: (partition, epoch) pairs already logged as behind the group
        self._behind: set[tuple[str, int]] = set()

    def drive(self, part: Partition, want: dict[str, str], epoch: int) -> None:
        """
        Begin the next step of C{part}'s group (this node leads it) toward
        the replicas C{want} of placement C{epoch}, unless a change is in
        flight or the group's configuration is at a later epoch.
        """
        node = part.node
        if part.change.busy() or not want or node.configs.latestIndex() > node.commitIndex:
            return
        config = node.configs.latest()
        if config.epoch > epoch:
            if (part.pid, epoch) not in self._behind:
                self._behind.add((part.pid, epoch))
                log.warn(
                    "partition {pid}: the group's configuration is at placement epoch {group}, this node's "
                    "placement at {epoch}: no membership change until this node's placement catches up",
                    pid=part.pid,
                    group=config.epoch,
                    epoch=epoch,
                )
            return
        change = self.nextChange(node, config, want, epoch)
        if change is not None:
            part.change.begin(*change)

    def nextChange(
        self, node: RaftNode, config: Configuration, want: dict[str, str], epoch: int
    ) -> tuple[str, Callable[[], Deferred[Any]]] | None:
        """
        The next single-server step from C{config} toward the replicas
        C{want} at placement C{epoch}: its description and how to start it;
        C{None} when there is none.
        """
        missing = sorted(set(want) - config.voters)
        if missing:
            peer = missing[0]
            return f"add {peer} (epoch {epoch})", partial(
                node.changeMembership, "addVoter", peer, want[peer], epoch
            )
        extra = sorted((config.voters | config.learners) - set(want))
        if extra and extra[0] == self.spiffe:
            targets = sorted((set(want) & config.voters) - {self.spiffe})
            if not targets:
                return None
            return f"hand leadership to {targets[0]} before leaving", partial(
                node.transferLeadership, targets[0]
            )
        if extra:
            peer = extra[0]
            return f"remove {peer} (epoch {epoch})", partial(node.changeMembership, "remove", peer, "", epoch)
        if config.epoch < epoch:
            return f"record placement epoch {epoch}", partial(node.changeMembership, "epoch", "", "", epoch)
        return None
