"""
Deterministic simulations of the ring: concurrent joins and leaves while
keys are written, and a process crash.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.chord.ids import VnodeRef, ringId
from suite.specter.chord.machine import Phase
from suite.specter.chord.node import ChordConfig, ChordNode
from tests.support.chordsim import Cluster


def _watchJoiners(node: ChordNode, counts: Counter[str]) -> None:
    """
    Count, in C{counts}, lookups of C{node} that end at one of its own
    vnodes that does not serve, and C{join} and C{kv} calls a joining vnode
    of C{node} refuses without naming a vnode to go on to.
    """
    dispatch, findSuccessor = node.dispatch, node.findSuccessor

    def watched(vid: int | None, method: str, args: list[Any]) -> Deferred[Any]:
        v = node.byId.get(vid) if isinstance(vid, int) else None
        result = dispatch(vid, method, args)
        if v is None or v.phase not in (Phase.INACTIVE, Phase.JOINING) or method not in ("join", "kv"):
            return result

        def answered(r: Any) -> Any:
            if isinstance(r, Failure):
                hinted = getattr(r.value, "hint", None) is not None
                counts["refused with a way on" if hinted else f"{method} refused by a joiner, no way on"] += 1
            return r

        return result.addBoth(answered)

    async def lookup(kid: int, start: VnodeRef | None = None) -> tuple[VnodeRef, int]:
        found, hops = await findSuccessor(kid, start)
        mine = node.byId.get(found.id) if found.addr == node.addr else None
        if mine is not None and not mine.serving:
            counts["lookup ended at its own joining vnode"] += 1
        return found, hops

    node.dispatch = watched  # type: ignore[method-assign]
    node.findSuccessor = lookup  # type: ignore[method-assign]


class Writer:
    """
    Writes keys through random live processes and remembers the acknowledged value.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acked: dict[bytes, bytes] = {}
        self.failed: list[str] = []
        self.n = 0

    def write(self) -> None:
        c = self.cluster
        node = c.rng.choice(c.live())
        key = b"key-%d" % self.n
        value = b"value-%d" % self.n
        self.n += 1

        def ok(_: Any) -> None:
            self.acked[key] = value

        def bad(f: Any) -> None:
            self.failed.append(f"{key!r}: {f.value}")

        node.kv("put", key, [value]).addCallbacks(ok, bad)


class ChurnSimulationTests(SynchronousTestCase):
    """
    64 vnodes join and leave concurrently while keys are written.
    """

    def check(self, c: Cluster, writer: Writer) -> None:
        self.assertEqual(writer.failed, [])
        self.assertEqual(c.ringProblems(), [])
        ring = c.activeVnodes()
        for key, value in writer.acked.items():
            kid = ringId(key)
            owners = [v for v in ring if v.owns(kid)]
            self.assertEqual(owners, [c.expectedOwner(kid)], key)
            owner = owners[0]
            self.assertEqual(owner.store.table.read("v", key), value, key)
            for r in c.expectedReplicas(owner):
                holder = next(v for v in ring if v.ref == r)
                self.assertEqual(holder.store.table.read("v", key), value, (key, r))
        reads: dict[bytes, list[Any]] = {}
        for key in writer.acked:
            reads[key] = []
            c.rng.choice(c.live()).kv("get", key, []).addBoth(reads[key].append)
        c.run(3)
        self.assertEqual(reads, {k: [v] for k, v in writer.acked.items()})

    def test_churn(self) -> None:
        """
        Churn with the first seed.
        """
        self.churn(7)

    def test_churnAgain(self) -> None:
        """
        The same churn with other seeds (other ids, timings and drops).
        """
        self.churn(1001)
        self.churn(2002)

    def churn(self, seed: int) -> None:
        """
        Twelve processes of four vnodes join one after another with overlap,
        four more join while three leave; with 1% of messages dropped every
        acknowledged key ends readable, owned by exactly one active vnode
        and copied to the next R-1 distinct-process successors once the
        network heals.
        """
        c = Cluster(seed=seed, drop=0.01)
        writer = Writer(c)
        c.add("p0:1", None)
        c.run(3)
        names = [f"p{i}:1" for i in range(1, 16)]
        for _i, name in enumerate(names[:11]):
            c.add(name, "p0:1")
            for _ in range(10):
                writer.write()
                c.run(0.1)
        leaving = [c.net.nodes[n] for n in names[2:5]]
        done: list[Any] = []
        for node in leaving:
            node.leave().addBoth(done.append)
        for name in names[11:]:
            c.add(name, "p0:1")
            for _ in range(10):
                writer.write()
                c.run(0.1)
        c.run(30)
        self.assertEqual(len(done), 3)
        for node in leaving:
            del c.net.nodes[node.addr]
        self.assertEqual(sum(len(n.vnodes) for n in c.live()), 52)
        # heal the network, then let the ring settle before checking
        c.net.drop = 0.0
        c.run(30)
        self.assertGreater(len(writer.acked), 100)
        self.check(c, writer)

    def test_crash(self) -> None:
        """
        A process killed without warning loses no acknowledged key: its
        successors take over and replication is restored.
        """
        c = Cluster(seed=3)
        writer = Writer(c)
        c.add("p0:1", None)
        c.run(2)
        for i in range(1, 6):
            c.add(f"p{i}:1", "p0:1")
            c.run(3)
        c.run(10)
        for _ in range(150):
            writer.write()
            c.run(0.02)
        c.run(5)
        c.crash("p3:1")
        c.run(40)
        self.assertEqual(len(writer.acked), 150)
        self.check(c, writer)


