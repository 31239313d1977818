"""
The certificate lifecycle machine alone (L{suite.acme.renewal}): every input
in every state, over a store and an issuer that record what they are asked
and never answer, on a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.acme.interfaces import ICertificateIssuer, ICertificateStore
from suite.acme.renewal import Backoff, CertificateLifecycle, LifecycleStatus, RenewalCore, newLifecycle


def stateOf(inputs: CertificateLifecycle) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class RecordingBackoff(Backoff):
    events: list[str]

    def reset(self) -> None:
        self.events.append("resetBackoff")
        super().reset()


class Recorder:
    """
    A store and an issuer in one: each read or order is recorded, and so is
    its cancellation; none is ever answered.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def pending(self, what: str) -> Deferred[Any]:
        self.events.append(what)
        return Deferred(lambda d: self.events.append("cancel"))

    def loadCertificate(self, name: str) -> Deferred[Any]:
        return self.pending("load")

    def issue(self, names: Sequence[str]) -> Deferred[Any]:
        return self.pending("order")


#: One call of each input that changes things (describe is a query).
CALLS: dict[str, Callable[[CertificateLifecycle], None]] = {
    "start": lambda m: m.start(),
    "found": lambda m: m.found(100.0),
    "missing": lambda m: m.missing(),
    "loadFailed": lambda m: m.loadFailed("disk"),
    "checkDue": lambda m: m.checkDue(),
    "renewalDue": lambda m: m.renewalDue(),
    "issued": lambda m: m.issued(200.0),
    "failed": lambda m: m.failed("refused"),
    "retryDue": lambda m: m.retryDue(),
    "stop": lambda m: m.stop(),
}

#: How to reach each state from a new machine.
PATHS: dict[str, tuple[str, ...]] = {
    "Idle": (),
    "Loading": ("start",),
    "Ordering": ("start", "missing"),
    "Valid": ("start", "found"),
    "Renewing": ("start", "found", "renewalDue"),
    "Failed": ("start", "loadFailed"),
    "Stopped": ("stop",),
}

#: What each state answers to describe.
DESCRIBED: dict[str, LifecycleStatus] = {
    "Idle": LifecycleStatus("Idle", None),
    "Loading": LifecycleStatus("Loading", None),
    "Ordering": LifecycleStatus("Ordering", None),
    "Valid": LifecycleStatus("Valid", 100.0),
    "Renewing": LifecycleStatus("Renewing", 100.0),
    "Failed": LifecycleStatus("Failed", None, "disk"),
    "Stopped": LifecycleStatus("Stopped", None),
}

CHECK = [30.0]  # the expiry check: checkInterval, sooner than renewal (at 50)
RETRY = [60.0]  # the first backoff delay
Answer = tuple[str, list[str], list[float], float | None]
STOP: Answer = ("Stopped", ["cancel"], [], None)
ISSUED: Answer = ("Valid", ["cancel", "resetBackoff"], CHECK, 200.0)
FAILED: Answer = ("Failed", ["cancel"], RETRY, None)

#: (state, input) -> (state after, events in order, timers pending after,
#: notAfter after); C{None} for notAfter means the state's own.  Events:
#: C{load}, C{order}, C{cancel} (of the read or order in flight),
#: C{resetBackoff}.  Every pair not listed is a late or stray notice the
#: state ignores: nothing changes.
ANSWERS: dict[tuple[str, str], Answer] = {
    ("Idle", "start"): ("Loading", ["load"], [], None),
    ("Idle", "stop"): ("Stopped", [], [], None),
    ("Loading", "found"): ("Valid", ["cancel"], CHECK, 100.0),
    ("Loading", "missing"): ("Ordering", ["order", "cancel"], [], None),
    ("Loading", "loadFailed"): FAILED,
    ("Loading", "stop"): STOP,
    ("Ordering", "issued"): ISSUED,
    ("Ordering", "failed"): FAILED,
    ("Ordering", "stop"): STOP,
    ("Valid", "checkDue"): ("Valid", [], CHECK, None),
    ("Valid", "renewalDue"): ("Renewing", ["order"], [], None),
    ("Valid", "stop"): ("Stopped", [], [], None),
    ("Renewing", "issued"): ISSUED,
    ("Renewing", "failed"): FAILED,
    ("Renewing", "stop"): STOP,
    ("Failed", "retryDue"): ("Loading", ["load"], [], None),
    ("Failed", "stop"): ("Stopped", [], [], None),
}


