"""
Tests for the probe round and relay machines, and that every state of
every gossip machine answers every input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.gossip.fields import Address
from suite.gossip.member import Member, MemberCore, MemberInputs, Suspicion, newMemberMachine
from suite.gossip.messages import Ack, IndirectPing, Message, Nack, Update
from suite.gossip.prober import ProbeCore, ProbeInputs, ProbeRound, RelayCore, RelayInputs, RelayProbe

TARGET = MemberCore("t", ("10.0.0.9", 7946), 4, {}, actions=None)  # type: ignore[arg-type]


class Recorder:
    """
    Records every output of the probe and relay machines as an event list.
    """

    def __init__(self, expected: int = 2) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.expected = expected

    def sendIndirectPings(self, seq: int, target: MemberCore) -> int:
        self.events.append(("indirect", seq, target.name))
        return self.expected

    def probeSucceeded(self, seq: int) -> None:
        self.events.append(("succeeded", seq))

    def probeFailed(self, seq: int, target: MemberCore, missingNacks: int) -> None:
        self.events.append(("failed", seq, target.name, missingNacks))

    def answer(self, seq: int, address: Address, message: Message | None) -> None:
        self.events.append(("answer", seq, message))


def newRound(clock: Clock, rec: Recorder) -> ProbeInputs:
    return ProbeRound(ProbeCore(7, TARGET, clock, 0.5, 0.9, rec))


class ProbeRoundTests(SynchronousTestCase):
    """
    One probe round: direct ping, indirect pings, then success or failure.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.rec = Recorder()
        self.round = newRound(self.clock, self.rec)
        self.round.started()

    def tearDown(self) -> None:
        self.round.stopped()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_directAck(self) -> None:
        """
        An ack before the probe timeout succeeds and cancels both timers.
        """
        self.clock.advance(0.2)
        self.round.acked()
        self.assertEqual(self.rec.events, [("succeeded", 7)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_indirectThenAck(self) -> None:
        """
        No ack by the probe timeout sends indirect pings; a later ack
        succeeds and cancels the deadline.
        """
        self.clock.advance(0.5)
        self.assertEqual(self.rec.events, [("indirect", 7, "t")])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.round.acked()
        self.assertEqual(self.rec.events[-1], ("succeeded", 7))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failureCountsMissingNacks(self) -> None:
        """
        The round fails at its deadline, reporting how many expected nacks
        never came.
        """
        self.clock.advance(0.5)
        self.round.nacked()
        self.clock.advance(0.4)
        self.assertEqual(self.rec.events, [("indirect", 7, "t"), ("failed", 7, "t", 1)])
        self.round.acked()
        self.round.roundEnded()
        self.assertEqual(len(self.rec.events), 2)

    def test_nackBeforeIndirectIgnored(self) -> None:
        """
        A nack before any relay was asked does not count.
        """
        self.round.nacked()
        self.clock.advance(0.5)
        self.clock.advance(0.4)
        self.assertEqual(self.rec.events[-1], ("failed", 7, "t", 2))

    def test_deadlineBeforeProbeTimeout(self) -> None:
        """
        With a deadline before the probe timeout the round fails without
        asking relays and leaves no timer behind.
        """
        clock, rec = Clock(), Recorder()
        r = ProbeRound(ProbeCore(1, TARGET, clock, 1.0, 0.5, rec))
        r.started()
        clock.advance(0.5)
        self.assertEqual(rec.events, [("failed", 1, "t", 0)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopped(self) -> None:
        """
        Stopping in either waiting state cancels every timer and reports
        nothing.
        """
        for advance in (0.0, 0.5):
            clock, rec = Clock(), Recorder()
            r = newRound(clock, rec)
            r.started()
            clock.advance(advance)
            r.stopped()
            self.assertEqual(clock.getDelayedCalls(), [])
            self.assertNotIn("failed", [e[0] for e in rec.events])


class RelayProbeTests(SynchronousTestCase):
    """
    Relaying an indirect ping.
    """

    def relay(self, wantNack: bool) -> tuple[Clock, Recorder, RelayInputs]:
        clock, rec = Clock(), Recorder()
        request = IndirectPing(42, "t", ("10.0.0.9", 7946), "asker", ("10.0.0.2", 7946), wantNack)
        r = RelayProbe(RelayCore(request, 5, clock, 0.5, rec))
        r.started()
        return clock, rec, r

    def test_ack(self) -> None:
        """
        The target's ack is passed on as an ack of the requester's sequence.
        """
        clock, rec, r = self.relay(True)
        r.acked()
        self.assertEqual(rec.events, [("answer", 5, Ack(42))])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_nack(self) -> None:
        """
        No ack in time: a nack if asked for, else nothing sent.
        """
        for wantNack, message in ((True, Nack(42)), (False, None)):
            clock, rec, r = self.relay(wantNack)
            clock.advance(0.5)
            self.assertEqual(rec.events, [("answer", 5, message)])
            r.acked()
            self.assertEqual(len(rec.events), 1)


class _MemberActions:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: list[tuple[str, str]] = []

    def notify(self, event: str, member: Member) -> None:
        self.events.append((event, member.status))

    def rebroadcast(self, message: Update) -> None:
        pass

    def newSuspicion(self, core: MemberCore, source: str, expire: Callable[[], None]) -> Suspicion:
        return Suspicion(self.clock, 1.0, 2.0, 0, source, expire)


def _probeInputs(m: ProbeInputs, clock: Clock) -> dict[str, Callable[[], None]]:
    return {
        "started": m.started,
        "acked": m.acked,
        "nacked": m.nacked,
        "probeTimedOut": lambda: m.probeTimedOut(clock.callLater(9, lambda: None)),
        "roundEnded": m.roundEnded,
        "stopped": m.stopped,
    }


def _relayInputs(m: RelayInputs, clock: Clock) -> dict[str, Callable[[], None]]:
    return {
        "started": m.started,
        "acked": m.acked,
        "nacked": m.nacked,
        "timedOut": m.timedOut,
        "stopped": m.stopped,
    }


def _memberInputs(m: MemberInputs, clock: Clock) -> dict[str, Callable[[], None]]:
    return {
        "aliveNewer": lambda: m.aliveNewer(9, ("10.0.0.1", 1), {}),
        "suspected": lambda: m.suspected(3, "x"),
        "suspectedAgain": lambda: m.suspectedAgain(4, "x"),
        "declaredDead": lambda: m.declaredDead(3, "x"),
        "departed": lambda: m.departed(3),
        "suspicionTimedOut": m.suspicionTimedOut,
        "removed": m.removed,
    }


class EveryStateAnswersEveryInput(SynchronousTestCase):
    """
    Each gossip machine, driven into each of its states, accepts every
    input without error (an unanswered input would raise).
    """

    def check(
        self,
        new: Callable[[Clock], Any],
        inputs: Callable[[Any, Clock], dict[str, Callable[[], None]]],
        paths: dict[str, list[str]],
        stop: str,
    ) -> None:
        names = list(inputs(new(Clock()), Clock()))
        for state, path in paths.items():
            for name in names:
                clock = Clock()
                machine = new(clock)
                table = inputs(machine, clock)
                for step in path:
                    table[step]()
                try:
                    table[name]()
                except Exception as e:  # pragma: no cover - the failure report
                    self.fail(f"{state} does not answer {name}: {e!r}")
                table[stop]()
                for call in clock.getDelayedCalls():
                    call.cancel()

    def test_probeRound(self) -> None:
        """
        Idle, Direct, Indirect and Done answer every probe input.
        """
        self.check(
            lambda clock: newRound(clock, Recorder()),
            _probeInputs,
            {
                "Idle": [],
                "Direct": ["started"],
                "Indirect": ["started", "probeTimedOut"],
                "Done": ["started", "acked"],
            },
            "stopped",
        )

    def test_relay(self) -> None:
        """
        Idle, Waiting and Done answer every relay input.
        """
        request = IndirectPing(1, "t", ("10.0.0.9", 1), "a", ("10.0.0.2", 1), True)
        self.check(
            lambda clock: RelayProbe(RelayCore(request, 1, clock, 0.5, Recorder())),
            _relayInputs,
            {"Idle": [], "Waiting": ["started"], "Done": ["started", "acked"]},
            "stopped",
        )

    def test_member(self) -> None:
        """
        Alive, Suspect, Dead, Left and Removed answer every member input.
        """

        def new(clock: Clock) -> MemberInputs:
            core = MemberCore("m", ("10.0.0.1", 1), 3, {}, _MemberActions(clock), clock=clock)
            return newMemberMachine(core)

        self.check(
            new,
            _memberInputs,
            {
                "Alive": [],
                "Suspect": ["suspected"],
                "Dead": ["declaredDead"],
                "Left": ["departed"],
                "Removed": ["removed"],
            },
            "removed",
        )
