"""
Partitions on Raft, simulated: several nodes' partition managers over an
in-memory network, driven by a routing table; placement changes become
membership changes.  Also the routing hash, the state machine envelope and
the admin allow list.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.ceptra.access import SpiffeAllowList
from suite.ceptra.engine import EngineError
from suite.ceptra.health import ActivationHealth, PartitionsHealth
from suite.ceptra.interfaces import IRaftStatus
from suite.ceptra.machine import PartitionMachine, eventsEntry, partitionNumber, rulesEntry
from suite.ceptra.partitions import REPORTED_STATES, NotHosted, PartitionManager, _PartitionCollector
from suite.ceptra.partitions.retire import (
    markRetired,
    moveRetired,
    parseName,
    pendingRetirements,
    purge,
    retiredCopies,
)
from suite.ceptra.placement import MemoryPlacementFile, PlacementLedger
from suite.ceptra.routing import NodeInfo, Routing, keyHash, parseRouting
from suite.clustor.interfaces import IFeedClient
from suite.raft.groupid import MemoryGroupStore
from suite.raft.incarnation import MemoryIncarnations
from suite.raft.interfaces import IRaftStateMachine
from suite.raft.messages import Entry, RequestVote
from suite.raft.multi import DialPolicy
from suite.raft.sessions import SessionApplier
from suite.raft.settings import RaftSettings
from suite.raft.snapshotter import Runner
from suite.raft.storage import MemoryStorage, Recovered
from tests.raft.test_multi import Network
from tests.support.metriclint import lintExposition, promtool

RULES = {
    "version": 1,
    "rules": [
        {
            "name": "per_key",
            "type": "aggregate",
            "group_by": ["key"],
            "window": {"kind": "sliding", "size_ms": 1000},
            "aggregate": {"fn": "count"},
        }
    ],
}


def spiffe(name: str) -> str:
    return f"spiffe://example.org/ceptra/{name}"


def routingOf(
    placement: dict[str, list[str]], names: list[str], revision: int = 1, epochs: dict[str, int] | None = None
) -> Routing:
    """
    A routing feed document: partitions at epoch C{revision} unless
    C{epochs} says otherwise.
    """
    return parseRouting(
        {
            "revision": revision,
            "nodes": {n: {"raft": f"addr-{n}", "admin": f"admin-{n}", "spiffe": spiffe(n)} for n in names},
            "partitions": [
                {"id": p, "replicas": r, "epoch": (epochs or {}).get(p, revision)}
                for p, r in placement.items()
            ],
        }
    )


def events(n: int, start: int = 0, prefix: str = "e") -> list[dict[str, Any]]:
    return [
        {"event_id": f"{prefix}{i}", "key": f"k{i % 5}", "ts": 1000 + i, "fields": {"amount": i}}
        for i in range(start, start + n)
    ]


class RoutingTests(SynchronousTestCase):
    def test_hash(self) -> None:
        """
        The routing hash is BLAKE2b-64 of the key: stable, spread over
        partitions.
        """
        self.assertEqual(keyHash("k1"), keyHash("k1"))
        self.assertLess(keyHash("anything"), 2**64)
        routing = routingOf({"p0": ["a"], "p1": ["a"], "p2": ["a"]}, ["a"])
        counts: dict[str | None, int] = {}
        for i in range(3000):
            pid = routing.partitionFor(f"key-{i}")
            counts[pid] = counts.get(pid, 0) + 1
        self.assertEqual(set(counts), {"p0", "p1", "p2"})
        self.assertTrue(all(c > 800 for c in counts.values()))
        self.assertIsNone(Routing().partitionFor("x"))

    def test_parseIgnoresJunk(self) -> None:
        routing = parseRouting(
            {
                "revision": 3,
                "nodes": {"a": {"raft": "h:1", "spiffe": spiffe("a")}, "b": "junk", 7: {}},
                "partitions": [{"id": "p0", "replicas": ["a", 5]}, "junk", {"id": 5, "replicas": []}],
            }
        )
        self.assertEqual(routing.revision, 3)
        self.assertEqual(dict(routing.nodes), {"a": NodeInfo("a", "h:1", "", spiffe("a"))})
        self.assertEqual(dict(routing.partitions), {"p0": ("a",)})
        self.assertEqual(routing.nodeBySpiffe(spiffe("a")), "a")
        self.assertEqual(parseRouting(None), Routing())
        self.assertEqual(routing.toJSON()["partitions"][0]["replicas"], ["a"])


class MachineTests(SynchronousTestCase):
    def test_interface(self) -> None:
        verifyObject(IRaftStateMachine, PartitionMachine("p0"))
        self.assertEqual(partitionNumber("p12"), 12)
        self.assertEqual(partitionNumber("alpha"), partitionNumber("alpha"))

    def test_dedupAndSnapshot(self) -> None:
        """
        A resent batch is not counted twice; a restored machine has the same
        state hash and continues identically.
        """
        published: list[Any] = []
        m = PartitionMachine("p0", onResults=lambda p, i, r: published.append((p, i, r)))
        answer = m.apply(1, rulesEntry(RULES))
        self.assertEqual(answer, {"index": 1, "accepted": 0, "duplicates": 0, "rulesVersion": 1})
        self.assertEqual(m.apply(2, eventsEntry(events(10))), {"index": 2, "accepted": 10, "duplicates": 0})
        self.assertEqual(m.apply(3, eventsEntry(events(10, 5))), {"index": 3, "accepted": 5, "duplicates": 5})
        copy = PartitionMachine("p0")
        copy.restore(m.snapshot())
        self.assertEqual(copy.stateHash(), m.stateHash())
        self.assertEqual(copy.rulesDigest, m.rulesDigest)
        for machine in (m, copy):
            machine.apply(4, eventsEntry(events(3, 100)))
        self.assertEqual(copy.stateHash(), m.stateHash())
        self.assertEqual(m.events, 18)
        self.assertIn(("p0", 2), [(p, i) for p, i, _ in published])
        self.assertTrue(all(results for _, _, results in published))
        value = m.engine.query("per_key")
        self.assertEqual(value["partition"], 0)
        self.assertEqual(len(value["groups"]), 5)

    def test_badEntries(self) -> None:
        """
        Entries the engine cannot use are counted, never raised; a rules
        entry the engine refuses does not bump the rules version.
        """
        m = PartitionMachine("p0")
        self.assertEqual(m.apply(1, b"\xc1")["rejected"], 1)  # type: ignore[index]
        self.assertEqual(
            m.apply(2, b"R1{not json")["error"],  # type: ignore[index]
            "rules document refused: rejected by the engine",
        )
        self.assertEqual(m.apply(3, rulesEntry(RULES))["rulesVersion"], 1)  # type: ignore[index]
        self.assertEqual(
            m.apply(4, rulesEntry(RULES))["error"],  # type: ignore[index]
            "rules document refused: version: must be greater than the current version 1",
        )
        self.assertEqual(m.status()["rulesVersion"], 1)
        self.assertRaises(EngineError, rulesEntry, {"rules": "no"})


class AllowListTests(SynchronousTestCase):
    def test_permits(self) -> None:
        nodes = {spiffe("a")}
        allow = SpiffeAllowList(["spiffe://example.org/ops/admin", "spiffe://clients.org"], lambda: nodes)
        self.assertTrue(allow.permits("spiffe://example.org/ops/admin"))
        self.assertTrue(allow.permits("spiffe://clients.org/x/y"))
        self.assertTrue(allow.permits(spiffe("a")))
        self.assertFalse(allow.permits(spiffe("b")))
        self.assertFalse(allow.permits("spiffe://clients.org.evil/x"))
        self.assertFalse(allow.permits("spiffe://example.org/ops/admin2"))
        # an empty trust domain allows nothing (not every ID)
        self.assertFalse(SpiffeAllowList(["spiffe://"]).permits("spiffe://clients.org/x"))


class UnloadableStorage(MemoryStorage):
    def load(self) -> Deferred[Recovered]:
        return fail(OSError("bad WAL"))


class SlowDisk(MemoryStorage):
    """
    L{MemoryStorage} on a slow disk: every write, and every sync, is durable
    C{delay} seconds after it is asked for (in order), on C{clock}.
    """

    def __init__(self, clock: Clock, delay: float) -> None:
        super().__init__()
        self.clock, self.delay = clock, delay

    def _later(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.clock.callLater(self.delay, d.callback, None)
        return d

    def saveHardState(self, term: int, votedFor: str | None) -> Deferred[None]:
        super().saveHardState(term, votedFor)
        return self._later()

    def appendEntries(self, truncateAfter: int | None, entries: Sequence[Entry]) -> Deferred[None]:
        super().appendEntries(truncateAfter, entries)
        return self._later()

    def sync(self) -> Deferred[None]:
        return self._later()


def stateGauge(test: SynchronousTestCase, manager: PartitionManager) -> dict[str, str]:
    """
    The state C{ceptra_partition_state} gives each partition of C{manager}'s
    (lint-clean exposition): every state has its series, exactly one is 1.
    """
    registry = CollectorRegistry()
    registry.register(_PartitionCollector(manager))
    text = generate_latest(registry).decode()
    test.assertEqual(lintExposition(text, "ceptra"), [])
    series: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "ceptra_partition_state":
            for sample in family.samples:
                series.setdefault(sample.labels["partition"], {})[sample.labels["state"]] = sample.value
    current = {}
    for pid, values in series.items():
        test.assertEqual(sorted(values), sorted(REPORTED_STATES), pid)
        [state] = [s for s, v in values.items() if v == 1]
        test.assertEqual(sum(values.values()), 1, pid)
        current[pid] = state
    return current


class Cluster:
    """
    Partition managers of C{names} on one simulated network.  Each node reads
    C{routing}, unless C{routes} gives it a routing table of its own (a feed
    update reaching the nodes at different times); a node listed in
    C{slowDisks} writes with that delay (L{SlowDisk}).
    """

    def __init__(
        self,
        names: list[str],
        placement: dict[str, list[str]],
        seed: int = 1,
        snapshotThreshold: int = 20,
        snapshotRunner: Runner | None = None,
        slowDisks: dict[str, float] | None = None,
        root: str | None = None,
    ) -> None:
        #: with C{root}: each node's storage directories are real, under
        #: C{root/<name>} (its data directory), and retired replicas' data
        #: is moved to its C{retired/}; the Raft storage stays in memory
        self.root = root
        self.fileRunner: Callable[..., Deferred[Any]] | None = None
        self.retiredKeep = 86400.0
        self.snapshotRunner = snapshotRunner
        self.clock = Clock()
        self.rng = random.Random(seed)
        self.net = Network(self.clock, self.rng)
        self.names = names
        self.snapshotThreshold = snapshotThreshold
        self.routing = routingOf(placement, names)
        self.routes: dict[str, Routing] = {}
        self.slowDisks = dict(slowDisks or {})
        self.disks: dict[str, MemoryStorage] = {}
        self.incarnations = MemoryIncarnations(self.rng)
        #: the replicas' Raft group ids, without a data directory
        self.groups: dict[str, MemoryGroupStore] = {}
        self.ledgers: dict[str, MemoryPlacementFile] = {}
        self.managers: dict[str, PartitionManager] = {}
        for n in names:
            self.start(n)

    def start(self, name: str) -> PartitionManager:
        dataDir = None if self.root is None else os.path.join(self.root, name)
        walRoot, snapRoot = ("wal", "snap") if dataDir is None else (f"{dataDir}/wal", f"{dataDir}/snap")

        def storage(walDir: str, snapshotDir: str) -> MemoryStorage:
            key = f"{name}:{walDir}"
            if dataDir is not None:
                if not os.path.exists(walDir) and key in self.disks:
                    # Its directory was moved away (retired): a new replica.
                    del self.disks[key]
                    self.incarnations.forget(key)
                # What a real node's storage leaves there.
                for directory in (walDir, snapshotDir):
                    os.makedirs(directory, exist_ok=True)
                for path in (os.path.join(walDir, "incarnation"), os.path.join(snapshotDir, "snap-1")):
                    with open(path, "w") as f:
                        f.write(name)
            if key not in self.disks:
                slow = self.slowDisks.get(name)
                self.disks[key] = MemoryStorage() if slow is None else SlowDisk(self.clock, slow)
            return self.disks[key]

        m = PartitionManager(
            spiffe(name),
            self.clock,
            lambda: self.routes.get(name, self.routing),
            walRoot,
            snapRoot,
            dial=DialPolicy(0.5, 3, 0.02),
            settings=RaftSettings(snapshotThreshold=self.snapshotThreshold),
            interval=0.05,
            retireGrace=5.0,
            connect=self.net.connector(spiffe(name)),
            storageFactory=storage,
            rng=random.Random(self.rng.random()),
            ledger=PlacementLedger(self.ledgers.setdefault(name, MemoryPlacementFile())),
            incarnations=lambda walDir: self.incarnations.claim(f"{name}:{walDir}"),
            groupStores=None
            if dataDir is not None
            else lambda walDir: self.groups.setdefault(f"{name}:{walDir}", MemoryGroupStore()),
            snapshotRunner=self.snapshotRunner,
            holdsReplica=None if dataDir is not None else lambda pid: f"{name}:wal/{pid}" in self.disks,
            heldReplicas=None
            if dataDir is not None
            else lambda: sorted(k.split(":wal/", 1)[1] for k in self.disks if k.startswith(f"{name}:wal/")),
            dataDir=dataDir,
            fileRunner=self.fileRunner,
            retiredKeep=self.retiredKeep,
        )
        self.net.listeners[f"addr-{name}"] = (spiffe(name), m.multi)
        m.startService()
        self.managers[name] = m
        return m

    def run(self, seconds: float, step: float = 0.002, until: Callable[[], bool] | None = None) -> float:
        """
        Advance the clock by C{seconds} in steps, or until C{until()} holds
        after a step; return the time taken.
        """
        start = self.clock.seconds()
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            if until is not None and until():
                break
        return self.clock.seconds() - start

    def crash(self, name: str, wipe: bool = False) -> None:
        """
        Stop C{name}'s node abruptly; with C{wipe}, its disk is lost too
        (WALs, snapshots, incarnations, placement ledger).
        """
        m = self.managers.pop(name)
        m.stopService()
        del self.net.listeners[f"addr-{name}"]
        for x, y, pipe in self.net.pipes:
            if spiffe(name) in (x, y):
                pipe.loseConnection()
        if wipe:
            for key in [k for k in self.disks if k.startswith(f"{name}:")]:
                del self.disks[key]
                self.incarnations.forget(key)
                self.groups.pop(key, None)
            self.ledgers.pop(name, None)

    def hashes(self, pid: str) -> set[str]:
        return {m.partitions[pid].machine.stateHash() for m in self.managers.values() if pid in m.partitions}

    def leader(self, pid: str) -> PartitionManager | None:
        for m in self.managers.values():
            part = m.partitions.get(pid)
            if part is not None and part.node.leader is not None:
                return m
        return None


class ManagerTests(SynchronousTestCase):
    def test_interface(self) -> None:
        c = Cluster(["a"], {"p0": ["a"]})
        verifyObject(IRaftStatus, c.managers["a"])

    def test_partitionsElectAndReplicate(self) -> None:
        """
        Each node hosts the partitions placed on it; each group elects a
        leader; a proposed batch is applied on every replica with equal state
        hashes; readiness is green once leaders are known.
        """
        c = Cluster(["a", "b", "c"], {"p0": ["a", "b", "c"], "p1": ["a", "b", "c"], "p2": ["a", "b"]})
        health = PartitionsHealth(c.managers["a"])
        self.assertFalse(health.check().ready)
        c.run(3.0)
        self.assertEqual(sorted(c.managers["c"].partitions), ["p0", "p1"])
        self.assertEqual(health.check().reasons, ())
        for pid in ("p0", "p1", "p2"):
            leader = c.leader(pid)
            assert leader is not None
            done: list[Any] = []
            leader.propose(pid, rulesEntry(RULES)).addCallback(done.append)
            leader.propose(pid, eventsEntry(events(20, prefix=pid))).addCallback(done.append)
            c.run(0.5)
            self.assertEqual(done[1]["accepted"], 20)
        c.run(0.5)
        for pid in ("p0", "p1"):
            hashes = {m.partitions[pid].machine.stateHash() for m in c.managers.values()}
            self.assertEqual(len(hashes), 1)
        self.assertNotIn("p2", c.managers["c"].partitions)
        self.assertRaises(NotHosted, c.managers["c"].get, "p2")
        # One shared link per node pair for every group.
        self.assertTrue(all(n <= 2 for n in c.net.openLinks().values()))
        status = c.managers["a"].partitionStatus("p0", withHash=True)
        self.assertEqual(status["state"], "running")
        self.assertIn("stateHash", status)
        # Each partition's group bound a Raft group id of its own, on every replica.
        ids = {
            pid: {m.partitions[pid].node.groupId for m in c.managers.values() if pid in m.partitions}
            for pid in ("p0", "p1", "p2")
        }
        self.assertTrue(all(len(found) == 1 and 0 not in found for found in ids.values()), ids)
        self.assertEqual(len(set.union(*ids.values())), 3)
        (p0,) = ids["p0"]
        self.assertEqual(c.managers["a"].partitionStatus("p0")["group"], f"{p0:016x}")

    def test_replicaMoved(self) -> None:
        """
        Moving p0's replica from c to d in the routing table: the leader adds
        d (learner, then voter) and removes c; d ends up hosting p0 with the
        same state, c stops its replica.
        """
        c = Cluster(["a", "b", "c", "d"], {"p0": ["a", "b", "c"]})
        c.run(2.0)
        leader = c.leader("p0")
        assert leader is not None
        leader.propose("p0", rulesEntry(RULES))
        leader.propose("p0", eventsEntry(events(50)))
        c.run(1.0)
        self.assertNotIn("p0", c.managers["d"].partitions)
        c.routing = routingOf({"p0": ["a", "b", "d"]}, c.names, revision=2)
        c.run(4.0)
        self.assertIn("p0", c.managers["d"].partitions)
        self.assertNotIn("p0", c.managers["c"].partitions)
        leader = c.leader("p0")
        assert leader is not None
        voters = set(leader.partitions["p0"].node.configs.latest().voters)
        self.assertEqual(voters, {spiffe("a"), spiffe("b"), spiffe("d")})
        hashes = {c.managers[n].partitions["p0"].machine.stateHash() for n in ("a", "b", "d")}
        self.assertEqual(len(hashes), 1)
        self.assertEqual(c.managers["d"].partitions["p0"].machine.events, 50)

    def test_leaderMovedAway(self) -> None:
        """
        When the leader itself is moved off, it hands leadership on first
        and the new leader removes it.
        """
        c = Cluster(["a", "b", "c", "d"], {"p0": ["a", "b", "c"]})
        c.run(2.0)
        leader = c.leader("p0")
        assert leader is not None
        old = leader.spiffe.rsplit("/", 1)[1]
        rest = [n for n in ("a", "b", "c") if n != old] + ["d"]
        c.routing = routingOf({"p0": rest}, c.names, revision=2)
        c.run(6.0)
        self.assertNotIn("p0", c.managers[old].partitions)
        new = c.leader("p0")
        assert new is not None
        self.assertEqual(set(new.partitions["p0"].node.configs.latest().voters), {spiffe(n) for n in rest})

    def test_loadFailedStopsNode(self) -> None:
        """
        A replica whose storage cannot be loaded fails, and its node is
        Stopped (it never serves): the group's messages that keep arriving
        are dropped without being taken for messages to a node still
        loading; the other replicas carry on.
        """
        c = Cluster(["a", "b", "c"], {"p0": ["a", "b", "c"]})
        c.run(1.0)
        c.crash("c")
        c.disks["c:wal/p0"] = UnloadableStorage()
        m = c.start("c")
        c.run(1.0)
        part = m.partitions["p0"]
        self.assertEqual(part.lifecycle.describe(), {"state": "failed", "error": "bad WAL"})
        self.assertTrue(part.node.stopped)
        self.assertGreater(m.multi.framesReceived, 0)
        self.assertEqual(m.multi.unknownGroup, 0)
        self.assertEqual(part.node.droppedWhileLoading, 0)
        self.assertIsNotNone(c.leader("p0"))
        self.assertEqual(stateGauge(self, m), {"p0": "failed"})
        self.assertEqual(stateGauge(self, c.managers["a"]), {"p0": "running"})

    def test_stoppedReconcilesNothing(self) -> None:
        """
        A stopped manager (its service no longer running) starts no
        partition, even if asked to reconcile.
        """
        c = Cluster(["a"], {"p0": ["a"]})
        c.run(0.5)
        m = c.managers["a"]
        self.assertIn("p0", m.partitions)
        m.stopService()
        self.assertEqual((m.running, m.partitions), (0, {}))
        m.reconcile()
        c.run(0.5)
        self.assertEqual(m.partitions, {})

    def test_foreignPeersMetric(self) -> None:
        """
        C{ceptra_partition_foreign_peers{partition}} counts the peers whose
        messages the partition's group refused for another Raft group id in
        the last minute: 0, then 1 for a vote request of another group, 0
        again once that peer has been silent for a minute.
        """
        c = Cluster(["a"], {"p0": ["a"]})
        c.run(1.0)
        m = c.managers["a"]
        node = m.partitions["p0"].node
        self.assertNotEqual(node.groupId, 0)

        def scrape() -> dict[str, float]:
            registry = CollectorRegistry()
            registry.register(_PartitionCollector(m))
            text = generate_latest(registry).decode()
            self.assertEqual(lintExposition(text, "ceptra"), [])
            return {
                sample.labels["partition"]: sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "ceptra_partition_foreign_peers"
                for sample in family.samples
            }

        self.assertEqual(scrape(), {"p0": 0})
        other = node.groupId ^ 1 or 2
        term = node.term
        node.receive(RequestVote("intruder", node.id, term + 5, 100, term + 5, group=other))
        self.assertEqual(scrape(), {"p0": 1})
        self.assertEqual(node.term, term)  # nothing taken from the other group
        c.clock.advance(61)
        self.assertEqual(scrape(), {"p0": 0})

    def test_notInRouting(self) -> None:
        c = Cluster(["a"], {"p0": ["a"]})
        c.routing = Routing()
        c.run(0.2)
        self.assertIn("is not in the routing table", c.managers["a"].notReadyReasons()[0])

    def test_replicaWithoutIdentity(self) -> None:
        """
        A placement naming a replica the routing table gives no SPIFFE ID
        or Raft address is not acted on: its group is not started (a
        readiness reason says why) and a running group is not shrunk to the
        replicas that have one; one warning per partition.
        """
        c = Cluster(["a", "b", "c"], {"p0": ["a", "b", "c"]})
        c.run(2.0)
        leader = c.leader("p0")
        assert leader is not None
        doc: dict[str, Any] = {
            "revision": 2,
            "nodes": {n: {"raft": f"addr-{n}", "admin": f"admin-{n}", "spiffe": spiffe(n)} for n in c.names},
            "partitions": [
                {"id": "p0", "replicas": ["a", "b", "c"], "epoch": 2},
                {"id": "p1", "replicas": ["a", "b", "ghost"], "epoch": 1},
            ],
        }
        del doc["nodes"]["c"]["spiffe"]
        c.routing = parseRouting(doc)
        with capturedLogs() as logs:
            c.run(3.0)
        self.assertEqual(
            set(leader.partitions["p0"].node.configs.latest().voters), {spiffe(n) for n in "abc"}
        )
        for m in c.managers.values():
            self.assertNotIn("p1", m.partitions)
        lines = [
            e["log_format"].format(**e) for e in logs if "no SPIFFE ID or Raft" in e.get("log_format", "")
        ]
        self.assertIn(
            "partition p0: the routing table gives replicas ['c'] no SPIFFE ID or Raft address: "
            "no membership change until it does",
            lines,
        )
        self.assertIn(
            "partition p1: the routing table gives replicas ['ghost'] no SPIFFE ID or Raft address: "
            "its group is not started here until it does",
            lines,
        )
        # once per node: nothing more while the table stays as it is
        with capturedLogs() as logs:
            c.run(2.0)
        self.assertFalse([e for e in logs if "no SPIFFE ID or Raft" in e.get("log_format", "")])
        self.assertIn(
            "partition p1: not started: the routing table gives replicas ['ghost'] no SPIFFE ID or Raft address",
            c.managers["a"].notReadyReasons(),
        )
        # Completed, the placement is acted on.
        doc["nodes"]["ghost"] = {"raft": "addr-ghost", "spiffe": spiffe("ghost")}
        doc["nodes"]["c"]["spiffe"] = spiffe("c")
        doc["revision"] = 3
        c.routing = parseRouting(doc)
        c.run(1.0)
        self.assertIn("p1", c.managers["a"].partitions)

    def test_advertisedAddress(self) -> None:
        """
        A routing table giving this node a Raft address other than its
        advertised host and Raft port is warned about, once per address.
        """
        c = Cluster(["a"], {"p0": ["a"]})
        m = c.managers["a"]
        m.advertise = ("10.0.0.1", 26021)

        def table(raft: str) -> list[str]:
            c.routing = parseRouting(
                {
                    "nodes": {"a": {"raft": raft, "spiffe": spiffe("a")}},
                    "partitions": [{"id": "p0", "replicas": ["a"], "epoch": 1}],
                }
            )
            with capturedLogs() as logs:
                c.run(0.5)
            return [e["log_format"].format(**e) for e in logs if "advertises" in e.get("log_format", "")]

        self.assertEqual(
            table("10.0.0.2:26021"),
            [
                "the routing table gives this node (a) the Raft address 10.0.0.2:26021, but it advertises "
                "10.0.0.1 and listens on port 26021 (CEPTRA_ADVERTISE_HOST, CEPTRA_RAFT_BIND): peers dial "
                "10.0.0.2:26021; make it reach this node or correct the control plane's state file"
            ],
        )
        self.assertEqual(len(table("10.0.0.1:26999")), 1)
        self.assertEqual(table("10.0.0.1:26021"), [])
        m.advertise = ("Node-A.example.", 26021)
        self.assertEqual(table("node-a.example:26021"), [])
        self.assertEqual(len(table("other.example:26021")), 1)

    def readiness(self, manager: PartitionManager) -> tuple[dict[str, float], float]:
        registry = CollectorRegistry()
        registry.register(_PartitionCollector(manager))
        text = generate_latest(registry).decode()
        self.assertEqual(lintExposition(text, "ceptra"), [])
        perPartition: dict[str, float] = {}
        ratio = -1.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "ceptra_partition_ready":
                    perPartition[sample.labels["partition"]] = sample.value
                elif sample.name == "ceptra_ready_partitions_ratio":
                    ratio = sample.value
        return perPartition, ratio

    def test_readinessRatio(self) -> None:
        """
        C{ceptra_partition_ready} is 1 for each hosted partition whose
        replica passes the raft readiness check and
        C{ceptra_ready_partitions_ratio} the share of them; a partition that
        loses its leader drops out of both, and a node outside the routing
        table is at 0.
        """
        c = Cluster(["a", "b", "c"], {"p0": ["a", "b", "c"], "p1": ["a", "b", "c"], "p2": ["b", "c"]})
        a = c.managers["a"]
        self.assertEqual(self.readiness(a), ({"p0": 0, "p1": 0}, 0.0))
        c.run(3.0)
        self.assertEqual(self.readiness(a), ({"p0": 1, "p1": 1}, 1.0))
        # b and c gone: p0 and p1 lose their leader (or never hear of one again)
        c.crash("b")
        c.crash("c")
        c.run(3.0)
        self.assertEqual(self.readiness(a), ({"p0": 0, "p1": 0}, 0.0))
        b = c.start("b")
        c.start("c")
        c.run(3.0)
        self.assertEqual(self.readiness(a), ({"p0": 1, "p1": 1}, 1.0))
        self.assertEqual(self.readiness(b), ({"p0": 1, "p1": 1, "p2": 1}, 1.0))
        # Only p2 loses its quorum: a third of b's partitions are not ready.
        c.crash("c")
        c.run(3.0)
        perPartition, ratio = self.readiness(b)
        self.assertEqual(perPartition, {"p0": 1, "p1": 1, "p2": 0})
        self.assertAlmostEqual(ratio, 2 / 3)
        self.assertEqual(len(b.notReadyReasons()), 1)
        c.routing = routingOf({"p0": ["b"]}, ["b"], revision=2)
        c.run(0.5)
        self.assertEqual(self.readiness(a), ({}, 0.0))


class ReplicaMoveTests(SynchronousTestCase):
    """
    Moving a replica of a two-replica group, p2 from {a, b} to {a, c}: until
    a configuration without b is committed, b is one of the group's only two
    voters, so it keeps taking part (voting, replicating, answering the
    leader) whatever order the nodes apply placement epoch 2 in, however
    slow a node's disk is and however long the move takes.
    """

    def move(
        self,
        leader: str,
        order: list[str],
        slowDisks: dict[str, float] | None = None,
        seed: int = 1,
        gap: float = 0.3,
        during: Callable[[Cluster], None] | None = None,
        within: float = 10.0,
    ) -> float:
        """
        Start p2 on {a, b} led by C{leader}, load it, then apply epoch 2 on
        the nodes of C{order} one after the other, C{gap} seconds apart
        (C{during} is called once the first has applied it).  Check at every
        step that b's replica runs until the group has committed a
        configuration without b and that no leader loses its quorum; return
        how long the move took (from the first node applying epoch 2).
        """
        c = self.cluster = Cluster(["a", "b", "c"], {"p2": ["a", "b"]}, seed=seed, slowDisks=slowDisks)
        c.run(2.0)
        current = c.leader("p2")
        assert current is not None
        if current.spiffe != spiffe(leader):
            current.partitions["p2"].node.transferLeadership(spiffe(leader))
            c.run(1.0)
        first = c.leader("p2")
        assert first is not None and first.spiffe == spiffe(leader)
        first.propose("p2", rulesEntry(RULES))
        first.propose("p2", eventsEntry(events(50)))
        c.run(1.0)
        b = c.managers["b"]
        self.assertEqual(b.partitions["p2"].machine.events, 50)
        early: list[str] = []

        def committedVoters() -> frozenset[str]:
            voters: frozenset[str] = frozenset()
            for m in c.managers.values():
                part = m.partitions.get("p2")
                if part is not None and part.node.leader is not None:
                    voters = part.node.configs.at(part.node.commitIndex).voters
            return voters

        lastVoters = [committedVoters()]

        def moved() -> bool:
            voters = committedVoters() or lastVoters[0]
            if "p2" not in b.partitions and spiffe("b") in voters and not early:
                early.append(f"b stopped p2 at {c.clock.seconds():.3f} while a voter of {sorted(voters)}")
            lastVoters[0] = voters
            leaderNow = c.leader("p2")
            if leaderNow is None:
                return False
            node = leaderNow.partitions["p2"].node
            config = node.configs.at(node.commitIndex)
            onC = c.managers["c"].partitions.get("p2")
            return (
                config.voters == {spiffe("a"), spiffe("c")}
                and not config.learners
                and "p2" not in b.partitions
                and onC is not None
                and onC.machine.events == 50
                and onC.machine.stateHash() == leaderNow.partitions["p2"].machine.stateHash()
            )

        new = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        with capturedLogs() as logs:
            start = c.clock.seconds()
            for k, name in enumerate(order):
                c.routes[name] = new
                if k == 0 and during is not None:
                    during(c)
                if not moved():
                    c.run(gap, until=moved)
            c.routing = new
            c.routes.clear()
            if not moved():
                c.run(within, until=moved)
            took = c.clock.seconds() - start
        stepDowns = [e["log_format"] for e in logs if "lost contact with a quorum" in e.get("log_format", "")]
        self.assertEqual(early, [])
        self.assertEqual(stepDowns, [])
        self.assertTrue(moved(), f"p2 did not move within {took:.1f} s")
        # The retired replica is gone; a and c agree.
        self.assertEqual(len(c.hashes("p2")), 1)
        return took

    def test_removedReplicaAppliesFirst(self) -> None:
        """
        b applies epoch 2 first and its disk is slow, so the leader commits
        with b's acknowledgement late: c catches up while the configuration
        recording c is still uncommitted, and is promoted once it commits.
        """
        for seed in (1, 2, 3):
            took = self.move("a", ["b", "a", "c"], {"b": 0.02}, seed=seed)
            self.assertLess(took, 3.0)

    def test_leaderMovedAway(self) -> None:
        """
        The leader itself (b) is moved off, applies epoch 2 first and has a
        slow disk: it hands leadership to a, which adds c and removes b.
        """
        for seed in (1, 2, 3):
            took = self.move("b", ["b", "c", "a"], {"b": 0.02}, seed=seed)
            self.assertLess(took, 3.0)

    def test_newReplicaAppliesFirst(self) -> None:
        """
        c applies epoch 2 first (and starts p2 with a configuration it has
        only from the placement), the leader next, b last.
        """
        for seed in (1, 2, 3):
            took = self.move("a", ["c", "a", "b"], {"a": 0.02}, seed=seed)
            self.assertLess(took, 3.0)

    def test_leaderChangesDuringMove(self) -> None:
        """
        Leadership passes from a to c as soon as c is a voter, before b is
        removed: c carries out the rest of the move and tells b.
        """
        transferred: list[float] = []

        def handOver(c: Cluster) -> None:
            def check() -> None:
                part = c.managers["a"].partitions["p2"]
                if part.node.leader is not None and spiffe("c") in part.node.configs.latest().voters:
                    transferred.append(c.clock.seconds())
                    part.node.transferLeadership(spiffe("c")).addErrback(lambda f: None)
                else:
                    c.clock.callLater(0.002, check)

            check()

        for seed in (1, 2, 3):
            transferred.clear()
            took = self.move("a", ["b", "a", "c"], {"b": 0.02}, seed=seed, during=handOver)
            self.assertEqual(len(transferred), 1)
            leader = self.cluster.leader("p2")
            assert leader is not None
            self.assertEqual(leader.spiffe, spiffe("c"))
            self.assertLess(took, 3.0)

    def test_graceDoesNotStopVoter(self) -> None:
        """
        c cannot be reached for longer than the retiring grace period (5 s
        here): b, still a voter, keeps running past it, and the move
        completes once c is reachable.
        """

        def cut(c: Cluster) -> None:
            c.net.partition(spiffe("a"), spiffe("c"))
            c.clock.callLater(8.0, c.net.heal)

        took = self.move("a", ["b", "a", "c"], during=cut, within=15.0)
        self.assertGreater(took, 8.0)
        self.assertLess(took, 11.0)

    def test_removedBeforeHearingAndLeaderChanges(self) -> None:
        """
        b cannot hear a while a removes it: the configuration without b
        commits with a and c, then a hands leadership to c, which never knew
        b as a member, before b has received that configuration.  b, a voter
        in the latest configuration it holds, hears no leader and asks for
        votes; the leader answers a replica outside its configuration by
        replicating to it until it holds the configuration removing it, then
        tells it that configuration is committed, and b stops.
        """
        handedOver: list[float] = []

        def isolate(c: Cluster) -> None:
            a = c.managers["a"].partitions["p2"].node

            def promoted() -> None:
                config = a.configs.at(a.commitIndex)
                if a.leader is not None and spiffe("c") in config.voters and spiffe("b") in config.voters:
                    c.net.partition(spiffe("a"), spiffe("b"))
                    removed()
                else:
                    c.clock.callLater(0.002, promoted)

            def removed() -> None:
                if a.leader is not None and spiffe("b") not in a.configs.at(a.commitIndex).members():
                    handedOver.append(c.clock.seconds())
                    a.transferLeadership(spiffe("c")).addErrback(lambda f: None)
                    c.clock.callLater(0.5, c.net.heal)
                else:
                    c.clock.callLater(0.002, removed)

            promoted()

        for seed in (1, 2, 3):
            handedOver.clear()
            took = self.move("a", ["b", "a", "c"], {"b": 0.02}, seed=seed, during=isolate, within=8.0)
            self.assertEqual(len(handedOver), 1)
            # b stopped once it held the configuration removing it.
            a = self.cluster.managers["a"].partitions["p2"].node
            self.assertNotIn(spiffe("b"), a.configs.latest().members())
            held = self.cluster.disks["b:wal/p2"].state.entries
            self.assertGreaterEqual(held[-1].index, a.configs.latestIndex())
            self.assertLess(took, 4.0)


class RestartDuringMoveTests(SynchronousTestCase):
    def test_removedReplicaRestarts(self) -> None:
        """
        b applies placement epoch 2 (p2 moves from {a, b} to {a, c}) and
        its process stops before the group has removed it; restarted, it
        finds its replica of p2 on disk and starts it although p2 is placed
        elsewhere: the group needs b to commit the move.  Once it is
        removed, b stops the replica, and does not start it again.
        """
        c = Cluster(["a", "b", "c"], {"p2": ["a", "b"]}, seed=4)
        c.run(2.0)
        leader = c.leader("p2")
        assert leader is not None
        leader.propose("p2", rulesEntry(RULES))
        leader.propose("p2", eventsEntry(events(50)))
        c.run(1.0)
        new = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        c.routes["b"] = new
        c.run(0.3)
        self.assertEqual(c.managers["b"].partitionStatus("p2")["state"], "retiring")
        c.crash("b")
        c.routing = new
        c.routes.clear()
        c.run(1.0)
        b = c.start("b")
        self.assertEqual(b.ledger.epoch("p2"), 2)

        def moved() -> bool:
            current = c.leader("p2")
            if current is None:
                return False
            node = current.partitions["p2"].node
            config = node.configs.at(node.commitIndex)
            return config.voters == {spiffe("a"), spiffe("c")} and "p2" not in b.partitions

        self.assertLess(c.run(10.0, until=moved), 4.0)
        self.assertEqual(c.managers["c"].partitions["p2"].machine.events, 50)
        self.assertEqual(len(c.hashes("p2")), 1)
        c.run(1.0)
        self.assertNotIn("p2", b.partitions)


class RetiredFixture(SynchronousTestCase):
    """
    Three nodes with real data directories; b holds a replica of p2, to be
    moved to c.
    """

    def moved(self, c: Cluster) -> bool:
        leader = c.leader("p2")
        if leader is None:
            return False
        node = leader.partitions["p2"].node
        b = c.managers.get("b")
        return (
            node.configs.at(node.commitIndex).voters == {spiffe("a"), spiffe("c")}
            and b is not None
            and "p2" not in b.partitions
            and not b.reclaiming
        )

    def cluster(self) -> tuple[Cluster, str]:
        root = self.mktemp()
        os.makedirs(root)
        c = Cluster(["a", "b", "c"], {"p2": ["a", "b"]}, root=root)
        c.run(2.0)
        leader = c.leader("p2")
        assert leader is not None
        leader.propose("p2", rulesEntry(RULES))
        leader.propose("p2", eventsEntry(events(20)))
        c.run(0.5)
        return c, root

    def retired(self, root: str) -> list[str]:
        path = os.path.join(root, "b", "retired")
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def partitionsPage(self, manager: PartitionManager) -> Any:
        from twisted.web.test.requesthelper import DummyRequest

        from suite.ceptra.ingest import ClientAPI, PartitionsResource
        from suite.web.sse import SSEHub

        api = ClientAPI(
            manager,
            lambda: manager.routing,
            None,
            manager.reactor,
            SSEHub(manager.reactor),
            DialPolicy(1, 3, 0.05),
        )
        return json.loads(PartitionsResource(api).render_GET(DummyRequest([])))

    def exposition(self, manager: PartitionManager) -> str:
        registry = CollectorRegistry()
        registry.register(_PartitionCollector(manager))
        text = generate_latest(registry).decode()
        self.assertEqual(lintExposition(text, "ceptra"), [])
        return text


class RetiredReplicaTests(RetiredFixture):
    """
    A replica removed from its group for good is retired: its data moves to
    the data directory's C{retired/}, it is never started again, and old
    retired copies are deleted; a crash at any point of this restarts
    correctly.
    """

    def test_retiredDataMovedNotRestarted(self) -> None:
        c, root = self.cluster()
        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        with capturedLogs() as logs:
            self.assertLess(c.run(5.0, until=lambda: self.moved(c)), 4.0)
        self.assertFalse(os.path.exists(os.path.join(root, "b", "wal", "p2")))
        self.assertFalse(os.path.exists(os.path.join(root, "b", "snap", "p2")))
        [name] = self.retired(root)
        self.assertRegex(name, r"^p2-2-\d+$")
        copy = os.path.join(root, "b", "retired", name)
        self.assertEqual(sorted(os.listdir(os.path.join(copy, "wal"))), ["group", "incarnation", "retired"])
        self.assertEqual(os.listdir(os.path.join(copy, "snapshots")), ["snap-1"])
        lines = [e["log_format"].format(**e) for e in logs if "replica retired" in e.get("log_format", "")]
        self.assertEqual(lines, [f"partition p2 replica retired; data moved to {copy}"])
        # Restarted, b does not start p2 again; the copy stays (24 h).
        c.crash("b")
        b = c.start("b")
        c.run(1.0)
        self.assertNotIn("p2", b.partitions)
        self.assertEqual(self.retired(root), [name])
        # Restarted once the copy is older than the keep time: deleted.
        c.crash("b")
        c.retiredKeep = 30.0
        c.clock.advance(40.0)
        b = c.start("b")
        c.run(0.2)
        self.assertEqual(self.retired(root), [])
        self.assertNotIn("p2", b.partitions)

    def test_crashBeforeMove(self) -> None:
        """
        The node stops after writing the marker, before moving anything:
        restarted, it does not start the replica and finishes the move.
        """
        c, root = self.cluster()

        def crashingMove(fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
            if fn is moveRetired:
                return fail(OSError("the node stopped"))
            return succeed(fn(*args))

        c.crash("b")
        c.fileRunner = crashingMove
        c.start("b")
        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        c.run(5.0, until=lambda: self.moved(c))
        self.assertTrue(self.moved(c))
        self.assertTrue(os.path.exists(os.path.join(root, "b", "wal", "p2", "retired")))
        self.assertTrue(os.path.exists(os.path.join(root, "b", "snap", "p2")))
        c.crash("b")
        c.fileRunner = None
        with capturedLogs() as logs:
            b = c.start("b")
            c.run(1.0)
        self.assertNotIn("p2", b.partitions)
        self.assertFalse(os.path.exists(os.path.join(root, "b", "wal", "p2")))
        self.assertFalse(os.path.exists(os.path.join(root, "b", "snap", "p2")))
        self.assertEqual(len(self.retired(root)), 1)
        formats = [e.get("log_format", "") for e in logs]
        self.assertIn("partition {pid}: finishing the retirement of its replica", formats)
        self.assertNotIn(
            "starting the replica of partition {pid} this node still holds (placed on {voters} "
            "now): it takes part until its group's configuration without it is committed",
            formats,
        )

    def test_placedAgainAfterCrash(self) -> None:
        """
        The node stops with its retired replica's data not moved yet, and
        the partition is placed on it again meanwhile: restarted, it moves
        the old data away first, then starts a fresh replica, which the
        group adds back and catches up.
        """
        c, root = self.cluster()
        c.crash("b")
        c.fileRunner = lambda fn, *args: (
            fail(OSError("the node stopped")) if fn is moveRetired else succeed(fn(*args))
        )
        c.start("b")
        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        c.run(5.0, until=lambda: self.moved(c))
        self.assertTrue(os.path.exists(os.path.join(root, "b", "wal", "p2", "retired")))
        c.crash("b")
        c.fileRunner = None
        c.routing = routingOf({"p2": ["a", "c", "b"]}, c.names, revision=3)
        b = c.start("b")

        def back() -> bool:
            part = b.partitions.get("p2")
            return part is not None and part.serving() and part.machine.events == 20

        self.assertLess(c.run(6.0, until=back), 5.0)
        self.assertEqual(len(self.retired(root)), 1)
        self.assertFalse(os.path.exists(os.path.join(root, "b", "wal", "p2", "retired")))


class RetiredStatusTests(RetiredFixture):
    """
    A retired replica is reported as such (C{/partitions}, the readiness
    details, a metric) until its retired copy is deleted, and readiness
    does not count it as a partition that failed to start.
    """

    def test_retiredReported(self) -> None:
        c, root = self.cluster()
        c.fileRunner = lambda fn, *args: (
            fail(OSError("the node stopped")) if fn is moveRetired else succeed(fn(*args))
        )
        c.crash("b")
        b = c.start("b")
        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        c.run(5.0, until=lambda: self.moved(c))
        self.assertTrue(self.moved(c))
        # Retired, its data not moved yet (the move failed in this run).
        [(_, name)] = pendingRetirements(os.path.join(root, "b", "wal"))
        at = int(name.rsplit("-", 1)[1])
        copy = os.path.join(root, "b", "retired", name)
        retired = {
            "partition": "p2",
            "state": "retired",
            "epoch": 2,
            "retiredAt": at,
            "keptUntil": at + 86400,
            "data": copy,
            "moved": False,
        }
        self.assertEqual(b.partitionStatus("p2"), retired)
        page = self.partitionsPage(b)
        self.assertEqual((page["partitions"], page["retired"]), ({}, {"p2": [retired]}))
        self.assertEqual(b.notReadyReasons(), ())
        check = PartitionsHealth(b).check()
        self.assertEqual((check.ready, check.details["retired"]), (True, {"p2": [retired]}))
        self.assertIn('ceptra_partition_retired{partition="p2"} 1.0', self.exposition(b))
        # Restarted: the move is finished, and the copy still reported.
        c.crash("b")
        c.fileRunner = None
        b = c.start("b")
        c.run(1.0)
        moved = {**retired, "moved": True}
        self.assertEqual(self.retired(root), [name])
        self.assertEqual(b.partitionStatus("p2"), moved)
        self.assertEqual(self.partitionsPage(b)["retired"], {"p2": [moved]})
        self.assertEqual(b.notReadyReasons(), ())
        # Restarted again: found on disk.
        c.crash("b")
        b = c.start("b")
        c.run(0.2)
        self.assertEqual(self.partitionsPage(b)["retired"], {"p2": [moved]})
        self.assertIn('ceptra_partition_retired{partition="p2"} 1.0', self.exposition(b))
        # Once the copy is deleted, nothing is reported any more.
        b.disk.keep = 30.0
        c.run(61.0, step=0.05)
        self.assertEqual(self.retired(root), [])
        self.assertEqual(b.partitionStatus("p2"), {"partition": "p2", "state": "not started"})
        self.assertEqual(self.partitionsPage(b)["retired"], {})
        self.assertNotIn("ceptra_partition_retired{", self.exposition(b))

    def test_placedAgain(self) -> None:
        """
        Placed on this node again, the partition is a hosted one: its new
        replica's status is its own, and its old copy is still listed as
        retired until deleted.
        """
        c, root = self.cluster()
        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        self.assertLess(c.run(5.0, until=lambda: self.moved(c)), 4.0)
        b = c.managers["b"]
        c.routing = routingOf({"p2": ["a", "c", "b"]}, c.names, revision=3)

        def back() -> bool:
            part = b.partitions.get("p2")
            return part is not None and part.serving() and part.machine.events == 20

        self.assertLess(c.run(6.0, until=back), 5.0)
        self.assertEqual(b.partitionStatus("p2")["state"], "running")
        page = self.partitionsPage(b)
        self.assertEqual(page["partitions"]["p2"]["state"], "running")
        self.assertEqual([copy["epoch"] for copy in page["retired"]["p2"]], [2])


class StateGaugeTests(RetiredFixture):
    """
    C{ceptra_partition_state} follows a replica's lifecycle machine.
    """

    def test_followsReplica(self) -> None:
        """
        b's replica of p2 is starting while its storage loads, then running;
        moved off b it is retiring until the configuration without b
        commits, then retired (its copy kept); a stopped node lists no
        replica.
        """
        c, root = self.cluster()
        c.crash("b")
        [key] = [k for k in c.disks if k.startswith("b:") and k.endswith("p2")]
        disk = c.disks[key]
        load = disk.load
        gate: Deferred[None] = Deferred()
        self.patch(disk, "load", lambda: gate.addCallback(lambda _: load()))
        b = c.start("b")
        c.run(0.2)
        self.assertEqual(stateGauge(self, b), {"p2": "starting"})
        gate.callback(None)
        c.run(1.0)
        self.assertEqual(stateGauge(self, b), {"p2": "running"})
        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        c.run(5.0, until=lambda: b.partitionStatus("p2")["state"] != "running")
        self.assertEqual(stateGauge(self, b), {"p2": "retiring"})
        registry = CollectorRegistry()
        registry.register(_PartitionCollector(b))
        self.assertIn(promtool(generate_latest(registry).decode(), ()), ([], None))
        c.run(5.0, until=lambda: self.moved(c))
        self.assertTrue(self.moved(c))
        self.assertEqual(stateGauge(self, b), {"p2": "retired"})
        a = c.managers["a"]
        self.assertEqual(stateGauge(self, a), {"p2": "running"})
        a.stopService()
        self.assertEqual(stateGauge(self, a), {})


class RetireFilesTests(SynchronousTestCase):
    """
    The file steps of a retirement (L{suite.ceptra.partitions.retire}), and a crash in
    the middle of the move.
    """

    def test_crashMidMove(self) -> None:
        root = self.mktemp()
        wal, snap = os.path.join(root, "wal"), os.path.join(root, "snap")
        for directory in (os.path.join(wal, "p2"), os.path.join(snap, "p2"), os.path.join(wal, "p1")):
            os.makedirs(directory)
        for path in (os.path.join(wal, "p2", "incarnation"), os.path.join(snap, "p2", "snap-7")):
            with open(path, "w") as f:
                f.write("x")
        self.assertEqual(pendingRetirements(wal), [])
        name = markRetired(wal, "p2", 2, 1000.0)
        self.assertEqual(name, "p2-2-1000")
        self.assertEqual(markRetired(wal, "p2", 3, 2000.0), name)  # the marker is kept
        self.assertEqual(pendingRetirements(wal), [("p2", name)])
        # The node stops after the snapshots moved, before the WAL did.
        target = os.path.join(root, "retired", name)
        os.makedirs(target)
        os.rename(os.path.join(snap, "p2"), os.path.join(target, "snapshots"))
        self.assertEqual(pendingRetirements(wal), [("p2", name)])
        self.assertEqual(moveRetired(root, wal, snap, "p2", name), target)
        self.assertEqual(pendingRetirements(wal), [])
        self.assertEqual(sorted(os.listdir(wal)), ["p1"])
        self.assertEqual(sorted(os.listdir(os.path.join(target, "wal"))), ["incarnation", "retired"])
        self.assertEqual(os.listdir(os.path.join(target, "snapshots")), ["snap-7"])
        self.assertEqual(moveRetired(root, wal, snap, "p2", name), target)  # again: nothing to do
        self.assertEqual(purge(root, 3600.0, 1000.0 + 3600.0), [])
        self.assertEqual(purge(root, 3600.0, 1000.0 + 3601.0), [target])
        self.assertEqual(os.listdir(os.path.join(root, "retired")), [])

    def test_names(self) -> None:
        """
        A retired copy's name gives its partition (which may hold dashes),
        epoch and time; the copies kept are listed.
        """
        self.assertEqual(parseName("p-2-7-1000"), ("p-2", 7, 1000))
        for junk in ("p2", "p2-x-1000", "p2-2-", "-2-1000", "p2-2-1.5"):
            self.assertIsNone(parseName(junk), junk)
        root = self.mktemp()
        self.assertEqual(retiredCopies(root), [])
        os.makedirs(os.path.join(root, "retired", "p2-2-1000"))
        open(os.path.join(root, "retired", "stray"), "w").close()
        self.assertEqual(retiredCopies(root), [("p2-2-1000", os.path.join(root, "retired", "p2-2-1000"))])

    def test_unreadableMarker(self) -> None:
        """
        A marker that cannot be read still marks the replica retired.
        """
        root = self.mktemp()
        os.makedirs(os.path.join(root, "p2"))
        with open(os.path.join(root, "p2", "retired"), "w") as f:
            f.write("{trunc")
        [(pid, name)] = pendingRetirements(root)
        self.assertEqual(pid, "p2")
        self.assertRegex(name, r"^p2-0-\d+$")


class ActivationHealthTests(SynchronousTestCase):
    def test_gates(self) -> None:
        @implementer(IFeedClient)
        class Feeds:
            feeds = ("placement", "warmup", "activation")

            def __init__(self) -> None:
                self.docs: dict[str, Any] = {
                    "placement": {
                        "nodes": {"a": {"spiffe": spiffe("a")}},
                        "partitions": [{"id": "p0", "replicas": ["a"]}],
                    },
                    "warmup": {"partitions": {"p0": {"ready": False}}},
                    "activation": {"barriers": [{"id": "e1", "partitions": ["p0"], "ready": False}]},
                }

            def latest(self, feed: str) -> dict[str, Any] | None:
                return self.docs.get(feed)

            def stalenessMs(self, feed: str) -> float:
                return 0.0

            def isStale(self, feed: str) -> bool:
                return False

        feeds = Feeds()
        health = ActivationHealth(feeds, spiffe("a"))
        report = health.check()
        self.assertFalse(report.ready)
        self.assertEqual(
            report.reasons, ("partition p0: warmup not ready", "activation barrier e1 not ready")
        )
        feeds.docs["warmup"] = {"partitions": {"p0": {"ready": True}}}
        feeds.docs["activation"] = {"barriers": []}
        self.assertTrue(health.check().ready)


class DisasterRecoveryTests(SynchronousTestCase):
    """
    The procedures of docs/disaster_recovery.md, on the simulated cluster
    (the same procedures run with real processes in test_dr_e2e.py).
    """

    def loaded(self) -> tuple[Cluster, list[Any]]:
        c = Cluster(["a", "b", "c"], {"p0": ["a", "b", "c"]})
        c.run(2.0)
        acked: list[Any] = []
        for k in range(30):
            leader = c.leader("p0")
            assert leader is not None
            if k == 0:
                leader.propose("p0", rulesEntry(RULES))
            leader.propose("p0", eventsEntry(events(2, k * 2))).addCallback(acked.append)
            c.run(0.1)
        self.assertEqual(len(acked), 30)
        return c, acked

    def test_replicaLossRestart(self) -> None:
        """
        A replica whose process died (disk intact) restarts and catches up.
        """
        c, _ = self.loaded()
        c.crash("c")
        c.run(1.5)
        leader = c.leader("p0")
        assert leader is not None
        leader.propose("p0", eventsEntry(events(10, 500)))
        c.run(1.0)
        c.start("c")
        c.run(3.0)
        self.assertEqual(len(c.hashes("p0")), 1)
        self.assertEqual(c.managers["c"].partitions["p0"].machine.events, 70)

    def test_replicaDiskLostRestartEmpty(self) -> None:
        """
        A replica whose disk is gone restarts empty under the same SPIFFE
        ID: its vote does not count until the leader has rebuilt it (a
        snapshot, then entries) and recorded its new storage incarnation;
        then it holds every event and votes again.
        """
        c, _ = self.loaded()
        old = c.managers["c"].partitions["p0"].node.incarnationNumber
        c.crash("c", wipe=True)
        c.start("c")
        c.run(0.3)
        status = c.managers["c"].partitionStatus("p0")
        self.assertNotEqual(status["incarnation"], old)
        c.run(3.0)
        status = c.managers["c"].partitionStatus("p0", withHash=True)
        self.assertTrue(status["voteIntact"], status)
        self.assertEqual(len(c.hashes("p0")), 1)
        self.assertEqual(c.managers["c"].partitions["p0"].machine.events, 60)
        leader = c.leader("p0")
        assert leader is not None
        config = leader.partitions["p0"].node.configs.latest()
        self.assertEqual(config.incarnationOf(spiffe("c")), status["incarnation"])

    def test_replicaLossDiskGone(self) -> None:
        """
        A replica can also be moved off a lost node: raising the epoch with
        the replica on another node adds that node (it catches up from the
        leader) and removes the lost one.
        """
        c = Cluster(["a", "b", "c", "d"], {"p0": ["a", "b", "c"]})
        c.run(2.0)
        leader = c.leader("p0")
        assert leader is not None
        leader.propose("p0", rulesEntry(RULES))
        leader.propose("p0", eventsEntry(events(60)))
        c.run(1.0)
        c.crash("c", wipe=True)
        c.routing = routingOf({"p0": ["a", "b", "d"]}, c.names, revision=2)
        c.run(4.0)
        leader = c.leader("p0")
        assert leader is not None
        self.assertEqual(
            set(leader.partitions["p0"].node.configs.latest().voters), {spiffe("a"), spiffe("b"), spiffe("d")}
        )
        self.assertEqual(len(c.hashes("p0")), 1)
        self.assertEqual(c.managers["d"].partitions["p0"].machine.events, 60)

    def test_quorumLossDisksGone(self) -> None:
        """
        Two of three replicas lose their disks: no leader, readiness says
        so.  Restarting them empty under the same SPIFFE IDs, with the
        survivor running, elects the survivor by every vote; it rebuilds the
        others with every acknowledged event.
        """
        c, _ = self.loaded()
        c.crash("b", wipe=True)
        c.crash("c", wipe=True)
        c.run(2.0)
        self.assertIn("no raft leader known", " ".join(c.managers["a"].notReadyReasons()))
        c.start("b")
        c.run(2.0)
        self.assertIsNone(c.leader("p0"), "a leader without every voter")
        c.start("c")
        c.run(3.0)
        leader = c.leader("p0")
        assert leader is not None
        self.assertEqual(leader.spiffe, spiffe("a"))
        self.assertEqual(len(c.hashes("p0")), 1)
        self.assertEqual(c.managers["b"].partitions["p0"].machine.events, 60)
        self.assertTrue(all(m.partitionStatus("p0")["voteIntact"] for m in c.managers.values()))
        done: list[Any] = []
        leader.propose("p0", eventsEntry(events(5, 1000))).addCallback(done.append)
        c.run(0.5)
        self.assertEqual(done[0]["accepted"], 5)

    def test_restoreFromSnapshotOnly(self) -> None:
        """
        Every replica lost: one node started from a copied snapshot alone (no
        WAL), the others empty, restores the engine state as of the snapshot
        on every replica.
        """
        c, _ = self.loaded()
        survivor = c.disks["a:wal/p0"]
        self.assertIsNotNone(survivor.state.snapshot)
        meta, _data = survivor.state.snapshot  # type: ignore[misc]
        expected = PartitionMachine("p0")
        SessionApplier(expected, 10).restore(_data)
        for name in ("a", "b", "c"):
            c.crash(name, wipe=True)
        restored = c.disks["a:wal/p0"] = MemoryStorage()
        restored.state.snapshot = survivor.state.snapshot
        for name in ("a", "b", "c"):
            c.start(name)
        c.run(3.0)
        self.assertIsNotNone(c.leader("p0"))
        self.assertEqual(len(c.hashes("p0")), 1)
        for m in c.managers.values():
            part = m.partitions["p0"]
            self.assertGreater(part.node.lastApplied, meta.index)
            self.assertEqual(part.machine.events, expected.events)
            self.assertGreater(part.machine.events, 0)
