"""
The Raft identity derived from the gossip key, the agent's bootstrap and
membership decisions (with a fake node and gossip view), one membership
change at a time.
"""

from __future__ import annotations

import os
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from suite.constellation.consensus import BOOTSTRAP_MARKER, RaftAgent, derivedBundle
from suite.constellation.leases import LeaseStateMachine
from suite.gossip.member import Member
from suite.raft.messages import Configuration
from suite.raft.settings import NotLeader


class IdentityTests(SynchronousTestCase):
    def test_sameKeySameCA(self) -> None:
        """
        Two nodes with one gossip key trust each other's certificates; a
        node with another key does not chain to them.
        """
        key = os.urandom(32)
        a = derivedBundle(key, "n1", "10.0.0.1")
        b = derivedBundle(key, "n2", "10.0.0.2")
        c = derivedBundle(os.urandom(32), "n3", "10.0.0.3")
        self.assertEqual(a.caCert.public_key(), b.caCert.public_key())
        self.assertNotEqual(a.caCert.public_key(), c.caCert.public_key())
        pub = a.caCert.public_key()
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        b.nodeCert.verify_directly_issued_by(a.caCert)
        with self.assertRaises(InvalidSignature):
            c.nodeCert.verify_directly_issued_by(a.caCert)
        self.assertIn("n2", b.nodeCert.subject.rfc4514_string())


class _Log:
    def __init__(self) -> None:
        self.last = 0

    def lastIndex(self) -> int:
        return self.last


class _Configs:
    def __init__(self) -> None:
        self.config = Configuration(frozenset())

    def latest(self) -> Configuration:
        return self.config


class _Node:
    def __init__(self, name: str) -> None:
        self.id = name
        self.term = 0
        self.log = _Log()
        self.configs = _Configs()
        self.leader: Any = None
        self.changes: list[tuple[str, str, str]] = []
        self.loading = False
        self.groupId = 0
        self.foreignPeers: dict[str, int] = {}

    def bootstrap(self, address: str) -> bool:
        if self.loading:
            return False
        self.configs.config = Configuration(frozenset({self.id}), frozenset(), ((self.id, address),))
        return True

    def changeMembership(self, action: str, name: str, address: str) -> Any:
        self.changes.append((action, name, address))
        return succeed(None)

    def status(self) -> dict[str, Any]:
        return {"role": "x", "term": 0, "leader": None, "commitIndex": 0, "voters": [], "learners": []}


class _Transport:
    def __init__(self) -> None:
        self.peers: dict[str, str] = {}

    def updatePeers(self, peers: dict[str, str]) -> None:
        self.peers.update(peers)


class _Service:
    def __init__(self, node: _Node) -> None:
        self.node = node
        self.transport = _Transport()
        self.parent: Any = None
        self.running = 0
        self.name = "raft"

    def setServiceParent(self, parent: Any) -> None:
        parent.addService(self)

    def privilegedStartService(self) -> None:
        pass

    def startService(self) -> None:
        self.running = 1

    def stopService(self) -> None:
        self.running = 0


