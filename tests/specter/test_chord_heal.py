"""
The split-ring probe machine (L{suite.specter.chord.heal}): every input in
every state, and the probe's path from a first sighting to a rejoin.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.specter.chord.heal import HealCore, HealProbe, Inconclusive, Sighting, buildHealProbe
from suite.specter.chord.ids import VnodeRef

OURS = VnodeRef(50, "a:1", 0)
LOWER = VnodeRef(10, "b:1", 0)
HIGHER = VnodeRef(90, "c:1", 0)
OTHER = VnodeRef(20, "d:1", 0)

#: the pending timer of each timed state (the jitter is pinned at its least)
WAITING, SUSPECTING, HEALING = 7.5, 5.0, 10.0


class LeastJitter(random.Random):
    def random(self) -> float:
        return 0.0


class Harness:
    """
    A probe machine on a L{Clock}; its probes are Deferreds the test fires,
    its rejoins a list.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.probes: list[Deferred[Sighting | None]] = []
        self.cancelled = 0
        self.rejoined: list[str] = []
        self.machine: HealProbe = buildHealProbe(
            HealCore(self.clock, 10.0, LeastJitter(), self.probe, self.rejoined.append)
        )

    def probe(self) -> Deferred[Sighting | None]:
        def cancel(d: Deferred[Sighting | None]) -> None:
            self.cancelled += 1

        d: Deferred[Sighting | None] = Deferred(cancel)
        self.probes.append(d)
        return d

    def timers(self) -> list[float]:
        now = self.clock.seconds()
        return sorted(c.getTime() - now for c in self.clock.getDelayedCalls())

    def fire(self) -> None:
        """
        Let the one pending timer fire.
        """
        [delay] = self.timers()
        self.clock.advance(delay)


def _inputs(m: HealProbe) -> dict[str, Callable[[], Any]]:
    return {
        "start": m.start,
        "stop": m.stop,
        "due": lambda: m.due(LOWER),
        "nothingFound": m.nothingFound,
        "suspect": lambda: m.suspect(LOWER),
        "confirmed": lambda: m.confirmed("b:1"),
        "settled": m.settled,
        "healRequested": lambda: m.healRequested("b:1"),
    }


