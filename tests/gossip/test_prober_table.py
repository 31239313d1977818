"""
The probe round and relay machines as tables (L{suite.gossip.prober}): every
input in every state, with the state after, the outputs in order and the
timers left on the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.gossip.messages import Ack, IndirectPing, Nack
from suite.gossip.prober import ProbeInputs, RelayCore, RelayInputs, RelayProbe
from tests.gossip.test_prober import Recorder, newRound


def stateOf(inputs: object) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


Row = tuple[str, list[tuple[Any, ...]], list[float]]

#: One call of each probe round input.  The deadline handed over with
#: probeTimedOut lives on a clock of its own: only the Indirect state keeps
#: it (to cancel it when stopped).
PROBE_CALLS: dict[str, Callable[[ProbeInputs], None]] = {
    "started": lambda m: m.started(),
    "acked": lambda m: m.acked(),
    "nacked": lambda m: m.nacked(),
    "probeTimedOut": lambda m: m.probeTimedOut(Clock().callLater(9, lambda: None)),
    "roundEnded": lambda m: m.roundEnded(),
    "stopped": lambda m: m.stopped(),
}


#: How to reach each state of a round (probe timeout 0.5, round 0.9, two
#: relays asked); Indirect is reached by the probe timer firing at 0.5.
def _indirect(m: ProbeInputs, clock: Clock) -> None:
    m.started()
    clock.advance(0.5)


def _done(m: ProbeInputs, clock: Clock) -> None:
    m.started()
    m.acked()


PROBE_PATHS: dict[str, Callable[[ProbeInputs, Clock], None]] = {
    "Idle": lambda m, clock: None,
    "Direct": lambda m, clock: m.started(),
    "Indirect": _indirect,
    "Done": _done,
}

DIRECT = [0.5, 0.9]
#: (state, input) -> (state after, outputs, timers pending).  Done says
#: nothing to anything; the probe and deadline timers that fire leave
#: nothing behind, so a row that takes their input keeps the one that fired.
PROBE: dict[tuple[str, str], Row] = {
    ("Idle", "started"): ("Direct", [], DIRECT),
    ("Idle", "acked"): ("Done", [], []),
    ("Idle", "nacked"): ("Done", [], []),
    ("Idle", "probeTimedOut"): ("Done", [], []),
    ("Idle", "roundEnded"): ("Done", [], []),
    ("Idle", "stopped"): ("Done", [], []),
    ("Direct", "started"): ("Direct", [], DIRECT),
    ("Direct", "acked"): ("Done", [("succeeded", 7)], []),
    ("Direct", "nacked"): ("Direct", [], DIRECT),
    ("Direct", "probeTimedOut"): ("Indirect", [("indirect", 7, "t")], DIRECT),
    ("Direct", "roundEnded"): ("Done", [("failed", 7, "t", 0)], []),
    ("Direct", "stopped"): ("Done", [], []),
    ("Indirect", "started"): ("Indirect", [], [0.9]),
    ("Indirect", "acked"): ("Done", [("succeeded", 7)], []),
    ("Indirect", "nacked"): ("Indirect", [], [0.9]),
    ("Indirect", "probeTimedOut"): ("Indirect", [], [0.9]),
    ("Indirect", "roundEnded"): ("Done", [("failed", 7, "t", 2)], [0.9]),
    ("Indirect", "stopped"): ("Done", [], []),
}
PROBE.update({("Done", name): ("Done", [], []) for name in PROBE_CALLS})

RELAY_CALLS: dict[str, Callable[[RelayInputs], None]] = {
    "started": lambda m: m.started(),
    "acked": lambda m: m.acked(),
    "nacked": lambda m: m.nacked(),
    "timedOut": lambda m: m.timedOut(),
    "stopped": lambda m: m.stopped(),
}

RELAY_PATHS: dict[str, tuple[str, ...]] = {
    "Idle": (),
    "Waiting": ("started",),
    "Done": ("started", "acked"),
}

#: A relay for request 42 (nacks wanted) under our sequence number 5,
#: timing out at 0.5.
RELAY: dict[tuple[str, str], Row] = {
    ("Idle", "started"): ("Waiting", [], [0.5]),
    ("Idle", "acked"): ("Done", [], []),
    ("Idle", "nacked"): ("Done", [], []),
    ("Idle", "timedOut"): ("Done", [], []),
    ("Idle", "stopped"): ("Done", [], []),
    ("Waiting", "started"): ("Waiting", [], [0.5]),
    ("Waiting", "acked"): ("Done", [("answer", 5, Ack(42))], []),
    ("Waiting", "nacked"): ("Waiting", [], [0.5]),
    ("Waiting", "timedOut"): ("Done", [("answer", 5, Nack(42))], [0.5]),
    ("Waiting", "stopped"): ("Done", [], []),
}
RELAY.update({("Done", name): ("Done", [], []) for name in RELAY_CALLS})


def timers(clock: Clock) -> list[float]:
    return sorted(c.getTime() for c in clock.getDelayedCalls())


class ProbeTableTests(SynchronousTestCase):
    """
    Every input in every state of the probe round and relay machines.
    """

    def test_alphabets(self) -> None:
        """
        The calls are each machine's whole input alphabet, and the tables
        cover every state.
        """
        for inputs, calls in ((ProbeInputs, PROBE_CALLS), (RelayInputs, RELAY_CALLS)):
            names = {n for k in inputs.__mro__ if k.__name__.endswith(("Inputs", "Waiter")) for n in vars(k)}
            self.assertEqual(set(calls), {n for n in names if not n.startswith("_")})
        self.assertEqual(set(PROBE), {(s, n) for s in PROBE_PATHS for n in PROBE_CALLS})
        self.assertEqual(set(RELAY), {(s, n) for s in RELAY_PATHS for n in RELAY_CALLS})

    def test_probeRound(self) -> None:
        """
        Each probe round input in each state.
        """
        for (state, name), expected in sorted(PROBE.items()):
            clock, rec = Clock(), Recorder()
            machine = newRound(clock, rec)
            PROBE_PATHS[state](machine, clock)
            self.assertEqual(stateOf(machine), state)
            del rec.events[:]
            PROBE_CALLS[name](machine)
            self.assertEqual((stateOf(machine), rec.events, timers(clock)), expected, f"{state} + {name}")

    def test_nacksCounted(self) -> None:
        """
        Indirect counts the nacks: a round ending after one of two expected
        reports one relay that did not even nack.
        """
        clock, rec = Clock(), Recorder()
        machine = newRound(clock, rec)
        PROBE_PATHS["Indirect"](machine, clock)
        machine.nacked()
        clock.advance(0.4)
        self.assertEqual(rec.events[-1], ("failed", 7, "t", 1))
        self.assertEqual((stateOf(machine), timers(clock)), ("Done", []))

    def test_relay(self) -> None:
        """
        Each relay input in each state.
        """
        for (state, name), expected in sorted(RELAY.items()):
            clock, rec = Clock(), Recorder()
            request = IndirectPing(42, "t", ("10.0.0.9", 7946), "asker", ("10.0.0.2", 7946), True)
            machine = RelayProbe(RelayCore(request, 5, clock, 0.5, rec))
            for step in RELAY_PATHS[state]:
                RELAY_CALLS[step](machine)
            self.assertEqual(stateOf(machine), state)
            del rec.events[:]
            RELAY_CALLS[name](machine)
            self.assertEqual((stateOf(machine), rec.events, timers(clock)), expected, f"{state} + {name}")
