"""
The replicated cluster state: merging, chunking, limits, departures, and a
seeded simulation over the in-memory gossip network.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.constellation.state import ClusterState, DepartureListener, admitFrom
from suite.gossip.interfaces import IGossipDelegate, IMembership, IMembershipListener
from suite.gossip.member import Member
from suite.gossip.node import GossipNode
from suite.gossip.settings import GossipSettings
from tests.support.gossipsim import Recorder, Simulation


def pair(**kw: Any) -> tuple[ClusterState, ClusterState, list[bytes]]:
    """
    Two states; a's broadcasts are collected (delivered by the test).
    """
    clock = Clock()
    sent: list[bytes] = []
    a = ClusterState("a", 1, clock, sent.append, **kw)
    b = ClusterState("b", 1, clock, **kw)
    return a, b, sent


@implementer(IMembership)
class FakeMembership:
    """
    An L{IMembership} whose members a test sets directly.
    """

    name = "self"

    def __init__(self, *members: Member) -> None:
        self.known = {m.name: m for m in members}
        self.broadcasts: list[bytes] = []

    def start(self, seeds: Iterable[tuple[str, int]]) -> Any:
        raise NotImplementedError

    def members(self) -> list[Member]:
        return list(self.known.values())

    def member(self, name: str) -> Member | None:
        return self.known.get(name)

    def setMetadata(self, meta: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def queueBroadcast(self, data: bytes) -> None:
        self.broadcasts.append(data)

    def leave(self) -> Any:
        raise NotImplementedError


class ClusterStateTests(SynchronousTestCase):
    """
    Merging by per-origin versions.
    """

    def test_interfaces(self) -> None:
        """
        The state is a gossip delegate; the departure listener a membership listener.
        """
        state = ClusterState("a", 1, Clock())
        self.assertTrue(verifyObject(IGossipDelegate, state))
        self.assertTrue(verifyObject(IMembershipListener, DepartureListener(state)))

    def test_admitFromMembership(self) -> None:
        """
        C{admitFrom} asks only the membership: origins it holds as dead or
        left are refused, alive, suspect and unknown ones admitted; updates
        from a refused origin are dropped.
        """
        membership = FakeMembership(
            Member("up", ("10.0.0.1", 7946), "alive", 1, {}),
            Member("odd", ("10.0.0.2", 7946), "suspect", 1, {}),
            Member("down", ("10.0.0.3", 7946), "dead", 2, {}),
            Member("gone", ("10.0.0.4", 7946), "left", 3, {}),
        )
        self.assertTrue(verifyObject(IMembership, membership))
        admit = admitFrom(membership)
        self.assertEqual([o for o in ("up", "odd", "down", "gone", "new") if admit(o)], ["up", "odd", "new"])
        for status, held in (("alive", True), ("left", False)):
            a, b, sent = pair()
            b.admit = admitFrom(FakeMembership(Member("a", ("10.0.0.5", 7946), status, 1, {})))
            a.update({"node": {"priority": 1}})
            for data in sent:
                b.notifyMsg(data)
            self.assertEqual("a" in b.origins(), held, status)

    def test_broadcastDelta(self) -> None:
        """
        A change is one broadcast; the receiver holds the value; an
        unchanged value sends nothing; duplicates and reordering are harmless.
        """
        a, b, sent = pair()
        self.assertEqual(
            a.update({"node": {"priority": 10}, "svc/web": {"healthy": True}}), ["node", "svc/web"]
        )
        self.assertEqual(a.update({"node": {"priority": 10}}), [])
        self.assertEqual(len(sent), 1)
        a.update({"svc/web": {"healthy": False}})
        for data in reversed(sent):
            b.notifyMsg(data)
        b.notifyMsg(sent[0])
        self.assertEqual(b.entries("a"), {"node": {"priority": 10}, "svc/web": {"healthy": False}})
        self.assertEqual(b.version("a"), (1, 3))

    def test_deleteUnderPrefix(self) -> None:
        """
        update(prefix=) deletes keys missing from the new set; the tombstone
        beats a stale copy arriving later.
        """
        a, b, sent = pair()
        a.update({"svc/x": 1, "svc/y": 2, "node": 0})
        stale = a.localState(False)
        a.update({"svc/y": 2}, prefix="svc/")
        self.assertEqual(a.entries("a"), {"svc/y": 2, "node": 0})
        b.mergeRemoteState(a.localState(False), False)
        b.mergeRemoteState(stale, False)
        self.assertEqual(b.entries("a"), {"svc/y": 2, "node": 0})

    def test_newGeneration(self) -> None:
        """
        A restarted origin (higher generation) replaces all its old entries;
        an older generation is ignored.
        """
        clock = Clock()
        old = ClusterState("a", 1, clock)
        old.update({"svc/x": 1, "svc/y": 2})
        new = ClusterState("a", 2, clock)
        new.update({"node": 0})
        b = ClusterState("b", 1, clock)
        b.mergeRemoteState(old.localState(False), False)
        b.mergeRemoteState(new.localState(False), False)
        b.mergeRemoteState(old.localState(False), False)
        self.assertEqual(b.entries("a"), {"node": 0})

    def test_ownEntriesAuthoritative(self) -> None:
        """
        Nobody else's copy changes this node's own entries.
        """
        clock = Clock()
        a = ClusterState("a", 5, clock)
        a.update({"k": "mine"})
        forged = ClusterState("a", 9, clock)
        forged.update({"k": "forged"})
        a.mergeRemoteState(forged.localState(False), False)
        self.assertEqual(a.entries("a"), {"k": "mine"})

    def test_chunked(self) -> None:
        """
        A delta larger than a packet is sent in chunks and reassembled in any
        order; a missing chunk leaves nothing half-applied.
        """
        a, b, sent = pair(maxChunk=300)
        big = {f"svc/{i}": {"labels": {"x": "y" * 50, "i": i}} for i in range(40)}
        a.update(big)
        self.assertGreater(len(sent), 10)
        self.assertTrue(all(len(s) <= 300 for s in sent))
        random.Random(1).shuffle(sent)
        for data in sent[:-1]:
            b.notifyMsg(data)
        self.assertEqual(b.entries("a"), {})
        b.notifyMsg(sent[-1])
        self.assertEqual(b.entries("a"), big)
        for data in sent:
            b.notifyMsg(data)
        self.assertEqual(b.stats["refused"], 0)

    def test_chunkLimits(self) -> None:
        """
        Assemblies beyond the size limit are refused; too many at once drop
        the oldest; expired ones are forgotten.
        """
        clock = Clock()
        b = ClusterState("b", 1, clock, maxChunk=300, maxMessage=3000, maxAssemblies=2, assemblyTimeout=10)
        b.notifyMsg(msgpack.packb(["C", "x", 0, 100, b"p"]))
        self.assertEqual(b.stats["refused"], 1)
        for ident in ("p", "q", "r"):
            b.notifyMsg(msgpack.packb(["C", ident, 0, 2, b"p"]))
        self.assertEqual(b.stats["chunksDropped"], 1)
        clock.advance(11)
        b.notifyMsg(msgpack.packb(["C", "s", 0, 2, b"p"]))
        self.assertEqual(b.stats["chunksExpired"], 2)

    def test_garbage(self) -> None:
        """
        Garbage, malformed deltas and states are counted and ignored.
        """
        b = ClusterState("b", 1, Clock())
        for data in (
            b"\xc1",
            os.urandom(64),
            msgpack.packb(["D", 1, 2, 3]),
            msgpack.packb(["D", "a", 1, [[1]]]),
        ):
            b.notifyMsg(data)
        b.mergeRemoteState(b"\x00garbage", False)
        b.mergeRemoteState(msgpack.packb(["S", [["D", "a", 1, "x"], ["D", "c", 1, [["k", 1, "v"]]]]]), False)
        self.assertEqual(b.origins(), ["b", "c"])
        self.assertGreaterEqual(b.stats["refused"], 6)

    def test_departure(self) -> None:
        """
        A dead member's entries go, and admit() refuses them while it is dead.
        """
        a, b, sent = pair()
        a.update({"svc/x": 1})
        changes: list[int] = []
        b.onChange = lambda: changes.append(1)
        dead: set[str] = set()
        b.admit = lambda origin: origin not in dead
        b.notifyMsg(sent[0])
        listener = DepartureListener(b)
        dead.add("a")
        listener.memberDied(Member("a", ("10.0.0.1", 7946), "dead", 1, {}))
        self.assertEqual((b.origins(), len(changes)), (["b"], 2))
        b.mergeRemoteState(a.localState(False), False)
        self.assertEqual(b.origins(), ["b"])
        dead.discard("a")
        b.mergeRemoteState(a.localState(False), False)
        self.assertEqual(b.entries("a"), {"svc/x": 1})
        listener.memberLeft(Member("a", ("10.0.0.1", 7946), "left", 1, {}))
        self.assertEqual(b.origins(), ["b"])


class StateSimulation(Simulation):
    """
    The gossip simulator with a L{ClusterState} delegate on every node.
    """

    def __init__(self, seed: int) -> None:
        super().__init__(seed, GossipSettings.local())
        self.cluster_states: dict[str, ClusterState] = {}
        self.generation = 0

    def add(self, name: str, meta: dict[str, Any] | None = None) -> GossipNode:
        addr = self.address(name)
        self.generation += 1
        state = ClusterState(name, self.generation, self.clock)
        node = GossipNode(
            name,
            addr,
            self.network.transport(addr, self.settings.maxPacketBytes),
            self.clock,
            self.settings,
            listener=DepartureListener(state, Recorder(self, name)),
            meta=meta,
            rng=random.Random(self.rng.random()),
            delegate=state,
        )
        state.attach(node.queueBroadcast)
        state.admit = admitFrom(node)
        self.cluster_states[name] = state
        self.nodes[name] = node
        self.down.discard(name)
        return node

    def converged(self, expected: dict[str, dict[str, Any]]) -> bool:
        return all(
            {o: self.cluster_states[n].entries(o) for o in self.cluster_states[n].origins()} == expected
            for n in self.live()
        )


class SimulationTests(SynchronousTestCase):
    """
    State over the in-memory gossip network, seeded (C{STATE_SEED=N} replays).
    """

    seed = int(os.environ.get("STATE_SEED", "7"))

    def test_convergeLossPartitionDeath(self) -> None:
        """
        Ten nodes with 10% loss converge; changes made on both sides of a
        partition converge after it heals; a crashed node's entries vanish
        from every other node.
        """
        sim = StateSimulation(self.seed)
        sim.baseLoss = 0.1
        names = sim.cluster(10, seeds=2)
        sim.runUntil(sim.allAlive, 30, "membership")
        big = "z" * 3000
        expected: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(names):
            values = {
                "node": {"priority": 50},
                f"svc/{name}": {"healthy": True, "pad": big if i == 0 else ""},
            }
            sim.cluster_states[name].update(values)
            expected[name] = values
        took = sim.runUntil(lambda: sim.converged(expected), 60, "convergence under loss")
        self.assertLess(took, 60)

        left, right = names[:5], names[5:]
        sim.partition(left, right)
        sim.run(1)
        sim.cluster_states[names[1]].update({f"svc/{names[1]}": {"healthy": False, "pad": ""}})
        sim.cluster_states[names[7]].update({}, prefix="svc/")
        expected[names[1]] = {"node": {"priority": 50}, f"svc/{names[1]}": {"healthy": False, "pad": ""}}
        expected[names[7]] = {"node": {"priority": 50}}
        sim.heal()
        sim.runUntil(sim.allAlive, 60, "membership after heal")
        sim.runUntil(lambda: sim.converged(expected), 90, "convergence after heal")

        sim.crash(names[3])
        del expected[names[3]]
        sim.runUntil(lambda: sim.converged(expected), 60, "dead node's entries removed")
        sim.stopAll()

    def test_fiftyNodes(self) -> None:
        """
        Fifty nodes with 5% loss: every node's entries reach every node.
        """
        sim = StateSimulation(self.seed + 1)
        sim.baseLoss = 0.05
        names = sim.cluster(50, seeds=3, spread=2.0)
        expected: dict[str, dict[str, Any]] = {}
        for name in names:
            expected[name] = {"node": {"priority": 50}, f"svc/{name}": {"healthy": True}}
            sim.cluster_states[name].update(expected[name])
        took = sim.runUntil(lambda: sim.converged(expected), 60, "convergence of 50 nodes", step=1.0)
        self.assertLessEqual(took, 60)
        sim.stopAll()
