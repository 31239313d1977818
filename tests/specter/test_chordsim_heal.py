"""
Simulations of a ring split by a network partition that outlasts failure
detection: each side forms a ring of its own and takes writes to
overlapping keys; once the network heals, the processes of one ring find
the other through the peers they knew and rejoin it, so one ring results
and every key reads its newest acknowledged write through every process.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from tests.specter import test_chordsim_merge as merge
from tests.support.chordsim import Cluster

NAMES = [f"h{i}:1" for i in range(6)]


class PartitionHealTests(SynchronousTestCase):
    def sideProblems(self, c: Cluster, side: list[str]) -> list[str]:
        """
        Vnodes of C{side} whose successors or predecessor lie outside it.
        """
        return [
            v.ref.short()
            for n in c.live()
            if n.addr in side
            for v in n.vnodes
            for r in (*v.succs, v.pred)
            if r is None or r.addr not in side
        ]

    def partitionHeals(self, seed: int, threaded: bool) -> None:
        c = Cluster(seed=seed, threaded=threaded)
        oracle = merge.Oracle(c)
        c.add(NAMES[0], None)
        c.run(2)
        for name in NAMES[1:]:
            c.add(name, NAMES[0])
            c.run(3)
        c.run(10)
        self.assertEqual(c.ringProblems(), [])
        keys = [b"key-%d" % i for i in range(30)]
        for key in keys:
            oracle.apply(c.live(), "put", key)
        c.run(3)

        left, right = NAMES[:3], NAMES[3:]
        c.net.partition(left, right)
        c.run(40)
        # two rings, each of one side only
        self.assertEqual(self.sideProblems(c, left), [])
        self.assertEqual(self.sideProblems(c, right), [])
        lefts = [c.net.nodes[a] for a in left]
        rights = [c.net.nodes[a] for a in right]
        shared = keys + [b"new-%d" % i for i in range(10)]
        for round in range(60):
            key = c.rng.choice(shared)
            op = "delete" if c.rng.random() < 0.2 else "put"
            oracle.apply(lefts if round % 2 else rights, op, key)
            c.run(0.05)
        for i in range(5):
            oracle.apply(lefts, "put", b"left-%d" % i)
            oracle.apply(rights, "put", b"right-%d" % i)
        c.run(2)
        self.assertEqual(sum(n.heals for n in c.live()), 0)

        c.net.heal()
        c.run(120)
        self.assertEqual(c.ringProblems(), [])
        self.assertEqual(len(c.activeVnodes()), 6 * c.config.virtual)
        # the processes of one ring rejoined the other, each once
        moved = sorted(n.addr for n in c.live() if n.heals)
        self.assertIn(moved, (left, right))
        self.assertEqual({n.heals for n in c.live() if n.heals}, {1})
        merge.BootstrapSplitTests.checkNewest(self, c, oracle.newest())  # type: ignore[arg-type]

    def test_partitionHeals(self) -> None:
        """
        In-memory stores: after the partition heals, one ring, newest writes.
        """
        self.partitionHeals(51, threaded=False)

    def test_partitionHealsThreaded(self) -> None:
        """
        The same with stores that answer later, as SQLite's writer thread does.
        """
        self.partitionHeals(52, threaded=True)


class HealCallTests(SynchronousTestCase):
    """
    The probe and the C{heal} call inside one ring change nothing.
    """

    def setUp(self) -> None:
        self.c = Cluster(seed=53)
        self.c.add(NAMES[0], None)
        self.c.run(2)
        for name in NAMES[1:4]:
            self.c.add(name, NAMES[0])
            self.c.run(3)
        self.c.run(10)

    def test_sameRing(self) -> None:
        """
        Probing a process of the same ring finds no other ring, and a
        C{heal} naming a peer of this ring is refused.
        """
        node = self.c.net.nodes[NAMES[1]]
        found: list[object] = []
        Deferred.fromCoroutine(node.heal(NAMES[2])).addBoth(found.append)
        self.c.run(5)
        self.assertEqual(found, [False])
        answers: list[object] = []
        node.dispatch(None, "heal", [NAMES[2]]).addBoth(answers.append)
        self.assertEqual(answers, [False])
        self.assertEqual(node.heals, 0)
        self.assertEqual(self.c.ringProblems(), [])

    def test_badPeer(self) -> None:
        """
        A C{heal} whose address is not a string is a bad request.
        """
        answers: list[Failure] = []
        self.c.net.nodes[NAMES[1]].dispatch(None, "heal", [7]).addErrback(answers.append)
        error = answers[0].value
        assert isinstance(error, RemoteError), error
        self.assertEqual(error.code, E.BAD_REQUEST)
