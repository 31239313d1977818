"""
The parts a vnode is composed of, each on its own: the ring view, the
maintenance procedures and the hand-off handlers over a scripted
L{IVnodePeers}, the gone vnode's calls, and the vnode's map from call names
to the parts that answer them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.kv.memory import MemoryStore
from suite.specter.chord import errors as E
from suite.specter.chord.errors import RemoteError
from suite.specter.chord.ids import RING_BITS, VnodeRef
from suite.specter.chord.machine import Membership, MembershipCore, Phase, buildMembership
from suite.specter.chord.maintenance import PRED_FAILURES, Maintenance
from suite.specter.chord.node import ChordConfig, ChordNode
from suite.specter.chord.peers import Peers
from suite.specter.chord.transfer import Handoff
from suite.specter.chord.view import RingView
from suite.specter.interfaces import IVnodePeers
from tests.support.chordsim import SimNetwork, SimTransport

from .test_chord_units import Recorder

ME = VnodeRef(1000, "me:1", 0)
A = VnodeRef(2000, "a:1", 0)
B = VnodeRef(3000, "b:1", 0)
C = VnodeRef(4000, "c:1", 0)
P = VnodeRef(500, "p:1", 0)


@implementer(IVnodePeers)
class FakePeers:
    """
    A scripted L{IVnodePeers}: C{answers[(target, method)]} is called with
    the call's arguments (and may raise); every call is recorded.
    """

    def __init__(self) -> None:
        self.answers: dict[tuple[VnodeRef, str], Callable[..., Any]] = {}
        self.calls: list[tuple[VnodeRef, str, tuple[Any, ...]]] = []
        self.suspects: set[str] = set()

    def call(self, target: VnodeRef, method: str, *args: Any) -> Deferred[Any]:
        self.calls.append((target, method, args))
        answer = self.answers.get((target, method))
        if answer is None:
            return fail(RemoteError(E.GONE, "no such vnode"))
        try:
            return succeed(answer(*args))
        except RemoteError as e:
            return fail(e)

    async def findSuccessor(self, kid: int, start: VnodeRef | None = None) -> tuple[VnodeRef, int]:
        raise RemoteError(E.BUSY, "no lookups here")

    async def entryPoint(self, seed: str | None) -> VnodeRef:
        raise RemoteError(E.BUSY, "no entry point here")

    def suspected(self, addr: str) -> bool:
        return addr in self.suspects


def _membership(phase: Phase) -> tuple[Membership, MembershipCore]:
    """
    A membership machine driven to C{phase} (Joining, Active, Leaving).
    """
    core = MembershipCore(Recorder())
    machine = buildMembership(core)
    machine.start()
    if phase is not Phase.JOINING:
        machine.joined()
    if phase is Phase.LEAVING:
        machine.leave()
    assert core.phase is phase
    return machine, core


def _run(test: SynchronousTestCase, coro: Any) -> Any:
    return test.successResultOf(Deferred.fromCoroutine(coro))


class RingViewTests(SynchronousTestCase):
    """
    L{RingView} keeps the successor list and fingers consistent.
    """

    def test_setSuccessors(self) -> None:
        """
        Ourselves at the front and repeats are skipped, a list stops after
        coming round to us, and it holds at most C{successors} entries; an
        empty one is C{[ref]}.
        """
        view = RingView(ME, successors=3)
        view.setSuccessors([ME, A, A, B])
        self.assertEqual(view.succs, [A, B])
        view.setSuccessors([A, ME, B, C])
        self.assertEqual(view.succs, [A, ME])
        view.setSuccessors([A, B, C, P])
        self.assertEqual(view.succs, [A, B, C])
        view.setSuccessors([ME])
        self.assertEqual(view.succs, [ME])
        self.assertEqual(view.succ, ME)

    def test_dropPeerAndOwnership(self) -> None:
        """
        A dropped peer leaves the successor list and the fingers; a vnode
        owns nothing without a predecessor, everything alone, and
        C{(pred, ref]} otherwise.
        """
        view = RingView(ME, successors=4)
        view.succs = [A, B]
        view.fingers[0] = A
        view.fingers[5] = B
        view.dropPeer(A)
        self.assertEqual(view.succs, [B])
        self.assertEqual((view.fingers[0], view.fingers[5]), (None, B))
        view.dropPeer(B)
        self.assertEqual(view.succs, [ME])
        self.assertFalse(view.owns(ME.id))
        self.assertIsNone(view.ownedRange())
        view.pred = ME
        self.assertTrue(view.owns(A.id))
        view.predFailures = 1
        view.setPredecessor(P)
        self.assertEqual((view.pred, view.predFailures), (P, 0))
        self.assertEqual(view.ownedRange(), (P.id, ME.id))
        self.assertTrue(view.owns(ME.id))
        self.assertFalse(view.owns(A.id))


class MaintenanceTests(SynchronousTestCase):
    """
    L{Maintenance} over a scripted L{IVnodePeers}.
    """

    def setUp(self) -> None:
        self.peers = FakePeers()
        self.view = RingView(ME, successors=4)

    def maintenance(self, phase: Phase) -> Maintenance:
        _, core = _membership(phase)
        return Maintenance(self.view, self.peers, core)

    def test_stabilizeAdoptsCloserSuccessor(self) -> None:
        """
        Our successor's predecessor, between us and it, becomes our first
        successor; the successor lists are merged; the new successor is
        notified when the vnode serves.
        """
        self.view.succs = [B]
        self.peers.answers[(B, "state")] = lambda: [list(A), [list(C)], True]
        self.peers.answers[(A, "state")] = lambda: [list(ME), [list(B), list(C)], True]
        self.peers.answers[(A, "notify")] = lambda who: None
        _run(self, self.maintenance(Phase.ACTIVE).stabilize())
        self.assertEqual(self.view.succs, [A, B, C])
        self.assertEqual(self.peers.calls[-1], (A, "notify", (list(ME),)))

    def test_stabilizeWithoutServingDoesNotNotify(self) -> None:
        """
        A vnode that does not serve (here: leaving) refreshes its successor
        list but does not notify.
        """
        self.view.succs = [B]
        self.peers.answers[(B, "state")] = lambda: [list(ME), [list(C)], True]
        _run(self, self.maintenance(Phase.LEAVING).stabilize())
        self.assertEqual(self.view.succs, [B, C])
        self.assertNotIn("notify", [m for _, m, _ in self.peers.calls])

    def test_stabilizeDropsGoneSuccessor(self) -> None:
        """
        A successor that is gone is dropped and the next one asked.
        """
        self.view.succs = [A, B]
        self.peers.answers[(B, "state")] = lambda: [list(ME), [], True]
        self.peers.answers[(B, "notify")] = lambda who: None
        _run(self, self.maintenance(Phase.ACTIVE).stabilize())
        self.assertEqual(self.view.succs, [B])

    def test_stabilizeSkipsRangelessSuccessor(self) -> None:
        """
        A successor that neither serves nor knows its predecessor (a joining
        vnode at an id the list kept from its earlier life) is skipped, and
        not taken back as the next successor's predecessor: the one after it
        becomes the first successor and is notified.
        """
        self.view.succs = [A, B]
        self.peers.answers[(A, "state")] = lambda: [None, [list(A)], False]
        self.peers.answers[(B, "state")] = lambda: [list(A), [list(C)], True]
        self.peers.answers[(B, "notify")] = lambda who: None
        _run(self, self.maintenance(Phase.ACTIVE).stabilize())
        self.assertEqual(self.view.succs, [B, C])
        self.assertEqual(self.peers.calls[-1], (B, "notify", (list(ME),)))

    def test_checkPredecessor(self) -> None:
        """
        A predecessor is forgotten after L{PRED_FAILURES} timeouts in a row
        (an answer in between starts the count again), and at once when
        it is gone.
        """
        m = self.maintenance(Phase.ACTIVE)
        self.view.setPredecessor(P)

        def timeout() -> None:
            raise RemoteError(E.TIMEOUT, "slow")

        self.peers.answers[(P, "ping")] = timeout
        for _ in range(PRED_FAILURES - 1):
            _run(self, m.checkPredecessor())
        self.assertEqual(self.view.pred, P)
        self.peers.answers[(P, "ping")] = lambda: True
        _run(self, m.checkPredecessor())
        self.assertEqual(self.view.predFailures, 0)
        self.peers.answers[(P, "ping")] = timeout
        for _ in range(PRED_FAILURES):
            _run(self, m.checkPredecessor())
        self.assertIsNone(self.view.pred)
        self.view.setPredecessor(P)
        del self.peers.answers[(P, "ping")]  # gone
        _run(self, m.checkPredecessor())
        self.assertIsNone(self.view.pred)

    def test_stepAndNotify(self) -> None:
        """
        A lookup step answers from the owned range only while serving, and
        a notify from a vnode inside C{(pred, ref)} makes it the predecessor.
        """
        self.view.setPredecessor(P)
        self.view.succs = [A]
        kid = ME.id - 1
        self.assertEqual(self.maintenance(Phase.ACTIVE).step(kid), (True, ME))
        leaving = self.maintenance(Phase.LEAVING)
        with self.assertRaises(RemoteError) as refused:
            leaving.step(kid)
        self.assertEqual((refused.exception.code, refused.exception.around), (E.BUSY, A))
        m = self.maintenance(Phase.ACTIVE)
        closer = VnodeRef(900, "q:1", 0)
        m.notified(closer)
        self.assertEqual(self.view.pred, closer)
        m.notified(P)  # not closer
        self.assertEqual(self.view.pred, closer)
        # a joining vnode learns its predecessor from its grant alone
        self.view.setPredecessor(None)
        self.maintenance(Phase.JOINING).notified(closer)
        self.assertIsNone(self.view.pred)


class HandoffTests(SynchronousTestCase):
    """
    L{Handoff}'s handlers, with a real membership machine.
    """

    def handoff(self, phase: Phase) -> tuple[Handoff, RingView, Membership]:
        view = RingView(ME, successors=4)
        machine, _ = _membership(phase)
        clock = Clock()

        async def stabilize() -> None:
            pass

        h = Handoff(
            view,
            MemoryStore(clock),
            FakePeers(),
            machine,
            clock,
            random.Random(1),
            leaveStall=10.0,
            founds=lambda: False,
            stabilize=stabilize,
            rehome=lambda: None,
        )
        return h, view, machine

    def test_grantEndsWhenTheJoinerServes(self) -> None:
        """
        A join grants our predecessor's range to the joiner; its notify
        while it is our predecessor (only serving vnodes notify) ends the
        grant, a notify from another vnode does not.
        """
        h, view, _ = self.handoff(Phase.ACTIVE)
        view.setPredecessor(P)
        joiner = VnodeRef(800, "j:1", 0)
        answer = _run(self, h.remote_join(list(joiner)))
        self.assertEqual(answer[1], list(P))
        self.assertEqual((view.pred, h.transferredTo), (joiner, {joiner: P}))
        h.predecessorServes(P)
        self.assertEqual(h.transferredTo, {joiner: P})
        # the joiner, no longer our predecessor, leaves the grant in place
        view.pred = VnodeRef(900, "k:1", 0)
        h.predecessorServes(joiner)
        self.assertEqual(h.transferredTo, {joiner: P})
        view.pred = joiner
        h.predecessorServes(joiner)
        self.assertEqual((h.transferredTo, h.grantedBefore), ({}, None))

    def test_joinFromStalePredecessor(self) -> None:
        """
        A join from the vnode that is already our predecessor though we
        granted it nothing (its id's earlier life) drops that predecessor
        and asks the joiner to retry; the real predecessor's notify is then
        taken and the next join is granted, with no failed pings counted
        against the joiner.
        """
        h, view, _ = self.handoff(Phase.ACTIVE)
        joiner = VnodeRef(800, "j:1", 0)
        view.setPredecessor(joiner)
        view.predFailures = 1
        f = self.failureResultOf(Deferred.fromCoroutine(h.remote_join(list(joiner))), RemoteError)
        self.assertEqual((f.value.code, view.pred), (E.BUSY, None))
        view.setPredecessor(P)
        view.predFailures = 1
        answer = _run(self, h.remote_join(list(joiner)))
        self.assertEqual(answer[1], list(P))
        self.assertEqual((view.pred, view.predFailures), (joiner, 0))

    def test_stuckJoinSaysWhy(self) -> None:
        """
        A join that keeps getting retryable answers (silent one by one)
        says every 20 attempts that it is still joining, and why.
        """
        h, _, _ = self.handoff(Phase.ACTIVE)
        clock = h.clock
        assert isinstance(clock, Clock)
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        d = Deferred.fromCoroutine(h.join("seed:1"))
        for _ in range(45):
            clock.advance(3.0)
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "suite.specter.chord.transfer"]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("still joining after 20 attempts: ", lines[0])
        self.assertIn("no entry point here", lines[0])
        self.assertIn("after 40 attempts", lines[1])
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d)

    def test_handoffRefusedWhileLeaving(self) -> None:
        """
        A leaving vnode refuses its predecessor's hand-off with
        L{E.LEAVING} (the leaver waits for it); an active one takes it.
        """
        h, view, _ = self.handoff(Phase.LEAVING)
        view.setPredecessor(P)
        f = self.failureResultOf(Deferred.fromCoroutine(h.remote_handoff(list(P), None)), RemoteError)
        self.assertEqual(f.value.code, E.LEAVING)
        h, view, machine = self.handoff(Phase.ACTIVE)
        view.setPredecessor(P)
        view.succs = [P, A]
        earlier = VnodeRef(100, "e:1", 0)
        _run(self, h.remote_handoff(list(P), list(earlier)))
        self.assertEqual((view.pred, view.succs), (earlier, [A]))
        self.assertEqual(machine.kvRefused(), E.BUSY)  # Active again (not Transferring)


class VnodeTests(SynchronousTestCase):
    """
    The composed vnode: its calls once gone, and which part answers each call.
    """

    def setUp(self) -> None:
        clock = Clock()
        net = SimNetwork(clock, random.Random(1))
        self.node = ChordNode(
            "n1:1",
            SimTransport(net, "n1:1"),
            clock,
            ChordConfig(virtual=1),
            lambda i: MemoryStore(clock),
            rng=random.Random(1),
        )
        net.nodes["n1:1"] = self.node

    def test_handlers(self) -> None:
        """
        Every call peers make has a handler on one of the parts; other
        names (and attribute names) have none.
        """
        v = self.node.vnodes[0]
        owners = {
            "ping": v.maintenance,
            "state": v.maintenance,
            "step": v.maintenance,
            "newSuccessor": v.maintenance,
            "notify": v,
            "join": v.handoff,
            "handoff": v.handoff,
            "leaving": v.handoff,
            "replicate": v.records,
            "digest": v.records,
            "syncRange": v.records,
            "versions": v.records,
            "fetch": v.records,
            "offer": v.reconciler,
            "merge": v.reconciler,
            "kv": v,
            "recordVersions": v,
        }
        for method, part in owners.items():
            handler = v.handler(method)
            self.assertIs(getattr(handler, "__self__", None), part, method)
        for method in ("nope", "__class__", "remote_ping", "handler", "exchangeBucket", "rehome"):
            self.assertIsNone(v.handler(method), method)

    def test_goneVnodeCallsNothing(self) -> None:
        """
        Once the vnode has left, its calls fail with L{E.GONE} and never
        reach the process.
        """
        v = self.node.vnodes[0]
        reached: list[str] = []

        class Node:
            def call(self, target: VnodeRef, method: str, *args: Any) -> Deferred[Any]:
                reached.append(method)
                return succeed(True)

            async def findSuccessor(self, kid: int, start: VnodeRef | None = None) -> tuple[VnodeRef, int]:
                return A, 0

            async def entryPoint(self, seed: str | None, exclude: Any = None) -> VnodeRef:
                return A

            def suspected(self, addr: str) -> bool:
                return False

        peers = Peers(Node(), v.membershipCore, v)
        self.assertTrue(verifyObject(IVnodePeers, peers))
        self.assertTrue(verifyObject(IVnodePeers, FakePeers()))
        self.assertTrue(self.successResultOf(peers.call(A, "ping")))
        v.leave()  # Inactive -> Withdrawn
        self.assertTrue(v.gone)
        f = self.failureResultOf(peers.call(A, "ping"), RemoteError)
        self.assertEqual(f.value.code, E.GONE)
        self.assertEqual(reached, ["ping"])
        self.assertEqual(len(v.fingers), RING_BITS)
