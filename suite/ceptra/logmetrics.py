"""
C{clustor_system_logs_total{level=...}}: every log event the node emits is
counted by level (the events themselves go to stderr through the suite's
observer), so dashboards can alert on error bursts.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter
from twisted.application.service import Service
from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from zope.interface import implementer

__all__ = ["LogCounterService"]

_LEVELS = ("debug", "info", "warn", "error", "critical")


@implementer(ILogObserver)
class _Counting:
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def __call__(self, event: dict[str, Any]) -> None:
        level = getattr(event.get("log_level"), "name", "info")
        self.counter.labels(level if level in _LEVELS else "info").inc()


class LogCounterService(Service):
    """
    Count log events by level while running.

    @param publisher: where to observe events (the global publisher by default).
    """

    def __init__(self, registry: CollectorRegistry, publisher: LogPublisher | None = None) -> None:
        self.counter = Counter(
            "clustor_system_logs", "Log events emitted by this node, by level.", ["level"], registry=registry
        )
        for level in _LEVELS:
            self.counter.labels(level)
        self.publisher = publisher if publisher is not None else globalLogPublisher
        self.observer = _Counting(self.counter)

    def startService(self) -> None:
        super().startService()
        self.publisher.addObserver(self.observer)

    def stopService(self) -> None:
        self.publisher.removeObserver(self.observer)
        return super().stopService()  # type: ignore[no-any-return]
