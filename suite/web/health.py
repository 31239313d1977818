"""
Liveness (C{/healthz}) and readiness (C{/readyz}) resources.

C{/healthz} answers C{ok} while the process runs its reactor.  C{/readyz}
asks every L{IHealth} provider and answers C{200} with JSON when all are
ready, C{503} listing each provider's reasons otherwise.  A provider that
raises (or whose Deferred fails or times out) counts as not ready; the
exception text is the reason, the traceback goes to the log only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.components import registerAdapter
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from suite.web.errors import ExactPathMixin, JSONMethodsMixin, jsonResponse
from suite.web.interfaces import IHealth

__all__ = [
    "HealthReport",
    "FunctionHealth",
    "ServiceHealth",
    "LivenessResource",
    "ReadinessResource",
    "collectReadiness",
]

log = Logger()


@dataclass(frozen=True)
class HealthReport:
    """
    One provider's answer: C{ready}, the C{reasons} it is not (one short line
    each) and free-form JSON-able C{details}.
    """

    ready: bool
    reasons: Sequence[str] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.reasons, str):
            object.__setattr__(self, "reasons", (self.reasons,))
        else:
            object.__setattr__(self, "reasons", tuple(str(r) for r in self.reasons))
        object.__setattr__(self, "ready", bool(self.ready))

    def toJSON(self) -> dict[str, Any]:
        """
        The JSON shape used in C{/readyz}.
        """
        return {"ready": self.ready, "reasons": list(self.reasons), "details": dict(self.details)}


@implementer(IHealth)
class FunctionHealth:
    """
    An L{IHealth} made from a name and a function returning a
    L{HealthReport} (or a Deferred of one).
    """

    def __init__(self, name: str, check: Callable[[], HealthReport | Deferred[HealthReport]]) -> None:
        self.name = name
        self._check = check

    def check(self) -> HealthReport | Deferred[HealthReport]:
        return self._check()


@implementer(IHealth)
class ServiceHealth:
    """
    The default readiness of a plain L{IService}: ready while running.
    Registered as the C{IService -> IHealth} adapter, so a daemon may pass
    its services straight to the admin site; a service with richer health
    provides L{IHealth} itself.
    """

    def __init__(self, service: IService) -> None:
        self.service = service
        self.name = service.name or type(service).__name__

    def check(self) -> HealthReport:
        if self.service.running:
            return HealthReport(True)
        return HealthReport(False, (f"service {self.name} is not running",))


def _providerName(provider: object, index: int) -> str:
    name = getattr(provider, "name", None)
    return str(name) if name else f"provider{index}"


def collectReadiness(
    providers: Sequence[IHealth],
    clock: IReactorTime | None = None,
    timeout: float = 5.0,
) -> Deferred[dict[str, HealthReport]]:
    """
    Ask every provider; fire with C{{name: HealthReport}}.  Never fails: a
    provider that raises, fails, returns something else or (with a C{clock})
    takes longer than C{timeout} seconds is reported not ready.
    """

    def one(index: int, provider: IHealth) -> Deferred[tuple[str, HealthReport]]:
        name = _providerName(provider, index)
        d: Deferred[Any] = maybeDeferred(provider.check)
        if clock is not None and not d.called:
            d.addTimeout(timeout, clock)

        def checked(result: Any) -> tuple[str, HealthReport]:
            if not isinstance(result, HealthReport):
                return name, HealthReport(
                    False, (f"health check returned {type(result).__name__}, not a HealthReport",)
                )
            return name, result

        def failed(f: Failure) -> tuple[str, HealthReport]:
            log.failure("health check {provider} failed", f, provider=name)
            text = f.getErrorMessage() or type(f.value).__name__
            reason = " ".join(text.split())
            if f.check(Exception) and not reason:
                reason = "health check failed"
            return name, HealthReport(False, (f"health check failed: {reason}",))

        d.addCallbacks(checked, failed)
        return d

    deferreds = [one(i, p) for i, p in enumerate(providers)]
    gathered: Deferred[Any] = gatherResults(deferreds)
    gathered.addCallback(dict)
    return gathered


class LivenessResource(ExactPathMixin, JSONMethodsMixin, Resource):
    """
    C{/healthz}: C{200 ok} for as long as the reactor answers.
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return b"ok\n"


class ReadinessResource(ExactPathMixin, JSONMethodsMixin, Resource):
    """
    C{/readyz}: JSON C{{"ready": bool, "reasons": ["name: reason", ...],
    "checks": {name: {"ready", "reasons", "details"}}}}; C{200} when every
    provider is ready, C{503} otherwise.
    """

    isLeaf = True

    def __init__(
        self,
        providers: Sequence[IHealth],
        clock: IReactorTime | None = None,
        timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.providers = list(providers)
        self.clock = clock
        self.timeout = timeout

    def render_GET(self, request: Request) -> int | bytes:
        d = collectReadiness(self.providers, self.clock, self.timeout)
        finished = [False]
        request.notifyFinish().addErrback(lambda _: finished.__setitem__(0, True))

        def answer(reports: dict[str, HealthReport]) -> None:
            if finished[0]:
                return
            reasons = [f"{name}: {reason}" for name, r in reports.items() for reason in r.reasons]
            for name, r in reports.items():
                if not r.ready and not r.reasons:
                    reasons.append(f"{name}: not ready")
            ready = all(r.ready for r in reports.values())
            body = {
                "ready": ready,
                "reasons": reasons,
                "checks": {name: r.toJSON() for name, r in reports.items()},
            }
            request.write(jsonResponse(request, body, 200 if ready else 503))
            request.finish()

        d.addCallback(answer)
        d.addErrback(lambda f: log.failure("rendering /readyz failed", f))
        return NOT_DONE_YET


registerAdapter(ServiceHealth, IService, IHealth)
