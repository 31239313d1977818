"""
Simulations of rings that share history meeting again: a ring split in two
(the seed restarted with C{bootstrap} on its old data while the others go
on), both sides writing and deleting overlapping keys, then the seed
restarted into the ring.  Every acknowledged write survives unless a newer
one replaced it, the newest copy wins on every node, and one ring results.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.kv.versions import Version
from suite.specter.chord.ids import ringId
from suite.specter.chord.node import ChordConfig, ChordNode
from tests.support.chordsim import Cluster

NAMES = [f"p{i}:1" for i in range(5)]


class Oracle:
    """
    Writes keys one at a time through a chosen process and remembers, for
    each acknowledged write, the version the owner stamped it with.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        #: key -> [(version, value-or-None)] of acknowledged writes
        self.acked: dict[bytes, list[tuple[Version, bytes | None]]] = {}
        self.n = 0

    def apply(self, side: list[ChordNode], op: str, key: bytes) -> None:
        c = self.cluster
        node = c.rng.choice(side)
        value = b"%s-%d-%s" % (key, self.n, node.addr.encode())
        self.n += 1
        done: list[Any] = []
        node.kv(op, key, [value] if op == "put" else []).addBoth(done.append)
        for _ in range(500):
            if done:
                break
            c.run(0.01)
        if not done or isinstance(done[0], Failure):
            raise AssertionError(f"{op} {key!r} through {node.addr} failed: {done}")
        result = done[0]
        owners = [v for n in side for v in n.vnodes if v.serving and v.owns(ringId(key))]
        assert len(owners) == 1, owners
        version = owners[0].store.table.version("v", key)
        if op == "delete" and result is False:
            # nothing was there: no write, unless the call was retried (a
            # slow store outlasted the RPC timeout) after its first attempt
            # deleted the key: then the owner holds a tombstone newer than
            # every acknowledged write, and that deletion is the newest
            earlier = [v for v, _ in self.acked.get(key, [])]
            if version is None or owners[0].store.table.read("v", key) is not None:
                return
            if not earlier or version <= max(earlier):
                return
        self.acked.setdefault(key, []).append((version, value if op == "put" else None))

    def newest(self) -> dict[bytes, bytes | None]:
        return {key: max(writes)[1] for key, writes in self.acked.items()}


