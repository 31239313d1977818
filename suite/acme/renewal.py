"""
Keep certificates issued and renewed: L{RenewalService} runs one lifecycle
machine per certificate on an injected clock.

The lifecycle machine (automat C{TypeMachineBuilder}):

  inputs (L{CertificateLifecycle}): C{start}, C{found(notAfter)},
      C{missing}, C{loadFailed(reason)}, C{checkDue}, C{renewalDue},
      C{issued(notAfter)}, C{failed(reason)}, C{retryDue}, C{stop}.
  outputs (L{RenewalCore} methods): C{load}, C{order}, C{scheduleCheck},
      C{examine}, C{scheduleRetry}, C{resetBackoff}, C{cancelTimer},
      C{cancelWork}.
  states: Idle -> Loading -> Ordering (no usable certificate in the store)
      or Valid; Valid -> Renewing once the certificate is within
      C{renewBefore} of expiry; Ordering/Renewing -> Valid when issued, or
      Failed (jittered exponential backoff) -> Loading again; any -> Stopped.

The store is the source of truth: after a failure the machine reloads it,
so a certificate written meanwhile (by another process) is picked up.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachine, TypeMachineBuilder
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.acme.interfaces import ICertificateIssuer, ICertificateStore
from suite.acme.store import StoredCertificate
from suite.backoff import Backoff

__all__ = [
    "DAY",
    "CertificateLifecycle",
    "RenewalCore",
    "Backoff",
    "LifecycleMachine",
    "newLifecycle",
    "RenewalService",
]

log = Logger(namespace="acme.renewal")

DAY = 86400.0


class CertificateLifecycle(Protocol):
    """
    Inputs of one certificate's lifecycle.
    """

    def start(self) -> None:
        """
        The service started: look in the store.
        """

    def found(self, notAfter: float) -> None:
        """
        The store holds a certificate for every wanted name, expiring at
        C{notAfter} (seconds since the epoch).
        """

    def missing(self) -> None:
        """
        The store holds no certificate (or one that lacks a wanted name).
        """

    def loadFailed(self, reason: str) -> None:
        """
        The store could not be read.
        """

    def checkDue(self) -> None:
        """
        The expiry check timer fired.
        """

    def renewalDue(self) -> None:
        """
        The certificate is within the renewal window.
        """

    def issued(self, notAfter: float) -> None:
        """
        A new certificate was issued and saved.
        """

    def failed(self, reason: str) -> None:
        """
        Issuing (or saving) failed.
        """

    def retryDue(self) -> None:
        """
        The backoff after a failure is over.
        """

    def stop(self) -> None:
        """
        The service stopped.
        """


@dataclass
class RenewalCore:
    """
    The collaborators and per-certificate data of one lifecycle machine.

    @ivar names: the certificate's domain names; it is stored under the first.
    @ivar renewBefore: renew when the certificate expires within this many
        seconds.
    @ivar checkInterval: longest sleep between expiry checks (so a clock
        jump or a long suspend is noticed).
    @ivar onIssued: called with C{(name, certificate)} after each issuance
        was saved (to reload a TLS listener).
    @ivar onLoaded: called with C{(name, certificate)} each time a usable
        certificate is read from the store (at start and after a failure,
        when another process may have saved one).
    @ivar history: the states entered, for logs and tests.
    """

    names: tuple[str, ...]
    issuer: ICertificateIssuer
    store: ICertificateStore
    clock: IReactorTime
    renewBefore: float = 30 * DAY
    checkInterval: float = 12 * 3600.0
    backoff: Backoff = field(default_factory=lambda: Backoff(60.0, 6 * 3600.0))
    onIssued: Callable[[str, StoredCertificate], object] | None = None
    onLoaded: Callable[[str, StoredCertificate], object] | None = None
    machine: Any = None
    notAfter: float | None = None
    timer: IDelayedCall | None = None
    work: Deferred[Any] | None = None
    history: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """
        The store key: the first domain name.
        """
        return self.names[0]

    def enter(self, state: str) -> None:
        self.history.append(state)
        del self.history[:-64]
        log.debug("certificate {name}: {state}", name=self.name, state=state)

    # -- outputs -------------------------------------------------------------

    def load(self) -> None:
        """
        Read the stored certificate and feed C{found}/C{missing}/C{loadFailed}.
        """

        def loaded(stored: StoredCertificate | None) -> None:
            self.work = None
            if stored is None or not set(self.names) <= set(stored.names):
                self.machine.missing()
                return
            if self.onLoaded is not None:
                try:
                    self.onLoaded(self.name, stored)
                except Exception:
                    log.failure("certificate {name}: onLoaded failed", name=self.name)
            self.machine.found(stored.notAfter)

        def broken(failure: Failure) -> None:
            self.work = None
            self.machine.loadFailed(failure.getErrorMessage())

        d = self.store.loadCertificate(self.name)
        self.work = d
        d.addCallbacks(loaded, broken)

    def order(self) -> None:
        """
        Ask the issuer for a certificate, save it, feed C{issued}/C{failed}.
        """

        async def obtain() -> float:
            stored = await self.issuer.issue(list(self.names))
            await self.store.saveCertificate(self.name, stored)
            if self.onIssued is not None:
                try:
                    self.onIssued(self.name, stored)
                except Exception:
                    # the certificate is saved: a failing listener is logged, not retried
                    log.failure("certificate {name}: onIssued failed", name=self.name)
            notAfter: float = stored.notAfter
            return notAfter

        def done(notAfter: float) -> None:
            self.work = None
            self.machine.issued(notAfter)

        def broken(failure: Failure) -> None:
            self.work = None
            self.machine.failed(failure.getErrorMessage())

        d = Deferred.fromCoroutine(obtain())
        self.work = d
        d.addCallbacks(done, broken)

    def dueAt(self) -> float:
        """
        When renewal is due for the current certificate.
        """
        assert self.notAfter is not None
        return self.notAfter - self.renewBefore

    def scheduleCheck(self) -> None:
        """
        Wake up at the renewal time, or after C{checkInterval} if sooner.
        """
        self.cancelTimer()
        delay = max(0.0, min(self.checkInterval, self.dueAt() - self.clock.seconds()))
        self.timer = self.clock.callLater(delay, self._fire, "checkDue")

    def examine(self) -> None:
        """
        Feed C{renewalDue} if the certificate is in its renewal window,
        otherwise sleep again.
        """
        if self.clock.seconds() >= self.dueAt():
            self.machine.renewalDue()
        else:
            self.scheduleCheck()

    def scheduleRetry(self) -> None:
        """
        Retry after the next backoff delay.
        """
        self.cancelTimer()
        delay = self.backoff.next()
        log.info("certificate {name}: retrying in {delay:.0f} s", name=self.name, delay=delay)
        self.timer = self.clock.callLater(delay, self._fire, "retryDue")

    def _fire(self, inputName: str) -> None:
        self.timer = None
        getattr(self.machine, inputName)()

    def cancelTimer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def cancelWork(self) -> None:
        work, self.work = self.work, None
        if work is not None:
            work.cancel()


def _build() -> TypeMachine[CertificateLifecycle, RenewalCore]:
    b = TypeMachineBuilder(CertificateLifecycle, RenewalCore)
    idle = b.state("Idle")
    loading = b.state("Loading")
    ordering = b.state("Ordering")
    valid = b.state("Valid")
    renewing = b.state("Renewing")
    failed = b.state("Failed")
    stopped = b.state("Stopped")
    C = CertificateLifecycle

    @idle.upon(C.start).to(loading)
    def _start(m: CertificateLifecycle, core: RenewalCore) -> None:
        core.enter("Loading")
        core.load()

    @loading.upon(C.missing).to(ordering)
    def _missing(m: CertificateLifecycle, core: RenewalCore) -> None:
        core.enter("Ordering")
        log.info("certificate {name}: none stored, ordering one", name=core.name)
        core.order()

    @loading.upon(C.found).to(valid)
    def _found(m: CertificateLifecycle, core: RenewalCore, notAfter: float) -> None:
        core.enter("Valid")
        core.notAfter = notAfter
        log.info("certificate {name}: stored, valid until {notAfter:.0f}", name=core.name, notAfter=notAfter)
        core.scheduleCheck()

    @loading.upon(C.loadFailed).to(failed)
    def _loadFailed(m: CertificateLifecycle, core: RenewalCore, reason: str) -> None:
        core.enter("Failed")
        log.error("certificate {name}: cannot read the store: {reason}", name=core.name, reason=reason)
        core.scheduleRetry()

    @valid.upon(C.checkDue).loop()
    def _checkDue(m: CertificateLifecycle, core: RenewalCore) -> None:
        core.examine()

    @valid.upon(C.renewalDue).to(renewing)
    def _renew(m: CertificateLifecycle, core: RenewalCore) -> None:
        core.enter("Renewing")
        core.cancelTimer()
        log.info("certificate {name}: renewing", name=core.name)
        core.order()

    for working in (ordering, renewing):

        @working.upon(C.issued).to(valid)
        def _issued(m: CertificateLifecycle, core: RenewalCore, notAfter: float) -> None:
            core.enter("Valid")
            core.backoff.reset()
            core.notAfter = notAfter
            log.info(
                "certificate {name}: issued, valid until {notAfter:.0f}", name=core.name, notAfter=notAfter
            )
            core.scheduleCheck()

        @working.upon(C.failed).to(failed)
        def _failed(m: CertificateLifecycle, core: RenewalCore, reason: str) -> None:
            core.enter("Failed")
            log.error("certificate {name}: issuance failed: {reason}", name=core.name, reason=reason)
            core.scheduleRetry()

    @failed.upon(C.retryDue).to(loading)
    def _retry(m: CertificateLifecycle, core: RenewalCore) -> None:
        core.enter("Loading")
        core.load()

    for s in (idle, loading, ordering, valid, renewing, failed):

        @s.upon(C.stop).to(stopped)
        def _stop(m: CertificateLifecycle, core: RenewalCore) -> None:
            core.enter("Stopped")
            core.cancelTimer()
            core.cancelWork()

    # Every other input is a late or stray notice: ignored where it lands.
    handled = {
        idle: {"start", "stop"},
        loading: {"missing", "found", "loadFailed", "stop"},
        ordering: {"issued", "failed", "stop"},
        valid: {"checkDue", "renewalDue", "stop"},
        renewing: {"issued", "failed", "stop"},
        failed: {"retryDue", "stop"},
        stopped: set(),
    }
    everything = (
        "start",
        "found",
        "missing",
        "loadFailed",
        "checkDue",
        "renewalDue",
        "issued",
        "failed",
        "retryDue",
    )
    for s, known in handled.items():
        for inputName in (*everything, "stop"):
            if inputName not in known:
                s.upon(getattr(C, inputName)).loop().returns(None)
    return b.build()


#: Build one per certificate with L{newLifecycle}.
LifecycleMachine = _build()


def newLifecycle(core: RenewalCore) -> CertificateLifecycle:
    """
    A lifecycle machine driving C{core}.
    """
    machine = LifecycleMachine(core)
    core.machine = machine
    return machine


class RenewalService(Service):
    """
    Issue missing certificates and renew expiring ones.

    @param issuer: obtains certificates (an L{suite.acme.client.ACMEClient}).
    @param store: keeps them.
    @param certificates: one sequence of domain names per certificate.
    @param clock: drives checks and backoff.
    @param renewBefore: renew this many seconds before expiry (30 days).
    @param rng: jitter source (seed it in tests).
    @param onIssued: called with C{(name, certificate)} after an issuance
        was saved.
    @param onLoaded: called with C{(name, certificate)} when a usable
        certificate is read from the store.
    """

    name = "acme-renewal"

    def __init__(
        self,
        issuer: ICertificateIssuer,
        store: ICertificateStore,
        certificates: Sequence[Sequence[str]],
        clock: IReactorTime,
        renewBefore: float = 30 * DAY,
        checkInterval: float = 12 * 3600.0,
        retryInitial: float = 60.0,
        retryMaximum: float = 6 * 3600.0,
        rng: random.Random | None = None,
        onIssued: Callable[[str, StoredCertificate], object] | None = None,
        onLoaded: Callable[[str, StoredCertificate], object] | None = None,
    ) -> None:
        self.issuer = ICertificateIssuer(issuer)
        self.store = ICertificateStore(store)
        self.clock = clock
        self.rng = rng or random.Random()
        self.renewBefore = renewBefore
        self.checkInterval = checkInterval
        self.retryInitial = retryInitial
        self.retryMaximum = retryMaximum
        self.onIssued = onIssued
        self.onLoaded = onLoaded
        self.cores: dict[str, RenewalCore] = {}
        self.machines: dict[str, CertificateLifecycle] = {}
        for names in certificates:
            self._add(names)

    def _add(self, names: Sequence[str]) -> CertificateLifecycle:
        if not names:
            raise ValueError("a certificate needs at least one name")
        core = RenewalCore(
            tuple(names),
            self.issuer,
            self.store,
            self.clock,
            renewBefore=self.renewBefore,
            checkInterval=self.checkInterval,
            backoff=Backoff(self.retryInitial, self.retryMaximum, random.Random(self.rng.random())),
            onIssued=self.onIssued,
            onLoaded=self.onLoaded,
        )
        if core.name in self.cores:
            raise ValueError(f"two certificates are stored under {core.name}")
        self.cores[core.name] = core
        machine = self.machines[core.name] = newLifecycle(core)
        return machine

    def add(self, names: Sequence[str]) -> bool:
        """
        Manage one more certificate (started at once when the service
        runs); L{False} if one is already stored under C{names[0]}.
        """
        if names and names[0] in self.cores:
            return False
        machine = self._add(names)
        if self.running:
            machine.start()
        return True

    def remove(self, name: str) -> bool:
        """
        Stop managing the certificate stored under C{name} (the stored one
        stays); L{False} if there is none.
        """
        machine = self.machines.pop(name, None)
        if machine is None:
            return False
        del self.cores[name]
        machine.stop()
        return True

    def startService(self) -> None:
        super().startService()
        for machine in self.machines.values():
            machine.start()

    def stopService(self) -> Deferred[None] | None:
        for machine in self.machines.values():
            machine.stop()
        stopped: Deferred[None] | None = super().stopService()
        return stopped
