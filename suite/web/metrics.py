"""
C{/metrics} in the Prometheus text exposition format, and the metric name
guard.

Library code never touches prometheus_client's global default registry:
every daemon builds its own L{CollectorRegistry} (or L{MillisecondsRegistry})
and passes it in.  With the guard on (ceptra requires it), a metric whose
name has a C{seconds} unit (C{*_seconds}, C{*_seconds_total}, ...) is
refused when registered or when the admin site is built, with an error
naming the metric, and is never exposed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from suite.daemon import ConfigError
from suite.web.errors import ExactPathMixin, JSONMethodsMixin, jsonError

__all__ = [
    "CONTENT_TYPE",
    "MetricNameError",
    "MillisecondsRegistry",
    "MetricsResource",
    "checkMetricName",
    "checkRegistry",
    "isSecondsName",
]

log = Logger()

#: The one exposition format every /metrics of the suite answers with: the
#: Prometheus text format 0.0.4, which every Prometheus version scrapes
#: (prometheus_client's own default moved to 1.0.0; the bytes are the same
#: for the suite's snake_case names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_SECONDS = re.compile(r"(^|_)seconds($|_)")


class MetricNameError(ConfigError):
    """
    A metric's name breaks the daemon's naming rule; the message names it.
    """


def isSecondsName(name: str) -> bool:
    """
    Whether C{name} uses a C{seconds} unit (C{x_seconds}, C{x_seconds_total},
    C{x_seconds_bucket}, ...).
    """
    return bool(_SECONDS.search(name))


def checkMetricName(name: str) -> None:
    """
    @raise MetricNameError: if C{name} has a C{seconds} unit.
    """
    if isSecondsName(name):
        raise MetricNameError(
            f"metric {name!r} uses a seconds unit; this daemon only publishes "
            f"milliseconds: rename it to end in '_ms'"
        )


def _familiesOf(collector: Collector) -> Iterable[Metric]:
    describe = getattr(collector, "describe", None)
    if describe is not None:
        return list(describe())
    return list(collector.collect())


def _namesOf(family: Metric) -> Iterator[str]:
    yield family.name
    for sample in getattr(family, "samples", ()):
        yield sample.name


def checkRegistry(registry: CollectorRegistry) -> None:
    """
    Check every metric already in C{registry} (used at start-up).

    @raise MetricNameError: naming the first metric with a seconds unit.
    """
    for family in registry.collect():
        for name in _namesOf(family):
            checkMetricName(name)


class MillisecondsRegistry(CollectorRegistry):
    """
    A registry that refuses, at registration, any collector exposing a
    metric with a seconds unit.
    """

    def register(self, collector: Collector) -> None:
        for family in _familiesOf(collector):
            for name in _namesOf(family):
                checkMetricName(name)
        super().register(collector)


class _FilteredRegistry:
    """
    A read-only view of a registry without the families whose names break
    the rule (each one logged the first time it is hidden).
    """

    def __init__(self, registry: CollectorRegistry, hidden: set[str]) -> None:
        self._registry = registry
        self._hidden = hidden

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            bad = next((n for n in _namesOf(family) if isSecondsName(n)), None)
            if bad is not None:
                if family.name not in self._hidden:
                    self._hidden.add(family.name)
                    log.error(
                        "metric {metric} not exposed: seconds units are forbidden, use _ms",
                        metric=bad,
                    )
                continue
            yield family


class MetricsResource(ExactPathMixin, JSONMethodsMixin, Resource):
    """
    C{/metrics}: the text exposition of one registry.

    @param forbidSecondsSuffix: refuse (at construction, with
        L{MetricNameError}) and never expose metrics with a seconds unit.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry | None = None, forbidSecondsSuffix: bool = False) -> None:
        super().__init__()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.forbidSecondsSuffix = forbidSecondsSuffix
        self._hidden: set[str] = set()
        if forbidSecondsSuffix:
            checkRegistry(self.registry)

    def render_GET(self, request: IRequest) -> bytes:
        source: Any = self.registry
        if self.forbidSecondsSuffix:
            source = _FilteredRegistry(self.registry, self._hidden)
        try:
            body = generate_latest(source)
        except Exception as e:  # per request: logged, HTTP 500 with the reason
            log.failure("collecting metrics failed")
            return jsonError(request, 500, f"collecting metrics failed: {e}")
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body