class _PendingNode(_Node):
    """
    A leader whose membership changes wait in C{pending}.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.pending: list[Deferred[None]] = []

    def changeMembership(self, action: str, name: str, address: str) -> Deferred[None]:
        self.changes.append((action, name, address))
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


class AgentTests(SynchronousTestCase):
    def make(
        self,
        name: str,
        members: list[Member],
        published: dict[str, tuple[str, bool]],
        node: _Node | None = None,
        **kw: Any,
    ) -> RaftAgent:
        self.clock = Clock()
        self.node = node or _Node(name)
        self.published: list[dict[str, Any]] = []
        stable = self.mktemp()
        os.makedirs(stable)
        self.stable = stable
        return RaftAgent(
            _Service(self.node),  # type: ignore[arg-type]
            LeaseStateMachine(),
            self.clock,
            lambda: members,
            lambda: published,
            self.published.append,
            f"{name}:1",
            stableDir=stable,
            now=self.clock.seconds,
            **{"bootstrap": False, "bootstrapped": False, "bootstrapWait": 5.0, "removeAfter": 30.0, **kw},
        )

    def test_bootstrapAlone(self) -> None:
        """
        Alone after the wait: found the group, mark it on disk, publish.
        """
        agent = self.make("edge2", [Member("edge2", ("h", 1), "alive", 1, {})], {})
        agent.step()
        self.assertEqual(self.node.configs.config.voters, frozenset())
        self.clock.advance(5)
        agent.step()
        self.assertEqual(self.node.configs.config.voters, frozenset({"edge2"}))
        self.assertTrue(os.path.exists(os.path.join(self.stable, BOOTSTRAP_MARKER)))
        self.assertEqual(self.published[-1], {"addr": "edge2:1", "member": True})

    def test_noDecisionWhileLoading(self) -> None:
        """
        While the node is still reading its log (term 0 and an empty log
        only because nothing is read yet) the agent decides nothing: no
        bootstrap marker is written, no group founded; once loaded, the
        usual rule applies.
        """
        agent = self.make("edge2", [Member("edge2", ("h", 1), "alive", 1, {})], {})
        self.node.loading = True
        self.clock.advance(60)
        agent.step()
        self.assertEqual(self.node.configs.config.voters, frozenset())
        self.assertFalse(os.path.exists(os.path.join(self.stable, BOOTSTRAP_MARKER)))
        self.node.loading = False
        agent.step()
        self.assertEqual(self.node.configs.config.voters, frozenset({"edge2"}))
        self.assertTrue(os.path.exists(os.path.join(self.stable, BOOTSTRAP_MARKER)))

    def test_joinerNeverFoundsAlone(self) -> None:
        """
        A node started with --join that has reached nobody does not found a
        group of its own (two groups would each grant the leases), however
        long it waits; once a peer is alive the usual rule applies.
        """
        members = [Member("cloudserver2", ("h", 1), "alive", 1, {})]
        agent = self.make("cloudserver2", members, {}, joinConfigured=True)
        for _ in range(3):
            self.clock.advance(60)
            agent.step()
        self.assertEqual(self.node.configs.config.voters, frozenset())
        self.assertFalse(os.path.exists(os.path.join(self.stable, BOOTSTRAP_MARKER)))
        members.append(Member("edge9", ("h", 2), "alive", 1, {}))
        agent.step()
        self.assertEqual(self.node.configs.config.voters, frozenset({"cloudserver2"}))

    def test_waitForGroupOrBetterNode(self) -> None:
        """
        A member publishing a group, or a better alive node: do not found one.
        """
        members = [
            Member("edge2", ("h", 1), "alive", 1, {}),
            Member("cloudserver1", ("h", 2), "alive", 1, {}),
        ]
        agent = self.make("edge2", members, {"cloudserver1": ("h:2", False)})
        self.clock.advance(6)
        agent.step()
        self.assertEqual(self.node.configs.config.voters, frozenset())
        agent = self.make("cloudserver1", members, {"edge2": ("h:1", True)})
        self.clock.advance(6)
        agent.step()
        self.assertEqual(self.node.configs.config.voters, frozenset())
        agent = self.make("cloudserver1", members, {"edge2": ("h:1", False)}, bootstrap=False)
        self.clock.advance(6)
        agent.step()
        self.assertEqual(self.node.configs.config.voters, frozenset({"cloudserver1"}))

    def test_leaderAddsAndRemoves(self) -> None:
        """
        The leader adds alive members that publish an address and removes
        members gone from gossip for removeAfter.
        """
        members = [Member("a", ("h", 1), "alive", 1, {}), Member("b", ("h", 2), "alive", 1, {})]
        agent = self.make("a", members, {"b": ("h:2", False)})
        self.node.configs.config = Configuration(frozenset({"a", "gone"}))
        self.node.leader = object()
        agent.step()
        self.assertEqual(self.node.changes, [("addVoter", "b", "h:2")])
        self.assertEqual(agent.raftService.transport.peers, {"b": "h:2"})
        self.clock.advance(31)
        agent.step()
        self.assertEqual(self.node.changes[-1], ("remove", "gone", ""))

    def test_foreignMembersNeverAdded(self) -> None:
        """
        The leader adds nodes that publish its group id, or no id and no
        membership; members of another group (by their gossip record, or by
        their refusal of our messages) and members of some configuration
        without an id are never added.  The meeting is logged once, naming
        both groups and their members, and shown in the status.
        """
        logged = self.captureLog()
        names = ["a", "b", "c", "d", "e", "f"]
        members = [Member(n, ("h", i), "alive", 1, {}) for i, n in enumerate(names)]
        published = {n: (f"h:{i}", n in ("b", "e", "f")) for i, n in enumerate(names)}
        groups = {"b": "00000000000000b2", "d": "00000000000000a1"}
        agent = self.make("a", members, published, raftGroups=lambda: groups)
        self.node.groupId = 0xA1
        self.node.foreignPeers = {"f": 0xC3}
        self.node.configs.config = Configuration(frozenset({"a"}))
        self.node.leader = object()
        for _ in range(3):
            agent.step()
        self.assertLessEqual({name for _, name, _ in self.node.changes}, {"c", "d"})
        self.assertTrue(self.node.changes)
        self.assertEqual([n for n in names[1:] if agent._addable(n, published[n][1])], ["c", "d"])
        self.assertEqual(agent.status()["group"], "00000000000000a1")
        self.assertEqual(agent.status()["foreignMembers"], {"b": "00000000000000b2", "f": "00000000000000c3"})
        self.assertEqual(self.published[-1]["group"], "00000000000000a1")
        meetings = [line for line in logged if "has met" in line]
        self.assertEqual(
            meetings,
            [
                "Raft group 00000000000000a1 (members a) has met Raft group 00000000000000b2 (members b); "
                "Raft group 00000000000000c3 (members f): the groups stay apart and each keeps its own "
                "leases; to merge, stop the nodes of one group, move their DATA_DIR/raft aside and start "
                "them again (they join as new members)"
            ],
        )
        members[:] = [m for m in members if m.name not in ("b", "f")]
        agent.step()
        self.assertEqual(agent.status()["foreignMembers"], {})
        self.assertIn("no member of another Raft group is alive in gossip any more", logged)

    def test_foreignMemberRemoved(self) -> None:
        """
        A member of ours found to belong to another group (it refused our
        appends) is removed from the configuration.
        """
        members = [Member(n, ("h", 1), "alive", 1, {}) for n in ("a", "b")]
        agent = self.make("a", members, {"b": ("h:1", True)})
        self.node.groupId = 0xA1
        self.node.foreignPeers = {"b": 0xB2}
        self.node.configs.config = Configuration(frozenset({"a"}), frozenset({"b"}))
        self.node.leader = object()
        agent.step()
        self.assertEqual(self.node.changes, [("remove", "b", "")])
        # A voter taken by the other group (it lost its data) goes too.
        self.node.configs.config = Configuration(frozenset({"a", "b"}))
        agent.step()
        self.assertEqual(self.node.changes[-1], ("remove", "b", ""))

    def test_noGroupNoForeign(self) -> None:
        """
        A node without a group id yet (new, or storage from before group
        ids) reports no foreign members and publishes no group.
        """
        members = [Member(n, ("h", 1), "alive", 1, {}) for n in ("a", "b")]
        agent = self.make("a", members, {"b": ("h:1", True)}, raftGroups=lambda: {"b": "00000000000000b2"})
        agent.step()
        self.assertEqual(agent.status()["foreignMembers"], {})
        self.assertNotIn("group", self.published[-1])

    def captureLog(self) -> list[str]:
        logged: list[str] = []
        observer = cast(ILogObserver, lambda e: logged.append(formatEvent(e)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return logged

    def test_oneChangeAtATime(self) -> None:
        """
        Membership changes go through the shared machine
        (L{suite.raft.memberchange}, tested there): while a change is in
        flight the agent proposes no other; once it ends (committed or
        failed, each logged) the next is proposed.
        """
        logged = self.captureLog()
        members = [Member("a", ("h", 1), "alive", 1, {}), Member("b", ("h", 2), "alive", 1, {})]
        node = _PendingNode("a")
        agent = self.make("a", members, {"b": ("h:2", False)}, node)
        node.configs.config = Configuration(frozenset({"a", "gone"}))
        node.leader = object()
        agent.step()
        self.clock.advance(31)
        agent.step()
        self.assertEqual(node.changes, [("addVoter", "b", "h:2")])
        node.pending.pop().callback(None)
        self.assertIn("raft membership: addVoter b done", logged)
        agent.step()
        self.assertEqual(node.changes[-1], ("remove", "gone", ""))
        node.pending.pop().errback(NotLeader(None, "no longer leader"))
        self.assertIn("raft membership: remove gone failed: not leader: no longer leader", logged)
        agent.step()
        self.assertEqual(len(node.changes), 3)

    def test_changeFailsAtOnce(self) -> None:
        """
        A change refused at once (not the leader) leaves the agent free to
        propose again at its next round.
        """
        logged = self.captureLog()
        members = [Member("a", ("h", 1), "alive", 1, {}), Member("b", ("h", 2), "alive", 1, {})]
        agent = self.make("a", members, {"b": ("h:2", False)})
        self.node.changeMembership = lambda *a: fail(NotLeader(None, "no"))  # type: ignore[method-assign]
        self.node.configs.config = Configuration(frozenset({"a"}))
        self.node.leader = object()
        agent.step()
        self.assertFalse(agent.change.busy())
        self.assertIn("raft membership: addVoter b failed: not leader: no", logged)