class LifecycleMachineTests(SynchronousTestCase):
    """
    Every input in every state of the certificate lifecycle.
    """

    def reach(self, state: str) -> tuple[CertificateLifecycle, RenewalCore]:
        self.clock = Clock()
        self.events: list[str] = []
        backoff = RecordingBackoff(60.0, 3600.0, jitter=False)
        backoff.events = self.events
        recorder = Recorder(self.events)
        core = RenewalCore(
            ("a.example.test",),
            cast(ICertificateIssuer, recorder),
            cast(ICertificateStore, recorder),
            self.clock,
            renewBefore=50.0,
            checkInterval=30.0,
            backoff=backoff,
        )
        machine = newLifecycle(core)
        for step in PATHS[state]:
            CALLS[step](machine)
        self.assertEqual(stateOf(machine), state)
        del self.events[:]
        return machine, core

    def timers(self) -> list[float]:
        return [c.getTime() - self.clock.seconds() for c in self.clock.getDelayedCalls()]

    def test_alphabet(self) -> None:
        """
        The calls and describe are the machine's whole input alphabet.
        """
        self.assertEqual(
            set(CALLS) | {"describe"}, {n for n in vars(CertificateLifecycle) if not n.startswith("_")}
        )

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state: the state after, what was asked or
        cancelled in order, the timers left, the expiry kept; unlisted
        pairs change nothing.
        """
        for state in PATHS:
            for name in CALLS:
                machine, core = self.reach(state)
                before = (core.notAfter, self.timers())
                after, events, timers, notAfter = ANSWERS.get(
                    (state, name), (state, [], before[1], before[0])
                )
                self.assertIsNone(CALLS[name](machine))
                self.assertEqual(
                    (stateOf(machine), self.events, self.timers(), core.notAfter),
                    (after, events, timers, before[0] if notAfter is None else notAfter),
                    f"{state} + {name}",
                )

    def test_describeInEveryState(self) -> None:
        """
        Every state answers describe with its name, the expiry of the
        certificate in use and (Failed) why; asking changes nothing.
        """
        for state, expected in DESCRIBED.items():
            machine, core = self.reach(state)
            timers = self.timers()
            self.assertEqual(machine.describe(), expected, state)
            self.assertEqual((stateOf(machine), self.events, self.timers()), (state, [], timers))

    def test_leavingCancels(self) -> None:
        """
        Whatever a state holds is gone once stop leaves it: no timer, and
        the read or order in flight cancelled.
        """
        for state in PATHS:
            machine, core = self.reach(state)
            machine.stop()
            self.assertEqual(self.clock.getDelayedCalls(), [], state)

    def test_checkDueInWindow(self) -> None:
        """
        The check timer sleeps at most checkInterval; once the certificate
        is within renewBefore of expiry the check renews it.
        """
        machine, core = self.reach("Valid")
        self.clock.advance(30.0)
        self.assertEqual((stateOf(machine), self.timers()), ("Valid", [20.0]))
        self.clock.advance(20.0)
        self.assertEqual((stateOf(machine), self.events, self.timers()), ("Renewing", ["order"], []))

    def test_retryTimer(self) -> None:
        """
        The retry timer of Failed feeds retryDue: the store is read again.
        """
        machine, core = self.reach("Failed")
        self.clock.advance(60.0)
        self.assertEqual((stateOf(machine), self.events), ("Loading", ["load"]))

    def test_failureThenRetryLogged(self) -> None:
        """
        A failed order or read logs why, then when it is tried again, in
        that order (as the operator guide shows them).
        """
        from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher

        events: list[LogEvent] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        for state, step, why in (
            ("Ordering", "failed", "issuance failed: refused"),
            ("Loading", "loadFailed", "cannot read the store: disk"),
        ):
            machine, core = self.reach(state)
            del events[:]
            CALLS[step](machine)
            lines = [formatEvent(e) for e in events if e.get("log_namespace") == "acme.renewal"]
            told = [line for line in lines if why in line or "retrying" in line]
            self.assertEqual(
                told,
                [f"certificate a.example.test: {why}", "certificate a.example.test: retrying in 60 s"],
            )
