"""
Membership: the configuration history held alongside the log, and the
single-server changes a leader may propose.

A configuration takes effect as soon as its entry is in a node's log
(committed or not); truncating the entry reverts to the previous one.
Only one change may be uncommitted at a time, and only after the leader
committed an entry of its own term, so that any two successive
configurations share a quorum.

Configurations also carry the incarnation of each member's storage
(L{suite.raft.incarnation}): the leader learns them from its followers'
responses and records them.  A member holds the configuration recording its
new incarnation only once its log reaches that entry, so it counts its own
vote again only when it holds every entry committed before.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from suite.raft.groupid import formatGroup
from suite.raft.messages import CONFIG, Configuration, Entry

if TYPE_CHECKING:
    from suite.raft.leader import LeaderState
    from suite.raft.progress import Progress

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


def changed(
    config: Configuration, action: str, nodeId: str, address: str, epoch: int | None = None
) -> Configuration:
    """
    The configuration after one single-server change, or L{MembershipError}.
    C{epoch}, when given, is recorded with it and may not be lower than
    C{config}'s; the action C{epoch} records only that.
    """
    if epoch is not None and epoch < config.epoch:
        raise MembershipError(f"epoch {epoch} is older than the configuration's epoch {config.epoch}")
    newEpoch = config.epoch if epoch is None else epoch
    if action == "epoch":
        if newEpoch == config.epoch:
            raise MembershipError(f"the configuration is already at epoch {config.epoch}")
        return replace(config, epoch=newEpoch)
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
    members = voters | learners
    return Configuration(
        frozenset(voters),
        frozenset(learners),
        tuple(sorted(addresses.items())),
        newEpoch,
        tuple(i for i in config.incarnations if i[0] in members),
    )


class MembershipChanges:
    """
    The leader's single-server changes: one uncommitted at a time, only
    after the leader committed in its term; C{addVoter} adds a learner and
    promotes it once it holds the latest configuration and its match index
    is within C{catchupMargin} of the commit index (checked as it
    progresses and whenever a configuration commits).
    """

    def __init__(self, leader: LeaderState) -> None:
        self.leader = leader
        self.catchups: dict[str, Deferred[Any]] = {}
        self.catchupEpochs: dict[str, int | None] = {}
        #: peer -> the incarnation it answers with
        self.known: dict[str, int] = {}
        self.retired: dict[str, set[int]] = {}
        #: members whose incarnation the latest configuration does not record yet
        self.waiting: set[str] = set()
        self._refresh()

    def abandon(self) -> list[Deferred[Any]]:
        waiters, self.catchups = list(self.catchups.values()), {}
        return waiters

    def progressed(self, peer: str) -> None:
        if peer in self.catchups:
            self._checkCatchup(peer)
        if self.waiting:
            self.maybeRecord()

    def termCommitted(self) -> None:
        for peer in list(self.catchups):
            self._checkCatchup(peer)
        self.maybeRecord()

    def configCommitted(self) -> None:
        """
        A configuration entry committed: a learner that caught up while a
        configuration was uncommitted (C{_checkCatchup} waits for it) is
        promoted now, as it may never progress again to be checked.
        """
        if self.leader.committedInTerm:
            self.termCommitted()

    # -- incarnations ---------------------------------------------------------

    def heard(self, peer: str, pr: Progress, incarnation: int) -> bool:
        """
        A response from C{peer} carried C{incarnation}; return C{False} when
        the response comes from an incarnation the peer left behind (drop it).

        A peer answering with a new incarnation lost its storage: its
        progress starts over (what it acknowledged before is gone) and the
        new incarnation is recorded in the next configuration.
        """
        if not incarnation:
            return True
        current = self.known.get(peer)
        if current == incarnation:
            if self.waiting:
                self.maybeRecord()
            return True
        if incarnation in self.retired.get(peer, ()):
            return False
        leader = self.leader
        node = leader.node
        if current is not None:
            self.retired.setdefault(peer, set()).add(current)
            log.warn(
                "{peer} answers with storage incarnation {new} (was {old}): it lost its state; "
                "catching it up from scratch before its vote counts again",
                peer=peer,
                new=incarnation,
                old=current,
            )
            pr.match = 0
            pr.inputs.becomeProbe(node.log.lastIndex() + 1)
        self.known[peer] = incarnation
        self._refresh()
        if self.waiting:
            self.maybeRecord()
        return True

    def _refresh(self) -> None:
        node = self.leader.node
        self.waiting = set()
        if node.incarnation is None:
            return
        config = node.configs.latest()
        for member in config.members():
            number = node.incarnationNumber if member == node.id else self.known.get(member)
            if number and config.incarnationOf(member) != number:
                self.waiting.add(member)

    def stamp(self, config: Configuration) -> Configuration:
        """
        C{config} recording every member's incarnation known to the leader.
        """
        node = self.leader.node
        if node.incarnation is None:
            return config
        records = dict(config.incarnations)
        for member in config.members():
            number = node.incarnationNumber if member == node.id else self.known.get(member)
            if number:
                records[member] = number
        return replace(config, incarnations=tuple(sorted(records.items())))

    def maybeRecord(self) -> None:
        """
        Propose a configuration recording the incarnations that may be
        recorded, when no other change is uncommitted.
        """
        leader = self.leader
        node = leader.node
        if (
            not self.waiting
            or leader.abandoned
            or not leader.committedInTerm
            or node.configs.latestIndex() > node.commitIndex
        ):
            return
        config = node.configs.latest()
        stamped = self.stamp(config)
        if stamped.incarnations != config.incarnations:
            log.info(
                "leader records storage incarnations {recorded}",
                recorded=sorted(set(stamped.incarnations) - set(config.incarnations)),
            )
            self.proposeConfig(stamped).addErrback(lambda f: None)

    # -- group ids ------------------------------------------------------------

    def foreign(self, peer: str, group: int) -> None:
        """
        C{peer} refused our messages: it belongs to Raft group C{group}.  A
        catch-up waiting for it fails (it will never catch up).
        """
        d = self.catchups.pop(peer, None)
        self.catchupEpochs.pop(peer, None)
        if d is not None:
            d.errback(MembershipError(f"{peer} belongs to another Raft group ({formatGroup(group)})"))

    # -- changes --------------------------------------------------------------

    def change(self, action: str, nodeId: str, address: str, epoch: int | None = None) -> Deferred[Any]:
        leader = self.leader
        node = leader.node
        if action in ("addVoter", "addLearner") and nodeId in node.foreignPeers:
            return fail(
                MembershipError(
                    f"{nodeId} belongs to another Raft group ({formatGroup(node.foreignPeers[nodeId])})"
                )
            )
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
            try:
                if nodeId not in config.learners:
                    self.proposeConfig(changed(config, "addLearner", nodeId, address, epoch)).addErrback(
                        lambda f: None
                    )
                elif epoch is not None and epoch < config.epoch:
                    changed(config, "promote", nodeId, "", epoch)  # raises
            except MembershipError as e:
                return fail(e)
            self.catchups[nodeId] = d
            self.catchupEpochs[nodeId] = epoch
            self._checkCatchup(nodeId)
            return d
        try:
            return self.proposeConfig(changed(config, action, nodeId, address, epoch))
        except MembershipError as e:
            return fail(e)

    def _checkCatchup(self, peer: str) -> None:
        node = self.leader.node
        pr = self.leader.progress.get(peer)
        if pr is None or node.configs.latestIndex() > node.commitIndex:
            return
        if pr.match + node.settings.catchupMargin < node.commitIndex:
            return
        if pr.match < node.configs.latestIndex():
            # It has not answered yet, or holds not even the configuration
            # that made it a learner: however short the log, not caught up.
            return
        d = self.catchups.pop(peer)
        epoch = self.catchupEpochs.pop(peer, None)
        config = node.configs.latest()
        log.info("learner {peer} caught up at {match}; promoting", peer=peer, match=pr.match)
        try:
            if epoch is not None:
                epoch = max(epoch, config.epoch)
            self.proposeConfig(changed(config, "promote", peer, "", epoch)).chainDeferred(d)
        except MembershipError as e:
            d.errback(e)

    def proposeConfig(self, config: Configuration) -> Deferred[Any]:
        from suite.raft.leader import firing

        leader = self.leader
        node = leader.node
        # (a group id is recorded in snapshots only)
        config = replace(self.stamp(config), group=0)
        index = node.log.lastIndex() + 1
        node.configs.append(index, config)
        node.transport.updatePeers(config.addressMap())
        for peer in sorted(config.members() - {node.id} - set(leader.progress)):
            leader.progress[peer] = leader.newProgress(peer, index)
        self._refresh()
        log.info(
            "leader proposes configuration voters={voters} learners={learners} epoch={epoch}",
            voters=sorted(config.voters),
            learners=sorted(config.learners),
            epoch=config.epoch,
        )
        d: Deferred[Any] = Deferred()
        leader.pending[index] = firing(d)
        leader.appendLocal([Entry(leader.term, index, CONFIG, config.encode())])
        return d
