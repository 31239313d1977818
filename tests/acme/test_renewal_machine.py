"""
The certificate lifecycle machine alone (L{suite.acme.renewal}): every input
in every state, over a core whose outputs are recorded instead of run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from suite.acme.interfaces import ICertificateIssuer, ICertificateStore
from suite.acme.renewal import Backoff, CertificateLifecycle, RenewalCore, newLifecycle


def stateOf(inputs: CertificateLifecycle) -> str:
    # automat keeps the current state on the machine's transitioner.
    return inputs.__automat_transitioner__._state.name  # type: ignore[attr-defined]


class RecordingBackoff(Backoff):
    events: list[str]

    def reset(self) -> None:
        self.events.append("resetBackoff")
        super().reset()


class RecordingCore(RenewalCore):
    """
    A core whose outputs record their names (and the states entered) in
    C{events}; nothing is loaded, ordered or timed.
    """

    events: list[str]

    def enter(self, state: str) -> None:
        super().enter(state)
        self.events.append(f"enter {state}")

    def load(self) -> None:
        self.events.append("load")

    def order(self) -> None:
        self.events.append("order")

    def scheduleCheck(self) -> None:
        self.events.append("scheduleCheck")

    def examine(self) -> None:
        self.events.append("examine")

    def scheduleRetry(self) -> None:
        self.events.append("scheduleRetry")

    def cancelTimer(self) -> None:
        self.events.append("cancelTimer")

    def cancelWork(self) -> None:
        self.events.append("cancelWork")


#: One call of each input (the machine's whole alphabet).
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

STOP = ("Stopped", ["enter Stopped", "cancelTimer", "cancelWork"], None)
ISSUED = ("Valid", ["enter Valid", "resetBackoff", "scheduleCheck"], 200.0)
FAILED = ("Failed", ["enter Failed", "scheduleRetry"], None)

#: (state, input) -> (state after, outputs, notAfter after); C{None} for
#: notAfter means the state's own (100 once a certificate was found).
#: Every pair not listed is a late or stray notice the state ignores.
ANSWERS: dict[tuple[str, str], tuple[str, list[str], float | None]] = {
    ("Idle", "start"): ("Loading", ["enter Loading", "load"], None),
    ("Idle", "stop"): STOP,
    ("Loading", "found"): ("Valid", ["enter Valid", "scheduleCheck"], 100.0),
    ("Loading", "missing"): ("Ordering", ["enter Ordering", "order"], None),
    ("Loading", "loadFailed"): FAILED,
    ("Loading", "stop"): STOP,
    ("Ordering", "issued"): ISSUED,
    ("Ordering", "failed"): FAILED,
    ("Ordering", "stop"): STOP,
    ("Valid", "checkDue"): ("Valid", ["examine"], None),
    ("Valid", "renewalDue"): ("Renewing", ["enter Renewing", "cancelTimer", "order"], None),
    ("Valid", "stop"): STOP,
    ("Renewing", "issued"): ISSUED,
    ("Renewing", "failed"): FAILED,
    ("Renewing", "stop"): STOP,
    ("Failed", "retryDue"): ("Loading", ["enter Loading", "load"], None),
    ("Failed", "stop"): STOP,
}


class LifecycleMachineTests(SynchronousTestCase):
    """
    Every input in every state of the certificate lifecycle.
    """

    def reach(self, state: str) -> tuple[CertificateLifecycle, RecordingCore]:
        backoff = RecordingBackoff(60.0, 3600.0)
        core = RecordingCore(
            ("a.example.test",),
            cast(ICertificateIssuer, None),
            cast(ICertificateStore, None),
            Clock(),
            backoff=backoff,
        )
        core.events = backoff.events = []
        machine = newLifecycle(core)
        for step in PATHS[state]:
            CALLS[step](machine)
        self.assertEqual(stateOf(machine), state)
        del core.events[:]
        return machine, core

    def test_alphabet(self) -> None:
        """
        The calls are the machine's whole input alphabet.
        """
        self.assertEqual(set(CALLS), {n for n in vars(CertificateLifecycle) if not n.startswith("_")})

    def test_everyInputInEveryState(self) -> None:
        """
        Each input in each state: the state after, the outputs in order,
        the expiry it keeps; unlisted pairs change nothing.
        """
        for state in PATHS:
            for name in CALLS:
                machine, core = self.reach(state)
                before = core.notAfter
                after, events, notAfter = ANSWERS.get((state, name), (state, [], None))
                self.assertIsNone(CALLS[name](machine))
                self.assertEqual(
                    (stateOf(machine), core.events, core.notAfter),
                    (after, events, before if notAfter is None else notAfter),
                    f"{state} + {name}",
                )
