"""
The lease keeper's machine: every input in every state (a table), over a
Raft whose proposals and leadership transfers the test answers, with the
round and expiry timers on a L{task.Clock} and the outputs recorded as
events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.constellation.leases import (
    DNS_WRITER,
    LB_LEADER,
    KeeperInputs,
    KeeperRounds,
    LeaseKeeper,
    LeaseSettings,
    LeaseStateMachine,
)
from suite.raft.settings import NotLeader


def stateOf(inputs: KeeperInputs) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class AnsweringRaft:
    """
    A Raft leader whose proposals and transfers wait for the test: L{answer}
    applies the oldest proposal to the lease state machine and fires it.
    """

    def __init__(self, machine: LeaseStateMachine, events: list[str]) -> None:
        self.id = "n1"
        self.term = 1
        self.leader: object | None = object()
        self.machine = machine
        self.events = events
        self.index = 0
        self.pending: list[tuple[bytes, Deferred[Any]]] = []
        self.transfers: list[Deferred[Any]] = []

    def propose(self, command: bytes) -> Deferred[Any]:
        op, name, _, token, _ = msgpack.unpackb(command, raw=False)
        self.events.append(f"propose {op} {name} {token}")
        d: Deferred[Any] = Deferred()
        self.pending.append((command, d))
        return d

    def transferLeadership(self, target: str | None) -> Deferred[Any]:
        self.events.append(f"transfer {target}")
        d: Deferred[Any] = Deferred()
        self.transfers.append(d)
        return d

    def answer(self, count: int = 1) -> None:
        for _ in range(count):
            command, d = self.pending.pop(0)
            self.index += 1
            d.callback(self.machine.apply(self.index, command))

    def refuse(self) -> None:
        _, d = self.pending.pop(0)
        d.errback(NotLeader(None, "no"))

    def transferred(self) -> None:
        self.leader = None
        self.transfers.pop(0).callback(None)


class KeeperMachineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[str] = []
        self.machine = LeaseStateMachine()
        self.raft = AnsweringRaft(self.machine, self.events)
        self.candidates: list[str] = []
        self.settings = LeaseSettings(
            duration=5.0, renewInterval=1.0, drift=0.02, margin=0.2, handoverAfter=3.0
        )
        self.keeper = LeaseKeeper(
            self.raft, self.machine, self.clock, self.clock.seconds, self.settings, lambda: self.candidates
        )
        self.keeper.changed.append(lambda: self.events.append("notify"))
        self.k = self.keeper.state
        self.rounds = KeeperRounds()
        self.stopped: list[Deferred[Any]] = []

    # -- reaching each state ----------------------------------------------

    def running(self) -> None:
        """
        Started, one round granted both leases: Running, holding both.
        """
        self.k.start(self.rounds)
        self.clock.advance(0.25)
        self.raft.answer(2)
        # The holds' change notifications run in the next reactor turn.
        self.clock.advance(0)
        self.assertEqual(self.keeper.acting(LB_LEADER), 1)
        self.assertEqual(self.keeper.acting(DNS_WRITER), 1)

    def handingOver(self) -> None:
        self.running()
        self.k.handOver("cloudserver1", self.rounds)

    def stopping(self) -> None:
        self.running()
        self.stopped.append(self.k.stop())

    def stoppedState(self) -> None:
        self.stopped.append(self.k.stop())

    PATHS: dict[str, Callable[[KeeperMachineTests], None]] = {
        "Idle": lambda t: None,
        "Running": running,
        "HandingOver": handingOver,
        "Stopping": stopping,
        "Stopped": stoppedState,
    }

    def reach(self, state: str) -> None:
        self.PATHS[state](self)
        self.assertEqual(stateOf(self.k), state)
        del self.events[:]

    def timers(self) -> list[float]:
        return sorted(c.getTime() for c in self.clock.getDelayedCalls())

    # -- the table --------------------------------------------------------

    def test_everyInputInEveryState(self) -> None:
        """
        Every input in every state: the state after, the events, the
        tokens this node acts under, and the pending timers.
        """
        calls: dict[str, Callable[[KeeperMachineTests], object]] = {
            "start": lambda t: t.k.start(t.rounds),
            "tick": lambda t: t.k.tick(),
            "answered": lambda t: t.k.answered(DNS_WRITER, 2, 50.0),
            "handOver": lambda t: t.k.handOver("cloudserver1", t.rounds),
            "handedOver": lambda t: t.k.handedOver(t.rounds),
            "stop": lambda t: t.k.stop(),
            "stopFinished": lambda t: t.k.stopFinished(),
        }
        # Timers: the round timer at 0.5 (armed at 0.25) and the holds'
        # expiry timers at 0.25 + 4.9; tick re-arms the round at 0.5.
        held = [0.5, 5.15, 5.15]
        release = ["propose release dns_writer 1", "propose release lb_leader 1", "notify"]
        # (state, input) -> (state after, events, acting (lb, dns), timers)
        table: dict[tuple[str, str], tuple[str, list[str], tuple[int | None, int | None], list[float]]] = {
            ("Idle", "start"): ("Running", [], (None, None), [0.25]),
            ("Idle", "tick"): ("Idle", [], (None, None), []),
            ("Idle", "answered"): ("Idle", [], (None, None), []),
            ("Idle", "handOver"): ("Idle", [], (None, None), []),
            ("Idle", "handedOver"): ("Idle", [], (None, None), []),
            ("Idle", "stop"): ("Stopped", [], (None, None), []),
            ("Idle", "stopFinished"): ("Idle", [], (None, None), []),
            ("Running", "start"): ("Running", [], (1, 1), held),
            ("Running", "tick"): ("Running", [], (1, 1), held),
            ("Running", "answered"): ("Running", [], (1, 2), [0.5, 5.15, 50.0]),
            ("Running", "handOver"): ("HandingOver", release, (None, None), [0.5]),
            ("Running", "handedOver"): ("Running", [], (1, 1), held),
            ("Running", "stop"): ("Stopping", release, (None, None), []),
            ("Running", "stopFinished"): ("Running", [], (1, 1), held),
            ("HandingOver", "start"): ("HandingOver", [], (None, None), [0.5]),
            ("HandingOver", "tick"): ("HandingOver", [], (None, None), [0.5]),
            ("HandingOver", "answered"): ("HandingOver", [], (None, None), [0.5]),
            ("HandingOver", "handOver"): ("HandingOver", [], (None, None), [0.5]),
            ("HandingOver", "handedOver"): ("Running", [], (None, None), [0.5]),
            ("HandingOver", "stop"): ("Stopped", [], (None, None), []),
            ("HandingOver", "stopFinished"): ("HandingOver", [], (None, None), [0.5]),
        }
        for final in ("Stopping", "Stopped"):
            for name in calls:
                after = "Stopped" if (final, name) == ("Stopping", "stopFinished") else final
                table[final, name] = (after, [], (None, None), [])
        self.assertEqual(len(table), 5 * len(calls))
        for (state, name), (after, events, acting, timers) in sorted(table.items()):
            self.setUp()
            self.reach(state)
            result = calls[name](self)
            self.assertEqual(
                (
                    stateOf(self.k),
                    self.events,
                    (self.keeper.acting(LB_LEADER), self.keeper.acting(DNS_WRITER)),
                ),
                (after, events, acting),
                f"{state} + {name}",
            )
            self.assertEqual(self.timers(), timers, f"{state} + {name}: timers")
            if name == "stop":
                self.assertIsInstance(result, Deferred)
            else:
                self.assertIsNone(result, f"{state} + {name}")

    # -- the paths through it ---------------------------------------------

    def test_roundsEveryQuarterInterval(self) -> None:
        """
        Running: a round every quarter renewal interval; a proposal in
        flight is not repeated until answered; a renewal is proposed once
        the remaining validity falls to C{validity - interval}.
        """
        self.k.start(self.rounds)
        self.clock.advance(0.25)
        self.assertEqual(self.events, ["propose grant lb_leader 0", "propose grant dns_writer 0"])
        self.assertEqual(self.rounds.inflight, {LB_LEADER, DNS_WRITER})
        self.clock.advance(0.25)
        self.assertEqual(len(self.events), 2)
        self.raft.answer(2)
        self.assertEqual(self.rounds.inflight, set())
        self.clock.advance(0)
        del self.events[:]
        self.clock.advance(0.5)
        self.assertEqual(self.events, [])
        self.clock.advance(0.5)
        self.assertEqual(self.events, ["propose renew lb_leader 1", "propose renew dns_writer 1"])
        self.raft.refuse()
        self.assertEqual(self.rounds.inflight, {DNS_WRITER})
        self.assertEqual(self.keeper.acting(LB_LEADER), 1)

    def test_notLeader(self) -> None:
        """
        Running on a follower: rounds propose nothing and forget when
        leadership was seen.
        """
        self.k.start(self.rounds)
        self.clock.advance(0.25)
        self.assertEqual(self.rounds.leaderSince, 0.25)
        self.raft.leader = None
        self.clock.advance(0.25)
        self.assertIsNone(self.rounds.leaderSince)
        self.assertEqual(len(self.events), 2)

    def test_handoverThroughToRunning(self) -> None:
        """
        A better node alive for C{handoverAfter}: the round hands over; the
        releases commit, leadership is transferred, and the keeper runs
        again with leadership and better nodes judged afresh.
        """
        self.running()
        self.candidates = ["cloudserver1"]
        del self.events[:]
        self.clock.advance(0.25)
        self.assertEqual(self.rounds.betterSince, {"cloudserver1": 0.5})
        self.clock.advance(2.75)
        self.assertEqual(stateOf(self.k), "Running")
        self.clock.advance(0.25)
        self.assertEqual(stateOf(self.k), "HandingOver")
        self.assertEqual(
            self.events[-3:],
            ["propose release dns_writer 1", "propose release lb_leader 1", "notify"],
        )
        self.assertIsNone(self.keeper.acting(DNS_WRITER))
        # The renewals proposed meanwhile come back, then the releases.
        self.raft.answer(len(self.raft.pending))
        self.assertIsNone(self.keeper.acting(DNS_WRITER))
        self.assertEqual(self.events[-1], "transfer cloudserver1")
        self.assertEqual(stateOf(self.k), "HandingOver")
        self.raft.transferred()
        self.assertEqual(stateOf(self.k), "Running")
        self.assertIsNone(self.rounds.leaderSince)
        self.assertEqual(self.rounds.betterSince, {})
        self.assertIsNone(self.machine.get(DNS_WRITER).holder)

    def test_stopWaitsForReleaseAndTransfer(self) -> None:
        """
        Running, leading and holding + stop: acting ends at once; the
        returned Deferred fires, and the keeper is Stopped, once the
        releases committed and leadership moved to the best candidate.
        """
        self.running()
        self.candidates = ["edge9", "cloudserver2"]
        d = self.k.stop()
        self.assertNoResult(d)
        self.assertEqual(self.timers(), [])
        self.raft.answer(2)
        self.assertEqual(self.events[-1], "transfer cloudserver2")
        self.assertNoResult(d)
        self.assertEqual(stateOf(self.k), "Stopping")
        self.raft.transferred()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(stateOf(self.k), "Stopped")

    def test_stopAsFollower(self) -> None:
        """
        Holding but no longer leading + stop: the holds are dropped (no
        release can be proposed), Stopped at once.
        """
        self.running()
        self.raft.leader = None
        del self.events[:]
        d = self.k.stop()
        self.assertIsNone(self.successResultOf(d))
        self.clock.advance(0)
        self.assertEqual((stateOf(self.k), self.events), ("Stopped", ["notify", "notify"]))
        self.assertEqual(self.timers(), [])
        self.assertIsNone(self.keeper.acting(DNS_WRITER))

    def test_stopOvertakesHandover(self) -> None:
        """
        Stop while handing over: Stopped at once (nothing is held); the
        handover finishing later changes nothing.
        """
        self.handingOver()
        self.assertIsNone(self.successResultOf(self.k.stop()))
        self.assertEqual(stateOf(self.k), "Stopped")
        self.raft.answer(2)
        self.raft.transferred()
        self.assertEqual(stateOf(self.k), "Stopped")
        self.assertEqual(self.timers(), [])

    def test_lateConfirmationWhileHandingOver(self) -> None:
        """
        A grant that commits while handing over is not acted on, and no
        longer counts as in flight.
        """
        self.k.start(self.rounds)
        self.clock.advance(0.25)
        self.raft.answer(1)
        self.k.handOver("cloudserver1", self.rounds)
        self.raft.answer(2)
        self.assertIsNone(self.keeper.acting(DNS_WRITER))
        self.assertEqual(self.rounds.inflight, set())

    def test_changeCallbacksMayAskActing(self) -> None:
        """
        A change callback asks L{LeaseKeeper.acting} (the DNS writer's does):
        it sees the lease as acquired, and as gone once it ran out.
        """
        seen: list[tuple[int | None, int | None]] = []
        self.keeper.changed.append(
            lambda: seen.append((self.keeper.acting(LB_LEADER), self.keeper.acting(DNS_WRITER)))
        )
        self.k.start(self.rounds)
        self.clock.advance(0.25)
        self.raft.answer(2)
        self.clock.advance(0)
        self.assertEqual(seen[-1], (1, 1))
        self.raft.leader = None
        self.clock.advance(10)
        self.assertEqual(seen[-1], (None, None))
