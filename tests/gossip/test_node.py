"""
Tests for L{GossipNode} on the in-memory network, and its observability.
"""

from __future__ import annotations

import random
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.gossip import delegation, merge
from suite.gossip import node as nodeModule
from suite.gossip.codec import Codec
from suite.gossip.interfaces import IGossipDelegate, IGossipTransport, IMembership, IPacketReceiver
from suite.gossip.memory import MemoryNetwork
from suite.gossip.messages import Ack, Alive, Ping, Suspect, encodeMessage
from suite.gossip.node import GossipNode
from suite.gossip.observe import GossipHealth, register
from suite.gossip.settings import GossipSettings
from suite.web.interfaces import IHealth
from tests.support.gossipsim import Recorder, Simulation, VersionedState


class NodeTests(SynchronousTestCase):
    """
    Two or three nodes on one clock.
    """

    def setUp(self) -> None:
        self.sim = Simulation(1)
        self.logged: list[dict[str, Any]] = []
        for module in (nodeModule, merge, delegation):
            self.patch(module, "log", Logger(observer=cast(ILogObserver, self.logged.append)))

    def tearDown(self) -> None:
        self.sim.stopAll()
        self.sim.run(1.0)
        self.assertEqual(self.sim.clock.getDelayedCalls(), [])

    def cluster(self, n: int = 2, **meta: Any) -> list[GossipNode]:
        names = self.sim.cluster(n, spread=0.1)
        self.sim.run(2.0)
        return [self.sim.nodes[x] for x in names]

    def test_interfaces(self) -> None:
        """
        The node provides the membership API and the receiver interface; the
        memory transport provides the transport interface; the health
        adapter provides IHealth.
        """
        a, b = self.cluster()
        self.assertTrue(verifyObject(IMembership, a))
        self.assertTrue(verifyObject(IPacketReceiver, a))
        self.assertTrue(verifyObject(IGossipTransport, a.transport))
        self.assertTrue(verifyObject(IHealth, GossipHealth(a)))

    def test_join(self) -> None:
        """
        A node joining through a seed sees the seed alive and is seen alive;
        the listener hears "joined".
        """
        a, b = self.cluster()
        self.assertEqual([(m.name, m.status) for m in a.members()], [("n00", "alive"), ("n01", "alive")])
        self.assertEqual([(m.name, m.status) for m in b.members()], [("n01", "alive"), ("n00", "alive")])
        self.assertIn(
            (self.sim.clock.seconds(), "n00", "joined", "n01")[1:], [e[1:] for e in self.sim.events]
        )
        self.assertTrue(any("joined" in e["log_format"] for e in self.logged))

    def test_metadata(self) -> None:
        """
        setMetadata bumps the incarnation and reaches the other node, whose
        listener hears "updated"; oversized metadata is refused.
        """
        a, b = self.cluster()
        self.assertEqual(a.incarnation, 1)  # memberlist's first incarnation
        a.setMetadata({"services": ["web"], "health": "ok"})
        self.assertEqual(a.incarnation, 2)
        self.sim.run(2.0)
        member = b.member("n00")
        assert member is not None
        self.assertEqual(member.meta, {"services": ["web"], "health": "ok"})
        self.assertIn(("n01", "updated", "n00"), [e[1:] for e in self.sim.events])
        self.assertRaises(ValueError, a.setMetadata, {"x": "y" * 1000})

    def test_refuteSuspicion(self) -> None:
        """
        A suspicion of the node at its incarnation makes it refute with a
        higher one and raises its local health score.
        """
        a, b = self.cluster()
        a.packetReceived(Codec().packPacket([encodeMessage(Suspect("n00", 1, "n01"))]), ("10.0.0.2", 7946))
        self.assertEqual(a.incarnation, 2)
        self.assertEqual(a.awareness, 1)
        self.sim.run(1.0)
        member = b.member("n00")
        assert member is not None
        self.assertEqual((member.status, member.incarnation), ("alive", 2))

    def test_staleSelfAlive(self) -> None:
        """
        An alive about this node from an older life with a higher
        incarnation is overridden.
        """
        a, b = self.cluster()
        a.packetReceived(
            Codec().packPacket([encodeMessage(Alive("n00", 5, ("10.0.0.1", 7946), {}))]),
            ("10.0.0.2", 7946),
        )
        self.assertEqual(a.incarnation, 6)

    def test_malformedDroppedAndRateLimited(self) -> None:
        """
        Malformed packets are dropped with one log line per interval that
        counts the rest.
        """
        a, b = self.cluster()
        before = len(self.logged)
        for _ in range(5):
            a.packetReceived(b"garbage", ("10.9.9.9", 1))
        drops = [e for e in self.logged[before:] if "dropped" in e["log_format"]]
        self.assertEqual(len(drops), 1)
        self.sim.run(11.0)
        a.packetReceived(b"garbage", ("10.9.9.9", 1))
        drops = [e for e in self.logged[before:] if "dropped" in e["log_format"]]
        self.assertEqual(drops[-1]["suppressed"], 4)
        self.assertEqual(a.stats["packetsDropped"], 6)

    def test_misdirectedPing(self) -> None:
        """
        A ping for another name (a stale address) is not acknowledged.
        """
        a, b = self.cluster()
        sent = a.stats.get("packetsSent", 0)
        a.packetReceived(
            Codec().packPacket([encodeMessage(Ping(9, "other", "n01", ("10.0.0.2", 7946)))]), ("x", 1)
        )
        self.assertEqual(a.stats.get("packetsSent", 0), sent)
        self.assertEqual(a.stats["misdirectedPings"], 1)

    def test_leave(self) -> None:
        """
        A leaving node is seen as left; its leave Deferred fires once it has
        stopped.
        """
        a, b, c = self.cluster(3)
        d = c.leave()
        self.assertNoResult(d)
        self.assertEqual(GossipHealth(c).check().ready, False)
        self.sim.run(2.0)
        self.successResultOf(d)
        self.assertFalse(c.running)
        for n in (a, b):
            member = n.member("n02")
            assert member is not None
            self.assertEqual(member.status, "left")
        self.sim.down.add("n02")

    def test_health(self) -> None:
        """
        Health is ready while running and reports members by state.
        """
        a, b = self.cluster()
        report = GossipHealth(a).check()
        self.assertTrue(report.ready)
        self.assertEqual(report.details["members"], {"alive": 2, "suspect": 0, "dead": 0, "left": 0})
        self.sim.crash("n01")
        self.sim.run(30.0)
        self.assertEqual(GossipHealth(a).check().details["members"]["dead"], 1)

    def test_metrics(self) -> None:
        """
        The collector exposes members by state and event counters.
        """
        a, b = self.cluster()
        registry = CollectorRegistry()
        register(a, registry)
        text = generate_latest(registry).decode()
        self.assertIn('gossip_members{state="alive"} 2.0', text)
        self.assertIn("gossip_incarnation 1.0", text)
        self.assertIn('gossip_events_total{event="probes"}', text)


