"""
Real health checks for Goop2's C{/healthz}: the database answers and the
event loop is not lagging.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from suite.goop.webutil import finishRequest
from suite.web.health import HealthReport
from suite.web.interfaces import IHealth

log = Logger()

__all__ = ["LoopLag", "DatabaseHealth", "HealthzResource"]


@implementer(IHealth)
class LoopLag:
    """Measure how late a periodic call fires: the reactor's lag."""

    name = "event_loop"

    def __init__(self, clock: Any, interval: float = 0.5, maxLag: float = 1.0) -> None:
        self.clock = clock
        self.interval = interval
        self.maxLag = maxLag
        self.lag = 0.0
        self._expected = 0.0
        self._call = LoopingCall(self._tick)
        self._call.clock = clock

    def start(self) -> None:
        self._expected = self.clock.seconds() + self.interval
        self._call.start(self.interval, now=False)

    def stop(self) -> None:
        if self._call.running:
            self._call.stop()

    def _tick(self) -> None:
        now = self.clock.seconds()
        self.lag = max(0.0, now - self._expected)
        self._expected = now + self.interval

    def check(self) -> HealthReport:
        ok = self.lag <= self.maxLag
        reasons = () if ok else (f"event loop lag {self.lag * 1000:.0f} ms",)
        return HealthReport(ok, reasons, {"lag_ms": round(self.lag * 1000, 1)})


@implementer(IHealth)
class DatabaseHealth:
    """Run a trivial query on the database thread, with a deadline."""

    def __init__(
        self, name: str, ping: Callable[[], Deferred[Any]], clock: Any, timeout: float = 2.0
    ) -> None:
        self.name = name
        self.ping = ping
        self.clock = clock
        self.timeout = timeout

    def check(self) -> Deferred[HealthReport]:
        d = self.ping()
        d.addTimeout(self.timeout, self.clock)
        d.addCallbacks(
            lambda ok: HealthReport(bool(ok), () if ok else ("database did not answer",)),
            lambda f: HealthReport(False, (f"database: {f.getErrorMessage() or f.type.__name__}",)),
        )
        return d


class HealthzResource(Resource):
    """C{/healthz}: 200 C{{"status": "ok", ...}} or 503 with the reasons."""

    isLeaf = True

    def __init__(self, providers: Callable[[], Sequence[IHealth]]) -> None:
        super().__init__()
        self.providers = providers

    def render_GET(self, request: Request) -> int:
        providers = list(self.providers())
        results: dict[str, Any] = {}
        reasons: list[str] = []

        async def collect() -> None:
            for p in providers:
                try:
                    rep: Any = await maybeDeferred(p.check)
                except Exception as e:
                    # A provider reports trouble in its HealthReport; one that
                    # raises is a bug.  /healthz still answers (the check reads
                    # as failed, with the error) and the traceback is logged.
                    log.failure("health check {name} raised", name=p.name)
                    rep = HealthReport(False, (str(e) or type(e).__name__,))
                results[p.name] = {"ready": rep.ready, **dict(rep.details)}
                reasons.extend(f"{p.name}: {r}" for r in rep.reasons)

        def done(_: object) -> None:
            ok = not reasons
            request.setResponseCode(200 if ok else 503)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            body = {"status": "ok" if ok else "unhealthy", "checks": results, "reasons": reasons}
            finishRequest(request, json.dumps(body).encode() + b"\n")

        Deferred.fromCoroutine(collect()).addCallback(done)
        return NOT_DONE_YET
