"""
Concurrent ingest requests combined into one Raft entry per partition
(L{suite.ceptra.combine}): the machine in every state, and the client API
answering each combined request with its own counts.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from suite.ceptra.combine import CombineCore, CombineMachine, Combiner, Share
from suite.ceptra.engine.codec import decodeBatch
from suite.ceptra.ingest import IngestResource, RulesResource
from suite.raft.settings import NotLeader
from tests.ceptra.test_ingest import APIFixture, answer, body, request
from tests.ceptra.test_partitions import RULES, events


def share(n: int, start: int = 0) -> Share:
    return Share([{"event_id": f"e{i}", "key": "k", "ts": i, "fields": {}} for i in range(start, start + n)])


class MachineTests(SynchronousTestCase):
    """
    Every input in every state (Idle, Collecting).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.proposed: list[tuple[str, bytes, Deferred[Any]]] = []

        def propose(pid: str, entry: bytes) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            self.proposed.append((pid, entry, d))
            return d

        self.machine = CombineMachine(CombineCore("p0", self.clock, 0.002, 10, propose))

    def test_idle(self) -> None:
        """
        Idle: a share starts a collection (and a timer); a stray timer or
        fill does nothing.
        """
        self.machine.delayElapsed()
        self.machine.filled()
        self.assertEqual((self.proposed, self.clock.getDelayedCalls()), ([], []))
        self.machine.shareArrived(share(2))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.proposed, [])

    def test_collecting(self) -> None:
        """
        Collecting: shares pile up until the delay ends; then one entry
        carries them all, each answered with its own counts.
        """
        first, second = share(2), share(3, 1)
        self.machine.shareArrived(first)
        self.machine.shareArrived(second)
        self.clock.advance(0.001)
        self.assertEqual(self.proposed, [])
        self.clock.advance(0.001)
        [(pid, entry, d)] = self.proposed
        self.assertEqual(pid, "p0")
        self.assertEqual(decodeBatch(entry).segments, [2, 3])
        d.callback(
            {
                "index": 7,
                "accepted": 4,
                "duplicates": 1,
                "segments": [{"accepted": 2, "duplicates": 0}, {"accepted": 2, "duplicates": 1}],
            }
        )
        self.assertEqual(self.successResultOf(first.done), {"index": 7, "accepted": 2, "duplicates": 0})
        self.assertEqual(self.successResultOf(second.done), {"index": 7, "accepted": 2, "duplicates": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_filled(self) -> None:
        """
        Collecting: reaching the size of an entry proposes at once and
        cancels the timer; a share as large as an entry goes alone.
        """
        self.machine.shareArrived(share(6))
        self.machine.shareArrived(share(6, 6))
        self.assertEqual(len(self.proposed), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.machine.shareArrived(share(12, 20))
        self.assertEqual(len(self.proposed), 2)
        self.machine.filled()
        self.machine.delayElapsed()
        self.assertEqual(len(self.proposed), 2)

    def test_failure(self) -> None:
        """
        A failed proposal fails every request it carried; one share gets
        the entry's answer as it is.
        """
        a, b = share(1), share(1, 1)
        self.machine.shareArrived(a)
        self.machine.shareArrived(b)
        self.clock.advance(0.002)
        self.proposed[0][2].errback(NotLeader(None, "stepped down"))
        self.failureResultOf(a.done, NotLeader)
        self.failureResultOf(b.done, NotLeader)
        c = share(1, 5)
        self.machine.shareArrived(c)
        self.clock.advance(0.002)
        self.proposed[1][2].callback({"index": 9, "accepted": 1, "duplicates": 0})
        self.assertEqual(self.successResultOf(c.done), {"index": 9, "accepted": 1, "duplicates": 0})


class CombinerTests(SynchronousTestCase):
    """
    The per-partition machines of a node.
    """

    def test_partitionsApart(self) -> None:
        """
        Shares of different partitions make different entries; a proposal
        that fails at once fails its requests.
        """
        clock = Clock()
        seen: list[str] = []

        def propose(pid: str, entry: bytes) -> Deferred[Any]:
            seen.append(pid)
            return fail(NotLeader(None, "no"))

        combiner = Combiner(propose, clock)
        d1 = combiner.submit("p0", share(1).events)
        d2 = combiner.submit("p1", share(1).events)
        clock.advance(0)
        self.assertEqual(sorted(seen), ["p0", "p1"])
        self.failureResultOf(d1, NotLeader)
        self.failureResultOf(d2, NotLeader)
        self.assertEqual((combiner.entries, combiner.requests), (2, 2))


class CombinedIngestTests(APIFixture):
    """
    Requests arriving together through the client API share entries.
    """

    def test_concurrentRequestsShareAnEntry(self) -> None:
        """
        Two requests in one turn become one entry per partition; each is
        answered with its own counts, duplicates across them included.
        """
        self.render(RulesResource(self.api), request(b"POST", [], body(RULES)))
        before = self.api.combiner.entries
        first, second = request(b"POST", [], body(events(20))), request(b"POST", [], body(events(30)))
        resource = IngestResource(self.api)
        self.assertIs(resource.render_POST(first), NOT_DONE_YET)
        self.assertIs(resource.render_POST(second), NOT_DONE_YET)
        self.cluster.run(0.5)
        code1, out1 = answer(first)
        code2, out2 = answer(second)
        self.assertEqual((code1, out1["accepted"], out1["duplicates"]), (200, 20, 0))
        self.assertEqual((code2, out2["accepted"], out2["duplicates"]), (200, 10, 20))
        self.assertEqual(self.api.combiner.entries - before, 2)
        for pid in ("p0", "p1"):
            self.assertEqual(out1["partitions"][pid]["index"], out2["partitions"][pid]["index"])