class ThreadedStoreSimulationTests(SynchronousTestCase):
    """
    The same ring over stores whose exports and imports answer later, as
    SQLite's writer thread does (now and then after seconds).
    """

    def test_joinsWithSlowExports(self) -> None:
        """
        Processes join with overlap while keys are written, over many seeds;
        a join retried while its successor is still exporting the range for
        the first attempt is answered "busy" (never a machine error), and
        every acknowledged key ends readable and replicated.
        """
        for seed in (11, 12, 13, 14, 15, 16):
            c = Cluster(seed=seed, drop=0.01, threaded=True, slow=0.2)
            writer = Writer(c)
            c.add("p0:1", None)
            c.run(2)
            for i in range(1, 7):
                c.add(f"p{i}:1", "p0:1")
                for _ in range(5):
                    writer.write()
                    c.run(0.1)
            c.run(20)
            c.net.drop = 0.0
            c.run(20)
            ChurnSimulationTests.check(self, c, writer)  # type: ignore[arg-type]


class RestartSimulationTests(SynchronousTestCase):
    """
    Processes restarted with their unchanged commands (the seed without
    C{--join}) come back into the ring they belonged to.
    """

    def ring(self, seed: int, threaded: bool = False) -> tuple[Cluster, Writer]:
        c = Cluster(seed=seed, threaded=threaded)
        writer = Writer(c)
        c.add("p0:1", None)
        c.run(2)
        for i in range(1, 5):
            c.add(f"p{i}:1", "p0:1")
            c.run(3)
        c.run(5)
        for _ in range(100):
            writer.write()
            c.run(0.02)
        c.run(5)
        return c, writer

    def seedOf(self, name: str) -> str | None:
        return None if name == "p0:1" else "p0:1"

    def test_seedCrashRestart(self) -> None:
        """
        The seed killed without warning and started again without C{--join}
        rejoins through the peers it knew: one ring, every key readable.
        """
        for threaded in (False, True):
            c, writer = self.ring(21, threaded)
            c.crash("p0:1")
            c.run(10)
            for _ in range(20):
                writer.write()
                c.run(0.05)
            node = c.add("p0:1", None)
            self.assertFalse(node.founding)
            c.run(30)
            self.assertEqual(len(writer.acked), 120)
            ChurnSimulationTests.check(self, c, writer)  # type: ignore[arg-type]

    def test_seedStopRestart(self) -> None:
        """
        The same after SIGTERM (the seed hands its keys on, then comes back).
        """
        c, writer = self.ring(22, threaded=True)
        done: list[Any] = []
        c.stop("p0:1").addBoth(done.append)
        c.run(10)
        self.assertEqual(len(done), 1)
        c.add("p0:1", None)
        c.run(30)
        ChurnSimulationTests.check(self, c, writer)  # type: ignore[arg-type]

    def test_rollingRestart(self) -> None:
        """
        Every process stopped and started again in turn, each with its own
        unchanged command.
        """
        c, writer = self.ring(23, threaded=True)
        for i in range(5):
            name = f"p{i}:1"
            c.stop(name)
            c.run(10)
            c.add(name, self.seedOf(name))
            c.run(15)
            writer.write()
        c.run(20)
        ChurnSimulationTests.check(self, c, writer)  # type: ignore[arg-type]

    def test_quickRestartsSameIds(self) -> None:
        """
        Three processes of five vnodes, each stopped (its vnodes hand their
        ranges on) and started again at once with the same vnode ids, under
        several seeds, message delays and losses: every vnode of the
        restarted process joins within 30 s.  Vnodes of the ring that still
        named an id of the earlier life (as successor or predecessor) were
        answered by the joining vnode now holding it, and kept routing
        joins to it or refusing them for ever.
        """
        config = ChordConfig(virtual=5, replicas=3, successors=16, stabilizeInterval=0.5, rpcTimeout=1.0)
        stuck: list[str] = []
        networks = [(0.0, 0.1, (0.001, 0.02)), (0.02, 0.1, (0.001, 0.2)), (0.0, 0.5, (0.01, 0.3))]
        for seed in range(14):
            for drop, downtime, delay in networks:
                c = Cluster(seed=seed, drop=drop, config=config, threaded=True)
                c.net.delay = delay
                names = ["p0:1", "p1:1", "p2:1"]
                c.add(names[0], None)
                c.run(2)
                for name in names[1:]:
                    c.add(name, names[0])
                    c.run(3)
                c.run(5)
                for name in names:
                    left: list[Any] = []
                    c.stop(name).addBoth(left.append)
                    for _ in range(300):
                        if left:
                            break
                        c.run(0.1)
                    c.run(downtime)
                    node = c.add(name, None if name == names[0] else names[0])
                    for _ in range(60):
                        if all(v.serving for v in node.vnodes):
                            break
                        c.run(0.5)
                    waiting = [v.ref.short() for v in node.vnodes if not v.serving]
                    if waiting:
                        stuck.append(f"seed {seed}, drop {drop}, delay {delay}: {name} {waiting}")
                        break
        self.assertEqual(stuck, [])

    def test_quickRestartsRouteAroundJoiners(self) -> None:
        """
        The quick restarts above, with writes through random processes
        meanwhile: a vnode that is still joining is never where a lookup of
        its own process ends ("lookup returned the joiner"), and a join or a
        write that reaches a joining vnode through a successor list still
        naming its id is told where to go on instead of being refused until
        the join ends.  (Each used to happen hundreds of times over these
        seeds: the restarted process's lookups ended at its own joining
        vnodes, which refused the joins and writes sent to them, and the
        callers waited and retried.)
        """
        config = ChordConfig(virtual=5, replicas=3, successors=16, stabilizeInterval=0.5, rpcTimeout=1.0)
        counts: Counter[str] = Counter()
        networks = [(0.0, 0.1, (0.001, 0.02)), (0.02, 0.1, (0.001, 0.2)), (0.0, 0.5, (0.01, 0.3))]
        for seed in range(14):
            for drop, downtime, delay in networks:
                c = Cluster(seed=seed, drop=drop, config=config, threaded=True)
                c.net.delay = delay
                writer = Writer(c)
                names = ["p0:1", "p1:1", "p2:1"]
                _watchJoiners(c.add(names[0], None), counts)
                c.run(2)
                for name in names[1:]:
                    _watchJoiners(c.add(name, names[0]), counts)
                    c.run(3)
                c.run(5)
                for name in names:
                    left: list[Any] = []
                    c.stop(name).addBoth(left.append)
                    for _ in range(300):
                        if left:
                            break
                        c.run(0.1)
                    c.run(downtime)
                    node = c.add(name, None if name == names[0] else names[0])
                    _watchJoiners(node, counts)
                    for _ in range(60):
                        writer.write()
                        if all(v.serving for v in node.vnodes):
                            break
                        c.run(0.5)
                c.run(10)
                self.assertEqual(writer.failed, [])
        self.assertGreater(counts["refused with a way on"], 0)
        self.assertEqual(counts["lookup ended at its own joining vnode"], 0)
        # a join whose lookup ends at a restarted vnode whose own lookup is
        # still under way (it knows no successor to name yet) is retried
        # after a pause, like a write below: over these seeds once (seed 1,
        # a vnode still in its first join when another process restarts;
        # none while a process's vnodes all left at once, before they left
        # in chain order: LeaveOrderTests)
        self.assertLessEqual(counts["join refused by a joiner, no way on"], 1)
        # (a joiner whose own lookup is still under way knows no successor
        # to name: a write reaching it then is retried after a pause; 203
        # of them before)
        self.assertLess(counts["kv refused by a joiner, no way on"], 20)

    def test_wholeRingRestartOtherOrder(self) -> None:
        """
        The whole ring stopped, then started in reverse order: nobody serves
        until every peer a node knew is back; then the lowest address
        re-forms the ring, the others join it and no key is lost.
        """
        for threaded in (False, True):
            c, writer = self.ring(24, threaded)
            stopped: list[Any] = []
            for i in range(5):
                c.stop(f"p{i}:1").addBoth(stopped.append)
            for _ in range(60):
                if len(stopped) == 5:
                    break
                c.run(1)
            self.assertEqual(c.live(), [])
            for i in reversed(range(5)):
                name = f"p{i}:1"
                c.add(name, self.seedOf(name))
                c.run(1)
                if i:
                    self.assertEqual(c.activeVnodes(), [])
            c.run(40)
            ChurnSimulationTests.check(self, c, writer)  # type: ignore[arg-type]

    def test_crashedRingRestart(self) -> None:
        """
        After kill -9 of every process (nothing handed on), the ring comes
        back from what each kept, started in another order.
        """
        c, writer = self.ring(25, threaded=True)
        for i in range(5):
            c.crash(f"p{i}:1")
        for i in (3, 1, 4, 0, 2):
            name = f"p{i}:1"
            c.add(name, self.seedOf(name))
            c.run(0.5)
        c.run(40)
        ChurnSimulationTests.check(self, c, writer)  # type: ignore[arg-type]

    def test_aloneRefusesWrites(self) -> None:
        """
        A process with ring state that reaches none of its peers is not in
        the ring: it says why and refuses KV calls instead of founding a
        second ring; C{bootstrap} founds one explicitly.
        """
        c, writer = self.ring(26)
        for i in range(5):
            c.crash(f"p{i}:1")
        node = c.add("p0:1", None)
        c.run(10)
        self.assertFalse(any(v.serving for v in node.vnodes))
        assert node.joinProblem is not None
        self.assertIn("cannot reach any known ring peer", node.joinProblem)
        results: list[Any] = []
        node.kv("put", b"k", [b"v"]).addBoth(results.append)
        c.run(1)
        self.assertEqual(len(results), 1)
        self.assertEqual(results[0].value.code, "not-in-ring")
        self.assertIn("not in the ring", results[0].value.message)
        c.crash("p0:1")
        node = c.add("p0:1", None, bootstrap=True)
        c.run(5)
        self.assertTrue(all(v.serving for v in node.vnodes))
        self.assertIsNone(node.joinProblem)

    def test_freshProcessFounds(self) -> None:
        """
        Without ring state and without a seed a process founds a ring; its
        state is saved once it has peers.
        """
        c = Cluster(seed=27)
        first = c.add("p0:1", None)
        self.assertTrue(first.founding)
        c.run(2)
        c.add("p1:1", "p0:1")
        c.run(5)
        saved = c.disks["p0:1"][1].saved
        assert saved is not None
        self.assertEqual(saved["peers"], ["p1:1"])
        self.assertEqual(len(saved["vnodes"]), 4)

    def test_partialKnowledgeOneFounder(self) -> None:
        """
        Processes that each knew only some of the others (p0 knew p3, p1
        knew p2, ...) still agree on one founder when they all restart:
        they look for their ring through the peers their peers knew.
        """
        from tests.support.chordsim import MemoryRingState

        knew = {
            "p0:1": ["p3:1"],
            "p1:1": ["p2:1"],
            "p2:1": ["p1:1", "p3:1"],
            "p3:1": ["p0:1", "p2:1"],
        }
        c = Cluster(seed=29)
        for name, peers in knew.items():
            state = MemoryRingState()
            state.saved = {"format": 1, "addr": name, "peers": peers, "vnodes": []}
            c.disks[name] = ({}, state)
        for name in ("p1:1", "p2:1", "p3:1", "p0:1"):
            c.add(name, None)
            c.run(0.5)
        c.run(30)
        self.assertEqual([n.addr for n in c.live() if n.founding], ["p0:1"])
        self.assertEqual(len(c.activeVnodes()), 16)
        self.assertEqual(c.ringProblems(), [])

    def test_largeRingRestart(self) -> None:
        """
        In a ring where no process knows every other, a whole-ring restart in
        random order still re-forms exactly one ring: processes look for
        their ring through the peers their peers knew, and all agree on the
        one that founds it.
        """
        from suite.specter.chord.node import ChordConfig

        config = ChordConfig(virtual=2, replicas=2, successors=3, stabilizeInterval=0.5, rpcTimeout=1.0)
        c = Cluster(seed=28, config=config, threaded=True)
        writer = Writer(c)
        names = [f"p{i:02d}:1" for i in range(12)]
        c.add(names[0], None)
        c.run(2)
        for name in names[1:]:
            c.add(name, names[0])
            c.run(2)
        c.run(10)
        for _ in range(60):
            writer.write()
            c.run(0.02)
        c.run(10)
        partial = [n for n in c.live() if len(n.knownPeers) < len(names) - 1]
        self.assertTrue(partial)
        for name in names:
            c.crash(name)
        order = list(names)
        c.rng.shuffle(order)
        for name in order:
            c.add(name, None if name == names[0] else names[0])
            c.run(0.3)
        c.run(60)
        founders = [n.addr for n in c.live() if n.founding]
        self.assertEqual(founders, [names[0]])
        ChurnSimulationTests.check(self, c, writer)  # type: ignore[arg-type]


