"""
C{clustor_system_logs_total{level=...}}: every log event the node emits,
from the moment the service tree is built (start-up lines included), is
counted by level (the events themselves go to stderr through the suite's
observer), so dashboards can alert on error bursts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from twisted.application.service import Service
from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from zope.interface import implementer

__all__ = ["LogCounterService", "LEVELS"]

LEVELS = ("debug", "info", "warn", "error", "critical")


@implementer(ILogObserver)
class _Counting:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def __call__(self, event: dict[str, Any]) -> None:
        level = getattr(event.get("log_level"), "name", "info")
        self.counts[level if level in self.counts else "info"] += 1


class _Collector:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "clustor_system_logs", "Log events emitted by this node, by level.", labels=["level"]
        )
        for level in LEVELS:
            family.add_metric([level], self.counts[level])
        yield family


class LogCounterService(Service):
    """
    Count log events by level while running.

    @param publisher: where to observe events (the global publisher by default).
    """

    def __init__(self, registry: CollectorRegistry, publisher: LogPublisher | None = None) -> None:
        self.counts = {level: 0 for level in LEVELS}
        registry.register(_Collector(self.counts))
        self.publisher = publisher if publisher is not None else globalLogPublisher
        self.observer = _Counting(self.counts)
        # Count from construction on: the start-up lines logged while the
        # service tree is built are counted too.
        self.publisher.addObserver(self.observer)
        self.observing = True

    def startService(self) -> None:
        super().startService()
        if not self.observing:
            self.publisher.addObserver(self.observer)
            self.observing = True

    def stopService(self) -> None:
        self.publisher.removeObserver(self.observer)
        self.observing = False
        return super().stopService()  # type: ignore[no-any-return]
