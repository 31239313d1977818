"""
Placement epochs: the ledger that applies a partition's placement only in
increasing epoch order, and, on the simulated cluster, stale, duplicate and
reordered routing feed updates driving Raft membership changes exactly
once, across restarts.
"""

from __future__ import annotations

import json
import os
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.machine import eventsEntry, rulesEntry
from suite.ceptra.placement import (
    LedgerCloser,
    MemoryPlacementFile,
    Placed,
    PlacementFile,
    PlacementLedger,
    parseLedger,
)
from suite.raft.messages import CONFIG, Configuration
from tests.ceptra.test_partitions import RULES, Cluster, events, routingOf, spiffe
from tests.clustor.helpers import captureLogs

NAMES = ["a", "b", "c", "d"]


def doc(revision: int, partitions: dict[str, tuple[int, list[str]]]) -> Any:
    return routingOf(
        {p: r for p, (_, r) in partitions.items()},
        NAMES,
        revision,
        {p: e for p, (e, _) in partitions.items()},
    )


class SlowPlacementFile(MemoryPlacementFile):
    """
    A ledger store whose writes the test finishes by hand.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[None]] = []

    def write(self, placements: Any) -> Deferred[None]:
        super().write(placements)
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


class LedgerTests(SynchronousTestCase):
    """
    L{PlacementLedger} on its own.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)

    def warnings(self) -> list[str]:
        return [e["log_format"] for e in self.events if e["log_level"].name == "warn"]

    def test_order(self) -> None:
        """
        Higher epochs are applied; the same placement again is nothing; a
        lower epoch (stale) or another placement under the applied epoch
        (conflict) is ignored with one warning and one count per update,
        however often the feed repeats it.
        """
        store = MemoryPlacementFile()
        applied: list[str] = []
        ledger = PlacementLedger(store, onApplied=applied.append)
        routing = ledger.update(doc(1, {"p0": (1, ["a", "b", "c"]), "p1": (4, ["a"])}))
        self.assertEqual(dict(routing.partitions), {"p0": ("a", "b", "c"), "p1": ("a",)})
        self.assertEqual(dict(routing.epochs), {"p0": 1, "p1": 4})
        self.assertEqual(applied, ["p0", "p1"])
        self.assertEqual(store.writes, 1)

        # A duplicate (new revision, same placements): nothing.
        ledger.update(doc(2, {"p0": (1, ["a", "b", "c"]), "p1": (4, ["a"])}))
        self.assertEqual((ledger.ignored, store.writes, self.warnings()), ({}, 1, []))

        # Epoch 3 moves p0; epoch 2 arrives after it (reordered): ignored.
        ledger.update(doc(3, {"p0": (3, ["a", "b", "d"]), "p1": (4, ["a"])}))
        for _ in range(3):
            routing = ledger.update(doc(4, {"p0": (2, ["a", "c", "d"]), "p1": (4, ["a"])}))
        self.assertEqual(routing.partitions["p0"], ("a", "b", "d"))
        self.assertEqual(routing.epochs["p0"], 3)
        self.assertEqual(ledger.ignored, {("p0", "stale"): 1})
        # Another placement under epoch 4 for p1: a conflict.
        routing = ledger.update(doc(5, {"p0": (3, ["a", "b", "d"]), "p1": (4, ["b"])}))
        self.assertEqual(routing.partitions["p1"], ("a",))
        self.assertEqual(ledger.ignored, {("p0", "stale"): 1, ("p1", "conflict"): 1})
        self.assertEqual(len(self.warnings()), 2)
        self.assertEqual(applied, ["p0", "p1", "p0"])
        self.assertEqual(ledger.toJSON()["ignoredUpdates"], {"p0": {"stale": 1}, "p1": {"conflict": 1}})

        # A restarted node starts from what it applied.
        again = PlacementLedger(store)
        routing = again.update(doc(1, {"p0": (1, ["a", "b", "c"]), "p1": (4, ["a"])}))
        self.assertEqual(routing.partitions["p0"], ("a", "b", "d"))
        self.assertEqual(again.ignored, {("p0", "stale"): 1})

    def test_removedPartition(self) -> None:
        """
        The partitions routed to are the latest document's; a partition
        that comes back cannot come back older.
        """
        ledger = PlacementLedger()
        ledger.update(doc(1, {"p0": (2, ["a"]), "p1": (1, ["b"])}))
        routing = ledger.update(doc(2, {"p0": (2, ["a"])}))
        self.assertEqual(routing.partitionIds, ["p0"])
        routing = ledger.update(doc(3, {"p0": (2, ["a"]), "p1": (1, ["c"])}))
        self.assertEqual(routing.partitions["p1"], ("b",))

    def test_savesInOrder(self) -> None:
        """
        A change while a save is in flight is saved after it, with the latest
        placements.
        """
        from twisted.internet.defer import Deferred

        class Slow(MemoryPlacementFile):
            def __init__(self) -> None:
                super().__init__()
                self.pending: list[Deferred[None]] = []

            def write(self, placements: Any) -> Deferred[None]:
                super().write(placements)
                d: Deferred[None] = Deferred()
                self.pending.append(d)
                return d

        store = Slow()
        ledger = PlacementLedger(store)
        ledger.update(doc(1, {"p0": (1, ["a"])}))
        ledger.update(doc(2, {"p0": (2, ["b"])}))
        ledger.update(doc(3, {"p0": (3, ["c"])}))
        self.assertEqual(store.writes, 1)
        store.pending.pop(0).callback(None)
        self.assertEqual((store.writes, store.saved), (2, {"p0": Placed(3, ("c",))}))

    def test_closeSavesWhatWasApplied(self) -> None:
        """
        Closing waits for the write in progress and writes once more only if
        placements were applied that the store does not hold; updates after
        closing are not saved.  The closer service closes the ledger on stop.
        """
        store = SlowPlacementFile()
        ledger = PlacementLedger(store)
        ledger.update(doc(1, {"p0": (1, ["a"])}))
        ledger.update(doc(2, {"p0": (2, ["b"])}))  # asks for a second write
        closing = LedgerCloser(ledger)
        closing.startService()
        closed = closing.stopService()
        self.assertNoResult(closed)
        ledger.update(doc(3, {"p0": (3, ["c"])}))  # applied while closing
        store.pending.pop(0).callback(None)
        self.assertNoResult(closed)  # the last write, with everything applied
        self.assertEqual((store.writes, store.saved), (2, {"p0": Placed(3, ("c",))}))
        store.pending.pop(0).callback(None)
        self.successResultOf(closed)
        ledger.update(doc(4, {"p0": (4, ["d"])}))
        self.assertEqual((store.writes, store.pending), (2, []))

        idle = SlowPlacementFile()
        ledger = PlacementLedger(idle)
        ledger.update(doc(1, {"p0": (1, ["a"])}))
        idle.pending.pop(0).callback(None)
        self.successResultOf(ledger.close())  # the store holds everything
        self.assertEqual(idle.writes, 1)
        self.successResultOf(PlacementLedger(None).close())

    def test_file(self) -> None:
        """
        The ledger file round-trips; junk in it is skipped or ignored.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "placement.json")
        store = PlacementFile(path, Clock())
        self.assertEqual(store.read(), {})
        from suite.fileutil import writeAtomically

        writeAtomically(path, json.dumps({"p0": {"epoch": 3, "replicas": ["a"]}}).encode())
        self.assertEqual(store.read(), {"p0": Placed(3, ("a",))})
        with open(path, "w") as f:
            f.write("{")
        self.assertEqual(store.read(), {})
        self.assertEqual(
            parseLedger(
                {"p0": {"epoch": "1", "replicas": []}, "p1": [], "p2": {"epoch": 1, "replicas": ["x"]}}
            ),
            {"p2": Placed(1, ("x",))},
        )


def memberships(config: Configuration) -> tuple[frozenset[str], frozenset[str], int]:
    return (config.voters, config.learners, config.epoch)


class EpochSimulationTests(SynchronousTestCase):
    """
    Four nodes, p0 on three of them; the feed is changed under the cluster.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)
        self.c = Cluster(NAMES, {"p0": ["a", "b", "c"]}, seed=5, snapshotThreshold=100000)
        self.c.run(2.0)
        leader = self.c.leader("p0")
        assert leader is not None
        leader.propose("p0", rulesEntry(RULES))
        leader.propose("p0", eventsEntry(events(20)))
        self.c.run(0.5)

    def changes(self) -> list[tuple[frozenset[str], frozenset[str], int]]:
        """
        The membership transitions in the leader's log (configuration
        entries that only record incarnations are left out).
        """
        leader = self.c.leader("p0")
        assert leader is not None
        node = leader.partitions["p0"].node
        out: list[tuple[frozenset[str], frozenset[str], int]] = []
        for i in range(node.log.snapshotIndex + 1, node.log.lastIndex() + 1):
            e = node.log.entry(i)
            if e.kind == CONFIG:
                step = memberships(Configuration.decode(e.data))
                if not out or out[-1] != step:
                    out.append(step)
        return out

    def move(self) -> None:
        """
        Epoch 2 moves p0's replica from c to d.
        """
        self.c.routing = doc(2, {"p0": (2, ["a", "b", "d"])})
        self.c.run(4.0)

    def assertMoved(self) -> None:
        c = self.c
        leader = c.leader("p0")
        assert leader is not None
        config = leader.partitions["p0"].node.configs.latest()
        self.assertEqual((config.voters, config.epoch), (frozenset(spiffe(n) for n in "abd"), 2))
        self.assertNotIn("p0", c.managers["c"].partitions)
        self.assertEqual(len(c.hashes("p0")), 1)
        self.assertEqual(c.managers["d"].partitions["p0"].machine.events, 20)

    def expected(self) -> list[tuple[frozenset[str], frozenset[str], int]]:
        abc, ab = frozenset(spiffe(n) for n in "abc"), frozenset(spiffe(n) for n in "ab")
        d = frozenset({spiffe("d")})
        return [(abc, frozenset(), 1), (abc, d, 2), (abc | d, frozenset(), 2), (ab | d, frozenset(), 2)]

    def test_moveOnce(self) -> None:
        """
        An epoch transition becomes exactly its membership changes (add d as
        a learner, promote it, remove c), each recording the epoch, proposed
        one at a time by the leader and logged; the applied epoch and the
        leader's last change show in /partitions and the metrics.
        """
        self.move()
        self.assertMoved()
        self.assertEqual(self.changes(), self.expected())
        proposed = [
            e["what"] for e in self.events if e.get("log_format", "").endswith("membership change: {what}")
        ]
        self.assertEqual(proposed, [f"add {spiffe('d')} (epoch 2)", f"remove {spiffe('c')} (epoch 2)"])
        leader = self.c.leader("p0")
        assert leader is not None
        self.assertEqual(
            leader.partitionStatus("p0")["lastMembershipChange"], f"remove {spiffe('c')} (epoch 2)"
        )
        status = self.c.managers["d"].partitionStatus("p0")
        self.assertEqual(
            (status["placementEpoch"], status["configEpoch"], status["voteIntact"]), (2, 2, True)
        )
        registry = CollectorRegistry()
        from suite.ceptra.partitions import _PartitionCollector

        registry.register(_PartitionCollector(self.c.managers["d"]))
        text = generate_latest(registry).decode()
        self.assertIn('ceptra_partition_placement_epoch{partition="p0"} 2.0', text)
        self.assertIn('ceptra_partition_config_epoch{partition="p0"} 2.0', text)
        self.assertIn('ceptra_partition_vote_intact{partition="p0"} 1.0', text)

    def test_staleDuplicateReordered(self) -> None:
        """
        After the move: the same epoch again (new revisions), then the older
        epoch 1 (stale, as from a control plane restored from an old file),
        then epoch 3 before a late epoch 2 that differs (reordered): no
        membership change but epoch 3's, each ignored update counted once
        per node and logged.
        """
        c = self.c
        self.move()
        for revision in (3, 4):
            c.routing = doc(revision, {"p0": (2, ["a", "b", "d"])})
            c.run(0.5)
        c.routing = doc(5, {"p0": (1, ["a", "b", "c"])})
        c.run(2.0)
        self.assertMoved()
        self.assertEqual(self.changes(), self.expected())
        for name in ("a", "b", "d"):
            self.assertEqual(c.managers[name].ledger.ignored, {("p0", "stale"): 1})
        c.routing = doc(6, {"p0": (3, ["a", "b", "d"])})
        c.run(1.0)
        c.routing = doc(7, {"p0": (2, ["a", "c", "d"])})
        c.run(2.0)
        leader = c.leader("p0")
        assert leader is not None
        self.assertEqual(leader.partitions["p0"].node.configs.latest().epoch, 3)
        voters = frozenset(spiffe(n) for n in "abd")
        self.assertEqual(self.changes(), [*self.expected(), (voters, frozenset(), 3)])
        self.assertEqual(leader.ledger.ignored, {("p0", "stale"): 2})
        stale = [e for e in self.events if "ignoring {reason} placement" in e.get("log_format", "")]
        self.assertEqual(len(stale), 2 * 4)  # two stale updates, on each of a, b, c, d

    def test_restartKeepsEpochs(self) -> None:
        """
        Every node restarts (disks intact) while the control plane serves the
        stale epoch 1: the nodes keep the applied epoch 2 from their ledgers,
        the group keeps its configuration, no change is made twice.
        """
        c = self.c
        self.move()
        for name in NAMES:
            c.crash(name)
        c.routing = doc(9, {"p0": (1, ["a", "b", "c"])})
        for name in NAMES:
            c.start(name)
        c.run(4.0)
        self.assertMoved()
        self.assertEqual(self.changes(), self.expected())
        self.assertEqual(c.managers["c"].ledger.ignored, {("p0", "stale"): 1})

    def test_groupAheadOfNode(self) -> None:
        """
        A leader whose own placement is behind the group's configuration
        (its ledger lost, the feed it sees stale) changes nothing and says
        why once (Raft would refuse the older epoch anyway).
        """
        c = self.c
        self.move()
        for name in sorted(c.managers):
            c.crash(name)
        c.ledgers.pop("a")
        c.routing = doc(9, {"p0": (1, ["a", "b", "c"])})
        for name in ("a", "b", "d"):
            c.start(name)
        self.assertEqual(c.managers["a"].ledger.epoch("p0"), 1)
        c.run(2.0)
        leader = c.leader("p0")
        assert leader is not None
        if leader is not c.managers["a"]:
            leader.partitions["p0"].node.transferLeadership(spiffe("a"))
            c.run(1.0)
        self.assertIs(c.leader("p0"), c.managers["a"])
        c.run(2.0)
        self.assertEqual(self.changes(), self.expected())
        warned = [e for e in self.events if "no membership change until" in e.get("log_format", "")]
        self.assertEqual(len(warned), 1)
        self.assertEqual((warned[0]["group"], warned[0]["epoch"]), (2, 1))