class KeyTests(SynchronousTestCase):
    """
    The shared secret.
    """

    def test_mismatchedKeysNeverJoin(self) -> None:
        """
        Nodes with different keys drop each other's packets and state.
        """
        clock = Clock()
        net = MemoryNetwork(clock, random.Random(2))
        s = GossipSettings()
        a = GossipNode("a", ("10.9.0.1", 1), net.transport(("10.9.0.1", 1)), clock, s, key=b"a" * 32)
        b = GossipNode("b", ("10.9.0.2", 2), net.transport(("10.9.0.2", 2)), clock, s, key=b"b" * 32)
        a.start([])
        joined = b.start([("10.9.0.1", 1)])
        clock.pump([0.1] * 50)
        self.assertEqual(self.successResultOf(joined), 0)
        self.assertEqual(len(a.members()), 1)
        self.assertEqual(a.stats["statesDropped"], 1)
        a.stop()
        b.stop()
        clock.advance(1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_sameKeyJoins(self) -> None:
        """
        Nodes with the same key join.
        """
        sim = Simulation(3, key=b"secret-key-0123456789-abcdefghij")
        sim.cluster(3)
        sim.runUntil(sim.allAlive, 10.0, "join")
        sim.stopAll()
        sim.run(1.0)


class RecorderTests(SynchronousTestCase):
    """
    The simulator's listener.
    """

    def test_interface(self) -> None:
        """
        It provides IMembershipListener.
        """
        from suite.gossip.interfaces import IMembershipListener

        self.assertTrue(verifyObject(IMembershipListener, Recorder(Simulation(0), "x")))


class DelegateTests(SynchronousTestCase):
    """
    The delegate API: user broadcasts and user state in push-pull.
    """

    def setUp(self) -> None:
        self.sim = Simulation(7)
        self.sim.withState = True

    def tearDown(self) -> None:
        self.sim.stopAll()
        self.sim.run(1.0)

    def test_interface(self) -> None:
        """
        The simulator's delegate provides IGossipDelegate.
        """
        self.assertTrue(verifyObject(IGossipDelegate, VersionedState("x")))

    def test_broadcast(self) -> None:
        """
        A queued user message reaches other members' notifyMsg and is sent
        a bounded number of times (so, like memberlist's, it may miss a
        member: state that must converge goes through push-pull, below).
        """
        names = self.sim.cluster(8, spread=0.1)
        self.sim.run(5.0)
        sender = self.sim.nodes["n00"]
        sender.queueBroadcast(b"hello")
        self.sim.run(10.0)
        got = [n for n in names[1:] if b"hello" in self.sim.states[n].messages]
        self.assertGreaterEqual(len(got), 3)
        self.assertEqual(self.sim.states["n00"].messages, [])
        self.assertEqual(len(sender.dissemination.userMessages), 0)
        sent = sum(node.stats.get("userMessages", 0) for node in self.sim.nodes.values())
        self.assertLessEqual(sent, sender.settings.retransmitLimit(8))

    def test_converges(self) -> None:
        """
        Versioned per-origin state set on every node converges everywhere
        through broadcasts and push-pull.
        """
        names = self.sim.cluster(8, spread=0.1)
        self.sim.run(5.0)
        for n in names:
            self.sim.states[n].set(f"v-{n}")
        expected = {n: (1, f"v-{n}") for n in names}
        self.sim.runUntil(
            lambda: all(self.sim.states[n].entries == expected for n in names),
            limit=3 * self.sim.settings.pushPullInterval,
            what="state convergence",
        )

    def test_broadcastLimits(self) -> None:
        """
        Non-bytes and messages too large for a packet are refused; the queue
        of pending user messages is bounded.
        """
        node = self.sim.add("solo")
        self.assertRaises(ValueError, node.queueBroadcast, "text")
        self.assertRaises(ValueError, node.queueBroadcast, b"x" * 2000)
        for i in range(node.settings.maxUserBroadcasts + 10):
            node.queueBroadcast(str(i).encode())
        self.assertEqual(len(node.dissemination.userMessages), node.settings.maxUserBroadcasts)

    def test_pushPullState(self) -> None:
        """
        A join's push-pull carries the delegate state both ways, flagged as
        a join; later push-pulls carry it without the flag.
        """
        a = self.sim.add("a")
        b = self.sim.add("b")
        self.sim.states["a"].entries["a"] = (3, "x")
        self.sim.states["b"].entries["b"] = (5, "y")
        self.sim.start("a", [])
        self.sim.start("b", ["a"])
        self.sim.run(1.0)
        self.assertEqual(self.sim.states["a"].entries, {"a": (3, "x"), "b": (5, "y")})
        self.assertEqual(self.sim.states["b"].entries, {"a": (3, "x"), "b": (5, "y")})
        self.assertTrue(self.sim.states["a"].merged[0][1])
        self.assertTrue(self.sim.states["b"].merged[0][1])
        self.sim.run(a.settings.pushPullInterval * 2)
        self.assertIn(False, [join for _, join in self.sim.states["b"].merged])
        self.assertTrue(b.running)

    def test_delegateFailures(self) -> None:
        """
        A delegate that raises or returns a non-bytes state does not stop
        the node.
        """

        @implementer(IGossipDelegate)
        class Broken:
            def notifyMsg(self, data: bytes) -> None:
                raise RuntimeError("boom")

            def localState(self, join: bool) -> bytes:
                return "not bytes"  # type: ignore[return-value]

            def mergeRemoteState(self, data: bytes, join: bool) -> None:
                raise RuntimeError("boom")

        logged: list[dict[str, Any]] = []
        self.patch(delegation, "log", Logger(observer=cast(ILogObserver, logged.append)))
        a = self.sim.add("a")
        b = self.sim.add("b")
        b.delegate = Broken()
        self.sim.states["a"].entries["a"] = (1, "x")
        self.sim.start("a", [])
        self.sim.start("b", ["a"])
        self.sim.run(2.0)
        a.queueBroadcast(b"m")
        self.sim.run(3.0)
        self.assertEqual({m.name for m in b.members() if m.status == "alive"}, {"a", "b"})
        self.assertTrue(any(e.get("log_failure") for e in logged))


class WireTests(SynchronousTestCase):
    """
    The node's side of memberlist's protocol details.
    """

    def setUp(self) -> None:
        self.sim = Simulation(5)
        self.names = self.sim.cluster(2, spread=0.1)
        self.sim.run(2.0)
        self.a = self.sim.nodes["n00"]

    def tearDown(self) -> None:
        self.sim.stopAll()
        self.sim.run(1.0)

    def test_streamPing(self) -> None:
        """
        memberlist's fallback probe over TCP is answered with an ack on the
        stream; one for another node is not.
        """
        codec = Codec()
        reply = self.a.stateReceived(
            codec.encodeStream(Ping(42, "n00", "x", ("10.0.0.9", 1))), ("10.0.0.9", 5)
        )
        assert reply is not None
        self.assertEqual(codec.decodeStream(reply), Ack(42))
        self.assertIsNone(
            self.a.stateReceived(codec.encodeStream(Ping(1, "other", "x", ("10.0.0.9", 1))), ("h", 1))
        )
        self.assertTrue(self.a.streamComplete(codec.encodeStream(Ack(1))))
        self.assertFalse(self.a.streamComplete(codec.encodeStream(Ack(1))[:3]))

    def test_addressMustBeIP(self) -> None:
        """
        memberlist carries raw IP bytes: a host name as the node's own
        address is refused at construction.
        """
        t = self.sim.network.transport(("10.0.0.99", 1))
        with self.assertRaises(ValueError) as cm:
            GossipNode("x", ("node.example", 1), t, self.sim.clock)
        self.assertIn("IP address", str(cm.exception))

    def test_incompatibleVersions(self) -> None:
        """
        An alive whose protocol range excludes ours is ignored; the versions
        a member advertises decide nacks and checksums.
        """
        old = Alive("old", 1, ("10.0.0.7", 7946), {}, bytes([1, 3, 2, 0, 0, 0]))
        future = Alive("future", 1, ("10.0.0.8", 7946), {}, bytes([3, 6, 3, 0, 0, 0]))
        self.a.packetReceived(
            Codec().packPacket([encodeMessage(old), encodeMessage(future)]), ("10.0.0.7", 7946)
        )
        self.assertIsNotNone(self.a.member("old"))
        self.assertIsNone(self.a.member("future"))
        self.assertIn(("10.0.0.7", 7946), self.a.dissemination.oldProtocol)
        self.assertEqual(self.a.vsn, bytes([1, 5, 2, 2, 5, 4]))

    def test_foreignMetaPassedOn(self) -> None:
        """
        A member's metadata bytes are passed on as received (memberlist
        compares bytes), in gossip and in push-pull.
        """
        raw = b"\xff\x81\xa4role\xa2db"
        m = Alive("serf", 3, ("10.0.0.5", 7946), {"role": "db"}, bytes([1, 5, 2, 2, 5, 5]), raw)
        self.a.packetReceived(Codec().packPacket([encodeMessage(m)]), ("10.0.0.5", 7946))
        states = {s.name: s for s in self.a.localStates()}
        self.assertEqual(states["serf"].rawMeta, raw)
        self.assertEqual(states["serf"].vsn, bytes([1, 5, 2, 2, 5, 5]))
        self.assertIn(encodeMessage(m), [p.encoded for p in self.a.dissemination.updates._items.values()])
