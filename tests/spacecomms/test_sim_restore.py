"""
Deterministic simulations of what follows a restore: the entries a node
gets back flow on to the peers that lack them, and a version the node made
after losing its store wins over older copies given back later, whatever
its clock says.
"""

from __future__ import annotations

from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from suite.spacecomms.cdm.sample import sampleCDM
from suite.spacecomms.config import Policies
from suite.spacecomms.envelope import ROUTED_TYPES
from suite.spacecomms.store import MemoryStore
from tests.spacecomms.sim import SimNet, SkewedClock, stored
from tests.spacecomms.test_sim import OPEN, _mesh, _without

KINDS = ("cdm", "object")

Version = tuple[str, str, int]


def _sentByA(net: SimNet, peer: str) -> list[Version]:
    """
    The versions of A's own entries the current session from A sent
    C{peer}: (kind, key, sequence) per message.
    """
    out: list[Version] = []
    for e in net.links[("A", peer)].sent:
        if e.message_type in ROUTED_TYPES and e.source_node == "A":
            cdm = e.message_type.startswith("CDM")
            out.append(
                (
                    "cdm" if cdm else "object",
                    e.payload["cdm_id" if cdm else "object_id"],
                    e.payload["sequence"],
                )
            )
    return out


def _versions(net: SimNet, name: str) -> dict[tuple[str, str], tuple[int, bool]]:
    return {(k, r.key): (r.sequence, r.active) for k in KINDS for r in net.stores[name].records(k)}


