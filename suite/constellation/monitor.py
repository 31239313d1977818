"""
Docker health monitoring: every C{interval} seconds (10 by default) and
soon after any event of a watched container, list the containers matching
the label selectors, inspect them and hand the result to C{publish}.

The engine's event stream (health_status, start, die, destroy, ...) only
makes changes show sooner; the periodic check alone is enough, so a stream
that fails is retried with backoff and never stops monitoring.  While the
engine cannot be reached the last published containers stay as they were;
the failure is logged once (and again when it changes) and shown by
L{DockerMonitor.status}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from suite.backoff import Backoff
from suite.constellation.docker import Container, DockerError, EventStream
from suite.constellation.interfaces import IContainerEngine
from suite.serial import SerialJob

__all__ = ["DockerMonitor"]

log = Logger(namespace="constellation.docker")


class DockerMonitor(Service):
    """
    Watch the containers of C{client} matching C{labels}.
    """

    name = "docker-monitor"

    def __init__(
        self,
        client: IContainerEngine,
        clock: IReactorTime,
        labels: Sequence[str],
        publish: Callable[[list[Container]], None],
        interval: float = 10.0,
        useEvents: bool = True,
        eventDelay: float = 0.2,
    ) -> None:
        self.client = IContainerEngine(client)
        self.clock = clock
        self.labels = list(labels)
        self.publish = publish
        self.interval = interval
        self.useEvents = useEvents
        self.eventDelay = eventDelay
        self.backoff = Backoff(1.0, 30.0)
        self.lastError: str | None = None
        self.checks = 0
        self.containers: list[Container] | None = None
        self._next: IDelayedCall | None = None
        self._soon: IDelayedCall | None = None
        # One check at a time; one asked for while it runs follows it at once.
        self._checks = SerialJob(self._startCheck, "Docker health check", log=log)
        self._stream: EventStream | None = None
        self._streamRetry: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        log.info(
            "service health monitoring: watching Docker containers on {endpoint} (labels {labels}) "
            "every {interval:g} s",
            endpoint=self.client.description,
            labels=",".join(self.labels) or "any",
            interval=self.interval,
        )
        self.check()
        if self.useEvents:
            self._follow()

    def stopService(self) -> None:
        super().stopService()
        self._checks.stop()
        for call in (self._next, self._soon, self._streamRetry):
            if call is not None and call.active():
                call.cancel()
        self._next = self._soon = self._streamRetry = None
        if self._stream is not None:
            self._stream.stop()
            self._stream = None

    def status(self) -> dict[str, Any]:
        """
        For C{/readyz} details and C{/api/state}.
        """
        return {
            "endpoint": self.client.description,
            "apiVersion": self.client.apiVersion,
            "labels": self.labels,
            "containers": None if self.containers is None else len(self.containers),
            "checks": self.checks,
            "error": self.lastError,
        }

    # -- checks ----------------------------------------------------------

    def check(self) -> None:
        """
        Check now (or right after the check in progress); the next periodic
        check comes C{interval} seconds after this one ends.
        """
        self._checks.request()

    def _startCheck(self) -> Deferred[None]:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        return Deferred.fromCoroutine(self._check()).addBoth(self._checked)

    async def _check(self) -> None:
        containers = await self.client.monitored(self.labels)
        self.checks += 1
        if self.lastError is not None:
            log.info("Docker engine on {endpoint} answers again", endpoint=self.client.description)
        self.lastError = None
        self._logChanges(containers)
        self.containers = containers
        self.publish(containers)

    def _logChanges(self, containers: list[Container]) -> None:
        """
        One line per container whose health changed since the last check
        (every container at the first), as C{service health: NAME is ...}.
        """
        before = {c.name: _health(c) for c in self.containers or ()}
        now = {c.name: _health(c) for c in containers}
        for name in sorted(now):
            state, was = now[name], before.get(name)
            if state == was:
                continue
            emit = log.warn if state == "unhealthy" else log.info
            if was is None:
                emit("service health: {container} is {health}", container=name, health=state)
            else:
                emit(
                    "service health: {container} is now {health} (was {was})",
                    container=name,
                    health=state,
                    was=was,
                )
        for name in sorted(set(before) - set(now)):
            log.info("service health: {container} is no longer running", container=name)

    def _checked(self, result: None | Failure) -> None:
        if isinstance(result, Failure):
            message = (
                str(result.value) if result.check(DockerError) else f"docker: {result.getErrorMessage()}"
            )
            if message != self.lastError:
                log.warn("service health check failed: {error}", error=message)
            self.lastError = message
        if self.running:
            # Cancelled at once by the next check if one was asked for meanwhile.
            self._next = self.clock.callLater(self.interval, self.check)

    # -- events ----------------------------------------------------------

    def _follow(self) -> None:
        self._streamRetry = None
        if not self.running:
            return
        stream = self.client.events(self._event, self.labels)
        self._stream = stream
        stream.done.addCallbacks(self._streamEnded, self._streamFailed)

    def _event(self, event: dict[str, Any]) -> None:
        self.backoff.reset()
        if self._soon is None or not self._soon.active():
            self._soon = self.clock.callLater(self.eventDelay, self.check)

    def _streamEnded(self, _: object) -> None:
        self._retryStream("the engine closed the event stream")

    def _streamFailed(self, f: Failure) -> None:
        self._retryStream(f.getErrorMessage())

    def _retryStream(self, why: str) -> None:
        self._stream = None
        if not self.running:
            return
        delay = self.backoff.next()
        log.debug("Docker events: {why}; following again in {delay:.1f} s", why=why, delay=delay)
        self._streamRetry = self.clock.callLater(delay, self._follow)


def _health(container: Container) -> str:
    if not container.running:
        return "stopped"
    return "running (no healthcheck)" if container.health == "none" else container.health
