"""
Seeded simulation of Raft groups that formed apart and then meet.

Two sides start under a partition with empty configurations; on each side
one node founds a group (L{RaftNode.bootstrap}) and its leader adds the
other nodes it can reach, one change at a time, as Constellation's agent
does.  Clients write side-tagged commands to each group.  Then the network
heals and each leader tries to add every node it does not have, the other
group's included (as gossip would offer them); a fresh node may appear
that both leaders want, and a follower may lose its disk and come back
new, for either group to take (storage incarnations on, so that its empty
vote does not count).  Crashes, restarts, loss, duplication and delays run
throughout.  After every step the checker requires, per group (the id
each node bound):

  - a node's group id, once set, never changes;
  - no entry a node knew committed is ever truncated or changed, and no two
    nodes of a group commit different entries at one index;
  - at most one leader per term per group;
  - no node follows a leader, or votes for a candidate, of another group;
  - a node applies only its own group's commands.

After healing, both groups must still commit writes, and the meeting must
be reported (a leader records the other group's members as foreign).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from suite.raft.groupid import formatGroup
from suite.raft.incarnation import MemoryIncarnations
from suite.raft.messages import Configuration, Entry
from suite.raft.node import RaftNode, RaftSettings
from tests.support.raftsim import (
    Disk,
    Faults,
    InvariantViolation,
    NodeClock,
    Recorder,
    SimNetwork,
    SimStorage,
    SimTransport,
)


@dataclass
class Member:
    id: str
    side: str
    disk: Disk = field(default_factory=Disk)
    node: RaftNode | None = None
    machine: Recorder | None = None
    storage: SimStorage | None = None
    transport: SimTransport | None = None
    clock: NodeClock | None = None
    #: The one-voter configuration it founded with (passed again on restart).
    founded: Configuration | None = None
    #: The highest index this node knew committed -> its entry (never to change).
    committed: dict[int, Entry] = field(default_factory=dict)
    group: int = 0


class GroupSimulation:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        plan = self.plan = random.Random(seed * 2654435761 + 101)
        self.rng = random.Random(seed)
        self.faults = Faults(
            drop=plan.choice([0.0, 0.01, 0.05]),
            duplicate=plan.choice([0.0, 0.05]),
            minDelay=0.0005,
            maxDelay=plan.choice([0.002, 0.01]),
            diskDelay=(0.0002, plan.choice([0.001, 0.005])),
            wire=plan.random() < 0.3,
            torn=plan.random() < 0.5,
        )
        self.settings = RaftSettings(snapshotThreshold=plan.choice([10, 40, 1000]), snapshotChunkBytes=256)
        self.clock = Clock()
        self.network = SimNetwork(self.clock, self.rng, self.faults)
        self.members: dict[str, Member] = {}
        for side in ("a", "b"):
            for i in range(1, plan.choice([1, 2, 3, 3]) + 1):
                self.members[f"{side}{i}"] = Member(f"{side}{i}", side)
        #: (group, term) -> leader
        self.leaders: dict[tuple[int, int], str] = {}
        #: group -> index -> committed entry
        self.committed: dict[int, dict[int, Entry]] = {}
        #: group -> the side whose commands it holds
        self.sides: dict[int, str] = {}
        self.changing: dict[str, bool] = {}
        self.written = {"a": 0, "b": 0}
        self.acked: dict[str, list[bytes]] = {"a": [], "b": []}
        self.healed = False
        self.ticks = 0
        #: Storage incarnations (as CEPtra runs them), so that a member may
        #: lose its disk without Raft counting its empty vote (L{wipe}).
        self.incarnations = MemoryIncarnations(self.rng)
        self.wipes = plan.random() < 0.5
        for m in self.members.values():
            self.boot(m)

    # -- lifecycle ------------------------------------------------------------

    def boot(self, m: Member) -> None:
        m.clock = NodeClock(self.clock, m.disk.rate, m.disk.offset)
        m.storage = SimStorage(m.disk, m.clock, self.rng, self.faults)
        m.transport = SimTransport(self.network, m.id, m.clock)
        storage = m.storage
        m.transport.ready = lambda: storage.loaded
        m.machine = Recorder()
        m.node = RaftNode(
            m.id,
            cast(IReactorTime, m.clock),
            m.storage,
            m.transport,
            m.machine,
            m.founded or Configuration(frozenset()),
            self.settings,
            random.Random(self.rng.random()),
            self.incarnations.claim(m.id),
            m.disk.groups,
        )
        Deferred.fromCoroutine(m.node.start()).addErrback(lambda f: self.fail(f"{m.id}: {f.getTraceback()}"))

    def crash(self, m: Member) -> None:
        if m.node is None:
            return
        assert m.storage is not None and m.transport is not None and m.clock is not None
        m.transport.up = False
        m.storage.crash()
        m.clock.kill()
        m.node.stop()
        m.node = None

    def wipe(self, m: Member) -> None:
        """
        Crash C{m} and lose its disk (its group id and the marker of a
        founder included): it comes back as a new node, which either group
        may take.
        """
        self.crash(m)
        disk = Disk()
        disk.rate, disk.offset = m.disk.rate, m.disk.offset
        m.disk, m.founded, m.group, m.committed = disk, None, 0, {}
        self.incarnations.forget(m.id)
        self.boot(m)

    def wipeable(self) -> list[Member]:
        """
        Followers whose group keeps a majority without them (three voters
        or more, all running).
        """
        out = []
        for side in "ab":
            leader = self.leaderOf(side)
            if leader is None:
                continue
            voters = leader.configs.latest().voters
            if len(voters) >= 3 and all(self.members[v].node is not None for v in voters):
                out += [self.members[v] for v in sorted(voters - {leader.id})]
        return out

    def restart(self, m: Member) -> None:
        if m.node is None:
            self.boot(m)

    def found(self, m: Member) -> None:
        node = m.node
        assert node is not None
        if node.bootstrap():
            m.founded = node.configs.latest()
            self.sides[node.groupId] = m.side

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.node is not None]

    def leaderOf(self, side: str) -> RaftNode | None:
        best = None
        for m in self.live():
            n = m.node
            assert n is not None
            if n.leader is not None and n.groupId and self.sides.get(n.groupId) == side:
                if best is None or n.term > best.term:
                    best = n
        return best

    # -- the agent: add what the leader can see, drop foreign members ----------

    def manage(self) -> None:
        for side in ("a", "b"):
            leader = self.leaderOf(side)
            if leader is None or self.changing.get(leader.id):
                continue
            config = leader.configs.latest()
            visible = sorted(
                m.id
                for m in self.members.values()
                if m.id not in config.members() and (self.healed or m.side == side)
            )
            foreign = sorted(p for p in config.members() - {leader.id} if p in leader.foreignPeers)
            if foreign:
                action, target = "remove", foreign[0]
            elif visible:
                action, target = "addVoter", self.plan.choice(visible)
            else:
                continue
            self.changing[leader.id] = True

            def ended(_: object, who: str = leader.id) -> None:
                self.changing[who] = False

            leader.changeMembership(action, target).addBoth(ended)

    def write(self) -> None:
        for side in ("a", "b"):
            leader = self.leaderOf(side)
            if leader is None:
                continue
            self.written[side] += 1
            command = f"{side}:{self.written[side]}".encode()
            leader.propose(command).addCallbacks(
                lambda _, c=command, acked=self.acked[side]: acked.append(c), lambda f: None
            )

    # -- checks ---------------------------------------------------------------

    def fail(self, what: str) -> None:
        raise InvariantViolation(
            f"seed {self.seed}: {what} at t={self.clock.seconds():.3f}\n"
            f"replay: RAFT_FAMILY=groupsMeet RAFT_SEED={self.seed}"
            " .venv/bin/python -m pytest tests/raft/test_simulation.py"
        )

    def groupOf(self, nodeId: str) -> int:
        m = self.members.get(nodeId)
        return m.group if m is not None else 0

    def check(self) -> None:
        for m in self.live():
            n = m.node
            assert n is not None
            if m.group and n.groupId and n.groupId != m.group:
                self.fail(f"{m.id} moved from group {formatGroup(m.group)} to {formatGroup(n.groupId)}")
            if n.groupId:
                m.group = n.groupId
        for m in self.live():
            n = m.node
            assert n is not None and m.machine is not None
            g = n.groupId
            if n.leader is not None and g:
                other = self.leaders.setdefault((g, n.term), m.id)
                if other != m.id:
                    self.fail(f"two leaders in term {n.term} of group {formatGroup(g)}: {other} and {m.id}")
            for peer, what in ((n.leaderId, "follows"), (n.votedFor, "voted for")):
                if peer and g and self.groupOf(peer) and self.groupOf(peer) != g:
                    self.fail(f"{m.id} of group {formatGroup(g)} {what} {peer} of another group")
            sides = {c.split(b":")[0] for c in m.machine.applied if c}
            if len(sides) > 1:
                self.fail(f"{m.id} applied commands of both sides")
            if sides and g:
                side = sides.pop().decode()
                if self.sides.setdefault(g, side) != side:
                    self.fail(f"group {formatGroup(g)} holds commands of both sides")
            self.checkCommitted(m, n)

    def checkCommitted(self, m: Member, n: RaftNode) -> None:
        """
        The highest entry C{m} knew committed is still in its log (a log is
        only ever cut from its end, so this catches any committed entry
        lost), and what it commits now agrees with its group.
        """
        lg = n.log
        if m.committed:
            ((index, entry),) = m.committed.items()
            if index > lg.snapshotIndex and (index > lg.lastIndex() or lg.entry(index) != entry):
                self.fail(f"{m.id} lost or changed committed entry {index}")
            start = max(lg.snapshotIndex, index) + 1
        else:
            start = lg.snapshotIndex + 1
        if n.commitIndex < start:
            return
        shared = self.committed.setdefault(n.groupId, {}) if n.groupId else None
        for i in range(start, n.commitIndex + 1):
            entry = lg.entry(i)
            if shared is not None and shared.setdefault(i, entry) != entry:
                self.fail(f"{m.id} committed a different entry at {i} than its group")
        m.committed = {n.commitIndex: lg.entry(n.commitIndex)}

    # -- running --------------------------------------------------------------

    def run(self, seconds: float, step: float = 0.002) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(step)
            self.ticks += 1
            if self.ticks % 25 == 0:
                self.manage()
            if self.ticks % 10 == 0:
                self.write()
            self.check()

    def runUntil(self, predicate: Callable[[], bool], seconds: float) -> bool:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            if predicate():
                return True
            self.run(0.01)
        return predicate()

    def chaos(self, seconds: float) -> None:
        """
        Run C{seconds} with crashes and restarts now and then.
        """
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.run(self.plan.uniform(0.1, 0.4))
            what = self.plan.choice(["crash", "crashLeader", "restart", "wipe", "nothing"])
            if what == "wipe" and self.wipes and self.healed:
                self.wipes = False  # once per scenario
                victims = self.wipeable()
                if victims:
                    self.wipe(self.plan.choice(victims))
            elif what == "crash":
                self.crash(self.plan.choice(sorted(self.members.values(), key=lambda m: m.id)))
            elif what == "crashLeader":
                leader = self.leaderOf(self.plan.choice("ab"))
                if leader is not None:
                    self.crash(self.members[leader.id])
            elif what == "restart":
                for m in sorted(self.members.values(), key=lambda m: m.id):
                    self.restart(m)

    def hasLeader(self, side: str) -> bool:
        return self.leaderOf(side) is not None

    def progressed(self, side: str, count: int) -> bool:
        return len(self.acked[side]) > count

    def scenario(self) -> GroupSimulation:
        a = {m for m in self.members if m.startswith("a")}
        b = set(self.members) - a
        self.network.partition(a, b)
        self.run(0.01)
        self.found(self.members["a1"])
        self.found(self.members["b1"])
        for side in ("a", "b"):
            if not self.runUntil(partial(self.hasLeader, side), 3.0):
                self.fail(f"side {side} founded no group")
        self.chaos(self.plan.uniform(1.0, 2.0))
        for m in self.members.values():
            self.restart(m)
        if self.plan.random() < 0.6:
            self.members["j"] = Member("j", "j")
            self.boot(self.members["j"])
        self.network.heal()
        self.healed = True
        self.chaos(self.plan.uniform(1.5, 3.0))
        for m in self.members.values():
            self.restart(m)
        self.faults.drop = 0.0
        before = {side: len(self.acked[side]) for side in "ab"}
        for side in "ab":
            if not self.runUntil(partial(self.progressed, side, before[side] + 3), 6.0):
                self.fail(f"group of side {side} makes no progress after the groups met")
        if not self.runUntil(
            lambda: any(m.node is not None and m.node.foreignPeers for m in self.members.values()), 3.0
        ):
            self.fail("nobody noticed the other group")
        groups = {m.group for m in self.members.values() if m.id != "j"} - {0}
        if len(groups) != 2:
            self.fail(f"expected two groups, found {sorted(formatGroup(g) for g in groups)}")
        return self


def runGroups(seed: int) -> GroupSimulation:
    return GroupSimulation(seed).scenario()