class RestoredEntriesFlowOnTests(SynchronousTestCase):
    """
    What a node gets back from one peer goes on to its other peers that
    lack it, as its own first-hand message, under the routing rules, and
    only to those that lack it.
    """

    def test_randomLossesAllRepaired(self) -> None:
        """
        Seeded runs: A, with peers B, C and D (and E behind D), originates
        CDMs (one withdrawn) and object states that reach every node.  A
        loses its store; B, C and D each lose a random part of A's entries
        (each entry is kept by at least one of them), and E loses what D
        lost.  A's sessions come back one at a time in a random order
        (even seeds) or all at once (odd seeds).  With no anti-entropy,
        every node ends holding each of A's entries at its version: what
        one peer gave back reached the others that lacked it (E through
        D).  And A never sent a peer a version of its own entries the peer
        held when its session came up (its summary said so), nor one
        version twice.
        """
        leftOut = 0
        for seed in range(8):
            net = SimNet(900 + seed)
            self.addCleanup(net.stop)
            _mesh(net, [("A", "B"), ("A", "C"), ("A", "D"), ("D", "E")], anti_entropy_interval_seconds=0)
            a = net.nodes["A"]
            for i in range(12):
                a.ingestCDM(sampleCDM(f"F-{i}", object2=str(51000 + i)))
                net.run(0.01)
            for i in range(4):
                a.announceObject(f"FO-{i}", {"i": i})
                net.run(0.01)
            a.withdrawCDM("F-3", "ERROR")
            net.run(1)
            everything = _versions(net, "A")
            self.assertEqual(len(everything), 16)
            for n in "BCDE":
                self.assertEqual(_versions(net, n), everything, (seed, n))
            net.crash("A")
            net.stores["A"] = MemoryStore()
            net.restart("A")
            rng = net.rng
            lost: dict[str, set[tuple[str, str]]] = {p: set() for p in "BCD"}
            for kind, key in sorted(everything):
                losers = [p for p in "BCD" if rng.random() < 0.45]
                if len(losers) == 3:
                    losers.remove(rng.choice(losers))
                for p in losers:
                    lost[p].add((kind, key))
            lost["E"] = set(lost["D"])
            for p, entries in lost.items():
                for kind, key in entries:
                    net.stores[p].remove(kind, key)
            held = {
                p: {(k, key, everything[(k, key)][0]) for k, key in everything if (k, key) not in lost[p]}
                for p in "BCD"
            }
            order = ["B", "C", "D"]
            rng.shuffle(order)
            for peer in order:
                net.connect("A", peer)
                net.run(1 if seed % 2 == 0 else rng.uniform(0, 0.05))
            net.run(1)
            for n in "ABCDE":
                self.assertEqual(_versions(net, n), everything, (seed, n))
            for peer in "BCD":
                sent = _sentByA(net, peer)
                self.assertEqual([v for v, c in Counter(sent).items() if c > 1], [], (seed, peer))
                self.assertEqual(set(sent) & held[peer], set(), (seed, peer))
                self.assertEqual({(k, key) for k, key, _ in sent}, lost[peer], (seed, peer))
            leftOut += sum(
                "(held: " in e["forwarding"]
                for e in net.logged("routing decision: applied")
                if e["node"] == "A"
            )
        # Peers were left out because their session knew they held an entry.
        self.assertGreater(leftOut, 0)

    def test_policiesAndHopLimit(self) -> None:
        """
        What C gives back goes on to B only as A's forward policy towards
        B allows (CDMs, not object states), and no further than the hop
        limit: at max_hop_count 2, A's first-hand message (hop 0) reaches
        B and F (hop 1), as any message of A's does, and not G.
        """
        net = SimNet(61)
        self.addCleanup(net.stop)
        settings = {"anti_entropy_interval_seconds": 0, "max_hop_count": 2}
        net.addNode("A", {"B": Policies(forward_object_state=False), "C": OPEN}, **settings)
        net.addNode("B", {"A": OPEN, "F": OPEN}, **settings)
        net.addNode("C", {"A": OPEN}, **settings)
        net.addNode("F", {"B": OPEN, "G": OPEN}, **settings)
        net.addNode("G", {"F": OPEN}, **settings)
        for x, y in (("A", "B"), ("A", "C"), ("B", "F"), ("F", "G")):
            net.connect(x, y)
        a = net.nodes["A"]
        for i in range(3):
            a.ingestCDM(sampleCDM(f"H-{i}", object2=str(52000 + i)))
            a.announceObject(f"HO-{i}", {"i": i})
        net.run(1)
        self.assertEqual((len(net.state("B")), len(net.state("F")), net.state("G")), (3, 3, {}))
        self.assertEqual(net.state("B", "object"), {})
        net.crash("A")
        net.stores["A"] = MemoryStore()
        net.restart("A")
        for n in "BF":
            for r in list(net.stores[n].records("cdm")):
                net.stores[n].remove("cdm", r.key)
        del net.events[:]
        net.connect("A", "B")
        net.run(1)
        net.connect("A", "C")
        net.run(1)
        self.assertEqual((len(net.state("A")), len(net.state("A", "object"))), (3, 3))
        for n in "BF":
            self.assertEqual((net.state(n), net.state(n, "object")), (net.state("A"), {}), n)
        self.assertEqual(net.state("G"), {})
        lines = [e for e in net.logged("routing decision: applied") if e["node"] == "A"]
        self.assertEqual(
            sorted((e["kind"], e["forwarding"]) for e in lines),
            [("cdm", "forwarded to B")] * 3
            + [("object", "not forwarded (policy: forwarding disabled towards the other peers)")] * 3,
        )
        atF = [e for e in net.logged("routing decision: applied") if e["node"] == "F"]
        self.assertEqual(
            [e["forwarding"] for e in atF], ["not forwarded (hop limit: max_hop_count 2 reached)"] * 3
        )

    def test_peerWithoutSummary(self) -> None:
        """
        B (an older version without summaries) and C come back at once:
        what C gives back goes on to B, which ignores what it holds; B
        ends with all of A's entries and A with all of them too.
        """
        net = SimNet(62)
        self.addCleanup(net.stop)
        _mesh(net, [("A", "B"), ("A", "C")], anti_entropy_interval_seconds=0)
        a = net.nodes["A"]
        for i in range(6):
            a.ingestCDM(sampleCDM(f"W-{i}", object2=str(53000 + i)))
            net.run(0.01)
        net.run(1)
        everything = _versions(net, "A")
        net.crash("A")
        net.stores["A"] = MemoryStore()
        net.restart("A")
        for key in ("W-0", "W-1"):
            net.stores["B"].remove("cdm", key)
        _without(net.nodes["B"], "sync_summary")
        net.connect("A", "B")
        net.connect("A", "C")
        net.run(1)
        for n in "ABC":
            self.assertEqual(_versions(net, n), everything, n)


