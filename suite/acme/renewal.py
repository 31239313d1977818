"""
Keep certificates issued and renewed: L{RenewalService} runs one lifecycle
machine per certificate on an injected clock.

The lifecycle machine (automat C{TypeMachineBuilder}):

  inputs (L{CertificateLifecycle}): C{start}, C{found(notAfter)},
      C{missing}, C{loadFailed(reason)}, C{checkDue}, C{renewalDue},
      C{issued(notAfter)}, C{failed(reason)}, C{retryDue}, C{stop}; the
      query C{describe()} (a L{LifecycleStatus}), answered in every state.
  outputs (L{RenewalCore} methods): C{load}, C{order}, C{scheduleCheck},
      C{scheduleRetry}, reset the backoff; leaving a state cancels its
      work or timer.
  states: Idle -> Loading (data: the store read) -> Ordering (data: the
      order; no usable certificate in the store) or Valid (data: the
      expiry and the check timer); Valid -> Renewing (data: the order)
      once the certificate is within C{renewBefore} of expiry;
      Ordering/Renewing -> Valid when issued, or Failed (data: the reason
      and the retry timer, a jittered exponential backoff) -> Loading
      again; any -> Stopped.

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
    "LifecycleStatus",
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

    def describe(self) -> LifecycleStatus:
        """
        The state the certificate is in, for status pages and metrics.
        """


@dataclass(frozen=True)
class LifecycleStatus:
    """
    What L{CertificateLifecycle.describe} answers.

    @ivar state: the state's name (C{Idle}, C{Loading}, C{Ordering},
        C{Valid}, C{Renewing}, C{Failed}, C{Stopped}).
    @ivar notAfter: when the certificate in use expires, if one is known.
    @ivar reason: why the last attempt failed (C{Failed} only).
    """

    state: str
    notAfter: float | None
    reason: str | None = None


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
    @ivar notAfter: when the certificate in use expires, once one was
        found or issued.
    @ivar history: the states entered, for logs and tests (the machine
        answers C{describe} with its current state).
    @ivar retryDelay: seconds until the retry of the last failed attempt.
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
    notAfter: float | None = None
    history: list[str] = field(default_factory=list)
    #: seconds until the retry of the last failed attempt
    retryDelay: float = 0.0

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

    def load(self, inputs: CertificateLifecycle) -> Deferred[None]:
        """
        Read the stored certificate and feed C{found}/C{missing}/C{loadFailed}.
        """

        def loaded(stored: StoredCertificate | None) -> None:
            if stored is None or not set(self.names) <= set(stored.names):
                inputs.missing()
                return
            if self.onLoaded is not None:
                try:
                    self.onLoaded(self.name, stored)
                except Exception:  # a listener's bug must not stop renewal: logged
                    log.failure("certificate {name}: onLoaded failed", name=self.name)
            inputs.found(stored.notAfter)

        def broken(failure: Failure) -> None:
            inputs.loadFailed(failure.getErrorMessage())

        return self.store.loadCertificate(self.name).addCallbacks(loaded, broken)

    def order(self, inputs: CertificateLifecycle) -> Deferred[None]:
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

        def broken(failure: Failure) -> None:
            inputs.failed(failure.getErrorMessage())

        return Deferred.fromCoroutine(obtain()).addCallbacks(inputs.issued, broken)

    def dueAt(self, notAfter: float) -> float:
        """
        When renewal is due for a certificate expiring at C{notAfter}.
        """
        return notAfter - self.renewBefore

    def scheduleCheck(self, inputs: CertificateLifecycle, notAfter: float) -> IDelayedCall:
        """
        Wake up at the renewal time, or after C{checkInterval} if sooner.
        """
        delay = max(0.0, min(self.checkInterval, self.dueAt(notAfter) - self.clock.seconds()))
        return self.clock.callLater(delay, inputs.checkDue)

    def scheduleRetry(self, inputs: CertificateLifecycle) -> IDelayedCall:
        """
        Retry after the next backoff delay.
        """
        delay = self.retryDelay = self.backoff.next()
        return self.clock.callLater(delay, inputs.retryDue)

    def logRetry(self) -> None:
        """
        Say when the failed attempt is tried again (after the line saying
        why it failed: the state's data, which scheduled it, is built first).
        """
        log.info("certificate {name}: retrying in {delay:.0f} s", name=self.name, delay=self.retryDelay)


@dataclass
class Working:
    """
    State data of C{Loading}, C{Ordering} and C{Renewing}: the store read
    or the order in flight.
    """

    work: Deferred[None]

    def cancel(self) -> None:
        self.work.cancel()


@dataclass
class Holding:
    """
    State data of C{Valid}: the certificate's expiry and the timer of the
    next expiry check.
    """

    notAfter: float
    timer: IDelayedCall

    def cancel(self) -> None:
        if self.timer.active():
            self.timer.cancel()


@dataclass
class Waiting:
    """
    State data of C{Failed}: why, and the timer of the retry.
    """

    reason: str
    timer: IDelayedCall

    def cancel(self) -> None:
        if self.timer.active():
            self.timer.cancel()


def _describer(name: str) -> Callable[[CertificateLifecycle, RenewalCore], LifecycleStatus]:
    """
    The answer of state C{name} to C{describe}.
    """

    def describe(m: CertificateLifecycle, core: RenewalCore) -> LifecycleStatus:
        return LifecycleStatus(name, core.notAfter)

    return describe


def _build() -> TypeMachine[CertificateLifecycle, RenewalCore]:
    b = TypeMachineBuilder(CertificateLifecycle, RenewalCore)
    C = CertificateLifecycle

    def loadingData(m: CertificateLifecycle, core: RenewalCore) -> Working:
        return Working(core.load(m))

    def orderData(m: CertificateLifecycle, core: RenewalCore) -> Working:
        return Working(core.order(m))

    def validData(m: CertificateLifecycle, core: RenewalCore, notAfter: float) -> Holding:
        return Holding(notAfter, core.scheduleCheck(m, notAfter))

    def failedData(m: CertificateLifecycle, core: RenewalCore, reason: str) -> Waiting:
        return Waiting(reason, core.scheduleRetry(m))

    idle = b.state("Idle")
    loading = b.state("Loading", loadingData)
    ordering = b.state("Ordering", orderData)
    valid = b.state("Valid", validData)
    renewing = b.state("Renewing", orderData)
    failed = b.state("Failed", failedData)
    stopped = b.state("Stopped")

    @idle.upon(C.start).to(loading)
    def _start(m: CertificateLifecycle, core: RenewalCore) -> None:
        core.enter("Loading")

    @loading.upon(C.missing).to(ordering)
    def _missing(m: CertificateLifecycle, core: RenewalCore, data: Working) -> None:
        data.cancel()
        core.enter("Ordering")
        log.info("certificate {name}: none stored, ordering one", name=core.name)

    @loading.upon(C.found).to(valid)
    def _found(m: CertificateLifecycle, core: RenewalCore, data: Working, notAfter: float) -> None:
        data.cancel()
        core.enter("Valid")
        core.notAfter = notAfter
        log.info("certificate {name}: stored, valid until {notAfter:.0f}", name=core.name, notAfter=notAfter)

    @loading.upon(C.loadFailed).to(failed)
    def _loadFailed(m: CertificateLifecycle, core: RenewalCore, data: Working, reason: str) -> None:
        data.cancel()
        core.enter("Failed")
        log.error("certificate {name}: cannot read the store: {reason}", name=core.name, reason=reason)
        core.logRetry()

    @valid.upon(C.checkDue).loop()
    def _checkDue(m: CertificateLifecycle, core: RenewalCore, data: Holding) -> None:
        # Feed renewalDue in the renewal window, otherwise sleep again.
        if core.clock.seconds() >= core.dueAt(data.notAfter):
            m.renewalDue()
        else:
            data.cancel()
            data.timer = core.scheduleCheck(m, data.notAfter)

    @valid.upon(C.renewalDue).to(renewing)
    def _renew(m: CertificateLifecycle, core: RenewalCore, data: Holding) -> None:
        data.cancel()
        core.enter("Renewing")
        log.info("certificate {name}: renewing", name=core.name)

    for working in (ordering, renewing):

        @working.upon(C.issued).to(valid)
        def _issued(m: CertificateLifecycle, core: RenewalCore, data: Working, notAfter: float) -> None:
            data.cancel()
            core.enter("Valid")
            core.backoff.reset()
            core.notAfter = notAfter
            log.info(
                "certificate {name}: issued, valid until {notAfter:.0f}", name=core.name, notAfter=notAfter
            )

        @working.upon(C.failed).to(failed)
        def _failed(m: CertificateLifecycle, core: RenewalCore, data: Working, reason: str) -> None:
            data.cancel()
            core.enter("Failed")
            log.error("certificate {name}: issuance failed: {reason}", name=core.name, reason=reason)
            core.logRetry()

    @failed.upon(C.retryDue).to(loading)
    def _retry(m: CertificateLifecycle, core: RenewalCore, data: Waiting) -> None:
        data.cancel()
        core.enter("Loading")

    @idle.upon(C.stop).to(stopped)
    def _stopIdle(m: CertificateLifecycle, core: RenewalCore) -> None:
        core.enter("Stopped")

    for working in (loading, ordering, renewing):

        @working.upon(C.stop).to(stopped)
        def _stopWork(m: CertificateLifecycle, core: RenewalCore, data: Working) -> None:
            data.cancel()
            core.enter("Stopped")

    @valid.upon(C.stop).to(stopped)
    def _stopValid(m: CertificateLifecycle, core: RenewalCore, data: Holding) -> None:
        data.cancel()
        core.enter("Stopped")

    @failed.upon(C.stop).to(stopped)
    def _stopFailed(m: CertificateLifecycle, core: RenewalCore, data: Waiting) -> None:
        data.cancel()
        core.enter("Stopped")

    # describe: every state answers with its name (Failed also with why).
    idle.upon(C.describe).loop()(_describer("Idle"))
    loading.upon(C.describe, nodata=True).loop()(_describer("Loading"))
    ordering.upon(C.describe, nodata=True).loop()(_describer("Ordering"))
    valid.upon(C.describe, nodata=True).loop()(_describer("Valid"))
    renewing.upon(C.describe, nodata=True).loop()(_describer("Renewing"))
    stopped.upon(C.describe).loop()(_describer("Stopped"))

    @failed.upon(C.describe).loop()
    def _describeFailed(m: CertificateLifecycle, core: RenewalCore, data: Waiting) -> LifecycleStatus:
        return LifecycleStatus("Failed", core.notAfter, data.reason)

    # Every other input is a late or stray notice: ignored where it lands.
    handled: dict[Any, set[str]] = {
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
    return LifecycleMachine(core)


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
