"""
Membership: the configuration history held alongside the log, and the
single-server changes a leader may propose.

A configuration takes effect as soon as its entry is in a node's log
(committed or not); truncating the entry reverts to the previous one.
Only one change may be uncommitted at a time, and only after the leader
committed an entry of its own term, so that any two successive
configurations share a quorum.
"""

from __future__ import annotations

from suite.raft.messages import Configuration


class MembershipError(Exception):
    """
    A requested membership change is not allowed now; the message says why.
    """


class ConfigurationHistory:
    """
    The configuration at the snapshot point plus every configuration
    entry after it.
    """

    def __init__(self, base: Configuration, baseIndex: int = 0) -> None:
        self.baseIndex = baseIndex
        self.base = base
        self.entries: list[tuple[int, Configuration]] = []

    def latest(self) -> Configuration:
        return self.entries[-1][1] if self.entries else self.base

    def latestIndex(self) -> int:
        return self.entries[-1][0] if self.entries else self.baseIndex

    def at(self, index: int) -> Configuration:
        """
        The configuration in force at log C{index}.
        """
        found = self.base
        for i, c in self.entries:
            if i > index:
                break
            found = c
        return found

    def append(self, index: int, config: Configuration) -> None:
        self.entries.append((index, config))

    def truncateAfter(self, index: int) -> None:
        self.entries = [(i, c) for i, c in self.entries if i <= index]

    def compact(self, index: int, config: Configuration) -> None:
        """
        The log was compacted up to C{index}, where C{config} was in force.
        """
        self.entries = [(i, c) for i, c in self.entries if i > index]
        self.base, self.baseIndex = config, index

    def reset(self, index: int, config: Configuration) -> None:
        self.entries = []
        self.base, self.baseIndex = config, index


def changed(config: Configuration, action: str, nodeId: str, address: str) -> Configuration:
    """
    The configuration after one single-server change, or L{MembershipError}.
    """
    addresses = dict(config.addresses)
    if address:
        addresses[nodeId] = address
    voters, learners = set(config.voters), set(config.learners)
    if action == "addLearner":
        if nodeId in config.members():
            raise MembershipError(f"{nodeId} is already a member")
        learners.add(nodeId)
    elif action == "promote":
        if nodeId not in learners:
            raise MembershipError(f"{nodeId} is not a learner")
        learners.discard(nodeId)
        voters.add(nodeId)
    elif action == "remove":
        if nodeId not in config.members():
            raise MembershipError(f"{nodeId} is not a member")
        if voters == {nodeId}:
            raise MembershipError("cannot remove the last voter")
        voters.discard(nodeId)
        learners.discard(nodeId)
        addresses.pop(nodeId, None)
    else:
        raise MembershipError(f"unknown membership action {action!r}")
    return Configuration(frozenset(voters), frozenset(learners), tuple(sorted(addresses.items())))
