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

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from suite.raft.messages import CONFIG, Configuration, Entry

if TYPE_CHECKING:
    from suite.raft.leader import LeaderState

log = Logger()


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


class MembershipChanges:
    """
    The leader's single-server changes: one uncommitted at a time, only
    after the leader committed in its term; C{addVoter} adds a learner and
    promotes it once its match index is within C{catchupMargin} of the
    commit index.
    """

    def __init__(self, leader: LeaderState) -> None:
        self.leader = leader
        self.catchups: dict[str, Deferred[Any]] = {}

    def abandon(self) -> list[Deferred[Any]]:
        waiters, self.catchups = list(self.catchups.values()), {}
        return waiters

    def progressed(self, peer: str) -> None:
        if peer in self.catchups:
            self._checkCatchup(peer)

    def termCommitted(self) -> None:
        for peer in list(self.catchups):
            self._checkCatchup(peer)

    def change(self, action: str, nodeId: str, address: str) -> Deferred[Any]:
        leader = self.leader
        node = leader.node
        if not leader.committedInTerm:
            return fail(MembershipError("the leader has not committed an entry of its term yet"))
        if node.configs.latestIndex() > node.commitIndex:
            return fail(MembershipError("another membership change is still uncommitted"))
        config = node.configs.latest()
        if action == "addVoter":
            if nodeId in config.voters:
                return fail(MembershipError(f"{nodeId} is already a voter"))
            if nodeId in self.catchups:
                return fail(MembershipError(f"{nodeId} is already catching up"))
            d: Deferred[Any] = Deferred()
            if nodeId not in config.learners:
                try:
                    self.proposeConfig(changed(config, "addLearner", nodeId, address)).addErrback(
                        lambda f: None
                    )
                except MembershipError as e:
                    return fail(e)
            self.catchups[nodeId] = d
            self._checkCatchup(nodeId)
            return d
        try:
            return self.proposeConfig(changed(config, action, nodeId, address))
        except MembershipError as e:
            return fail(e)

    def _checkCatchup(self, peer: str) -> None:
        node = self.leader.node
        pr = self.leader.progress.get(peer)
        if pr is None or node.configs.latestIndex() > node.commitIndex:
            return
        if pr.match + node.settings.catchupMargin < node.commitIndex:
            return
        d = self.catchups.pop(peer)
        log.info("learner {peer} caught up at {match}; promoting", peer=peer, match=pr.match)
        try:
            self.proposeConfig(changed(node.configs.latest(), "promote", peer, "")).chainDeferred(d)
        except MembershipError as e:
            d.errback(e)

    def proposeConfig(self, config: Configuration) -> Deferred[Any]:
        from suite.raft.leader import firing

        leader = self.leader
        node = leader.node
        index = node.log.lastIndex() + 1
        node.configs.append(index, config)
        node.transport.updatePeers(config.addressMap())
        for peer in sorted(config.members() - {node.id} - set(leader.progress)):
            leader.progress[peer] = leader.newProgress(peer, index)
        log.info(
            "leader proposes configuration voters={voters} learners={learners}",
            voters=sorted(config.voters),
            learners=sorted(config.learners),
        )
        d: Deferred[Any] = Deferred()
        leader.pending[index] = firing(d)
        leader.appendLocal([Entry(leader.term, index, CONFIG, config.encode())])
        return d