class ReadThroughSimulationTests(SynchronousTestCase):
    """
    An owner whose range changed and that has not compared it with its
    replicas yet reads through them: the old holders serve a key until the
    new owner has its records.
    """

    def read(self, c: Cluster, key: bytes) -> list[Any]:
        out: list[Any] = []
        c.live()[0].kv("get", key, []).addBoth(out.append)
        c.run(3)
        return out

    def test_unsettledOwnerReadsThroughItsReplicas(self) -> None:
        """
        Missing at the owner and held by a replica: read through while the
        owner's range is unsettled (and the record kept), a miss once
        repair has found the range clean.
        """
        c = Cluster(seed=11)
        c.add("p0:1", None)
        c.run(2)
        for i in range(1, 4):
            c.add(f"p{i}:1", "p0:1")
            c.run(3)
        c.run(10)
        writer = Writer(c)
        writer.write()
        c.run(2)
        key, value = next(iter(writer.acked.items()))
        kid = ringId(key)
        owner = c.expectedOwner(kid)
        self.assertTrue(owner.replicator.replicas())

        def forget() -> None:
            self.assertEqual(owner.store.table.read("v", key), value)
            owner.store.removeRange((kid - 1) % (1 << 64), kid)
            self.assertIsNone(owner.store.table.read("v", key))

        # the range was compared with every replica: a miss is a miss
        forget()
        for r in owner.replicator.replicas():
            owner.replicator.clean[r] = (*owner.ownedRange(), c.clock.seconds())
        self.assertFalse(owner.replicator.unsettled())
        self.assertEqual(self.read(c, key), [None])
        self.assertEqual(owner.replicator.readThroughs, 0)

        # the range changed since (or was never compared): read through
        owner.replicator.clean = {}
        self.assertTrue(owner.replicator.unsettled())
        self.assertEqual(self.read(c, key), [value])
        self.assertEqual(owner.replicator.readThroughs, 1)
        self.assertEqual(owner.store.table.read("v", key), value)