class HealMachineTests(SynchronousTestCase):
    """
    Idle -> Waiting -> Probing -> Waiting | Suspecting -> Probing -> ... ->
    Healing -> Waiting; any -> Stopped.
    """

    def test_everyStateAnswersEveryInput(self) -> None:
        """
        Each state, reached by its shortest path, answers each input; the
        probes started and cancelled, the rejoins, the timers pending after
        it (which name the state: Waiting, Suspecting and Healing each have
        their own delay) and the answer match the table.
        """
        paths: dict[str, list[str]] = {
            "Idle": [],
            "Waiting": ["start"],
            "Probing": ["start", "due"],
            "Suspecting": ["start", "due", "suspect"],
            "Healing": ["start", "healRequested"],
            "Stopped": ["stop"],
        }
        W, S, H = [WAITING], [SUSPECTING], [HEALING]
        # (probes started, probes cancelled, rejoins, timers after, answer)
        expected: dict[tuple[str, str], tuple[int, int, int, list[float], object]] = {
            ("Idle", "start"): (0, 0, 0, W, None),
            ("Idle", "stop"): (0, 0, 0, [], None),
            ("Idle", "due"): (0, 0, 0, [], None),
            ("Idle", "nothingFound"): (0, 0, 0, [], None),
            ("Idle", "suspect"): (0, 0, 0, [], None),
            ("Idle", "confirmed"): (0, 0, 0, [], None),
            ("Idle", "settled"): (0, 0, 0, [], None),
            ("Idle", "healRequested"): (0, 0, 0, [], False),
            ("Waiting", "start"): (0, 0, 0, W, None),
            ("Waiting", "stop"): (0, 0, 0, [], None),
            ("Waiting", "due"): (1, 0, 0, [], None),
            ("Waiting", "nothingFound"): (0, 0, 0, W, None),
            ("Waiting", "suspect"): (0, 0, 0, W, None),
            ("Waiting", "confirmed"): (0, 0, 0, W, None),
            ("Waiting", "settled"): (0, 0, 0, W, None),
            ("Waiting", "healRequested"): (0, 0, 1, H, True),
            ("Probing", "start"): (0, 0, 0, [], None),
            ("Probing", "stop"): (0, 1, 0, [], None),
            ("Probing", "due"): (0, 0, 0, [], None),
            ("Probing", "nothingFound"): (0, 0, 0, W, None),
            ("Probing", "suspect"): (0, 0, 0, S, None),
            ("Probing", "confirmed"): (0, 0, 1, H, None),
            ("Probing", "settled"): (0, 0, 0, [], None),
            ("Probing", "healRequested"): (0, 1, 1, H, True),
            ("Suspecting", "start"): (0, 0, 0, S, None),
            ("Suspecting", "stop"): (0, 0, 0, [], None),
            ("Suspecting", "due"): (1, 0, 0, [], None),
            ("Suspecting", "nothingFound"): (0, 0, 0, S, None),
            ("Suspecting", "suspect"): (0, 0, 0, S, None),
            ("Suspecting", "confirmed"): (0, 0, 0, S, None),
            ("Suspecting", "settled"): (0, 0, 0, S, None),
            ("Suspecting", "healRequested"): (0, 0, 1, H, True),
            ("Healing", "start"): (0, 0, 0, H, None),
            ("Healing", "stop"): (0, 0, 0, [], None),
            ("Healing", "due"): (0, 0, 0, H, None),
            ("Healing", "nothingFound"): (0, 0, 0, H, None),
            ("Healing", "suspect"): (0, 0, 0, H, None),
            ("Healing", "confirmed"): (0, 0, 0, H, None),
            ("Healing", "settled"): (0, 0, 0, W, None),
            ("Healing", "healRequested"): (0, 0, 0, H, False),
            ("Stopped", "start"): (0, 0, 0, [], None),
            ("Stopped", "stop"): (0, 0, 0, [], None),
            ("Stopped", "due"): (0, 0, 0, [], None),
            ("Stopped", "nothingFound"): (0, 0, 0, [], None),
            ("Stopped", "suspect"): (0, 0, 0, [], None),
            ("Stopped", "confirmed"): (0, 0, 0, [], None),
            ("Stopped", "settled"): (0, 0, 0, [], None),
            ("Stopped", "healRequested"): (0, 0, 0, [], False),
        }
        self.assertEqual(len(expected), len(paths) * len(_inputs(Harness().machine)))
        for (state, name), (started, cancelled, rejoins, timers, answer) in expected.items():
            h = Harness()
            inputs = _inputs(h.machine)
            for step in paths[state]:
                inputs[step]()
            before = (len(h.probes), h.cancelled, len(h.rejoined))
            try:
                result = inputs[name]()
            except Exception as e:
                self.fail(f"{state} does not answer {name}: {e!r}")
            after = (len(h.probes), h.cancelled, len(h.rejoined))
            self.assertEqual(
                tuple(a - b for a, b in zip(after, before, strict=True)),
                (started, cancelled, rejoins),
                (state, name),
            )
            self.assertEqual(h.timers(), timers, (state, name))
            self.assertEqual(result, answer, (state, name))

    def test_twoSightingsInARowRejoin(self) -> None:
        """
        A probe that sees a lower-named ring is followed by another after
        half an interval; when that sees the same ring, the process rejoins
        it and stays put for an interval before probing again.
        """
        h = Harness()
        h.machine.start()
        h.fire()
        h.probes[-1].callback(Sighting("b:1", LOWER, OURS))
        self.assertEqual(h.timers(), [SUSPECTING])
        h.fire()
        self.assertEqual(len(h.probes), 2)
        h.probes[-1].callback(Sighting("b:1", LOWER, OURS))
        self.assertEqual(h.rejoined, ["b:1"])
        self.assertEqual(h.timers(), [HEALING])
        self.assertFalse(h.machine.healRequested("e:1"))  # moved lately
        h.fire()
        self.assertEqual(h.timers(), [WAITING])
        self.assertEqual(len(h.probes), 2)

    def test_higherRingMovesHere(self) -> None:
        """
        Seen twice, a ring whose name is the higher is left to move: this
        process stays and waits a full interval.
        """
        h = Harness()
        h.machine.start()
        h.fire()
        h.probes[-1].callback(Sighting("c:1", HIGHER, OURS))
        h.fire()
        h.probes[-1].callback(Sighting("c:1", HIGHER, OURS))
        self.assertEqual(h.rejoined, [])
        self.assertEqual(h.timers(), [WAITING])

    def test_differentRingStartsOver(self) -> None:
        """
        A second probe seeing a different ring than the first (churn) is a
        first sighting of that one; only the same ring twice rejoins.
        """
        h = Harness()
        h.machine.start()
        h.fire()
        h.probes[-1].callback(Sighting("b:1", LOWER, OURS))
        h.fire()
        h.probes[-1].callback(Sighting("d:1", OTHER, OURS))
        self.assertEqual((h.rejoined, h.timers()), ([], [SUSPECTING]))
        h.fire()
        h.probes[-1].callback(Sighting("d:1", OTHER, OURS))
        self.assertEqual(h.rejoined, ["d:1"])

    def test_inconclusiveKeepsTheSighting(self) -> None:
        """
        A probe that learns nothing keeps what the one before saw (so a
        dead former peer between two sightings does not reset them); with
        nothing seen before, it waits a full interval.  Its failure is
        logged only when it is not an expected one.
        """
        h = Harness()
        h.machine.start()
        h.fire()
        h.probes[-1].errback(Inconclusive("no answer"))
        self.assertEqual(h.timers(), [WAITING])
        h.fire()
        h.probes[-1].callback(Sighting("b:1", LOWER, OURS))
        h.fire()
        h.probes[-1].errback(RuntimeError("a bug"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(h.timers(), [SUSPECTING])
        h.fire()
        h.probes[-1].callback(Sighting("b:1", LOWER, OURS))
        self.assertEqual(h.rejoined, ["b:1"])

    def test_sameRingForgetsTheSighting(self) -> None:
        """
        A second probe finding no other ring clears the suspicion: a later
        sighting is a first one again.
        """
        h = Harness()
        h.machine.start()
        h.fire()
        h.probes[-1].callback(Sighting("b:1", LOWER, OURS))
        h.fire()
        h.probes[-1].callback(None)
        self.assertEqual(h.timers(), [WAITING])
        h.fire()
        h.probes[-1].callback(Sighting("b:1", LOWER, OURS))
        self.assertEqual((h.rejoined, h.timers()), ([], [SUSPECTING]))

    def test_answerKnownAtOnce(self) -> None:
        """
        A probe whose outcome is known as it starts (this process does not
        serve everywhere yet) answers after the transition into Probing.
        """
        clock = Clock()
        m = buildHealProbe(
            HealCore(
                clock,
                10.0,
                LeastJitter(),
                lambda: Deferred.fromCoroutine(_inconclusive()),
                lambda peer: None,
            )
        )
        m.start()
        clock.advance(WAITING)
        self.assertEqual([c.getTime() - clock.seconds() for c in clock.getDelayedCalls()], [WAITING])

    def test_stopCancelsTheProbe(self) -> None:
        """
        Stopping while a probe is out cancels it; its cancellation is no
        answer, and nothing is timed again.
        """
        h = Harness()
        h.machine.start()
        h.fire()
        h.machine.stop()
        self.assertEqual(h.cancelled, 1)
        self.assertEqual(h.timers(), [])
        h.clock.advance(100)
        self.assertEqual((len(h.probes), h.rejoined), (1, []))


async def _inconclusive() -> Sighting | None:
    raise Inconclusive("not serving")
