"""
The Raft identity derived from the gossip key, the agent's bootstrap and
membership decisions (with a fake node and gossip view), and the
membership change machine.
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

from suite.constellation.consensus import (
    BOOTSTRAP_MARKER,
    ChangeCore,
    ChangeInputs,
    MembershipChange,
    RaftAgent,
    derivedBundle,
)
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

    def bootstrap(self, address: str) -> bool:
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


class AgentTests(SynchronousTestCase):
    def make(
        self, name: str, members: list[Member], published: dict[str, tuple[str, bool]], **kw: Any
    ) -> RaftAgent:
        self.clock = Clock()
        self.node = _Node(name)
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


class _PendingNode:
    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str]] = []
        self.pending: list[Deferred[None]] = []

    def changeMembership(self, action: str, name: str, address: str) -> Deferred[None]:
        self.changes.append((action, name, address))
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


def changeStateOf(inputs: ChangeInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class MembershipChangeTests(SynchronousTestCase):
    """
    The membership change machine: every input in both states.
    """

    def setUp(self) -> None:
        self.node = _PendingNode()
        self.change: ChangeInputs = MembershipChange(ChangeCore(self.node))
        self.logged: list[str] = []
        observer = cast(ILogObserver, lambda e: self.logged.append(formatEvent(e)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def test_idle(self) -> None:
        """
        Idle: not busy; a late finished changes nothing; begin proposes the
        change and is busy until it finishes.
        """
        self.assertFalse(self.change.busy())
        self.change.finished(None)
        self.assertEqual((changeStateOf(self.change), self.node.changes, self.logged), ("Idle", [], []))
        self.change.begin("addVoter", "b", "h:2")
        self.assertEqual(self.node.changes, [("addVoter", "b", "h:2")])
        self.assertEqual(changeStateOf(self.change), "Changing")
        self.assertTrue(self.change.busy())

    def test_changing(self) -> None:
        """
        Changing: busy; a second begin proposes nothing; finished -> Idle,
        logging the outcome.
        """
        self.change.begin("addVoter", "b", "h:2")
        self.change.begin("remove", "c", "")
        self.assertEqual(self.node.changes, [("addVoter", "b", "h:2")])
        self.assertTrue(self.change.busy())
        self.node.pending.pop().callback(None)
        self.assertEqual(changeStateOf(self.change), "Idle")
        self.assertIn("raft membership: addVoter b done", self.logged)
        self.change.begin("remove", "c", "")
        self.node.pending.pop().errback(NotLeader(None, "no longer leader"))
        self.assertFalse(self.change.busy())
        self.assertTrue(any(line.startswith("raft membership: remove c failed") for line in self.logged))

    def test_synchronousAnswer(self) -> None:
        """
        A change that fails at once (not leader) leaves the machine Idle.
        """
        node = _Node("a")
        node.changeMembership = lambda *a: fail(NotLeader(None, "no"))  # type: ignore[method-assign]
        change = MembershipChange(ChangeCore(node))
        change.begin("remove", "b", "")
        self.assertFalse(change.busy())