class RouteAroundTests(SynchronousTestCase):
    """
    A lookup that reaches a vnode not serving goes on without it.
    """

    def test_staleFingersToAVnodeGone(self) -> None:
        """
        Every finger of the vnode a lookup starts from names a vnode that
        is not there (as after a restart with fewer vnodes) and its
        successor list does not reach the key: the lookup goes on through
        that list instead of coming back to the same finger until it gives
        up.
        """
        from suite.specter.chord.ids import RING_SIZE

        c = Cluster(seed=5)
        c.add("p0:1", None)
        c.run(2)
        for name in ("p1:1", "p2:1"):
            c.add(name, "p0:1")
            c.run(3)
        c.run(10)
        node = c.net.nodes["p0:1"]
        x = node.vnodes[0]
        kid = (x.ref.id + RING_SIZE // 2) % RING_SIZE
        ghost = VnodeRef((kid - 1) % RING_SIZE, "p1:1", 99)
        x.view.fingers = [ghost] * len(x.view.fingers)
        x.view.succs = x.view.succs[:2]
        found: list[Any] = []
        Deferred.fromCoroutine(node.findSuccessor(kid, start=x.ref)).addBoth(found.append)
        c.run(2)
        self.assertEqual([f[0] for f in found], [c.expectedOwner(kid).ref])
        self.assertGreater(node.rerouted, 0)

    def test_joinerRefusesWithItsSuccessor(self) -> None:
        """
        A joining vnode answers a step, a join and a KV call with "busy",
        naming the successor it knows; lookups of its own process never end
        at it.
        """
        from suite.specter.chord import errors as E
        from suite.specter.chord.errors import RemoteError

        c = Cluster(seed=6)
        c.add("p0:1", None)
        c.run(3)
        joiner = c.add("p1:1", "p0:1")
        j = joiner.vnodes[0]
        self.assertIs(j.phase, Phase.JOINING)
        s = c.net.nodes["p0:1"].vnodes[0].ref
        j.view.succs = [s]
        for method, args in (
            ("step", [1]),
            ("join", [list(VnodeRef(5, "q:1", 0))]),
            ("kv", ["get", b"k", []]),
        ):
            out: list[Any] = []
            joiner.dispatch(j.ref.id, method, args).addBoth(out.append)
            self.assertIsInstance(out[0], Failure, method)
            e = out[0].value
            self.assertIsInstance(e, RemoteError)
            self.assertEqual((e.code, e.message, e.hint), (E.BUSY, E.NOT_SERVING, s), method)
        self.assertIs(j.phase, Phase.JOINING)
        c.run(5)
        self.assertTrue(all(v.serving for v in joiner.vnodes))


class LeaveOrderTests(SynchronousTestCase):
    """
    A process's vnodes hand their keys on in an order that works when the
    stores answer imports later (as the SQLite store does, from its
    thread): a vnode whose successor is on the same process leaves before
    that successor starts to.
    """

    def ring(self, processes: int) -> tuple[Cluster, Writer]:
        c = Cluster(seed=31, threaded=True, slow=0.0)
        writer = Writer(c)
        c.add("p0:1", None)
        c.run(2)
        for i in range(1, processes):
            c.add(f"p{i}:1", "p0:1")
            c.run(3)
        c.run(5)
        for _ in range(40):
            writer.write()
            c.run(0.02)
        c.run(2)
        return c, writer

    def test_loneProcessLeavesPromptly(self) -> None:
        """
        A lone process's vnodes hand their keys along their chain and leave
        in well under the leave stall (not waiting it out for successors
        that are all leaving); every key is still on its disk.
        """
        c, writer = self.ring(1)
        node = c.net.nodes["p0:1"]
        done: list[Any] = []
        c.stop("p0:1").addBoth(done.append)
        c.run(2)
        self.assertEqual(done, [None])
        held = {}
        for v in node.vnodes:
            for kind, key, payload, _, _ in v.store.table.records():
                if kind == "v" and payload is not None:
                    held[key] = payload
        self.assertEqual(held, writer.acked)
        self.assertEqual(len(writer.acked), 40)

    def test_processLeavesToAnother(self) -> None:
        """
        A process leaving a ring of two hands every key to the other in
        well under the leave stall.
        """
        c, writer = self.ring(2)
        done: list[Any] = []
        c.stop("p1:1").addBoth(done.append)
        c.run(2)
        self.assertEqual(done, [None])
        del c.net.nodes["p1:1"]
        c.run(5)
        ChurnSimulationTests.check(self, c, writer)  # type: ignore[arg-type]