class ClockBehindTests(SynchronousTestCase):
    """
    A node that lost its store and runs with its clock behind numbers the
    versions it makes through its API below those it made before the loss:
    those still win over the older copies a peer gives back later, on this
    node and on every peer.
    """

    def test_apiVersionWinsOverLaterRestore(self) -> None:
        """
        Seeded runs.  Before the loss, while B was cut off, A updated K-1
        and made K-3, so C holds them newer than B (which has the older
        K-1 and no K-3).  A loses its store and restarts with its clock
        behind; B gives back what it holds.  Through its API, A then makes
        K-3 anew and withdraws K-1: with the clock behind, both are
        numbered below C's copies.  C comes back (with or without
        summaries): its older copies lose; A keeps its versions and
        announces them again above C's, and B and C end holding them.
        """
        for seed in range(6):
            net = SimNet(950 + seed)
            self.addCleanup(net.stop)
            _mesh(net, [("A", "B"), ("A", "C")], anti_entropy_interval_seconds=0)
            a = net.nodes["A"]
            for i in range(3):
                a.ingestCDM(sampleCDM(f"K-{i}", object2=str(54000 + i)))
                net.run(0.01)
            a.announceObject("KO", {"v": 1})
            net.run(1)
            net.disconnect("A", "B")
            a.ingestCDM(sampleCDM("K-1", object2="54001", missDistance=150.0))
            a.ingestCDM(sampleCDM("K-3", object2="54003", missDistance=150.0))
            a.announceObject("KO", {"v": 2})
            net.run(1)
            atC = {key: stored(net.stores["C"], "cdm", key).sequence for key in ("K-1", "K-3")}
            atC["KO"] = stored(net.stores["C"], "object", "KO").sequence
            net.crash("A")
            net.stores["A"] = MemoryStore()
            # Behind, but within max_clock_skew_seconds (300) of its peers.
            behind = net.rng.uniform(30.0, 240.0)
            a = net.restart("A", SkewedClock(net.clock, -behind))
            if seed % 2:
                _without(net.nodes["C"], "sync_summary")
            net.connect("A", "B")
            net.run(1)
            self.assertEqual(net.state("A"), {"K-0": (True, None), "K-1": (True, None), "K-2": (True, None)})
            made, _ = a.ingestCDM(sampleCDM("K-3", object2="54003", missDistance=170.0))
            gone = a.withdrawCDM("K-1", "ERROR")
            state = a.announceObject("KO", {"v": 3})
            assert gone is not None
            # The clock is behind: each is numbered below C's copy.
            self.assertLess(made.sequence, atC["K-3"], seed)
            self.assertLess(gone.sequence, atC["K-1"], seed)
            self.assertLess(state.sequence, atC["KO"], seed)
            net.run(1)
            net.connect("A", "C")
            net.run(1)
            for n in "ABC":
                k3 = stored(net.stores[n], "cdm", "K-3")
                assert k3.body is not None
                self.assertEqual(k3.body["relative_metadata_data"]["MISS_DISTANCE"], 170.0, (seed, n))
                self.assertGreater(k3.sequence, atC["K-3"], (seed, n))
                self.assertEqual(net.state(n)["K-1"], (False, "ERROR"), (seed, n))
                self.assertGreater(stored(net.stores[n], "cdm", "K-1").sequence, atC["K-1"], (seed, n))
                self.assertEqual(stored(net.stores[n], "object", "KO").body, {"v": 3}, (seed, n))
            for n in "BC":
                self.assertEqual(_versions(net, n), _versions(net, "A"), (seed, n))
            again = [e for e in net.logged("that version announced again") if e["node"] == "A"]
            self.assertEqual(sorted(e["key"] for e in again), ["K-1", "K-3", "KO"], seed)