class BootstrapSplitTests(SynchronousTestCase):
    """
    The seed is killed and started again with C{bootstrap} while the four
    other processes go on, so two rings hold the same history; each takes
    writes and deletions to overlapping keys; then the seed is started into
    the ring again (its unchanged command) and the rings' keys merge.
    """

    def split(self, seed: int, threaded: bool) -> None:
        # (healing would merge the rings by itself: this tests the restart)
        config = ChordConfig(
            virtual=4, replicas=3, successors=12, stabilizeInterval=0.5, rpcTimeout=1.0, healInterval=1e9
        )
        c = Cluster(seed=seed, threaded=threaded, config=config)
        oracle = Oracle(c)
        c.add(NAMES[0], None)
        c.run(2)
        for name in NAMES[1:]:
            c.add(name, NAMES[0])
            c.run(3)
        c.run(5)
        keys = [b"key-%d" % i for i in range(40)]
        everyone = c.live()
        for key in keys:
            oracle.apply(everyone, "put", key)
        c.run(3)

        # the seed dies and is started on its old data as a ring of its own
        c.crash(NAMES[0])
        c.run(20)
        lone = c.add(NAMES[0], None, bootstrap=True)
        c.run(10)
        self.assertTrue(all(v.serving for v in lone.vnodes))
        others = [n for n in c.live() if n is not lone]
        # the two rings do not know each other
        self.assertFalse(
            [s for n in others for v in n.vnodes for s in [*v.succs, v.pred] if s and s.addr == lone.addr]
        )

        # both sides write, overwrite and delete the same keys, in turn
        shared = keys[:30] + [b"new-%d" % i for i in range(10)]
        for round in range(80):
            key = c.rng.choice(shared)
            side = [lone] if round % 2 else others
            op = "delete" if c.rng.random() < 0.2 else "put"
            oracle.apply(side, op, key)
            c.run(0.05)
        # keys only one side wrote
        for i in range(5):
            oracle.apply([lone], "put", b"lone-%d" % i)
            oracle.apply(others, "put", b"ring-%d" % i)
        c.run(2)

        # the seed comes back with its unchanged command: one ring again
        c.crash(NAMES[0])
        c.run(1)
        back = c.add(NAMES[0], None)
        self.assertFalse(back.founding)
        c.run(60)
        self.assertEqual(c.ringProblems(), [])
        self.assertEqual(len(c.activeVnodes()), 20)
        self.checkNewest(c, oracle.newest())

    def checkNewest(self, c: Cluster, newest: dict[bytes, bytes | None]) -> None:
        """
        The owner and its replicas hold the newest acknowledged write of
        every key (a deletion as a tombstone), and a read through every
        process returns it.
        """
        ring = c.activeVnodes()
        wrong = []
        for key, value in newest.items():
            owner = c.expectedOwner(ringId(key))
            holders = [owner] + [next(v for v in ring if v.ref == r) for r in c.expectedReplicas(owner)]
            for v in holders:
                if v.store.table.read("v", key) != value:
                    wrong.append((key, value, v.ref.short(), v.store.table.read("v", key)))
        self.assertEqual(wrong, [])
        reads: dict[tuple[str, bytes], list[Any]] = {}
        for node in c.live():
            for key in newest:
                reads[(node.addr, key)] = []
                node.kv("get", key, []).addBoth(reads[(node.addr, key)].append)
        c.run(5)
        self.assertEqual(reads, {(a, k): [newest[k]] for a, k in reads})

    def test_bootstrapSplitMerges(self) -> None:
        """
        In-memory stores: after the seed rejoins, every key reads the
        newest acknowledged write (or stays deleted) through every process.
        """
        self.split(41, threaded=False)

    def test_bootstrapSplitMergesThreaded(self) -> None:
        """
        The same with stores that answer later, as SQLite's writer thread does.
        """
        self.split(42, threaded=True)


class RepairExchangeTests(SynchronousTestCase):
    """
    Repair between an owner and its replicas moves the newer copy whichever
    end holds it.
    """

    def test_replicaHoldsNewer(self) -> None:
        """
        A replica holding a newer copy than its owner (a write the owner
        missed) gives it to the owner, which passes it to its other
        replicas, instead of having it overwritten; an older copy on a
        replica is replaced.
        """
        c = Cluster(seed=43)
        c.add(NAMES[0], None)
        c.run(2)
        for name in NAMES[1:4]:
            c.add(name, NAMES[0])
            c.run(3)
        c.run(5)
        for i in range(20):
            c.net.nodes[NAMES[0]].kv("put", b"k%d" % i, [b"old"])
        c.run(3)
        owner = c.expectedOwner(ringId(b"k3"))
        first, second = (next(v for v in c.activeVnodes() if v.ref == r) for r in c.expectedReplicas(owner))
        version = owner.store.table.version("v", b"k3")
        newer = Version(version.hlc + 1000, 99)
        first.store.importRecords([("v", b"k3", b"newer", newer.hlc, newer.origin)])
        k5 = c.expectedOwner(ringId(b"k5"))
        stale = Version(k5.store.table.version("v", b"k5").hlc - 1, 99)
        staleHolder = next(v for v in c.activeVnodes() if v.ref == c.expectedReplicas(k5)[0])
        staleHolder.store.table.write("v", b"k5", b"stale", stale.hlc, stale.origin)
        # replicas that matched are checked again after antiEntropy (60 s)
        c.run(70)
        for v in (owner, first, second):
            self.assertEqual(v.store.table.read("v", b"k3"), b"newer", v.ref.short())
            self.assertEqual(v.store.table.version("v", b"k3"), newer)
        self.assertEqual(staleHolder.store.table.read("v", b"k5"), b"old")
        self.assertGreater(sum(v.replicator.repairs for v in c.activeVnodes()), 0)
