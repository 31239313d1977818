"""
Saving the ring state (L{RingView.save}, L{RingView.close}): one write at a
time, a view asked for during a write written once more after it, and the
last view asked for written at shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from suite.specter.chord.ids import VnodeRef
from suite.specter.chord.ringview import RingView
from suite.specter.interfaces import IRingState

ME = "me:1"


@implementer(IRingState)
class SlowRingState:
    """
    A ring state whose writes the test completes by hand.
    """

    def __init__(self) -> None:
        self.writes: list[tuple[list[str], Deferred[None]]] = []

    def load(self) -> dict[str, Any] | None:
        return None

    def save(self, state: dict[str, Any]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.writes.append((list(state["peers"]), d))
        return d

    def inFlight(self) -> int:
        return sum(1 for _, d in self.writes if not d.called)

    def finish(self) -> None:
        for _, d in list(self.writes):
            if not d.called:
                d.callback(None)


@dataclass
class FakeVnode:
    succs: list[VnodeRef]
    serving: bool = True
    gone: bool = False
    pred: VnodeRef | None = None
    fingers: list[VnodeRef] = field(default_factory=list)
    ref: VnodeRef = VnodeRef(1, ME, 0)


class FakeNode:
    def __init__(self) -> None:
        self.addr = ME
        self.clock = Clock()
        self.vnodes = [FakeVnode([])]

    def sees(self, *peers: str) -> None:
        self.vnodes[0].succs = [VnodeRef(i + 10, p, 0) for i, p in enumerate(peers)]


class RingViewSaveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = FakeNode()
        self.state = SlowRingState()
        self.view = RingView(cast(Any, self.node), self.state)

    def written(self) -> list[list[str]]:
        return [peers for peers, _ in self.state.writes]

    def test_coalescing(self) -> None:
        """
        Views asked to be saved while a write is in progress are written
        once, after it: the newest of them; never two writes at once.
        """
        self.node.sees("a:1")
        self.view.save()
        self.assertEqual(self.written(), [["a:1"]])
        for peers in (["b:1"], ["b:1", "c:1"], ["c:1"]):
            self.node.sees(*peers)
            self.view.save()
        self.assertEqual(self.written(), [["a:1"]])
        self.state.finish()
        self.assertEqual(self.written(), [["a:1"], ["c:1"]])
        self.assertEqual(self.state.inFlight(), 1)
        self.state.finish()
        self.assertEqual(self.written(), [["a:1"], ["c:1"]])
        self.assertEqual(self.view.knownPeers, ["c:1"])
        self.assertLessEqual({"a:1", "c:1"}, self.view.formerPeers)

    def test_unchangedNotWritten(self) -> None:
        """
        The same peers are not written again unless forced; an empty view
        or one with no serving vnode is never written.
        """
        self.view.save()
        self.assertEqual(self.written(), [])
        self.node.sees("a:1")
        self.view.save()
        self.state.finish()
        self.view.save()
        self.assertEqual(self.written(), [["a:1"]])
        self.view.save(force=True)
        self.state.finish()
        self.assertEqual(self.written(), [["a:1"], ["a:1"]])
        self.node.vnodes[0].serving = False
        self.node.sees("b:1")
        self.view.save(force=True)
        self.assertEqual(self.written(), [["a:1"], ["a:1"]])

    def test_failedWriteRetried(self) -> None:
        """
        After a failed write the same peers are written again when next asked.
        """
        self.node.sees("a:1")
        self.view.save()
        self.state.writes[0][1].errback(Failure(OSError("disk full")))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.view.save()
        self.assertEqual(self.written(), [["a:1"], ["a:1"]])

    def test_closeWaitsAndWritesTheLastView(self) -> None:
        """
        A stop waits for the write in progress, then writes the view asked
        for meanwhile (the one saved before leaving), although the vnodes
        have left since; later requests are not written.
        """
        self.node.sees("a:1")
        self.view.save()
        self.node.sees("a:1", "b:1")
        self.view.save(force=True)  # as leave() does
        self.node.vnodes[0].gone = True
        self.node.vnodes[0].serving = False
        closed = self.view.close()
        self.assertNoResult(closed)
        self.state.finish()
        self.assertEqual(self.written(), [["a:1"], ["a:1", "b:1"]])
        self.assertNoResult(closed)
        self.state.finish()
        self.successResultOf(closed)
        self.node.vnodes[0].serving = True
        self.node.sees("c:1")
        self.view.save()
        self.assertEqual(self.written(), [["a:1"], ["a:1", "b:1"]])

    def test_closeWithNothingPending(self) -> None:
        """
        With the last view written, a stop fires at once and writes nothing.
        """
        self.node.sees("a:1")
        self.view.save()
        self.state.finish()
        self.successResultOf(self.view.close())
        self.assertEqual(self.written(), [["a:1"]])
        self.successResultOf(RingView(cast(Any, self.node)).close())
