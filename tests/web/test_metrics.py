"""
Tests for C{/metrics} and the seconds-unit name guard.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from suite.daemon import ConfigError
from suite.web.admin import makeAdminResource
from suite.web.limits import LimitedSite
from suite.web.metrics import (
    MetricNameError,
    MetricsResource,
    MillisecondsRegistry,
    checkMetricName,
    isSecondsName,
)

from .support import Connection, parseResponse


def scrape(resource: object) -> tuple[int, dict[bytes, bytes], bytes]:
    conn = Connection(LimitedSite(resource, reactor=Clock()))  # type: ignore[arg-type]
    conn.get(b"/metrics")
    return parseResponse(conn.received())


class MetricsTests(SynchronousTestCase):
    """
    C{/metrics} serves the daemon's own registry.
    """

    def test_textFormat(self) -> None:
        """
        The body is Prometheus text with the registry's metrics and the
        exposition content type.
        """
        registry = CollectorRegistry()
        Gauge("clustor_feed_staleness_ms", "age of the feed", ["feed"], registry=registry).labels(
            feed="placement"
        ).set(1234)
        Counter("requests", "served", registry=registry).inc(3)
        code, headers, body = scrape(makeAdminResource([], registry=registry))
        self.assertEqual(code, 200)
        self.assertTrue(headers[b"content-type"].startswith(b"text/plain; version="))
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        sample = families["clustor_feed_staleness_ms"].samples[0]
        self.assertEqual((sample.labels, sample.value), ({"feed": "placement"}, 1234.0))
        self.assertEqual(families["requests"].samples[0].value, 3.0)

    def test_emptyRegistryNotGlobal(self) -> None:
        """
        Without a registry the resource serves a fresh empty one, never the
        process-wide default (which has process/platform collectors).
        """
        code, _, body = scrape(makeAdminResource([]))
        self.assertEqual(code, 200)
        self.assertNotIn(b"python_info", body)
        self.assertNotIn(b"process_", body)


class SecondsGuardTests(SynchronousTestCase):
    """
    The guard ceptra switches on: only C{_ms}, never C{_seconds}.
    """

    def test_names(self) -> None:
        """
        Names with a seconds unit are recognised, other names are not.
        """
        for name in ("uptime_seconds", "x_seconds_total", "rpc_seconds_bucket", "seconds"):
            self.assertTrue(isSecondsName(name), name)
        for name in ("uptime_ms", "clustor_feed_latency_ms", "secondsish", "tenseconds_ms"):
            self.assertFalse(isSecondsName(name), name)

    def test_checkMessage(self) -> None:
        """
        The error names the metric and the fix, and is a ConfigError (one
        line at start-up).
        """
        e = self.assertRaises(MetricNameError, checkMetricName, "apply_seconds")
        self.assertIsInstance(e, ConfigError)
        self.assertIn("'apply_seconds'", str(e))
        self.assertIn("_ms", str(e))

    def test_registrationRefused(self) -> None:
        """
        A L{MillisecondsRegistry} refuses seconds metrics when they are
        created, and keeps the others.
        """
        registry = MillisecondsRegistry()
        Gauge("raft_commit_latency_ms", "ok", registry=registry)
        e = self.assertRaises(
            MetricNameError, Histogram, "raft_commit_latency_seconds", "bad", registry=registry
        )
        self.assertIn("raft_commit_latency_seconds", str(e))
        self.assertRaises(MetricNameError, Counter, "cpu_seconds", "bad", registry=registry)
        self.assertEqual([f.name for f in registry.collect()], ["raft_commit_latency_ms"])

    def test_startupRefused(self) -> None:
        """
        With the guard on, building the admin resource over a registry that
        already holds a seconds metric fails, naming it.
        """
        registry = CollectorRegistry()
        Gauge("uptime_seconds", "bad", registry=registry)
        e = self.assertRaises(
            MetricNameError, makeAdminResource, [], registry=registry, forbidSecondsSuffix=True
        )
        self.assertIn("uptime_seconds", str(e))

    def test_guardOffAllows(self) -> None:
        """
        Without the guard seconds metrics are served as they are.
        """
        registry = CollectorRegistry()
        Gauge("uptime_seconds", "fine here", registry=registry).set(5)
        _, _, body = scrape(makeAdminResource([], registry=registry))
        self.assertIn(b"uptime_seconds 5.0", body)

    def test_notExposed(self) -> None:
        """
        A seconds metric added after start-up is never exposed; it is
        logged once as an error; the others are still served.
        """
        events: list[Any] = []
        observe: Any = events.append
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        registry = CollectorRegistry()
        Gauge("good_ms", "ok", registry=registry).set(1)
        resource = MetricsResource(registry, forbidSecondsSuffix=True)
        Gauge("late_seconds", "sneaked in", registry=registry).set(2)
        conn = Connection(LimitedSite(resource, reactor=Clock()))
        conn.get(b"/")
        conn.get(b"/")
        body = parseResponse(conn.received())[2]
        self.assertIn(b"good_ms 1.0", body)
        self.assertNotIn(b"late_seconds", conn.received())
        logged = [e for e in events if e.get("metric") == "late_seconds"]
        self.assertEqual(len(logged), 1)
