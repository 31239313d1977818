"""
Deterministic simulations of routing, ordering, re-sync and lifecycle on
an in-memory network (one Clock, seeded RNG).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from twisted.internet.interfaces import IReactorTime
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Policies
from suite.spacecomms.envelope import (
    MAX_SYNC_SUMMARY_ENTRIES,
    ROUTED_TYPES,
    SYNC_SUMMARY_FRAME_BYTES,
    Envelope,
    decodeEnvelope,
)
from suite.spacecomms.interfaces import IPeerLink
from suite.spacecomms.node import SpaceNode
from suite.spacecomms.store import MemoryStore, Record
from tests.spacecomms.sim import SimNet, SkewedClock, stored

OPEN = Policies()


def _without(node: SpaceNode, capability: str) -> None:
    """
    Make C{node} behave from now on as an older version without
    C{capability}: it does not announce it in its HELLOs, nor use it with
    peers that do.
    """
    hello, capable = node.helloPayload, node.peerCapable

    def olderHello(peer: str | None) -> dict[str, Any]:
        payload = hello(peer)
        payload["capabilities"] = [c for c in payload["capabilities"] if c != capability]
        return payload

    def olderCapable(peer: str, name: str) -> bool:
        return name != capability and capable(peer, name)

    node.helloPayload = olderHello  # type: ignore[method-assign, assignment]
    node.peerCapable = olderCapable  # type: ignore[method-assign, assignment]


def _mesh(net: SimNet, edges: list[tuple[str, str]], **overrides: object) -> None:
    names = sorted({n for e in edges for n in e})
    for n in names:
        peers = {b if a == n else a: OPEN for a, b in edges if n in (a, b)}
        net.addNode(n, peers, **overrides)
    for a, b in edges:
        net.connect(a, b)


class RoutingSimulationTests(SynchronousTestCase):
    """
    Many seeds of random traffic over lines, triangles and meshes.
    """

    def _scenario(self, seed: int, edges: list[tuple[str, str]], reorder: bool) -> SimNet:
        net = SimNet(seed, reorder=reorder)
        self.addCleanup(net.stop)
        _mesh(net, edges)
        names = sorted(net.nodes)
        ids = []
        for i in range(30):
            origin = net.rng.choice(names)
            cid = f"CDM-{seed}-{i}"
            now = net.clock.seconds()
            net.nodes[origin].ingestCDM(
                sampleCDM(cid, tca=now + 86400 + i * 600, created=now, object2=str(40000 + i))
            )
            ids.append((origin, cid))
            net.run(net.rng.uniform(0, 0.03))
        for origin, cid in net.rng.sample(ids, 10):
            net.nodes[origin].withdrawCDM(cid, "FALSE_POSITIVE")
            net.run(0.01)
        net.run(2)
        return net

    def test_convergenceWithoutDuplicates(self) -> None:
        """
        Whatever the topology and delays, every node ends with the same CDMs
        in the same state, and no node applies a message twice.
        """
        topologies = {
            "line": [("A", "B"), ("B", "C")],
            "triangle": [("A", "B"), ("B", "C"), ("A", "C")],
            "mesh": [("A", "B"), ("B", "C"), ("C", "D"), ("D", "A"), ("A", "C"), ("B", "D")],
        }
        for seed in range(4):
            for name, edges in topologies.items():
                net = self._scenario(seed, edges, reorder=False)
                states = {n: net.state(n) for n in net.nodes}
                first = states["A"]
                self.assertEqual(len(first), 30)
                self.assertEqual(sum(1 for active, _ in first.values() if not active), 10)
                for n, st in states.items():
                    self.assertEqual(st, first, f"seed {seed} {name}: {n} differs")
                counts = Counter(net.applied())
                self.assertEqual([k for k, v in counts.items() if v > 1], [], f"seed {seed} {name}")

    def test_reorderedWithdrawWins(self) -> None:
        """
        With messages reordered on the wire, a withdrawal that overtakes its
        announce is never undone by the older announce.
        """
        for seed in range(6):
            net = self._scenario(seed, [("A", "B"), ("B", "C"), ("A", "C")], reorder=True)
            states = {n: net.state(n) for n in net.nodes}
            self.assertEqual(states["A"], states["B"])
            self.assertEqual(states["A"], states["C"])

    def test_olderAnnounceIgnoredAfterWithdraw(self) -> None:
        """
        An announce carrying an older sequence than the stored withdrawal is
        ignored and logged as a routing decision.
        """
        net = SimNet(1)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B")])
        a, b = net.nodes["A"], net.nodes["B"]
        rec, _ = a.ingestCDM(sampleCDM("ORD-1"))
        announce = net.links[("A", "B")].sent[-1]
        a.withdrawCDM("ORD-1", "FALSE_POSITIVE")
        withdraw = net.links[("A", "B")].sent[-1]
        net.clock.advance(1)
        link = net.links[("B", "A")]
        self.assertTrue(verifyObject(IPeerLink, link))
        # Deliver a fresh copy of the old announce after the withdrawal.
        b.envelopeReceived(link, withdraw)
        replay = Envelope(
            announce.message_type, "A", announce.payload, timestamp=net.clock.seconds(), path=("A",)
        )
        b.envelopeReceived(link, replay)
        self.assertEqual(net.state("B")["ORD-1"], (False, "FALSE_POSITIVE"))
        self.assertTrue(net.logged("not newer than the stored version"))

    def test_maxHopCount(self) -> None:
        """
        A message travels at most max_hop_count hops.
        """
        net = SimNet(2)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B"), ("B", "C"), ("C", "D"), ("D", "E")], max_hop_count=3)
        net.nodes["A"].ingestCDM(sampleCDM("HOP-1"))
        net.run(1)
        reached = sorted(n for n in net.nodes if "HOP-1" in net.state(n))
        self.assertEqual(reached, ["A", "B", "C", "D"])

    def test_policies(self) -> None:
        """
        accept_cdm false drops CDMs from that peer; forward_cdm false keeps
        CDMs from being sent to it; object states follow their own flags.
        """
        net = SimNet(3)
        self.addCleanup(net.stop)
        net.addNode("A", {"B": OPEN})
        net.addNode("B", {"A": OPEN, "C": Policies(forward_cdm=False)})
        net.addNode("C", {"B": OPEN})
        net.connect("A", "B")
        net.connect("B", "C")
        net.nodes["A"].ingestCDM(sampleCDM("POL-1"))
        net.nodes["A"].announceObject("SAT-1", {"name": "one"})
        net.run(1)
        self.assertIn("POL-1", net.state("B"))
        self.assertNotIn("POL-1", net.state("C"))
        self.assertIn("SAT-1", net.state("C", "object"))
        # A reconnection's re-sync follows the same forward policy.
        net.disconnect("B", "C")
        net.connect("B", "C")
        net.run(1)
        self.assertNotIn("POL-1", net.state("C"))
        self.assertIn("SAT-1", net.state("C", "object"))

        net2 = SimNet(4)
        self.addCleanup(net2.stop)
        net2.addNode("A", {"B": OPEN})
        net2.addNode("B", {"A": Policies(accept_cdm=False)})
        net2.connect("A", "B")
        net2.nodes["A"].ingestCDM(sampleCDM("POL-2"))
        net2.run(1)
        self.assertNotIn("POL-2", net2.state("B"))
        self.assertTrue(net2.logged("dropped {message_type}"))


class ResyncSimulationTests(SynchronousTestCase):
    """
    Reconnection re-announces state; no entry a node accepted is dropped.
    """

    def test_partitionHealsAndResyncs(self) -> None:
        """
        Changes made on either side of a partition reach the other side
        after reconnection; an entry the peer no longer has is kept (only a
        withdrawal removes an entry from service).
        """
        net = SimNet(5)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B")])
        a = net.nodes["A"]
        a.ingestCDM(sampleCDM("RS-1", object2="1"))
        a.ingestCDM(sampleCDM("RS-2", object2="2"))
        a.ingestCDM(sampleCDM("RS-3", object2="3"))
        net.run(1)
        self.assertEqual(len(net.state("B")), 3)
        net.disconnect("A", "B")
        a.ingestCDM(sampleCDM("RS-4", object2="4"))
        a.withdrawCDM("RS-1", "ERROR")
        net.stores["A"].remove("cdm", "RS-2")
        net.nodes["B"].ingestCDM(sampleCDM("RS-5", object2="5"))
        net.run(1)
        net.connect("A", "B")
        net.run(1)
        b = net.state("B")
        self.assertEqual(b["RS-1"], (False, "ERROR"))
        self.assertEqual(b["RS-2"], (True, None))
        self.assertEqual(b["RS-3"], (True, None))
        self.assertEqual(b["RS-4"], (True, None))
        self.assertEqual(net.state("A")["RS-5"], (True, None))
        self.assertTrue([e for e in net.logged("re-sync from {peer} complete") if e["why"] == "END_OF_SYNC"])

    def test_relayThatLostAnEntryGetsItBack(self) -> None:
        """
        A relay that comes back without an entry it relayed (a restart on
        memory storage) gets it back from the peer it taught, which keeps
        it: the re-sync also carries what the peer taught.
        """
        net = SimNet(14)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B"), ("B", "C")])
        net.nodes["A"].ingestCDM(sampleCDM("LOST-1"))
        net.run(1)
        self.assertEqual(stored(net.stores["C"], "cdm", "LOST-1").learnedFrom, "B")
        net.disconnect("A", "B")
        net.disconnect("B", "C")
        net.stores["B"].remove("cdm", "LOST-1")
        net.connect("B", "C")
        net.run(1)
        self.assertEqual(net.state("C")["LOST-1"], (True, None))
        self.assertEqual(net.state("B")["LOST-1"], (True, None))
        self.assertEqual(stored(net.stores["B"], "cdm", "LOST-1").learnedFrom, "C")

    def test_mutualRelearningLosesNothing(self) -> None:
        """
        Two relays that re-learned an entry from each other during
        simultaneous re-syncs both keep it through their next reconnection.

        A originates X; B and C learn it from A.  The three sessions of the
        triangle restart at once, and the originator's END_OF_SYNC reaches B
        and C before its re-announcement of X (a reordering the simulation
        allows), while B's and C's re-announcements of X to each other come
        in between.  Then B and C reconnect once more.  When END_OF_SYNC
        made a node drop what the peer had taught it and not re-announced,
        B and C each dropped X at A's END_OF_SYNC, took it back from the
        other (A's late copy was then no newer), and so each held X as
        taught by the other; the next B-C re-sync left X out both ways
        (nobody re-announced what the peer had taught it) and both dropped
        it, with no session left to bring it back before anti-entropy.
        (Nodes without the sync_summary capability: with it, nobody
        re-announces X, which all three hold.)
        """
        net = SimNet(15)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B"), ("B", "C"), ("A", "C")], anti_entropy_interval_seconds=0)
        for node in net.nodes.values():
            _without(node, "sync_summary")
        net.nodes["A"].ingestCDM(sampleCDM("MUT-1"))
        net.run(1)
        net.hold()
        for a, b in (("A", "B"), ("A", "C"), ("B", "C")):
            net.disconnect(a, b)
            net.connect(a, b)
        net.release("A", "B", "END_OF_SYNC")
        net.release("A", "C", "END_OF_SYNC")
        net.release("C", "B", "CDM_ANNOUNCE")
        net.release("B", "C", "CDM_ANNOUNCE")
        net.releaseAll()
        net.run(1)
        net.disconnect("B", "C")
        net.connect("B", "C")
        net.run(1)
        for n in "ABC":
            self.assertEqual(net.state(n), {"MUT-1": (True, None)}, n)

    def test_largeResyncInBatches(self) -> None:
        """
        A re-sync larger than one batch goes out over several reactor turns,
        once the peer's summary is in, and still ends with END_OF_SYNC;
        losing the session mid-way stops it.
        """
        net = SimNet(12)
        self.addCleanup(net.stop)
        net.addNode("A", {"B": OPEN})
        net.addNode("B", {"A": OPEN})
        for i in range(450):
            net.nodes["A"].announceObject(f"OBJ-{i}", {"i": i})
        net.hold()
        net.connect("A", "B")
        link = net.links[("A", "B")]
        # A's summary lists its own entries made since it started (B has
        # not restored anything to it yet): four frames.
        self.assertEqual([e.message_type for e in link.sent], ["SYNC_SUMMARY"] * 4)
        self.assertTrue(net.nodes["A"].sends["B"].sending())
        net.release("B", "A", "SYNC_SUMMARY")
        self.assertEqual(len(link.sent), 204)
        self.assertTrue(net.nodes["A"].sends["B"].sending())
        net.releaseAll()
        net.run(1)
        self.assertEqual(link.sent[-1].message_type, "END_OF_SYNC")
        self.assertEqual(link.sent[-1].payload["count"], 450)
        self.assertEqual(len(net.state("B", "object")), 450)
        net.disconnect("A", "B")
        net.connect("A", "B")
        sender = net.nodes["A"].sends["B"]
        self.assertTrue(sender.sending())
        net.disconnect("A", "B")
        self.assertEqual(net.nodes["A"].sends, {})
        self.assertFalse(sender.sending())
        net.run(1)

    def test_resyncNotRateLimited(self) -> None:
        """
        A re-sync larger than the peer's token bucket is not rate limited
        (nor mistaken for stale), while ordinary traffic still is.
        """
        net = SimNet(13)
        self.addCleanup(net.stop)
        net.addNode("A", {"B": OPEN})
        net.addNode("B", {"A": Policies(rate_limit_per_second=1, rate_limit_burst=5)})
        for i in range(50):
            net.nodes["A"].announceObject(f"R-{i}", {"i": i})
        net.connect("A", "B")
        net.run(1)
        self.assertEqual(len(net.state("B", "object")), 50)
        self.assertEqual(net.logged("rate limit exceeded"), [])
        for i in range(10):
            net.nodes["A"].announceObject(f"S-{i}", {"i": i})
        net.run(5.5)
        self.assertTrue(net.logged("rate limit exceeded"))

    def test_crashRestartKeepsStore(self) -> None:
        """
        A crashed node restarts from its store and catches up on what it
        missed.
        """
        net = SimNet(6)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B"), ("B", "C")])
        net.nodes["A"].ingestCDM(sampleCDM("CR-1", object2="1"))
        net.run(1)
        net.crash("B")
        net.nodes["A"].ingestCDM(sampleCDM("CR-2", object2="2"))
        net.run(1)
        net.restart("B")
        self.assertIn("CR-1", net.state("B"))
        net.connect("A", "B")
        net.connect("B", "C")
        net.run(1)
        self.assertIn("CR-2", net.state("B"))
        self.assertIn("CR-2", net.state("C"))

    def test_graceTimeClosesTheSync(self) -> None:
        """
        If END_OF_SYNC never comes, the peer's re-sync closes after
        resync_grace_seconds (anti-entropy runs towards it again); what
        was learned from the peer is kept.
        """
        net = SimNet(7)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B")])
        net.nodes["A"].ingestCDM(sampleCDM("GR-1"))
        net.run(1)
        net.disconnect("A", "B")
        net.stores["A"].remove("cdm", "GR-1")
        net.dropRate = 1.0
        net.connect("A", "B")
        net.run(4)
        self.assertTrue(net.nodes["B"].syncing("A"))
        net.run(2)
        self.assertFalse(net.nodes["B"].syncing("A"))
        self.assertIn("GR-1", net.state("B"))
        self.assertTrue([e for e in net.logged("re-sync from {peer} complete") if e["why"] == "grace time"])


class LifecycleSimulationTests(SynchronousTestCase):
    """
    TCA expiry, superseding and retention.
    """

    def test_tcaPassedWithdraws(self) -> None:
        """
        Once TCA passes, every node withdraws the CDM with TCA_PASSED.
        """
        net = SimNet(8)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B")])
        now = net.clock.seconds()
        net.nodes["A"].ingestCDM(sampleCDM("TCA-1", tca=now + 30, created=now))
        net.run(1)
        self.assertEqual(net.state("B")["TCA-1"], (True, None))
        net.run(31, step=0.5)
        self.assertEqual(net.state("A")["TCA-1"], (False, "TCA_PASSED"))
        self.assertEqual(net.state("B")["TCA-1"], (False, "TCA_PASSED"))

    def test_newerCDMSupersedes(self) -> None:
        """
        A newer CDM for the same two objects and (nearly) the same TCA
        supersedes the older one on every node.
        """
        net = SimNet(9)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B")])
        now = net.clock.seconds()
        net.nodes["A"].ingestCDM(sampleCDM("SUP-1", tca=now + 86400, created=now))
        net.run(1)
        net.nodes["B"].ingestCDM(sampleCDM("SUP-2", tca=now + 86410, created=now + 1))
        net.run(1)
        for n in "AB":
            self.assertEqual(net.state(n)["SUP-1"], (False, "SUPERSEDED"))
            self.assertEqual(net.state(n)["SUP-2"], (True, None))

    def test_retention(self) -> None:
        """
        With cleanup enabled, records older than the retention are removed.
        """
        net = SimNet(10)
        self.addCleanup(net.stop)
        net.addNode("A", {}, cleanup_enabled=True, cdm_retention_hours=1.0, object_retention_hours=2.0)
        now = net.clock.seconds()
        net.nodes["A"].ingestCDM(sampleCDM("RET-1", tca=now + 86400 * 3, created=now))
        net.nodes["A"].announceObject("SAT-R", {})
        net.run(3700, step=50)
        self.assertNotIn("RET-1", net.state("A"))
        self.assertIn("SAT-R", net.state("A", "object"))
        net.run(3700, step=50)
        self.assertNotIn("SAT-R", net.state("A", "object"))

    def test_retentionAcrossPeers(self) -> None:
        """
        Retention counts from the originator's last change (the entry's
        sequence), not from when a node last stored it. C (no retention)
        originates a CDM and an object; A and B (one hour) learn them and,
        an hour on, drop them for good: C, which still holds them, cannot
        hand them back (anti-entropy does not pull them, its re-sync's
        copies are dropped as `retention:`), nor can A and B to each
        other, where each would otherwise take them back, fresh, again and
        again.
        """
        net = SimNet(12)
        self.addCleanup(net.stop)
        retention = {"cleanup_enabled": True, "cdm_retention_hours": 1.0, "object_retention_hours": 1.0}
        net.addNode("A", {"B": OPEN, "C": OPEN}, **retention)
        net.addNode("B", {"A": OPEN}, **retention)
        net.addNode("C", {"A": OPEN})
        net.connect("A", "B")
        net.connect("A", "C")
        net.run(0.5)
        now = net.clock.seconds()
        net.nodes["C"].ingestCDM(sampleCDM("RET-2", tca=now + 86400 * 3, created=now))
        net.nodes["C"].announceObject("SAT-2", {})
        net.run(30, step=0.5)
        for n in "AB":
            self.assertIn("RET-2", net.state(n), n)
        net.run(3600 + 600, step=1)
        for n in "AB":
            self.assertNotIn("RET-2", net.state(n), n)
            self.assertNotIn("SAT-2", net.state(n, "object"), n)
        self.assertIn("RET-2", net.state("C"))
        # A re-sync from C does not bring them back either.
        net.disconnect("A", "C")
        net.connect("A", "C")
        net.run(30, step=0.5)
        self.assertNotIn("RET-2", net.state("A"))
        self.assertNotIn("SAT-2", net.state("A", "object"))
        self.assertTrue([e for e in net.logged("routing decision") if "retention:" in str(e.get("reason"))])

    def test_rateLimit(self) -> None:
        """
        Messages beyond a peer's token bucket are dropped; the first drop of
        an interval is answered ERROR RATE_LIMITED and one
        `rate limit exceeded` line per interval counts them all.
        """
        net = SimNet(11)
        self.addCleanup(net.stop)
        net.addNode("A", {"B": OPEN}, anti_entropy_interval_seconds=0)
        net.addNode("B", {"A": Policies(rate_limit_per_second=1, rate_limit_burst=3)})
        net.connect("A", "B")
        net.run(0.2)  # the (empty) re-sync both ways is over
        for i in range(8):
            net.nodes["A"].ingestCDM(sampleCDM(f"RL-{i}", object2=str(i)))
        net.run(0.5)
        self.assertEqual(len(net.state("B")), 3)
        self.assertEqual(net.logged("rate limit exceeded"), [])
        net.run(5)
        [line] = net.logged("rate limit exceeded")
        self.assertEqual((line["peer"], line["count"]), ("A", 5))
        errors = [e for e in net.links[("B", "A")].sent if e.message_type == "ERROR"]
        self.assertEqual([e.payload["code"] for e in errors], ["RATE_LIMITED"])


class RestoreSimulationTests(SynchronousTestCase):
    """
    Disaster recovery: a node that comes back under the same node id with
    an empty or older store gets the entries it originated back from its
    peers' re-syncs, with their sequences, and numbers its next updates
    after them.
    """

    def _spread(self, seed: int) -> SimNet:
        """
        A - B - C; A originates three CDMs (one updated twice, one
        withdrawn) and an object state, and they reach C.
        """
        net = SimNet(seed)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B"), ("B", "C")])
        a = net.nodes["A"]
        for i in range(3):
            a.ingestCDM(sampleCDM(f"DR-{i}", object2=str(46000 + i)))
        for miss in (120.0, 130.0):
            # Two updates within one instant: sequences one apart, ahead of the clock.
            a.ingestCDM(sampleCDM("DR-0", object2="46000", missDistance=miss))
        a.withdrawCDM("DR-2", "FALSE_POSITIVE")
        a.announceObject("SAT-DR", {"name": "dr"})
        net.run(1)
        self.assertEqual(net.state("C"), net.state("A"))
        return net

    def _loseStore(self, net: SimNet, name: str, clock: object = None) -> None:
        net.crash(name)
        net.stores[name] = MemoryStore()
        net.restart(name, cast(IReactorTime, clock) if clock is not None else None)

    def test_lostStoreRestoredAndUpdatable(self) -> None:
        """
        A loses its store and restarts with its clock two minutes behind:
        B's re-sync gives back every CDM and object A originated (the
        withdrawn one as withdrawn) with the originator's sequences, they are
        not sent on, A's API has them again, and A's next update and
        withdrawal (and its next object state, which follows no stored
        version) are newer than what B and C hold, so they take them.
        """
        net = self._spread(41)
        held = {r.key: r for r in net.stores["B"].records("cdm")}
        heldObject = stored(net.stores["B"], "object", "SAT-DR")
        self._loseStore(net, "A", SkewedClock(net.clock, -120.0))
        self.assertEqual(net.state("A"), {})
        net.connect("A", "B")
        net.run(1)
        self.assertEqual(net.state("A"), net.state("B"))
        for key, r in held.items():
            got = stored(net.stores["A"], "cdm", key)
            self.assertEqual(
                (got.origin, got.sequence, got.active, got.body), ("A", r.sequence, r.active, r.body)
            )
            self.assertEqual(got.learnedFrom, "B")
        self.assertEqual(stored(net.stores["A"], "object", "SAT-DR").sequence, heldObject.sequence)
        self.assertEqual(
            len(net.logged("re-sync from {peer} restored {count} entries this node originated")), 1
        )
        restoredLines = [
            e for e in net.logged("routing decision: applied") if e["node"] == "A" and e["peer"] == "B"
        ]
        self.assertEqual(len(restoredLines), 4)
        # B is A's only peer: nobody to pass them on to.
        self.assertEqual(
            {e["forwarding"] for e in restoredLines}, {"not forwarded (no other established peer)"}
        )

        # A's clock is behind: without the restored sequences its update
        # would look older than the version B holds and be ignored.
        state = net.nodes["A"].announceObject("SAT-DR", {"name": "dr", "v": 2})
        self.assertGreater(state.sequence, heldObject.sequence)
        record, created = net.nodes["A"].ingestCDM(sampleCDM("DR-0", object2="46000", missDistance=140.0))
        self.assertTrue(created)
        self.assertGreater(record.sequence, held["DR-0"].sequence)
        gone = net.nodes["A"].withdrawCDM("DR-1", "FALSE_POSITIVE")
        self.assertIsNotNone(gone)
        net.run(1)
        for n in "BC":
            self.assertEqual(stored(net.stores[n], "object", "SAT-DR").body, {"name": "dr", "v": 2}, n)
        for n in "BC":
            got = stored(net.stores[n], "cdm", "DR-0")
            assert got.body is not None
            self.assertEqual(
                (got.sequence, got.body["relative_metadata_data"]["MISS_DISTANCE"]),
                (record.sequence, 140.0),
                n,
            )
            self.assertEqual(net.state(n)["DR-1"], (False, "FALSE_POSITIVE"), n)

    def test_olderStoreGetsOnlyWhatIsNewer(self) -> None:
        """
        A restarts from an older copy of its store: it states its highest
        own sequence, and B sends back only A's entries newer than that.
        """
        net = SimNet(42)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B")])
        a = net.nodes["A"]
        a.ingestCDM(sampleCDM("OLD-0", object2="47000"))
        net.run(1)
        backup = MemoryStore()
        for r in net.stores["A"].records("cdm"):
            backup.put(Record(**r.toJSON()))
        for i in range(1, 3):
            a.ingestCDM(sampleCDM(f"OLD-{i}", object2=str(47000 + i)))
            net.run(0.1)
        net.run(1)
        net.crash("A")
        net.stores["A"] = backup
        net.restart("A")
        net.connect("A", "B")
        net.run(1)
        self.assertEqual(net.state("A"), net.state("B"))
        toA = [e for e in net.links[("B", "A")].sent if e.payload.get("restore")]
        self.assertEqual(sorted(e.payload["cdm_id"] for e in toA), ["OLD-1", "OLD-2"])
        # Nothing is restored on the next reconnection: A states what it holds.
        net.disconnect("A", "B")
        net.connect("A", "B")
        net.run(1)
        self.assertEqual([e for e in net.links[("B", "A")].sent if e.payload.get("restore")], [])

    def test_apiUseBeforeRejoiningHidesNothing(self) -> None:
        """
        A restarts empty and takes a new CDM through its API before its
        session to B is back: it still gets its older CDMs back.  Once B's
        re-sync has completed, A states all it holds, so a later
        reconnection re-sends none of A's own entries, old or new.
        """
        net = self._spread(44)
        self._loseStore(net, "A")
        net.run(0.5)
        net.nodes["A"].ingestCDM(sampleCDM("DR-NEW", object2="46100"))
        net.connect("A", "B")
        net.run(1)
        self.assertEqual(net.state("A"), net.state("B"))
        self.assertEqual(len([e for e in net.links[("B", "A")].sent if e.payload.get("restore")]), 4)
        net.nodes["A"].ingestCDM(sampleCDM("DR-NEWER", object2="46101"))
        net.run(1)
        net.disconnect("A", "B")
        net.connect("A", "B")
        net.run(1)
        self.assertEqual([e for e in net.links[("B", "A")].sent if e.payload.get("restore")], [])
        self.assertEqual(net.state("A"), net.state("B"))

    def test_restoreCutShortIsRetried(self) -> None:
        """
        B's re-sync reaches A only after A's grace time closed it: the
        restores are refused as loops, A still states its empty store, and
        the next session gives everything back.
        """
        net = self._spread(45)
        self._loseStore(net, "A")
        net.hold()
        net.connect("A", "B")
        net.run(6)
        self.assertFalse(net.nodes["A"].syncing("B"))
        net.releaseAll()
        self.assertEqual(net.state("A"), {})
        self.assertEqual(net.nodes["A"].helloPayload("B")["own_sequence"], 0)
        net.disconnect("A", "B")
        net.connect("A", "B")
        net.run(1)
        self.assertEqual(net.state("A"), net.state("B"))
        self.assertGreater(net.nodes["A"].helloPayload("B")["own_sequence"], 0)

    def test_ownEntriesRefusedOutsideARestore(self) -> None:
        """
        A peer that did not ask for a restore (an older version, without
        the restore capability) is sent none; and A's own entries coming
        back are still loops unless they are a restore made first-hand
        while B's re-sync is open: unmarked, after END_OF_SYNC, or relayed
        over a longer path, each is dropped.
        """
        net = SimNet(43)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B")])
        net.nodes["A"].ingestCDM(sampleCDM("LOOP-1", object2="48000"))
        net.run(1)
        r = stored(net.stores["B"], "cdm", "LOOP-1")
        net.crash("A")
        net.stores["A"] = MemoryStore()
        a = net.restart("A")
        hello = a.helloPayload

        def olderHello(peer: str | None) -> dict[str, Any]:
            payload = hello(peer)
            payload["capabilities"] = [c for c in payload["capabilities"] if c != "restore"]
            return payload

        a.helloPayload = olderHello  # type: ignore[method-assign, assignment]
        net.connect("A", "B")
        net.run(1)
        self.assertEqual(net.state("A"), {})
        self.assertEqual([e for e in net.links[("B", "A")].sent if e.payload.get("restore")], [])

        def send(payload: dict[str, object], path: tuple[str, ...]) -> None:
            env = Envelope(
                "CDM_ANNOUNCE",
                "A",
                {"cdm_id": "LOOP-1", "sequence": r.sequence, "cdm": r.body, **payload},
                timestamp=net.clock.seconds(),
                hop_count=len(path) - 1,
                path=path,
            )
            a.envelopeReceived(net.links[("A", "B")], env)

        send({"restore": True}, ("A", "B"))  # B's re-sync is over
        net.disconnect("A", "B")
        net.connect("A", "B")  # B's re-sync is open until its END_OF_SYNC arrives
        self.assertTrue(a.syncing("B"))
        send({"sync": True}, ("A", "B"))
        send({"restore": True}, ("A", "C", "B"))
        self.assertEqual(net.state("A"), {})
        loops = [
            e
            for e in net.logged("routing decision: dropped")
            if e["node"] == "A" and e["reason"].startswith("loop: this node is already on the path")
        ]
        self.assertEqual(len(loops), 3)
        send({"restore": True, "sync": True}, ("A", "B"))
        self.assertEqual(net.state("A"), {"LOOP-1": (True, None)})
        self.assertEqual(stored(net.stores["A"], "cdm", "LOOP-1").sequence, r.sequence)


def _entries(net: SimNet, src: str, dst: str) -> list[tuple[str, str]]:
    """
    The entries (message type, id) the current session from C{src} sent
    C{dst}.
    """
    return sorted(
        (e.message_type, str(e.payload.get("cdm_id") or e.payload.get("object_id")))
        for e in net.links[(src, dst)].sent
        if e.message_type in ROUTED_TYPES
    )


def _restores(net: SimNet, src: str, dst: str) -> list[str]:
    """
    The ids of the entries the current session from C{src} gave back to
    C{dst} (marked restore), in the order sent.
    """
    return [
        str(e.payload.get("cdm_id") or e.payload.get("object_id"))
        for e in net.links[(src, dst)].sent
        if e.message_type in ROUTED_TYPES and e.payload.get("restore")
    ]


def _ownListed(net: SimNet, src: str, dst: str) -> list[str]:
    """
    The entries C{src} originated that its summary to C{dst} listed.
    """
    return [
        entry[1]
        for e in net.links[(src, dst)].sent
        if e.message_type == "SYNC_SUMMARY"
        for entry in e.payload["entries"]
        if entry[2] == src
    ]


#: A, its three peers, and two links between the peers.
RANDOM_EDGES = [("A", "B"), ("A", "C"), ("A", "D"), ("B", "C"), ("C", "D")]


class RestoreFromEveryPeerTests(SynchronousTestCase):
    """
    A node that lost its store gets its own entries back from every peer
    that holds them: each peer's first restoring re-sync since the node
    started fills the gaps the earlier ones left, and, with summaries, is
    sent only those gaps.
    """

    def _star(self, seed: int, skew: float = 0.0) -> tuple[SimNet, dict[str, Record]]:
        """
        B - A - C (B and C are not peers); A originates eight CDMs (one
        withdrawn) and three object states, which reach B and C.  A then
        loses its store and restarts (its clock C{skew} seconds off), and B loses
        the four of A's entries with the lowest sequences (as retention or
        an older backup of B's store would): B holds only A's newer
        entries, C holds them all.  Returns A's entries as B and C held
        them.
        """
        net = SimNet(seed)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B"), ("A", "C")], anti_entropy_interval_seconds=0)
        a = net.nodes["A"]
        for i in range(3):
            a.announceObject(f"SAT-{i}", {"i": i})
            net.run(0.01)
        for i in range(8):
            a.ingestCDM(sampleCDM(f"G-{i}", object2=str(49000 + i)))
            net.run(0.01)
        a.withdrawCDM("G-6", "FALSE_POSITIVE")
        net.run(1)
        self.assertEqual(net.state("B"), net.state("A"))
        self.assertEqual(net.state("C", "object"), net.state("A", "object"))
        held = {r.key: r for kind in ("cdm", "object") for r in net.stores["C"].records(kind)}
        self.assertEqual(len(held), 11)
        net.crash("A")
        net.stores["A"] = MemoryStore()
        net.restart("A", SkewedClock(net.clock, skew))
        oldest = sorted(held.values(), key=lambda r: r.sequence)[:4]
        for r in oldest:
            net.stores["B"].remove(r.kind, r.key)
        self.lacking = sorted(r.key for r in oldest)
        return net, held

    def _assertAllBack(self, net: SimNet, held: dict[str, Record]) -> None:
        for key, r in held.items():
            got = stored(net.stores["A"], r.kind, key)
            self.assertEqual(
                (got.origin, got.sequence, got.active, got.body), ("A", r.sequence, r.active, r.body), key
            )

    def test_laterPeerFillsTheGaps(self) -> None:
        """
        B's re-sync completes first and gives back only what B holds (the
        newer seven); C's, later, gives back the four older entries B
        lacked, and only those: A's summary to C listed what B had given
        back.  A ends with all eleven, each with its sequence; the four C
        gave back go on to B, which lacked them (no anti-entropy runs
        here), and nothing else does; A's next update is numbered above
        all of them although A's clock is now behind.
        """
        net, held = self._star(51, -120.0)
        net.connect("A", "B")
        net.run(1)
        self.assertEqual(len(_restores(net, "B", "A")), 7)
        self.assertEqual(net.nodes["A"].helloPayload("C")["own_sequence"], 0)
        self.assertGreater(net.nodes["A"].helloPayload("B")["own_sequence"], 0)
        net.connect("A", "C")
        net.run(1)
        self.assertEqual(sorted(_restores(net, "C", "A")), self.lacking)
        self.assertEqual(len(_ownListed(net, "A", "C")), 7)
        self._assertAllBack(net, held)
        applied = [e for e in net.logged("routing decision: applied") if e["node"] == "A"]
        self.assertEqual(
            sorted((e["peer"], e["forwarding"]) for e in applied),
            [("B", "not forwarded (no other established peer)")] * 7 + [("C", "forwarded to B")] * 4,
        )
        self.assertEqual(sorted(k for _, k in _entries(net, "A", "B")), self.lacking)
        for kind in ("cdm", "object"):
            self.assertEqual(net.state("B", kind), net.state("A", kind), kind)
        self.assertEqual(
            net.nodes["A"].helloPayload("C")["own_sequence"], max(r.sequence for r in held.values())
        )
        record, _ = net.nodes["A"].ingestCDM(sampleCDM("G-0", object2="49000", missDistance=150.0))
        self.assertGreater(record.sequence, max(r.sequence for r in held.values()))
        net.run(1)
        self.assertEqual(stored(net.stores["C"], "cdm", "G-0").sequence, record.sequence)

    def test_peerTakingOnlySomeKinds(self) -> None:
        """
        B is sent A's CDMs but not its object states (A's forward policy):
        B's restore, first, holds none of A's objects, which are older than
        every CDM; C's gives them back.
        """
        net = SimNet(52)
        self.addCleanup(net.stop)
        cdmOnly = Policies(forward_object_state=False)
        net.addNode("A", {"B": cdmOnly, "C": OPEN}, anti_entropy_interval_seconds=0)
        net.addNode("B", {"A": OPEN}, anti_entropy_interval_seconds=0)
        net.addNode("C", {"A": OPEN}, anti_entropy_interval_seconds=0)
        net.connect("A", "B")
        net.connect("A", "C")
        a = net.nodes["A"]
        for i in range(3):
            a.announceObject(f"SAT-{i}", {"i": i})
        net.run(0.1)
        for i in range(3):
            a.ingestCDM(sampleCDM(f"K-{i}", object2=str(49100 + i)))
        net.run(1)
        self.assertEqual(net.state("B", "object"), {})
        objects, cdms = net.state("A", "object"), net.state("A")
        net.crash("A")
        net.stores["A"] = MemoryStore()
        net.restart("A")
        net.connect("A", "B")
        net.run(1)
        self.assertEqual((net.state("A"), net.state("A", "object")), (cdms, {}))
        net.connect("A", "C")
        net.run(1)
        self.assertEqual((net.state("A"), net.state("A", "object")), (cdms, objects))
        self.assertEqual(sorted(_restores(net, "C", "A")), ["SAT-0", "SAT-1", "SAT-2"])

    def test_steadyStateSendsNoneOfItsOwn(self) -> None:
        """
        Once every peer has given back what it held, reconnecting sends A
        none of its own entries, and A's summaries list none of them; nor
        does a restart that kept the store.
        """
        net, held = self._star(53)
        net.connect("A", "B")
        net.run(1)
        net.connect("A", "C")
        net.run(1)
        self._assertAllBack(net, held)
        for peer in "BC":
            net.disconnect("A", peer)
            net.connect("A", peer)
            net.run(1)
            self.assertEqual((_restores(net, peer, "A"), _ownListed(net, "A", peer)), ([], []), peer)
        net.crash("A")
        net.restart("A")
        for peer in "BC":
            net.connect("A", peer)
            net.run(1)
            self.assertEqual((_restores(net, peer, "A"), _ownListed(net, "A", peer)), ([], []), peer)
            self.assertEqual(_entries(net, peer, "A"), [], peer)
        self._assertAllBack(net, held)

    def test_apiUpdateMeanwhileKept(self) -> None:
        """
        Between the two restores A updates, through its API, an entry only
        C still holds (older) and one B gave back: C gives back neither
        (A's summary lists both, newer), and A keeps its new versions.
        """
        net, held = self._star(54)
        net.connect("A", "B")
        net.run(1)
        gap, given = "SAT-0", "G-7"
        self.assertIn(gap, self.lacking)
        a = net.nodes["A"]
        a.announceObject(gap, {"new": True})
        self.assertIsNotNone(a.withdrawCDM(given, "ERROR"))
        net.run(1)
        net.connect("A", "C")
        net.run(1)
        self.assertEqual(sorted(_restores(net, "C", "A")), sorted(set(self.lacking) - {gap}))
        for key in (gap, given):
            r = held[key]
            got = stored(net.stores["A"], r.kind, key)
            self.assertGreater(got.sequence, r.sequence)
            self.assertEqual(stored(net.stores["C"], r.kind, key).sequence, got.sequence, key)

    def _act(self, net: SimNet, i: int, toggle: bool) -> None:
        """
        One random step: a link fails or comes back (if C{toggle}), A
        withdraws a CDM, or A announces or updates one; then a little time.
        """
        rng, a = net.rng, net.nodes["A"]
        action = rng.random()
        if toggle and action < 0.25:
            x, y = rng.choice(RANDOM_EDGES)
            if (x, y) in net.links:
                net.disconnect(x, y)
            else:
                net.connect(x, y)
        elif action < 0.35:
            live = sorted(k for k, (active, _) in net.state("A").items() if active)
            if live:
                a.withdrawCDM(rng.choice(live), "FALSE_POSITIVE")
        else:
            n = rng.randrange(16)
            a.ingestCDM(sampleCDM(f"P-{n}", object2=str(49500 + n), missDistance=100.0 + i))
        net.run(rng.uniform(0, 0.1))

    def test_randomPartitionsThenLoss(self) -> None:
        """
        Seeded runs: A originates, updates and withdraws CDMs while links
        fail and come back at random; then one peer is cut off while A
        updates more, and A loses its store while its re-sync to that
        peer, back, is half delivered (it goes in store order, not by
        sequence): each peer holds a different part of A's entries, the
        cut-off one possibly newer versions of some and older ones of
        others.  A's sessions come back one at a time in a random order.
        A ends holding, for each of its entries, the newest version any
        peer held, and a second round of reconnections gives it back
        nothing.
        """
        for seed in range(16):
            net = SimNet(700 + seed)
            self.addCleanup(net.stop)
            _mesh(net, RANDOM_EDGES, anti_entropy_interval_seconds=0)
            rng = net.rng
            for i in range(30):
                self._act(net, i, True)
            for x, y in RANDOM_EDGES:
                if (x, y) not in net.links:
                    net.connect(x, y)
            net.run(1)
            cut = rng.choice("BCD")
            for x, y in RANDOM_EDGES:
                if cut in (x, y):
                    net.disconnect(x, y)
            for i in range(30, 45):
                self._act(net, i, False)
            net.run(1)
            net.hold()
            net.connect("A", cut)
            net.release(cut, "A", "SYNC_SUMMARY")
            assert net.held is not None
            toCut = [(link, data) for link, data in net.held if (link.src, link.peerId) == ("A", cut)]
            for link, data in toCut[: rng.randrange(len(toCut) + 1)]:
                net._arrive(link, data)
            net.held = None
            newest: dict[str, tuple[int, bool]] = {}
            for peer in "BCD":
                for r in net.stores[peer].records("cdm"):
                    if r.origin == "A" and (r.key not in newest or newest[r.key][0] < r.sequence):
                        newest[r.key] = (r.sequence, r.active)
            net.crash("A")
            for x, y in list(net.links):
                net.disconnect(x, y)
            net.stores["A"] = MemoryStore()
            net.restart("A")
            order = ["B", "C", "D"]
            rng.shuffle(order)
            for peer in order:
                net.connect("A", peer)
                net.run(1)
            got = {r.key: (r.sequence, r.active) for r in net.stores["A"].records("cdm")}
            self.assertEqual(got, newest, seed)
            for peer in order:
                net.disconnect("A", peer)
                net.connect("A", peer)
                net.run(1)
                self.assertEqual(_restores(net, peer, "A"), [], (seed, peer))

    def test_peerWithoutSummary(self) -> None:
        """
        C without the sync_summary capability (an older version): it sends
        A every entry of A's above the sequence A states (here all eleven),
        A takes back the four it lacked and ignores the rest as not newer.
        """
        net, held = self._star(55)
        _without(net.nodes["C"], "sync_summary")
        net.connect("A", "B")
        net.run(1)
        net.connect("A", "C")
        net.run(1)
        self.assertEqual(len(_restores(net, "C", "A")), 11)
        self.assertNotIn("SYNC_SUMMARY", {e.message_type for e in net.links[("A", "C")].sent})
        self._assertAllBack(net, held)
        ignored = [
            e for e in net.logged("routing decision: ignored") if e["node"] == "A" and e["peer"] == "C"
        ]
        self.assertEqual(len(ignored), 7)


class SummarySimulationTests(SynchronousTestCase):
    """
    Re-sync with a summary (the sync_summary capability): each side tells
    the other what it holds, and is sent only what it lacks or holds in an
    older version.
    """

    def _line(self, seed: int) -> SimNet:
        """
        A - B - C; A originates ten CDMs (one withdrawn) and three object
        states, and they reach C.  No anti-entropy.
        """
        net = SimNet(seed)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B"), ("B", "C")], anti_entropy_interval_seconds=0)
        a = net.nodes["A"]
        for i in range(10):
            a.ingestCDM(sampleCDM(f"X-{i}", object2=str(60000 + i)))
        for i in range(3):
            a.announceObject(f"OBJ-{i}", {"i": i})
        net.run(1)
        a.withdrawCDM("X-9", "FALSE_POSITIVE")
        net.run(1)
        self.assertEqual(net.state("C"), net.state("A"))
        self.assertEqual(net.state("C", "object"), net.state("A", "object"))
        return net

    def _reconnect(self, net: SimNet) -> None:
        net.disconnect("B", "C")
        net.connect("B", "C")
        net.run(1)

    def _same(self, net: SimNet, *names: str) -> None:
        for kind in ("cdm", "object"):
            for n in names[1:]:
                self.assertEqual(net.state(n, kind), net.state(names[0], kind), (n, kind))

    def test_identicalStoresSendNothing(self) -> None:
        """
        Peers holding the same entries re-send none of them: a summary
        each way, then END_OF_SYNC with count 0.
        """
        net = self._line(31)
        self._reconnect(net)
        for src, dst in (("B", "C"), ("C", "B")):
            sent = net.links[(src, dst)].sent
            self.assertEqual(_entries(net, src, dst), [])
            self.assertEqual(
                [e.message_type for e in sent if e.message_type != "HEARTBEAT"],
                ["SYNC_SUMMARY", "END_OF_SYNC"],
            )
            self.assertEqual(sent[0].payload["more"], False)
            self.assertEqual(len(sent[0].payload["entries"]), 13)
            self.assertEqual(sent[-1].payload, {"count": 0})
        self._same(net, "A", "B", "C")

    def test_peerMissingSomeIsSentExactlyThose(self) -> None:
        """
        A peer that lost some entries (a store restored from an older
        backup) is sent exactly those.
        """
        net = self._line(32)
        net.disconnect("B", "C")
        for kind, key in (("cdm", "X-2"), ("cdm", "X-9"), ("object", "OBJ-1")):
            net.stores["C"].remove(kind, key)
        net.connect("B", "C")
        net.run(1)
        self.assertEqual(
            _entries(net, "B", "C"),
            [("CDM_ANNOUNCE", "X-2"), ("CDM_WITHDRAW", "X-9"), ("OBJECT_STATE_ANNOUNCE", "OBJ-1")],
        )
        self.assertEqual(_entries(net, "C", "B"), [])
        self._same(net, "A", "B", "C")

    def test_olderVersionsAreSentTheNewer(self) -> None:
        """
        Entries the peer holds in an older version (updated or withdrawn
        while it was away) are sent in their newer version, each way; what
        it holds as new or newer is not.
        """
        net = self._line(33)
        net.disconnect("B", "C")
        a = net.nodes["A"]
        a.announceObject("OBJ-0", {"i": 100})
        a.withdrawCDM("X-3", "ERROR")
        a.ingestCDM(sampleCDM("X-10", object2="60010"))
        net.nodes["C"].announceObject("OBJ-C", {"c": 1})
        net.run(1)
        net.connect("B", "C")
        net.run(1)
        self.assertEqual(
            _entries(net, "B", "C"),
            [("CDM_ANNOUNCE", "X-10"), ("CDM_WITHDRAW", "X-3"), ("OBJECT_STATE_ANNOUNCE", "OBJ-0")],
        )
        self.assertEqual(_entries(net, "C", "B"), [("OBJECT_STATE_ANNOUNCE", "OBJ-C")])
        self.assertEqual(net.state("C")["X-3"], (False, "ERROR"))
        self.assertEqual(stored(net.stores["C"], "object", "OBJ-0").body, {"i": 100})
        self._same(net, "A", "B", "C")

    def test_olderPeerGetsEverything(self) -> None:
        """
        With a peer without the capability (an older version) neither side
        sends a summary and each re-states every entry, as before; either
        side lacking it is enough.
        """
        for older in ("B", "C"):
            net = self._line(34)
            _without(net.nodes[older], "sync_summary")
            self._reconnect(net)
            for src, dst in (("B", "C"), ("C", "B")):
                sent = net.links[(src, dst)].sent
                self.assertNotIn("SYNC_SUMMARY", {e.message_type for e in sent})
            self.assertEqual(len(_entries(net, "B", "C")), 13)
            # C re-states what B taught it too (all it did not originate).
            self.assertEqual(len(_entries(net, "C", "B")), 13)
            self._same(net, "A", "B", "C")

    def test_badSummaryClosesTheSession(self) -> None:
        """
        A malformed summary, or one over the cap, closes the session: the
        peer is told why (ERROR INVALID_MESSAGE) and the line says it; no
        traceback, and the next session re-syncs as usual.
        """
        for entries, reason in (
            ([["cdm", "X-1", "A", "one", True]], "sequence must be an integer"),
            ([["cdm", "X-1", "A", 1, True]] * (MAX_SYNC_SUMMARY_ENTRIES + 1), "at most 500000 entries"),
        ):
            net = self._line(35)
            net.hold()
            net.disconnect("B", "C")
            net.connect("B", "C")
            link = net.links[("B", "C")]
            bad = Envelope(
                "SYNC_SUMMARY", "C", {"entries": entries, "more": False}, timestamp=net.clock.seconds()
            )
            net.nodes["B"].envelopeReceived(link, decodeEnvelope(bad.encode()))
            self.assertNotIn(("B", "C"), net.links)
            [error] = [e for e in link.sent if e.message_type == "ERROR"]
            self.assertEqual(error.payload["code"], "INVALID_MESSAGE")
            self.assertIn(reason, error.payload["message"])
            [line] = net.logged("re-sync to {peer} abandoned: {reason}")
            self.assertIn(reason, line["reason"])
            self.assertEqual([e for e in net.events if "log_failure" in e], [])
            net.held = None
            net.connect("B", "C")
            net.run(1)
            self._same(net, "A", "B", "C")

    def test_summaryLostMeansEverything(self) -> None:
        """
        A summary that never arrives is given up after half the grace
        time: the entries all go, within the peer's open re-sync.
        """
        net = self._line(36)
        net.hold()
        net.disconnect("B", "C")
        net.connect("B", "C")
        assert net.held is not None
        net.held = [
            (link, data)
            for link, data in net.held
            if decodeEnvelope(data).message_type != "SYNC_SUMMARY" or link.src != "C"
        ]
        net.releaseAll()
        net.run(2.4)
        self.assertEqual(_entries(net, "B", "C"), [])
        net.run(0.2)
        self.assertEqual(len(_entries(net, "B", "C")), 13)
        self.assertTrue(net.logged("re-sync to {peer}: no complete summary"))
        self.assertFalse(net.logged("rate limit exceeded"))
        self._same(net, "A", "B", "C")

    def test_largeSummaryInFrames(self) -> None:
        """
        A summary of many entries goes in several frames, none over
        SYNC_SUMMARY_FRAME_BYTES, and still spares every entry.
        """
        net = SimNet(37)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B")], anti_entropy_interval_seconds=0)
        for i in range(300):
            net.nodes["A"].announceObject(f"OBJECT-{i:04d}-{'y' * 60}", {"i": i})
        net.run(1)
        net.disconnect("A", "B")
        net.connect("A", "B")
        net.run(1)
        frames = [e for e in net.links[("B", "A")].sent if e.message_type == "SYNC_SUMMARY"]
        self.assertGreater(len(frames), 3)
        self.assertTrue(all(len(f.encode()) <= SYNC_SUMMARY_FRAME_BYTES for f in frames))
        self.assertEqual(sum(len(f.payload["entries"]) for f in frames), 300)
        self.assertEqual(_entries(net, "A", "B"), [])
