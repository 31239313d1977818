"""
The data of replicas that no longer run on a node
(L{suite.ceptra.partitions.disk}): a replica stopped by the grace period
alone keeps its data in place and is reported (C{stopped}, or C{orphaned}
once its partition is not in the routing table), never deleted by the node;
every retired copy of a partition is listed; each has a
C{ceptra_partition_state} series.  Simulated nodes with real data
directories, on a L{task.Clock}.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.defer import fail, succeed
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from suite.ceptra.health import PartitionsHealth
from suite.ceptra.partitions import PartitionCollector, PartitionManager
from suite.ceptra.partitions.disk import heldReplicas
from suite.ceptra.partitions.retire import markRetired, moveRetired
from suite.raft.messages import CommitAnswer
from tests.ceptra.test_partitions import (
    Cluster,
    RetiredFixture,
    routingOf,
    spiffe,
    stateGauge,
)
from tests.support.metriclint import promtool


def lines(logs: Sequence[dict[str, Any]], fragment: str) -> list[str]:
    return [e["log_format"].format(**e) for e in logs if fragment in e.get("log_format", "")]


def promtoolClean(test: SynchronousTestCase, manager: PartitionManager) -> None:
    registry = CollectorRegistry()
    registry.register(PartitionCollector(manager))
    test.assertIn(promtool(generate_latest(registry).decode(), ()), ([], None))


class OrphanedReplicaTests(RetiredFixture):
    """
    A partition dropped from the routing table: every replica stops after
    the grace period, and keeps its data, reported as orphaned with the
    command that removes it.
    """

    def orphaned(self, root: str, name: str, since: float) -> dict[str, Any]:
        wal, snap = os.path.join(root, name, "wal"), os.path.join(root, name, "snap")
        return {
            "partition": "p2",
            "state": "orphaned",
            "since": since,
            "data": [os.path.join(wal, "p2"), os.path.join(snap, "p2")],
            "remove": f"python -m suite.raft wal drop {wal} p2 && rm -r {wal}/p2 {snap}/p2",
        }

    def test_droppedPartitionKeepsData(self) -> None:
        c, root = self.cluster()
        c.routing = routingOf({}, c.names, revision=2)
        with capturedLogs() as logs:
            c.run(6.0, step=0.01, until=lambda: not any("p2" in m.partitions for m in c.managers.values()))
        self.assertFalse(any("p2" in m.partitions for m in c.managers.values()))
        stoppedAt = {n: c.managers[n].disk.stopped["p2"].since for n in ("a", "b")}
        for name in ("a", "b"):
            m = c.managers[name]
            # The data stays where it was: nothing moved to retired/.
            for path in (f"{root}/{name}/wal/p2/incarnation", f"{root}/{name}/snap/p2/snap-1"):
                self.assertTrue(os.path.exists(path), path)
            self.assertFalse(os.path.exists(f"{root}/{name}/retired"))
            status = self.orphaned(root, name, stoppedAt[name])
            self.assertEqual(m.partitionStatus("p2"), status)
            page = self.partitionsPage(m)
            self.assertEqual(
                (page["partitions"], page["orphaned"], page["stopped"], page["retired"]),
                ({}, {"p2": status}, {}, {}),
            )
            check = PartitionsHealth(m).check()
            self.assertEqual((check.ready, check.details["orphaned"]), (True, {"p2": status}))
            self.assertEqual(stateGauge(self, m), {"p2": "orphaned"})
            promtoolClean(self, m)
        self.assertEqual(stateGauge(self, c.managers["c"]), {})
        # One line per replica, with its paths and the command.
        warned = lines(logs, "is not in the routing table and this node's replica of it")
        self.assertEqual(len(warned), 2)
        wal, snap = f"{root}/b/wal", f"{root}/b/snap"
        self.assertIn(
            f"partition p2 is not in the routing table and this node's replica of it stopped without "
            f"hearing that its group removed it: its data stays in place ({wal}/p2, {snap}/p2), it may "
            f"hold the only copy of acknowledged writes; to remove it, with the node stopped: "
            f"python -m suite.raft wal drop {wal} p2 && rm -r {wal}/p2 {snap}/p2",
            warned,
        )
        # Never deleted: not after the retired copies' keep time either.
        for m in c.managers.values():
            m.disk.keep = 30.0
        c.run(65.0, step=0.05)
        self.assertTrue(os.path.exists(f"{root}/b/wal/p2/incarnation"))
        self.assertEqual(stateGauge(self, c.managers["b"]), {"p2": "orphaned"})
        # Restarted: found on disk, orphaned again.
        c.crash("b")
        with capturedLogs() as logs:
            b = c.start("b")
            c.run(0.5)
        self.assertNotIn("p2", b.partitions)
        self.assertEqual(list(self.partitionsPage(b)["orphaned"]), ["p2"])
        self.assertEqual(stateGauge(self, b), {"p2": "orphaned"})
        self.assertEqual(len(lines(logs, "was found on disk")), 1)
        # Routed again: the replicas run again with their data.
        c.routing = routingOf({"p2": ["a", "b"]}, c.names, revision=3)

        def back() -> bool:
            return (
                all(
                    "p2" in c.managers[n].partitions
                    and c.managers[n].partitions["p2"].serving()
                    and c.managers[n].partitions["p2"].machine.events == 20
                    for n in ("a", "b")
                )
                and c.leader("p2") is not None
            )

        self.assertLess(c.run(5.0, until=back), 4.0)
        for name in ("a", "b"):
            self.assertEqual(self.partitionsPage(c.managers[name])["orphaned"], {})
            self.assertEqual(stateGauge(self, c.managers[name]), {"p2": "running"})

    def test_orphanRoutedElsewhereRetiresThroughItsGroup(self) -> None:
        """
        b's replica is orphaned; the partition comes back placed on a and c:
        b starts its replica again, which takes part until the group has
        removed it, and only then is retired (its data moved to retired/).
        """
        c, root = self.cluster()
        c.routes["b"] = routingOf({}, c.names, revision=2)
        # Only b sees p2 dropped: its replica stops after the grace period.
        c.run(6.0, step=0.01, until=lambda: "p2" not in c.managers["b"].partitions)
        b = c.managers["b"]
        self.assertEqual(stateGauge(self, b), {"p2": "orphaned"})
        self.assertEqual(self.retired(root), [])
        # The group {a, b} now moves to {a, c} with b's replica running again.
        c.routes.clear()
        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=3)
        self.assertLess(c.run(8.0, until=lambda: self.moved(c)), 6.0)
        [name] = self.retired(root)
        self.assertRegex(name, r"^p2-3-\d+$")
        self.assertEqual(self.partitionsPage(b)["orphaned"], {})
        self.assertEqual(stateGauge(self, b), {"p2": "retired"})
        self.assertEqual(c.managers["c"].partitions["p2"].machine.events, 20)


class StoppedReplicaTests(RetiredFixture):
    """
    A replica whose own latest configuration excludes it, cut off before it
    hears that this configuration committed, stops after the grace period:
    its data stays, it is reported as stopped (its partition still routed),
    then as orphaned once the partition leaves the routing table.
    """

    def cutOff(self) -> tuple[Cluster, str, float]:
        """
        Move p2 off b, and cut b off from a and c as soon as it holds the
        configuration excluding it, before it hears that it committed;
        return the cluster, its root and when b was cut off.
        """
        c, root = self.cluster()
        b = c.managers["b"]
        cut: list[float] = []

        def cutWhenExcluded() -> bool:
            part = b.partitions.get("p2")
            if part is None or cut:
                return bool(cut)
            node = part.node
            if (
                spiffe("b") not in node.configs.latest().members()
                and spiffe("b") in node.configs.at(node.commitIndex).members()
            ):
                c.net.partition(spiffe("a"), spiffe("b"))
                c.net.partition(spiffe("c"), spiffe("b"))
                cut.append(c.clock.seconds())
            return bool(cut)

        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        c.run(5.0, step=0.001, until=cutWhenExcluded)
        self.assertEqual(len(cut), 1)
        c.run(0.2)
        self.assertEqual(b.partitionStatus("p2")["state"], "leaving")
        return c, root, cut[0]

    def test_graceStoppedReplicaReported(self) -> None:
        c, root, cut = self.cutOff()
        b = c.managers["b"]
        with capturedLogs() as logs:
            c.run(6.0, step=0.01, until=lambda: "p2" not in b.partitions)
        self.assertNotIn("p2", b.partitions)
        wal, snap = f"{root}/b/wal", f"{root}/b/snap"
        since = b.disk.stopped["p2"].since
        # It holds the configuration entry excluding it: it asks its
        # group's members whether that entry is committed (AskMembersTests).
        asking = b.confirming["p2"].lifecycle.describe()["asking"]
        node = b.confirming["p2"].node
        self.assertEqual(
            asking,
            {
                "index": node.configs.latestIndex(),
                "term": node.log.term(node.configs.latestIndex()),
                "rounds": 1,
            },
        )
        stopped = {
            "partition": "p2",
            "state": "stopped",
            "since": since,
            "data": [f"{wal}/p2", f"{snap}/p2"],
            "asking": asking,
        }
        self.assertGreater(since, cut + 5.0)
        self.assertEqual(b.partitionStatus("p2"), stopped)
        page = self.partitionsPage(b)
        self.assertEqual((page["stopped"], page["orphaned"], page["retired"]), ({"p2": stopped}, {}, {}))
        self.assertEqual(PartitionsHealth(b).check().details["stopped"], {"p2": stopped})
        self.assertEqual(stateGauge(self, b), {"p2": "stopped"})
        promtoolClean(self, b)
        self.assertTrue(os.path.exists(f"{wal}/p2/incarnation"))
        self.assertEqual(self.retired(root), [])
        self.assertEqual(
            lines(logs, "stopped without hearing that its group removed it; its data stays"),
            [
                f"partition p2: this node's replica stopped without hearing that its group removed it; "
                f"its data stays in place ({wal}/p2, {snap}/p2) and it is started again at the next start "
                f"(its group may still count on it)"
            ],
        )
        # Not started again in this run (it would only stop again); cut off
        # from its group's members, it gets no proof (AskMembersTests).
        c.run(2.0)
        self.assertEqual(stateGauge(self, b), {"p2": "stopped"})
        # The partition leaves the routing table: orphaned, said once.
        with capturedLogs() as logs:
            c.routing = routingOf({}, c.names, revision=3)
            c.run(1.0)
        self.assertEqual(stateGauge(self, b), {"p2": "orphaned"})
        self.assertEqual(len(lines(logs, "is not in the routing table and this node's replica")), 1)
        self.assertEqual(
            b.partitionStatus("p2")["remove"],
            f"python -m suite.raft wal drop {wal} p2 && rm -r {wal}/p2 {snap}/p2",
        )

    def test_stoppedRetiresAfterRestart(self) -> None:
        """
        Restarted, the node starts its stopped replica again (its partition
        is routed, elsewhere): its group tells it that it was removed, and
        only then is its data retired.
        """
        c, root, _ = self.cutOff()
        c.run(6.0, step=0.01, until=lambda: "p2" not in c.managers["b"].partitions)
        self.assertEqual(stateGauge(self, c.managers["b"]), {"p2": "stopped"})
        c.net.heal()
        c.crash("b")
        b = c.start("b")
        self.assertLess(c.run(5.0, until=lambda: bool(self.retired(root)) and not b.reclaiming), 4.0)
        [name] = self.retired(root)
        self.assertRegex(name, r"^p2-2-\d+$")
        self.assertEqual(stateGauge(self, b), {"p2": "retired"})
        page = self.partitionsPage(b)
        self.assertEqual((page["stopped"], page["orphaned"], len(page["retired"]["p2"])), ({}, {}, 1))
        self.assertFalse(os.path.exists(f"{root}/b/wal/p2"))


class AskMembersTests(RetiredFixture):
    """
    A replica stopped by the grace period while it holds the configuration
    entry excluding it asks its partition's current members (placed by the
    routing table) whether that entry is committed: one proof from a
    member of its group retires it; no answer, or answers proving nothing,
    leave it stopped, asking again later.
    """

    def stopped(self) -> tuple[Cluster, str]:
        c, root, _ = StoppedReplicaTests.cutOff(self)  # type: ignore[arg-type]
        b = c.managers["b"]
        c.run(6.0, step=0.01, until=lambda: "p2" not in b.partitions)
        self.assertEqual(stateGauge(self, b), {"p2": "stopped"})
        self.assertEqual(sorted(b.confirming), ["p2"])
        return c, root

    def rounds(self, c: Cluster) -> int:
        asking = c.managers["b"].confirming["p2"].lifecycle.describe()["asking"]
        return int(asking["rounds"])

    def rewrite(self, c: Cluster, change: Callable[[CommitAnswer], CommitAnswer]) -> list[CommitAnswer]:
        """
        Make a's and c's answers to b's queries C{change(answer)}; return
        the answers they send, changed.
        """
        sent: list[CommitAnswer] = []
        for name in ("a", "c"):
            multi = c.managers[name].multi
            send = multi.send

            def changed(group: str, message: Any, send: Callable[[str, Any], None] = send) -> None:
                if isinstance(message, CommitAnswer):
                    message = change(message)
                    sent.append(message)
                send(group, message)

            multi.send = changed  # type: ignore[method-assign]
        return sent

    def test_unreachableThenProven(self) -> None:
        """
        Cut off from its group's members, the stopped replica gets no
        answer and stays stopped, asking again 30 s later (then 60 s ...;
        a round whose questions only dialled, for want of a link, is
        followed by one more 2 dial timeouts later); once they are
        reachable, the next round's answers prove the configuration
        excluding it committed: it is retired like a replica its leader
        told (its data moved, listed under the excluding configuration's
        placement epoch).
        """
        c, root = self.stopped()
        b = c.managers["b"]
        self.assertEqual(self.rounds(c), 1)
        c.run(29.0, step=0.05)
        self.assertEqual((self.rounds(c), stateGauge(self, b)), (2, {"p2": "stopped"}))
        c.run(3.5, step=0.05)
        self.assertEqual((self.rounds(c), stateGauge(self, b)), (4, {"p2": "stopped"}))
        self.assertTrue(os.path.exists(f"{root}/b/wal/p2/incarnation"))
        c.net.heal()
        with capturedLogs() as logs:
            taken = c.run(70.0, step=0.05, until=lambda: bool(self.retired(root)) and not b.reclaiming)
        # the next rounds: 60 s after the last one (dialling), then 1 s later
        self.assertGreater(taken, 58.0)
        self.assertLess(taken, 63.0)
        [name] = self.retired(root)
        self.assertRegex(name, r"^p2-2-\d+$")
        self.assertEqual(stateGauge(self, b), {"p2": "retired"})
        self.assertEqual(b.confirming, {})
        page = self.partitionsPage(b)
        self.assertEqual((page["stopped"], page["orphaned"], len(page["retired"]["p2"])), ({}, {}, 1))
        self.assertFalse(os.path.exists(f"{root}/b/wal/p2"))
        self.assertEqual(
            len(lines(logs, "a current member of its group, holds the configuration excluding this node")), 1
        )

    def test_answersProvingNothing(self) -> None:
        """
        Answers that the entry is not committed, about another term at that
        index, or from another Raft group leave the replica stopped, its
        data in place; it keeps asking, at most every 300 s.
        """
        for change in (
            lambda a: replace(a, committed=False),
            lambda a: replace(a, entryTerm=a.entryTerm + 1),
            lambda a: replace(a, group=a.group ^ 1),
        ):
            c, root = self.stopped()
            b = c.managers["b"]
            sent = self.rewrite(c, change)
            c.net.heal()
            c.run(100.0, step=0.1, until=lambda sent=sent: len(sent) >= 2)  # type: ignore[misc]
            self.assertEqual({a.src for a in sent}, {spiffe("a"), spiffe("c")})  # both members answered
            rounds, answers = self.rounds(c), len(sent)
            c.run(1200.0, step=0.5)
            # At most every 300 s once the delays have grown (after 30, 60,
            # 120, 240 s), each round answered by both members.
            self.assertIn(self.rounds(c) - rounds, range(4, 7))
            self.assertEqual(len(sent) - answers, 2 * (self.rounds(c) - rounds))
            self.assertEqual(stateGauge(self, b), {"p2": "stopped"})
            self.assertEqual(self.retired(root), [])
            self.assertTrue(os.path.exists(f"{root}/b/wal/p2/incarnation"))

    def test_leavesOffAsking(self) -> None:
        """
        The partition leaving the routing table ends the questions (no group
        is left to ask): the replica is orphaned, its data in place.
        """
        c, root = self.stopped()
        b = c.managers["b"]
        c.net.heal()
        c.routing = routingOf({}, c.names, revision=3)
        c.run(1.0)
        self.assertEqual((b.confirming, stateGauge(self, b)), ({}, {"p2": "orphaned"}))
        c.run(100.0, step=0.5)
        self.assertEqual((self.retired(root), stateGauge(self, b)), ([], {"p2": "orphaned"}))


class EmptyReplicaTests(RetiredFixture):
    """
    A replica whose log never held anything (no entry, no snapshot) when
    the grace period stops it holds nothing that could be the last copy of
    anything: it is retired (its data moved to C{retired/}, listed like any
    retired copy), not kept as stopped or orphaned.
    """

    def emptyOnC(self, placement: dict[str, list[str]]) -> tuple[Cluster, str]:
        """
        p2 runs on a and b with data; it is placed on c too, cut off from
        them: c's replica runs with an empty log; then C{placement}.
        """
        c, root = self.cluster()
        c.net.partition(spiffe("a"), spiffe("c"))
        c.net.partition(spiffe("b"), spiffe("c"))
        c.routing = routingOf({"p2": ["a", "b", "c"]}, c.names, revision=2)
        c.run(1.0)
        part = c.managers["c"].partitions["p2"]
        self.assertEqual((part.serving(), part.node.log.lastIndex()), (True, 0))
        c.routing = routingOf(placement, c.names, revision=3)
        return c, root

    def copiesOfC(self, root: str) -> list[str]:
        path = os.path.join(root, "c", "retired")
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def assertRetiredOnC(self, c: Cluster, root: str, logs: Sequence[dict[str, Any]]) -> None:
        m = c.managers["c"]
        [name] = self.copiesOfC(root)
        # the placement epoch of the configuration it held: the bootstrap's
        self.assertRegex(name, r"^p2-2-\d+$")
        copy = os.path.join(root, "c", "retired", name)
        self.assertEqual(sorted(os.listdir(os.path.join(copy, "wal"))), ["incarnation", "retired"])
        for gone in (f"{root}/c/wal/p2", f"{root}/c/snap/p2"):
            self.assertFalse(os.path.exists(gone), gone)
        page = self.partitionsPage(m)
        self.assertEqual((page["stopped"], page["orphaned"]), ({}, {}))
        self.assertEqual([r["data"] for r in page["retired"]["p2"]], [copy])
        self.assertEqual(m.partitionStatus("p2")["state"], "retired")
        self.assertEqual(stateGauge(self, m), {"p2": "retired"})
        promtoolClean(self, m)
        self.assertEqual(
            lines(logs, "never stored anything"),
            [
                "stopping partition p2: this node's replica never stored anything of its group's "
                "(its log is empty); retiring it"
            ],
        )
        kept = lines(logs, "without hearing that its group removed it")
        self.assertEqual([line for line in kept if f"{root}/c/" in line], [])

    def test_leavingEmptyReplicaRetired(self) -> None:
        """
        Placed elsewhere, c's empty replica stops after the grace period
        and is retired, while a and b go on.
        """
        c, root = self.emptyOnC({"p2": ["a", "b"]})
        m = c.managers["c"]
        with capturedLogs() as logs:
            took = c.run(8.0, step=0.01, until=lambda: "p2" not in m.partitions and not m.reclaiming)
        self.assertGreater(took, 5.0)  # the grace period
        self.assertLess(took, 7.0)
        self.assertRetiredOnC(c, root, logs)
        self.assertEqual(c.managers["a"].partitions["p2"].machine.events, 20)
        # Placed on c again: it starts afresh.
        c.net.heal()
        c.routing = routingOf({"p2": ["a", "b", "c"]}, c.names, revision=4)
        self.assertLess(
            c.run(8.0, until=lambda: "p2" in m.partitions and m.partitions["p2"].machine.events == 20), 7.0
        )

    def test_droppedEmptyReplicaRetired(self) -> None:
        """
        Dropped from the routing table, the partition's replicas stop after
        the grace period: a's and b's keep their data (orphaned), c's empty
        one is retired.
        """
        c, root = self.emptyOnC({})
        with capturedLogs() as logs:
            c.run(8.0, step=0.01, until=lambda: all("p2" not in m.partitions for m in c.managers.values()))
            c.run(0.5)
        self.assertRetiredOnC(c, root, logs)
        for name in ("a", "b"):
            self.assertEqual(stateGauge(self, c.managers[name]), {"p2": "orphaned"})
            self.assertTrue(os.path.exists(f"{root}/{name}/wal/p2/incarnation"))
            self.assertFalse(os.path.exists(f"{root}/{name}/retired"))


class RetiredCopiesTests(RetiredFixture):
    """
    Every retired copy of a partition is listed (epoch, when, where, kept
    until), counted by C{ceptra_partition_retired}, and deleted on its own
    schedule; a crash in the middle of the second retirement is finished
    at the next start.
    """

    def back(self, c: Cluster) -> Callable[[], bool]:
        def check() -> bool:
            b = c.managers["b"]
            part = b.partitions.get("p2")
            return part is not None and part.serving() and part.machine.events == 20

        return check

    def test_everyCopyListed(self) -> None:
        c, root = self.cluster()
        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=2)
        self.assertLess(c.run(5.0, until=lambda: self.moved(c)), 4.0)
        c.run(40.0, step=0.05)
        # Placed on b again (a fresh replica), with moves that fail.
        c.crash("b")
        c.fileRunner = lambda fn, *args: (
            fail(OSError("the node stopped")) if fn is moveRetired else succeed(fn(*args))
        )
        c.routing = routingOf({"p2": ["a", "c", "b"]}, c.names, revision=3)
        b = c.start("b")
        self.assertLess(c.run(6.0, until=self.back(c)), 5.0)
        c.routing = routingOf({"p2": ["a", "c"]}, c.names, revision=4)
        self.assertLess(c.run(5.0, until=lambda: self.moved(c)), 4.0)
        first, second = self.retired(root), sorted(os.listdir(f"{root}/b/wal"))
        self.assertEqual(second, ["p2"])  # the second copy is not moved yet
        [name1] = first
        name2 = markRetired(f"{root}/b/wal", "p2", 0, 0.0)  # (the marker's name)
        self.assertRegex(name2, r"^p2-4-\d+$")

        def copy(name: str, moved: bool) -> dict[str, Any]:
            at = int(name.rsplit("-", 1)[1])
            return {
                "partition": "p2",
                "state": "retired",
                "epoch": int(name.split("-")[1]),
                "retiredAt": at,
                "keptUntil": at + 86400,
                "data": f"{root}/b/retired/{name}",
                "moved": moved,
            }

        listed = [copy(name1, True), copy(name2, False)]
        self.assertEqual(self.partitionsPage(b)["retired"], {"p2": listed})
        self.assertEqual(PartitionsHealth(b).check().details["retired"], {"p2": listed})
        self.assertEqual(b.partitionStatus("p2"), listed[-1])
        self.assertIn('ceptra_partition_retired{partition="p2"} 2.0', self.exposition(b))
        self.assertEqual(stateGauge(self, b), {"p2": "retired"})
        promtoolClean(self, b)
        # Restarted: the second move is finished; both copies listed.
        c.crash("b")
        c.fileRunner = None
        with capturedLogs() as logs:
            b = c.start("b")
            c.run(1.0)
        self.assertEqual(len(lines(logs, "finishing the retirement of its replica")), 1)
        self.assertEqual(self.retired(root), sorted([name1, name2]))
        listed = [copy(name1, True), copy(name2, True)]
        self.assertEqual(self.partitionsPage(b)["retired"], {"p2": listed})
        # Each copy is deleted on its own schedule.
        at1, at2 = (int(n.rsplit("-", 1)[1]) for n in (name1, name2))
        self.assertGreater(at2 - at1, 31)
        b.disk.keep = float(c.clock.seconds() - at1 + 30)
        c.run(61.0, step=0.05)
        self.assertEqual(self.retired(root), [name2])
        self.assertEqual([copy["retiredAt"] for copy in self.partitionsPage(b)["retired"]["p2"]], [at2])
        self.assertIn('ceptra_partition_retired{partition="p2"} 1.0', self.exposition(b))


class HeldReplicasTests(SynchronousTestCase):
    def test_held(self) -> None:
        """
        The replicas a node's storage holds: a directory with an
        incarnation file and no retirement marker.
        """
        wal = self.mktemp()
        self.assertEqual(heldReplicas(wal), [])
        for pid in ("p1", "p2", "p3"):
            os.makedirs(os.path.join(wal, pid))
        for pid in ("p1", "p2"):
            open(os.path.join(wal, pid, "incarnation"), "w").close()
        open(os.path.join(wal, "segment-1"), "w").close()
        markRetired(wal, "p2", 2, 1000.0)
        self.assertEqual(heldReplicas(wal), ["p1"])


class CollectorTests(SynchronousTestCase):
    def test_stoppedManagerReportsNothing(self) -> None:
        """
        A stopped manager forgets its stopped replicas (found again at its
        next start).
        """
        c = Cluster(["a", "b"], {"p2": ["a", "b"]})
        c.run(2.0)
        c.routing = routingOf({}, c.names, revision=2)
        c.run(6.0, step=0.01)
        a = c.managers["a"]
        self.assertEqual(stateGauge(self, a), {"p2": "orphaned"})
        a.stopService()
        self.assertEqual(stateGauge(self, a), {})
