"""
Tests for the member state machine, the suspicion timer and the transmit
queue.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.gossip.broadcast import TransmitQueue
from suite.gossip.member import Member, MemberCore, MemberInputs, Suspicion, newMemberMachine
from suite.gossip.messages import Alive, Dead, Left, Suspect, Update
from suite.gossip.settings import GossipSettings


class FakeActions:
    """
    Records what the machine asks of the node.
    """

    def __init__(self, clock: Clock, low: float = 4.0, high: float = 24.0, expected: int = 2) -> None:
        self.clock = clock
        self.low, self.high, self.expected = low, high, expected
        self.events: list[tuple[str, str]] = []
        self.broadcasts: list[Update] = []

    def notify(self, event: str, member: Member) -> None:
        self.events.append((event, member.status))

    def rebroadcast(self, message: Update) -> None:
        self.broadcasts.append(message)

    def newSuspicion(self, core: MemberCore, source: str, expire: Callable[[], None]) -> Suspicion:
        return Suspicion(self.clock, self.low, self.high, self.expected, source, expire, "me")


class MemberMachineTests(SynchronousTestCase):
    """
    Alive -> Suspect -> Dead, refutation, leave and rejoin.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.actions = FakeActions(self.clock)
        self.core = MemberCore("m", ("10.0.0.1", 7946), 3, {}, self.actions, clock=self.clock)
        self.machine: MemberInputs = newMemberMachine(self.core)

    def tearDown(self) -> None:
        self.machine.removed()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_suspicionTimesOut(self) -> None:
        """
        A suspicion with no refutation ends in Dead after the maximum timeout
        (no confirmations), broadcasting a Dead from the local node.
        """
        self.machine.suspected(3, "a")
        self.assertEqual(self.core.status, "suspect")
        self.assertEqual(self.actions.events, [("suspect", "suspect")])
        self.assertEqual(self.actions.broadcasts, [Suspect("m", 3, "a")])
        self.clock.advance(23.9)
        self.assertEqual(self.core.status, "suspect")
        self.clock.advance(0.2)
        self.assertEqual(self.core.status, "dead")
        self.assertEqual(self.actions.broadcasts[-1], Dead("m", 3, "me"))
        self.assertEqual(self.actions.events[-1], ("dead", "dead"))

    def test_confirmationsShortenTimeout(self) -> None:
        """
        Independent confirmations bring the timeout down to the minimum; a
        repeated source is not counted and not regossiped.
        """
        self.machine.suspected(3, "a")
        self.machine.suspected(3, "a")
        self.assertEqual(len(self.actions.broadcasts), 1)
        self.machine.suspected(3, "b")
        self.machine.suspected(3, "c")
        self.assertEqual(len(self.actions.broadcasts), 3)
        self.clock.advance(4.01)
        self.assertEqual(self.core.status, "dead")

    def test_refutation(self) -> None:
        """
        An alive at a higher incarnation ends the suspicion: Alive again,
        listener told "updated", the timer cancelled.
        """
        self.machine.suspected(3, "a")
        self.machine.aliveNewer(4, ("10.0.0.1", 7946), {})
        self.assertEqual(self.core.status, "alive")
        self.assertEqual(self.core.incarnation, 4)
        self.assertEqual(self.actions.events[-1], ("updated", "alive"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_suspectedAgainRestartsTimer(self) -> None:
        """
        A suspicion at a newer incarnation replaces the old one and its
        timer (the member refuted the first one meanwhile).
        """
        self.machine.suspected(3, "a")
        self.clock.advance(20)
        self.machine.suspectedAgain(4, "b")
        self.assertEqual(self.core.incarnation, 4)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        self.assertEqual(self.core.status, "suspect")
        self.clock.advance(14.1)
        self.assertEqual(self.core.status, "dead")

    def test_deadThenRejoin(self) -> None:
        """
        A dead member comes back only with a newer alive, as "joined".
        """
        self.machine.declaredDead(3, "a")
        self.assertEqual(self.core.status, "dead")
        self.machine.suspected(3, "b")
        self.machine.declaredDead(3, "b")
        self.assertEqual(self.actions.events, [("dead", "dead")])
        self.machine.aliveNewer(5, ("10.0.0.2", 7946), {"role": "web"})
        self.assertEqual(self.actions.events[-1], ("joined", "alive"))
        self.assertEqual(self.core.address, ("10.0.0.2", 7946))
        self.assertEqual(self.core.meta, {"role": "web"})

    def test_leave(self) -> None:
        """
        A leave from Alive or Suspect goes to Left and is regossiped once.
        """
        self.machine.suspected(3, "a")
        self.machine.departed(3)
        self.assertEqual(self.core.status, "left")
        self.assertEqual(self.actions.broadcasts[-1], Left("m", 3))
        self.machine.departed(3)
        self.assertEqual([e for e in self.actions.events if e[0] == "left"], [("left", "left")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deadThenLeft(self) -> None:
        """
        A member declared dead that is then heard leaving is recorded as left.
        """
        self.machine.declaredDead(3, "a")
        self.machine.departed(3)
        self.assertEqual(self.core.status, "left")

    def test_metadataUpdate(self) -> None:
        """
        A newer alive with new metadata is "updated"; one with the same
        address and metadata is regossiped silently.
        """
        self.machine.aliveNewer(4, ("10.0.0.1", 7946), {"health": "ok"})
        self.assertEqual(self.actions.events, [("updated", "alive")])
        self.machine.aliveNewer(5, ("10.0.0.1", 7946), {"health": "ok"})
        self.assertEqual(self.actions.events, [("updated", "alive")])
        self.assertEqual(self.actions.broadcasts[-1], Alive("m", 5, ("10.0.0.1", 7946), {"health": "ok"}))

    def test_removedIgnoresEverything(self) -> None:
        """
        After removal the machine cancels its timer and ignores all input.
        """
        self.machine.suspected(3, "a")
        self.machine.removed()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.machine.aliveNewer(9, ("10.0.0.1", 7946), {})
        self.machine.suspicionTimedOut()
        self.assertEqual(self.core.status, "removed")


class SuspicionTests(SynchronousTestCase):
    """
    The Lifeguard timeout formula.
    """

    def test_noConfirmationsExpected(self) -> None:
        """
        In a cluster too small for confirmations the minimum applies at once.
        """
        clock = Clock()
        fired: list[bool] = []
        s = Suspicion(clock, 3.0, 18.0, 0, "a", lambda: fired.append(True))
        self.assertEqual(s.timeout(), 3.0)
        clock.advance(3.0)
        self.assertEqual(fired, [True])

    def test_logarithmicDecay(self) -> None:
        """
        One of two expected confirmations takes the timeout log(2)/log(3) of
        the way from the maximum to the minimum.
        """
        clock = Clock()
        s = Suspicion(clock, 4.0, 24.0, 2, "a", lambda: None)
        s.confirm("b")
        self.assertAlmostEqual(s.timeout(), 24.0 - 20.0 * 0.6309, places=2)
        s.cancel()

    def test_settingsBounds(self) -> None:
        """
        The minimum grows with log10 of the cluster size; a cluster too small
        to send the expected confirmations expects none (as memberlist).
        """
        s = GossipSettings()
        self.assertEqual(s.suspicionBounds(3), (4.0, 24.0, 0))
        self.assertEqual(s.suspicionBounds(4)[2], 2)
        low, high, expected = s.suspicionBounds(100)
        self.assertAlmostEqual(low, 8.0)
        self.assertEqual(expected, 2)
        self.assertEqual(s.retransmitLimit(9), 4)
        self.assertEqual(s.retransmitLimit(10), 8)


class TransmitQueueTests(SynchronousTestCase):
    """
    Bounded retransmission of piggybacked updates.
    """

    def test_limitAndReplacement(self) -> None:
        """
        Each update is taken at most the limit times; a newer update about
        the same member replaces the queued one and starts counting afresh.
        """
        q = TransmitQueue(lambda: 2)
        q.queue("a", b"a1")
        q.queue("b", b"b1")
        self.assertEqual(sorted(q.take(100)), [b"a1", b"b1"])
        q.queue("a", b"a2")
        self.assertEqual(q.take(100), [b"a2", b"b1"])
        self.assertEqual(q.take(100), [b"a2"])
        self.assertEqual(q.take(100), [])

    def test_budget(self) -> None:
        """
        Only what fits in the byte budget is taken, fewest-sent first.
        """
        q = TransmitQueue(lambda: 5)
        q.queue("a", b"x" * 40)
        q.queue("b", b"y" * 40)
        first = q.take(50)
        self.assertEqual(len(first), 1)
        self.assertNotEqual(q.take(50), first)
